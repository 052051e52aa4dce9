"""Simulated terminals over TLS: each presents its own certificate (DIR/<TERMINAL_ID>.crt and .key, as
`gateway pki issue-terminal` writes them) and trusts the operator's CA for the gateway's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS


@dataclass
class TlsFiles:
    ca: Path        # the CA the gateway's certificate must come from
    cert_dir: Path  # <TERMINAL_ID>.crt and .key for every terminal id the run signs in as
    # One client configuration per terminal id: its context (and certificate) is made once per run.
    _options: dict[str, Any] = field(default_factory=dict, repr=False)

    def certificate(self, terminal_id: str) -> Path:
        return self.cert_dir / f"{terminal_id}.crt"

    def key(self, terminal_id: str) -> Path:
        return self.cert_dir / f"{terminal_id}.key"

    def options_for(self, host: str, terminal_id: str) -> Any:
        options = self._options.get(terminal_id)
        if options is None:
            try:
                authority = Certificate.loadPEM(self.ca.read_bytes())  # type: ignore[no-untyped-call]
                own = PrivateCertificate.loadPEM(  # type: ignore[no-untyped-call]
                    self.certificate(terminal_id).read_bytes() + self.key(terminal_id).read_bytes())
            except OSError as exc:
                raise RuntimeError(f"{terminal_id}: no TLS certificate in {self.cert_dir} ({exc.strerror}): "
                                   "`gateway pki issue-terminal` makes one") from exc
            options = optionsForClientTLS(host, trustRoot=authority, clientCertificate=own)
            self._options[terminal_id] = options
        return options


def client_endpoint(reactor: Any, host: str, port: int, terminal_id: str, tls: TlsFiles | None) -> Any:
    """Where terminal `terminal_id` connects: plain TCP, or TLS with its certificate."""
    endpoint: Any = TCP4ClientEndpoint(reactor, host, port, timeout=30)  # zope interfaces: typed loosely
    if tls is None:
        return endpoint
    return wrapClientTLS(tls.options_for(host, terminal_id), endpoint)  # type: ignore[no-untyped-call]
