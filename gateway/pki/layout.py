"""Where a PKI directory keeps what: the files `gateway pki` writes and `gateway serve` reads by default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Relative to the working directory, as the default database is; `make run` creates the demo PKI here.
DEFAULT_PKI_DIR = "var/pki"
CA_CERTIFICATE = "ca.crt"
CA_KEY = "ca.key"
CRL = "crl.pem"
SERVER_CERTIFICATE = "server.crt"
SERVER_KEY = "server.key"
TERMINALS = "terminals"
# A copy of every certificate issued, named by serial: `list` and `revoke SERIAL` find replaced ones there too.
ISSUED = "issued"


@dataclass(frozen=True)
class PkiLayout:
    root: Path

    @property
    def ca_certificate(self) -> Path:
        return self.root / CA_CERTIFICATE

    @property
    def ca_key(self) -> Path:
        return self.root / CA_KEY

    @property
    def crl(self) -> Path:
        return self.root / CRL

    @property
    def server_certificate(self) -> Path:
        return self.root / SERVER_CERTIFICATE

    @property
    def server_key(self) -> Path:
        return self.root / SERVER_KEY

    @property
    def terminals(self) -> Path:
        return self.root / TERMINALS

    @property
    def issued(self) -> Path:
        return self.root / ISSUED

    def terminal_certificate(self, terminal_id: str) -> Path:
        return self.terminals / f"{terminal_id}.crt"

    def terminal_key(self, terminal_id: str) -> Path:
        return self.terminals / f"{terminal_id}.key"


def default_file(name: str) -> str:
    """A file of the default PKI directory, as a config default."""
    return f"{DEFAULT_PKI_DIR}/{name}"
