"""The operator's terminal CA: create it, issue the gateway's and the terminals' certificates, revoke them.

Keys are ECDSA P-256 (fast handshakes, small certificates); every private key is written with mode 0600 and
never printed. A revocation re-signs the CRL (`crl.pem`) with every serial revoked so far; the gateway reloads
that file when it changes. Files are replaced atomically (written beside, then renamed), so a reader never sees
half a file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki.layout import PkiLayout
from gateway.pki.names import serial_text, terminal_id_of
from gateway.protocol.session import MAX_TERMINAL_ID_CHARS, REGISTERED_TERMINAL_ID

CA_DAYS = 3650
LEAF_DAYS = 730
# A certificate's validity starts this long before its issue, for clocks a little behind the CA's.
BACKDATE = timedelta(minutes=5)
PRIVATE_KEY_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
ORGANIZATION = "Ningbo medical-settlement gateway"


class PkiError(Exception):
    """A PKI operation that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class IssuedCertificate:
    serial: str
    kind: str  # "ca", "server" or "terminal"
    name: str  # the terminal id, the server's first host, the CA's name
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if now > self.not_after:
            return "expired"
        if now < self.not_before:
            return "not yet valid"
        return "valid"


# Creating and issuing ------------------------------------------------------------------------------------


def init_ca(layout: PkiLayout, common_name: str, *, days: int = CA_DAYS, now: datetime | None = None
            ) -> x509.Certificate:
    """A new CA in `layout.root` (its key, its certificate, an empty CRL); refused when one is there."""
    if layout.ca_key.exists() or layout.ca_certificate.exists():
        raise PkiError(f"{layout.root} already holds a CA ({layout.ca_certificate.name}); refusing to replace it")
    _positive_days(days)
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    layout.root.mkdir(parents=True, exist_ok=True)
    _write_private_key(layout.ca_key, key)
    _write_certificate(layout, layout.ca_certificate, certificate)
    _write_crl(layout, certificate, key, [], now)
    return certificate


def issue_server(layout: PkiLayout, hosts: Sequence[str], *, days: int = LEAF_DAYS, now: datetime | None = None,
                 replace: bool = False) -> x509.Certificate:
    """The gateway's certificate for `hosts` (DNS names or IP addresses, as terminals dial it)."""
    if not hosts:
        raise PkiError("issue-server needs at least one HOST (a DNS name or an IP address terminals connect to)")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or not all(part and part.replace("-", "").isalnum() and part.isascii()
                                   for part in host.rstrip(".").split(".")):
                raise PkiError(f"{host!r} is neither an IP address nor a DNS name") from None
            names.append(x509.DNSName(host))
    if layout.server_certificate.exists() and not replace:
        raise PkiError(f"{layout.server_certificate} exists; pass --replace for a new one (the old one stays valid "
                       "until revoked)")
    certificate = _issue(layout, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(names),
                         layout.server_certificate, layout.server_key, days, now)
    return certificate


def issue_terminal(layout: PkiLayout, terminal_id: str, *, days: int = LEAF_DAYS, now: datetime | None = None,
                   replace: bool = False) -> x509.Certificate:
    """A certificate naming `terminal_id` (its subject CN) and its key, in terminals/<TERMINAL_ID>.crt/.key."""
    if not REGISTERED_TERMINAL_ID.fullmatch(terminal_id):
        raise PkiError(f"terminal id {terminal_id!r} must be 1 to {MAX_TERMINAL_ID_CHARS} letters, digits, '.', '_' "
                       "or '-', starting with a letter or digit (as the registry's)")
    path = layout.terminal_certificate(terminal_id)
    if path.exists() and not replace:
        existing = _read_certificate(path)
        raise PkiError(f"terminal {terminal_id} already has a certificate (serial {serial_text(existing)}, valid "
                       f"until {existing.not_valid_after_utc:%Y-%m-%d}); pass --replace for a new one (the old one "
                       "stays valid until revoked) or --skip-existing")
    layout.terminals.mkdir(parents=True, exist_ok=True)
    return _issue(layout, terminal_id, ExtendedKeyUsageOID.CLIENT_AUTH, None, path,
                  layout.terminal_key(terminal_id), days, now)


def _issue(layout: PkiLayout, common_name: str, usage: x509.ObjectIdentifier,
           alternative_names: x509.SubjectAlternativeName | None, certificate_path: Path, key_path: Path,
           days: int, now: datetime | None) -> x509.Certificate:
    _positive_days(days)
    ca_certificate, ca_key = load_ca(layout)
    now = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if alternative_names is not None:
        builder = builder.add_extension(alternative_names, critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    # The key first: a certificate on disk always has its key beside it.
    _write_private_key(key_path, key)
    _write_certificate(layout, certificate_path, certificate)
    return certificate


# Revoking ---------------------------------------------------------------------------------------------------


def revoke(layout: PkiLayout, target: str, *, now: datetime | None = None) -> list[IssuedCertificate]:
    """Revoke every unrevoked certificate naming terminal `target`, or the one whose serial (hex) is `target`;
    re-sign the CRL. Returns what was revoked (nothing when all of it already was)."""
    ca_certificate, ca_key = load_ca(layout)
    issued = list_certificates(layout)
    serial = target.lower().removeprefix("0x").replace(":", "")
    by_terminal = [c for c in issued if c.kind == "terminal" and c.name == target]
    by_serial = [c for c in issued if c.serial.lower() == serial]
    if by_terminal and by_serial and by_terminal != by_serial:
        raise PkiError(f"{target!r} is both a terminal id and a serial: revoke by the other one")
    chosen = by_terminal or by_serial
    if not chosen:
        raise PkiError(f"no certificate issued here names terminal {target!r} or has serial {target!r} "
                       "(`gateway pki list` shows them)")
    if any(c.kind == "ca" for c in chosen):
        raise PkiError("the CA's own certificate cannot be revoked by its CRL: create a new CA instead")
    now = now or datetime.now(UTC)
    revoked = _revoked_serials(layout, ca_certificate)
    newly = [c for c in chosen if int(c.serial, 16) not in revoked]
    if newly:
        for c in newly:
            revoked[int(c.serial, 16)] = now
        _write_crl(layout, ca_certificate, ca_key, sorted(revoked.items()), now)
    return [IssuedCertificate(c.serial, c.kind, c.name, c.not_before, c.not_after, now) for c in newly]


def read_crl(path: Path, ca_certificate: x509.Certificate) -> x509.CertificateRevocationList:
    """The CRL in `path`, refused unless the CA issued and signed it."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except OSError as exc:
        raise PkiError(f"cannot read the certificate revocation list {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate revocation list: {exc}") from exc
    public_key = ca_certificate.public_key()
    # A CA made elsewhere (openssl) may have an RSA key: its CRL is checked the same way.
    if crl.issuer != ca_certificate.subject or not isinstance(public_key, ec.EllipticCurvePublicKey
                                                                          | rsa.RSAPublicKey):
        raise PkiError(f"{path} was not issued by the CA {ca_certificate.subject.rfc4514_string()}")
    try:
        valid = crl.is_signature_valid(public_key)
    except InvalidSignature:
        valid = False
    if not valid:
        raise PkiError(f"{path} is not signed by the CA {ca_certificate.subject.rfc4514_string()}")
    return crl


def _revoked_serials(layout: PkiLayout, ca_certificate: x509.Certificate) -> dict[int, datetime]:
    if not layout.crl.exists():
        return {}
    crl = read_crl(layout.crl, ca_certificate)
    return {entry.serial_number: entry.revocation_date_utc for entry in crl}


def _write_crl(layout: PkiLayout, ca_certificate: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
               revoked: Sequence[tuple[int, datetime]], now: datetime) -> None:
    number = 1
    if layout.crl.exists():
        with contextlib.suppress(PkiError, x509.ExtensionNotFound):
            number = read_crl(layout.crl, ca_certificate).extensions.get_extension_for_class(
                x509.CRLNumber).value.crl_number + 1
    # The gateway reads this file locally: a stale copy cannot be slipped to it, so the list stays in force
    # until the CA expires instead of going stale after a week as a published CRL would.
    builder = (
        x509.CertificateRevocationListBuilder().issuer_name(ca_certificate.subject)
        .last_update(now - BACKDATE).next_update(ca_certificate.not_valid_after_utc)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_file(layout.crl, crl.public_bytes(serialization.Encoding.PEM), PUBLIC_FILE_MODE)


# Reading ----------------------------------------------------------------------------------------------------


def list_certificates(layout: PkiLayout) -> list[IssuedCertificate]:
    """Every certificate this CA issued (its own first), with its revocation, oldest first."""
    ca_certificate = _read_certificate(layout.ca_certificate)
    revoked = _revoked_serials(layout, ca_certificate)
    found = []
    for path in sorted(layout.issued.glob("*.crt")) if layout.issued.exists() else []:
        certificate = _read_certificate(path)
        found.append(IssuedCertificate(
            serial_text(certificate), _kind(certificate), _name(certificate), certificate.not_valid_before_utc,
            certificate.not_valid_after_utc, revoked.get(certificate.serial_number)))
    return sorted(found, key=lambda c: (c.kind != "ca", c.not_before, c.name))


def load_ca(layout: PkiLayout) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not layout.ca_key.exists():
        raise PkiError(f"{layout.root} holds no CA: run `gateway pki init-ca --dir {layout.root}` first")
    certificate = _read_certificate(layout.ca_certificate)
    try:
        key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        # The key's content never goes into the message.
        raise PkiError(f"cannot read the CA's key {layout.ca_key}: {exc.__class__.__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{layout.ca_key} is not an EC key as `gateway pki init-ca` writes")
    return certificate, key


def _read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise PkiError(f"cannot read the certificate {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate: {exc}") from exc


def _kind(certificate: x509.Certificate) -> str:
    try:
        if certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "ca"
    except x509.ExtensionNotFound:
        pass
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "other"
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages:
        return "terminal"
    return "server" if ExtendedKeyUsageOID.SERVER_AUTH in usages else "other"


def _name(certificate: x509.Certificate) -> str:
    terminal_id = terminal_id_of(certificate)
    if terminal_id is not None:
        return terminal_id
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()


# Writing ----------------------------------------------------------------------------------------------------


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write_file(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), PRIVATE_KEY_MODE)


def _write_certificate(layout: PkiLayout, path: Path, certificate: x509.Certificate) -> None:
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    layout.issued.mkdir(parents=True, exist_ok=True)
    _write_file(layout.issued / f"{serial_text(certificate)}.crt", pem, PUBLIC_FILE_MODE)
    _write_file(path, pem, PUBLIC_FILE_MODE)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write beside `path` with `mode` from the start (a key is never readable by others, not even briefly),
    then rename over it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as out:
        os.fchmod(descriptor, mode)  # a leftover temporary file may have had other bits
        out.write(data)
        out.flush()
        os.fsync(descriptor)
    os.replace(temporary, path)


def _positive_days(days: int) -> None:
    if days < 1:
        raise PkiError(f"--days must be at least 1 (got {days})")

