"""The audit trail: one info line per Settle, Revoke and Reverse answered, and per refusal of any request the service
answers, written from the answer itself where it leaves the service (gateway.serve.dispatch), so no path is missed.

A line names the message id, the terminal, the message type, the status by name, the amount in fen and the card
number masked to its last four characters; never a PIN, a credential or an ID number (a request is never read
here beyond its type, id and amount). An exact retry answered from the ledger's record is logged as a retry
(`retry: true`, "retry of ..."), not as a second settlement.
"""

from __future__ import annotations

from twisted.logger import LogLevel

from gateway.identity import mask_card
from gateway.ops.logs import RequestLogger, enabled
from gateway.protocol.messages import pb
from gateway.protocol.session import MAX_MESSAGE_ID_CHARS
from gateway.protocol.status import status_name
from gateway.serve.handlers import MAX_SETTLEMENT_ID_CHARS

log = RequestLogger(namespace="gateway.serve.audit")

# Logged whatever their status: these move money. Every other body is logged when refused.
MONEY_BODIES = frozenset({"settle", "revoke", "reverse"})


def amount_fen(request: pb.Request, response: pb.Response) -> int | None:
    """The money the answer moved, or the request asked for when refused; None for a message without an amount."""
    body = response.WhichOneof("body")
    if body == "settle":
        return int(response.settle.split.total_fen)
    if body == "pre_settle":
        return int(response.pre_settle.split.total_fen)
    if body == "revoke":
        return int(response.revoke.refunded.total_fen)
    if body == "reverse":
        return int(response.reverse.reversed.total_fen)
    asked = request.WhichOneof("body")
    if asked in ("settle", "pre_settle"):
        return int(getattr(request, asked).total_fen)
    return None


def card_number_of(response: pb.Response) -> str:
    """The card number the answer itself carries ("" when it carries none)."""
    body = response.WhichOneof("body")
    if body == "read_card":
        return str(response.read_card.card.card_number)
    if body in ("settle", "pre_settle", "query_balance"):
        return str(getattr(response, body).card_number)
    return ""


def audited(body: str, response: pb.Response | None) -> bool:
    """Whether an answer goes into the audit trail (an ApduResult's absent answer never does)."""
    if response is None or not enabled(LogLevel.info):
        return False
    return body in MONEY_BODIES or response.status != pb.STATUS_CODE_OK


def audit(request: pb.Request, body: str, response: pb.Response, *, terminal_id: str, session_id: str,
          card_number: str, retry: bool) -> None:
    """Log the audit line of `response` to `request` (`card_number`: the card read for it, when the answer has none)."""
    card = card_number_of(response) or card_number
    fields: dict[str, object] = {
        "message_id": request.message_id, "terminal_id": terminal_id, "session_id": session_id,
        "message_type": body, "status": status_name(response.status), "amount_fen": amount_fen(request, response),
        "card": mask_card(card) if card else None, "retry": retry,
    }
    text = "{message_type} {message_id} at {terminal_id}: {status}"
    if fields["amount_fen"] is not None:
        text += ", {amount_fen} fen"
    if card:
        text += ", card {card}"
    # The terminal's own strings are cut to the lengths the handlers accept: a refused one may be longer.
    settlement_id = response.settle.settlement_id or request.revoke.settlement_id[:MAX_SETTLEMENT_ID_CHARS]
    if settlement_id:
        fields["settlement_id"] = settlement_id
        text += ", settlement {settlement_id}"
    if body == "reverse":
        fields["original_message_id"] = request.reverse.original_message_id[:MAX_MESSAGE_ID_CHARS]
        text += ", of {original_message_id}"
        if response.HasField("reverse"):
            fields["outcome"] = pb.ReverseOutcome.Name(response.reverse.outcome)
            text += " ({outcome})"
    if retry:
        text = "retry of " + text + " (the recorded answer again; nothing done)"
    log.info(text, **fields)
