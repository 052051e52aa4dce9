"""A test PKI made with `gateway pki`'s own functions, the certificates the refusal cases need, and TLS clients."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki.authority import init_ca, issue_server, issue_terminal, load_ca
from gateway.pki.layout import PkiLayout

SERVER_NAME = "localhost"


@dataclass(frozen=True)
class TerminalPki:
    layout: PkiLayout
    # The same terminal ids, issued by a CA the gateway does not know.
    stranger: PkiLayout

    def tls_config(self) -> str:
        """The [tls] section of a gateway config reading this PKI."""
        layout = self.layout
        return (f'[tls]\ncertificate = "{layout.server_certificate}"\nprivate_key = "{layout.server_key}"\n'
                f'client_ca = "{layout.ca_certificate}"\ncrl = "{layout.crl}"\n')

    def client(self, terminal_id: str | None, *, layout: PkiLayout | None = None) -> ssl.SSLContext:
        """A terminal's TLS context: it trusts the CA, and presents `terminal_id`'s certificate (None: none)."""
        context = ssl.create_default_context(cafile=str(self.layout.ca_certificate))
        if terminal_id is not None:
            source = layout or self.layout
            context.load_cert_chain(source.terminal_certificate(terminal_id), source.terminal_key(terminal_id))
        return context


def make_pki(root: Path, terminal_ids: list[str]) -> TerminalPki:
    layout = PkiLayout(root / "pki")
    init_ca(layout, "Test terminal CA")
    issue_server(layout, [SERVER_NAME, "127.0.0.1"])
    for terminal_id in terminal_ids:
        issue_terminal(layout, terminal_id)
    stranger = PkiLayout(root / "stranger")
    init_ca(stranger, "Some other CA")
    for terminal_id in terminal_ids:
        issue_terminal(stranger, terminal_id)
    return TerminalPki(layout, stranger)


def issue_expired(pki: TerminalPki, terminal_id: str) -> None:
    """`terminal_id`'s certificate replaced by one that expired a year ago."""
    issue_terminal(pki.layout, terminal_id, days=30, now=datetime.now(UTC) - timedelta(days=400), replace=True)


def issue_unnamed(pki: TerminalPki, file_name: str, common_name: str) -> None:
    """A client certificate of the CA whose CN is not a terminal id, written as terminals/<file_name>.crt/.key."""
    ca_certificate, ca_key = load_ca(pki.layout)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki.layout.terminal_certificate(file_name).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pki.layout.terminal_key(file_name).write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
