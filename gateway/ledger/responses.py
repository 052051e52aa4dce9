"""The answers the ledger stores with each committed request, so that a retry gets the very same."""

from __future__ import annotations

from datetime import datetime

from gateway.protocol.messages import pb
from gateway.protocol.responses import make_response
from gateway.settlement.split import FundSplit


def refusal_response(message_id: str, status: int, detail_en: str, detail_zh: str) -> pb.Response:
    return make_response(message_id, status, detail_en=detail_en, detail_zh=detail_zh)


def fill_split(message: pb.FundSplit, split: FundSplit) -> None:
    message.total_fen = split.total_fen
    message.fund_pay_fen = split.fund_pay_fen
    message.pooled_fund_fen = split.pooled_fund_fen
    message.current_year_account_fen = split.current_year_account_fen
    message.prior_years_account_fen = split.prior_years_account_fen
    message.cash_fen = split.cash_fen
    message.deductible_counted_fen = split.deductible_counted_fen


def fill_balances(message: pb.Balances, *, year: int, current_year_fen: int, prior_years_fen: int,
                  deductible_counted_ytd_fen: int, deductible_fen: int, pooled_paid_ytd_fen: int,
                  pooled_cap_fen: int) -> None:
    message.insurance_year = year
    message.current_year_account_fen = current_year_fen
    message.prior_years_account_fen = prior_years_fen
    message.deductible_counted_ytd_fen = deductible_counted_ytd_fen
    message.deductible_fen = deductible_fen
    message.pooled_fund_paid_ytd_fen = pooled_paid_ytd_fen
    message.pooled_fund_cap_fen = pooled_cap_fen


def settle_response(message_id: str, ref: str, card_number: str, split: FundSplit, settled_at: datetime,
                    policy_version: str, **balances: int) -> pb.Response:
    response = make_response(message_id, pb.STATUS_CODE_OK)
    result = response.settle
    result.settlement_id = ref
    result.card_number = card_number
    fill_split(result.split, split)
    fill_balances(result.balances_after, **balances)
    result.settled_at.FromDatetime(settled_at)
    result.policy_version = policy_version
    return response


def revoke_response(message_id: str, settlement_ref: str, revoke_ref: str, split: FundSplit) -> pb.Response:
    response = make_response(message_id, pb.STATUS_CODE_OK)
    response.revoke.settlement_id = settlement_ref
    response.revoke.revoke_id = revoke_ref
    fill_split(response.revoke.refunded, split)
    return response


def reverse_response(message_id: str, original_message_id: str, outcome: int, split: FundSplit | None) -> pb.Response:
    response = make_response(message_id, pb.STATUS_CODE_OK)
    response.reverse.original_message_id = original_message_id
    response.reverse.outcome = outcome  # type: ignore[assignment]
    if split is not None:
        fill_split(response.reverse.reversed, split)
    else:
        response.reverse.SetInParent()
    return response


def repeated_response(message_id: str, outcome: str, stored_hash: str | None, content_hash: str,
                      stored_response: bytes | None) -> pb.Response:
    """The answer to a message id the ledger has seen: its one outcome again, or why not."""
    if outcome == "tombstone":
        return refusal_response(message_id, pb.STATUS_CODE_MESSAGE_ID_REVERSED,
                                "this message id was reversed before it arrived", "该报文编号已被冲正")
    if stored_hash != content_hash or stored_response is None:
        return refusal_response(message_id, pb.STATUS_CODE_DUPLICATE_MESSAGE_ID,
                                f"message id {message_id} was used for another request",
                                f"报文编号{message_id}已用于其他请求")
    return pb.Response.FromString(stored_response)
