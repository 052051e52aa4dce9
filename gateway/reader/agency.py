"""The card agency's key scheme for RESET RETRY COUNTER.

Each card holds a key diversified from the agency's master key by its card identification code; a
reset carries a 4-byte MAC over a fresh card challenge, the command header and the new PIN, so only
the holder of the master key (the agency, never a counter terminal) can unblock a PIN, and a recorded
reset cannot be replayed. HMAC-SHA256 stands in for the issuer's 3DES MAC: real issuer keys are
secrets this project never holds.
"""

from __future__ import annotations

import hashlib
import hmac

MASTER_KEY_MIN_BYTES = 16
# For the demo population and tests only; a real agency key is never in source code.
DEMO_AGENCY_MASTER_KEY = bytes.fromhex("4e424341524441474e43594b45593031")


def derive_card_key(master_key: bytes, card_identification_code: str) -> bytes:
    if len(master_key) < MASTER_KEY_MIN_BYTES:
        raise ValueError(f"the agency master key must be at least {MASTER_KEY_MIN_BYTES} bytes")
    return hmac.new(master_key, card_identification_code.encode("ascii"), hashlib.sha256).digest()


def reset_mac(card_key: bytes, challenge: bytes, header: bytes, new_pin_bcd: bytes) -> bytes:
    return hmac.new(card_key, challenge + header + new_pin_bcd, hashlib.sha256).digest()[:4]
