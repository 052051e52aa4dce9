"""What a terminal's certificate says about it: the terminal id is the subject's common name (CN), exactly one,
in the registry's form (docs/protocol.md §1.1)."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.protocol.session import REGISTERED_TERMINAL_ID


def terminal_id_of(certificate: x509.Certificate) -> str | None:
    """The terminal id the certificate names, or None when its subject has no single CN of that form."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    value = names[0].value
    if not isinstance(value, str) or not REGISTERED_TERMINAL_ID.fullmatch(value):
        return None
    return value


def describe(certificate: x509.Certificate) -> str:
    """The certificate for an operator's log line: its subject and serial (never anything secret)."""
    return f"{certificate.subject.rfc4514_string() or 'an empty subject'} (serial {serial_text(certificate)})"


def serial_text(certificate: x509.Certificate) -> str:
    return f"{certificate.serial_number:X}"
