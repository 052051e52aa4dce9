"""The wire's side of the ledger: what a request asks for, as the digest the ledger keys its records with, and
the ledger's outcomes (gateway.ledger.outcomes) as `Response` messages."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.ledger.outcomes import (
    HolderBalances,
    Outcome,
    Refused,
    Reversed,
    ReverseResult,
    Revoked,
    Settled,
    TransactionFound,
    TransactionState,
)
from gateway.protocol.messages import pb
from gateway.protocol.responses import make_response
from gateway.settlement.split import FundSplit

REVERSE_OUTCOMES = {
    ReverseResult.REVERSED: pb.REVERSE_OUTCOME_REVERSED,
    ReverseResult.NEVER_ARRIVED: pb.REVERSE_OUTCOME_NEVER_ARRIVED,
    ReverseResult.ALREADY_REVERSED: pb.REVERSE_OUTCOME_ALREADY_REVERSED,
}
TRANSACTION_STATES = {
    TransactionState.SETTLED: pb.TRANSACTION_STATE_SETTLED,
    TransactionState.REVOKED: pb.TRANSACTION_STATE_REVOKED,
    TransactionState.REVERSED: pb.TRANSACTION_STATE_REVERSED,
}


def content_hash(request: pb.Request) -> str:
    """SHA-256 of what a request asks for — its body's kind and fields, without the PIN.

    The PIN stays out: six digits hash to one of a million values, so a stored hash would give it away.
    """
    body_name = request.WhichOneof("body")
    if body_name is None:  # the session refuses a request without a body before any handler sees it
        raise ValueError("a request without a body asks for nothing")
    body = getattr(request, body_name)
    if getattr(body, "pin", ""):  # copied only when there is a PIN to leave out
        body = type(body)()
        body.CopyFrom(getattr(request, body_name))
        body.pin = ""
    digest = hashlib.sha256(body_name.encode("ascii") + b"\x00" + body.SerializeToString(deterministic=True))
    return digest.hexdigest()


def answer(message_id: str, outcome: Outcome) -> pb.Response:
    """The Response that carries `outcome`: for a recorded outcome, the same message whenever it is built."""
    if isinstance(outcome, Refused):
        return refusal(message_id, outcome.status, outcome.detail_en, outcome.detail_zh)
    response = make_response(message_id, pb.STATUS_CODE_OK)
    if isinstance(outcome, Settled):
        result = response.settle
        result.settlement_id = outcome.settlement_id
        result.card_number = outcome.card_number
        fill_split(result.split, outcome.split)
        fill_balances(result.balances_after, outcome.balances_after)
        set_timestamp(result.settled_at, outcome.settled_at)
        result.policy_version = outcome.policy_version
    elif isinstance(outcome, Revoked):
        response.revoke.settlement_id = outcome.settlement_id
        response.revoke.revoke_id = outcome.revoke_id
        fill_split(response.revoke.refunded, outcome.refunded)
    else:
        fill_reversed(response.reverse, outcome)
    return response


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_timestamp(message: Timestamp, moment: datetime) -> None:
    """`message` set to `moment` as protobuf's `Timestamp.FromDatetime` sets it (a naive moment is UTC), by integer
    arithmetic: FromDatetime goes through a time tuple and `calendar.timegm`, a tenth of a Settle's own work on the
    reactor."""
    since = moment - (_EPOCH if moment.tzinfo is not None else _EPOCH.replace(tzinfo=None))
    message.seconds = since.days * 86_400 + since.seconds
    message.nanos = since.microseconds * 1000


def refusal(message_id: str, status: int, detail_en: str, detail_zh: str) -> pb.Response:
    return make_response(message_id, status, detail_en=detail_en, detail_zh=detail_zh)


def fill_reversed(message: pb.ReverseResult, outcome: Reversed) -> None:
    message.original_message_id = outcome.original_message_id
    message.outcome = REVERSE_OUTCOMES[outcome.result]
    if outcome.reversed is not None:
        fill_split(message.reversed, outcome.reversed)
    else:
        message.SetInParent()


def fill_split(message: pb.FundSplit, split: FundSplit) -> None:
    message.total_fen = split.total_fen
    message.fund_pay_fen = split.fund_pay_fen
    message.pooled_fund_fen = split.pooled_fund_fen
    message.current_year_account_fen = split.current_year_account_fen
    message.prior_years_account_fen = split.prior_years_account_fen
    message.cash_fen = split.cash_fen
    message.deductible_counted_fen = split.deductible_counted_fen


def fill_balances(message: pb.Balances, balances: HolderBalances) -> None:
    message.insurance_year = balances.insurance_year
    message.current_year_account_fen = balances.current_year_account_fen
    message.prior_years_account_fen = balances.prior_years_account_fen
    message.deductible_counted_ytd_fen = balances.deductible_counted_ytd_fen
    message.deductible_fen = balances.deductible_fen
    message.pooled_fund_paid_ytd_fen = balances.pooled_fund_paid_ytd_fen
    message.pooled_fund_cap_fen = balances.pooled_fund_cap_fen


def transaction_result(found: TransactionFound) -> pb.TransactionResult:
    result = pb.TransactionResult(message_id=found.message_id, settlement_id=found.settlement_id,
                                  state=TRANSACTION_STATES[found.state])
    if found.original_status is not None:
        result.original_status = found.original_status  # type: ignore[assignment]
    if found.split is not None:
        fill_split(result.split, found.split)
    if found.recorded_at is not None:
        result.recorded_at.FromDatetime(found.recorded_at)
    return result
