"""What the service asks the ledger to record. Built on the reactor side, decided in the writer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from gateway.protocol.messages import pb
from gateway.settlement.calendar import business_date
from gateway.settlement.facts import Facts


def content_hash(request: pb.Request) -> str:
    """SHA-256 of what a request asks for — its body, without the PIN.

    The PIN stays out: six digits hash to one of a million values, so a stored hash would give it away.
    """
    body_name = request.WhichOneof("body")
    assert body_name is not None
    body = getattr(request, body_name)
    if getattr(body, "pin", ""):  # copied only when there is a PIN to leave out
        body = type(body)()
        body.CopyFrom(getattr(request, body_name))
        body.pin = ""
    digest = hashlib.sha256(body_name.encode("ascii") + b"\x00" + body.SerializeToString(deterministic=True))
    return digest.hexdigest()


@dataclass(frozen=True)
class SettleIntent:
    terminal_id: str
    message_id: str
    content_hash: str
    facts: Facts          # the PIN, where required, was verified on the card before this was built
    card_number: str
    recorded_at: datetime


@dataclass(frozen=True)
class RevokeIntent:
    terminal_id: str
    message_id: str
    content_hash: str
    institution_code: str
    settlement_ref: str
    recorded_at: datetime


@dataclass(frozen=True)
class ReverseIntent:
    terminal_id: str
    message_id: str
    content_hash: str
    original_message_id: str
    recorded_at: datetime


Intent = SettleIntent | RevokeIntent | ReverseIntent

__all__ = ["Intent", "ReverseIntent", "RevokeIntent", "SettleIntent", "business_date", "content_hash"]
