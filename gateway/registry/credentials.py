"""Terminal credentials: stored as a salted HMAC-SHA256, compared in constant time.

Credentials are machine-issued secrets of at least MIN_CREDENTIAL_CHARS characters, not
human passwords, so a single keyed hash suffices and sign-in storms of thousands of terminals stay
cheap; key stretching would cost milliseconds per sign-in for no gain against such secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SCHEME = "hmac-sha256"
MIN_CREDENTIAL_CHARS = 8
MAX_CREDENTIAL_CHARS = 128
SALT_BYTES = 16


def _keyed_digest(salt: bytes, credential: str) -> str:
    return hmac.new(salt, credential.encode("utf-8"), hashlib.sha256).hexdigest()


def hash_credential(credential: str, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    return f"{SCHEME}${salt.hex()}${_keyed_digest(salt, credential)}"


def verify_credential(credential: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    if scheme != SCHEME:
        return False
    return hmac.compare_digest(_keyed_digest(salt, credential), digest)


# What the credential of an unknown terminal id is checked against: the hash of a secret nobody holds (drawn when the
# process starts), so that an unknown id costs the same work as a known id with a wrong credential.
_NOBODYS_HASH = hash_credential(secrets.token_urlsafe(32))


def credential_matches(credential: str, stored: str | None) -> bool:
    """Whether `credential` is the one `stored` hashes; `stored` None (no such terminal) is checked all the same,
    against nobody's hash, and never matches."""
    matched = verify_credential(credential, _NOBODYS_HASH if stored is None else stored)
    return matched and stored is not None



def credential_problem(credential: str) -> str | None:
    """Why `credential` cannot be issued, or None. Never echoes the credential."""
    if not MIN_CREDENTIAL_CHARS <= len(credential) <= MAX_CREDENTIAL_CHARS:
        return f"credential must be {MIN_CREDENTIAL_CHARS} to {MAX_CREDENTIAL_CHARS} characters"
    if not all("!" <= ch <= "~" for ch in credential):
        return "credential must be printable ASCII without spaces"
    return None
