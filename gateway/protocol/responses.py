"""Building Response messages with the catalogue's clerk-facing texts."""

from __future__ import annotations

from gateway.protocol.messages import pb
from gateway.protocol.status import status_text


def make_response(
    message_id: str,
    status: int,
    *,
    detail_en: str | None = None,
    detail_zh: str | None = None,
) -> pb.Response:
    """A Response with the status's default texts, followed by an optional detail sentence.

    The detail must never carry a PIN; ID numbers in it must already be masked.
    """
    text = status_text(status)
    message_en = text.en if not detail_en else f"{text.en} ({detail_en})"
    message_zh = text.zh if not detail_zh else f"{text.zh}（{detail_zh}）"
    return pb.Response(
        message_id=message_id, status=status, message_en=message_en, message_zh=message_zh  # type: ignore[arg-type]
    )
