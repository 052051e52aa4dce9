"""What the ledger holds under a request key (terminal id, message id), and the answer a request under a key it
holds gets: one rule, for the writer (inside its transaction) and for the request path (before it touches the
card), so both answer a retry alike."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gateway.ledger.models import RequestOutcome
from gateway.ledger.outcomes import Committed, Outcome, Refused, from_recorded_form
from gateway.protocol.status import StatusCode


@dataclass(frozen=True)
class Recorded:
    tombstone: bool                # a Reverse found the key before its request arrived
    content_hash: str | None       # of the committed request's content, PIN excluded; None for a tombstone
    outcome: Committed | None      # the committed request's outcome; None for a tombstone

    @classmethod
    def from_row(cls, row: Any) -> Recorded:
        """From a `request_records` row (a mapping with its columns `outcome`, `content_hash`, `recorded_outcome`)."""
        text = row["recorded_outcome"]
        return cls(row["outcome"] == RequestOutcome.TOMBSTONE.value, row["content_hash"],
                   from_recorded_form(text) if text is not None else None)


def repeated(message_id: str, recorded: Recorded, content_hash: str) -> Outcome:
    """The answer to a request under a key the ledger holds: the committed outcome again for the same content;
    for other content, or after a tombstone, a refusal. Nothing is done either way."""
    if recorded.tombstone:
        return Refused(StatusCode.STATUS_CODE_MESSAGE_ID_REVERSED, "this message id was reversed before it arrived",
                       "该报文编号已被冲正")
    if recorded.content_hash != content_hash or recorded.outcome is None:
        return Refused(StatusCode.STATUS_CODE_DUPLICATE_MESSAGE_ID,
                       f"message id {message_id} was used for another request", f"报文编号{message_id}已用于其他请求")
    return replace(recorded.outcome, repeated=True)
