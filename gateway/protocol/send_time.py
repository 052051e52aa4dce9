"""The send_time rule: a request that books money must have been sent close to now, by the gateway's clock.

Without it a Settle captured on the wire could be sent again days later under a new message id and be booked
again. The request path asks `send_time_problem` only of a request that would book something new: a request under a
message id the ledger has recorded gets its recorded answer whatever its send_time (no money moves for it), so an
exact retry keeps working after the window. The time is an argument, as everywhere in this package.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.protocol.messages import pb

DEFAULT_SEND_TIME_WINDOW_S = 300.0
# The bodies that book money. A PreSettle books nothing; a QueryTransaction, a ReadCard or a QueryBalance only read.
CHECKED_BODIES = frozenset({"settle", "revoke", "reverse"})


@dataclass(frozen=True)
class SendTimeProblem:
    status: int
    detail_en: str
    detail_zh: str


def send_time_problem(request: pb.Request, now: float, window_s: float) -> SendTimeProblem | None:
    """Why `request` may not book anything new at `now` (POSIX seconds, the gateway's clock), or None."""
    if not request.HasField("send_time"):
        return SendTimeProblem(pb.STATUS_CODE_BAD_REQUEST, "send_time is required on Settle, Revoke and Reverse",
                               "结算、撤销和冲正报文须填写发送时间send_time")
    sent = request.send_time.seconds + request.send_time.nanos / 1e9
    skew = sent - now
    if abs(skew) <= window_s:
        return None
    where_en, where_zh = ("ahead of", "快") if skew > 0 else ("behind", "慢")
    return SendTimeProblem(
        pb.STATUS_CODE_SEND_TIME_OUT_OF_WINDOW,
        f"send_time is {abs(skew):.0f} s {where_en} the gateway's clock; at most {window_s:g} s is accepted",
        f"发送时间比网关时间{where_zh}{abs(skew):.0f}秒，允许相差{window_s:g}秒以内",
    )
