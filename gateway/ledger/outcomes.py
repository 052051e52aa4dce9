"""What the ledger answers: plain values, which the request path turns into its wire messages
(gateway.serve.answers). The ledger knows nothing of the wire but the status codes' numbers.

A committed request's outcome is also what the ledger records under the request's key, as canonical JSON
(`request_records.recorded_outcome`), so that a retry of the message id gets exactly the same answer.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.settlement.split import FundSplit


@dataclass(frozen=True)
class HolderBalances:
    """The holder's personal accounts and year-to-date totals, with the insurance year's deductible and cap."""

    insurance_year: int
    current_year_account_fen: int
    prior_years_account_fen: int
    deductible_counted_ytd_fen: int
    deductible_fen: int
    pooled_fund_paid_ytd_fen: int
    pooled_fund_cap_fen: int


@dataclass(frozen=True)
class Settled:
    settlement_id: str
    card_number: str
    split: FundSplit
    balances_after: HolderBalances
    settled_at: datetime
    policy_version: str
    # Read back from the record, answering an exact retry (gateway.ledger.records.repeated): for the audit trail,
    # which logs a retry as one, not as a second settlement. Neither recorded nor compared: the answer is the same.
    repeated: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Revoked:
    settlement_id: str
    revoke_id: str
    refunded: FundSplit   # the settlement's split, as booked
    repeated: bool = field(default=False, compare=False)  # as Settled's


class ReverseResult(enum.StrEnum):
    REVERSED = "reversed"                  # the original had been committed: compensating entries are booked
    NEVER_ARRIVED = "never_arrived"        # nothing was committed under the original key: a tombstone is
    ALREADY_REVERSED = "already_reversed"  # reversed (or tombstoned) before: nothing changes


@dataclass(frozen=True)
class Reversed:
    original_message_id: str
    result: ReverseResult
    reversed: FundSplit | None   # what was given back: only with ReverseResult.REVERSED
    repeated: bool = field(default=False, compare=False)  # as Settled's


@dataclass(frozen=True)
class Refused:
    """Nothing was done: a status code (gateway.protocol.status) and a detail in English and Chinese, which must
    carry no PIN and only masked ID numbers."""

    status: int
    detail_en: str
    detail_zh: str


Committed = Settled | Revoked | Reversed
Outcome = Committed | Refused


class TransactionState(enum.StrEnum):
    SETTLED = "settled"
    REVOKED = "revoked"
    REVERSED = "reversed"


@dataclass(frozen=True)
class TransactionFound:
    """A request the ledger recorded, or a transaction it holds, as QueryTransaction reports it."""

    message_id: str
    state: TransactionState
    original_status: int | None    # the status the request was answered with; None for a tombstone
    settlement_id: str = ""        # the transaction the request made; empty if it made none
    split: FundSplit | None = None  # the transaction's amounts, as positive numbers
    recorded_at: datetime | None = None


# The recorded form ---------------------------------------------------------------------------------
# Canonical JSON (sorted keys, no spaces): the same outcome is always the same text. Migration 0007 wrote the
# rows recorded before it in this form; a change here needs a migration of the rows recorded since.

_SPLIT_FIELDS = ("total_fen", "pooled_fund_fen", "current_year_account_fen", "prior_years_account_fen", "cash_fen",
                 "deductible_counted_fen")
_BALANCE_FIELDS = ("insurance_year", "current_year_account_fen", "prior_years_account_fen",
                   "deductible_counted_ytd_fen", "deductible_fen", "pooled_fund_paid_ytd_fen", "pooled_fund_cap_fen")


class RecordUnreadable(ValueError):
    """A recorded outcome that is not one this release writes: the ledger cannot answer its retry."""


def recorded_form(outcome: Committed) -> str:
    """The text recorded under a committed request's key."""
    if type(outcome) is Settled:
        return _settled_form(outcome)
    return canonical_form(outcome)


def canonical_form(outcome: Committed) -> str:
    """The recorded form as json.dumps writes it (sorted keys, no spaces): the definition that `_settled_form`,
    which the writer runs for every settlement, must equal byte for byte (tests/test_recorded_outcomes.py)."""
    value: dict[str, Any]
    if isinstance(outcome, Settled):
        value = {"kind": "settled", "settlement_id": outcome.settlement_id, "card_number": outcome.card_number,
                 "split": _split(outcome.split), "settled_at": _instant(outcome.settled_at),
                 "policy_version": outcome.policy_version,
                 "balances_after": {name: getattr(outcome.balances_after, name) for name in _BALANCE_FIELDS}}
    elif isinstance(outcome, Revoked):
        value = {"kind": "revoked", "settlement_id": outcome.settlement_id, "revoke_id": outcome.revoke_id,
                 "refunded": _split(outcome.refunded)}
    else:
        value = {"kind": "reversed", "original_message_id": outcome.original_message_id,
                 "result": outcome.result.value,
                 "reversed": _split(outcome.reversed) if outcome.reversed is not None else None}
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# A Settled's recorded form written straight as its canonical text: json.dumps with sort_keys builds, walks, sorts
# and encodes a nested dictionary first, which was the largest part of deciding a settlement. Here the keys stand
# in sorted order (tests/test_recorded_outcomes.py holds the text equal to canonical_form's over random outcomes);
# strings are escaped by json's own string encoder (as ensure_ascii=False writes them), integers written as json
# writes them.
_escaped = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _settled_form(outcome: Settled) -> str:
    split, after = outcome.split, outcome.balances_after
    return (
        f'{{"balances_after":{{"current_year_account_fen":{int(after.current_year_account_fen)},'
        f'"deductible_counted_ytd_fen":{int(after.deductible_counted_ytd_fen)},'
        f'"deductible_fen":{int(after.deductible_fen)},"insurance_year":{int(after.insurance_year)},'
        f'"pooled_fund_cap_fen":{int(after.pooled_fund_cap_fen)},'
        f'"pooled_fund_paid_ytd_fen":{int(after.pooled_fund_paid_ytd_fen)},'
        f'"prior_years_account_fen":{int(after.prior_years_account_fen)}}},'
        f'"card_number":{_escaped(outcome.card_number)},"kind":"settled",'
        f'"policy_version":{_escaped(outcome.policy_version)},"settled_at":{_escaped(_instant(outcome.settled_at))},'
        f'"settlement_id":{_escaped(outcome.settlement_id)},'
        f'"split":{{"cash_fen":{int(split.cash_fen)},"current_year_account_fen":{int(split.current_year_account_fen)},'
        f'"deductible_counted_fen":{int(split.deductible_counted_fen)},"pooled_fund_fen":{int(split.pooled_fund_fen)},'
        f'"prior_years_account_fen":{int(split.prior_years_account_fen)},"total_fen":{int(split.total_fen)}}}}}')


def from_recorded_form(text: str) -> Committed:
    try:
        value = json.loads(text)
        kind = value["kind"]
        if kind == "settled":
            return Settled(value["settlement_id"], value["card_number"], _fund_split(value["split"]),
                           HolderBalances(**{name: int(value["balances_after"][name]) for name in _BALANCE_FIELDS}),
                           datetime.fromisoformat(value["settled_at"]), value["policy_version"])
        if kind == "revoked":
            return Revoked(value["settlement_id"], value["revoke_id"], _fund_split(value["refunded"]))
        if kind == "reversed":
            given_back = value["reversed"]
            return Reversed(value["original_message_id"], ReverseResult(value["result"]),
                            _fund_split(given_back) if given_back is not None else None)
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordUnreadable(f"unreadable recorded outcome ({exc})") from exc
    raise RecordUnreadable(f"unknown recorded outcome kind {kind!r}")


def _split(split: FundSplit) -> dict[str, int]:
    return {name: getattr(split, name) for name in _SPLIT_FIELDS}


def _fund_split(value: dict[str, Any]) -> FundSplit:
    return FundSplit(**{name: int(value[name]) for name in _SPLIT_FIELDS})


def _instant(moment: datetime) -> str:
    """UTC to the microsecond. A time without a zone is refused: the wire reads one as UTC, Python as local time,
    and the recorded answer must be the one sent."""
    if moment.tzinfo is UTC:  # what the gateway's clock gives: no conversion to make
        return moment.isoformat("T", "microseconds")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a time without a zone cannot be recorded: {moment.isoformat()}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
