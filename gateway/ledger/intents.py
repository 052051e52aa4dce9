"""What the request path asks the ledger to record. Built on the reactor side, decided in the writer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.settlement.calendar import business_date
from gateway.settlement.facts import Facts
from gateway.settlement.rules import Admission

# Every intent carries `content_hash`: the request path's digest of what the request asks for, PIN excluded
# (gateway.serve.answers.content_hash). The ledger records it and compares a retry's with it.


@dataclass(frozen=True)
class SettleIntent:
    terminal_id: str
    message_id: str
    content_hash: str
    facts: Facts          # the PIN, where required, was verified on the card before this was built
    card_number: str
    recorded_at: datetime
    # What the request path's rules admitted on `facts` (gateway.settlement.rules.admit): the writer takes it
    # as decided while the card's state it locked is the one in `facts`, and computes only the split on the
    # balances it locked. None (tools, tests): the writer decides it all.
    admitted: Admission | None = None


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

__all__ = ["Intent", "ReverseIntent", "RevokeIntent", "SettleIntent", "business_date"]
