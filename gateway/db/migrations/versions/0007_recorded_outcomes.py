"""Request records keep the committed request's outcome as canonical JSON instead of the protobuf answer sent.

The ledger now answers with outcomes (gateway.ledger.outcomes) and knows nothing of the wire; the request path
builds the answer from the outcome. Every stored answer is converted once, here, so the ledger has one stored
form and no reader of protobuf. Each row is checked as it is converted: the answer rebuilt from its JSON must be
the stored answer, field for field, or the upgrade stops (in its transaction: nothing is changed) naming the row.

The conversion is frozen here, as migrations are: it writes the JSON that gateway.ledger.outcomes reads as of this
revision (tests/test_recorded_outcomes.py checks that a row converted here is answered as before), and it does not
change when the application's code does.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from google.protobuf.message import DecodeError

from gateway.protocol.messages import pb

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHUNK_ROWS = 20_000  # rows read, converted and written back at a time

SPLIT_FIELDS = ("total_fen", "pooled_fund_fen", "current_year_account_fen", "prior_years_account_fen", "cash_fen",
                "deductible_counted_fen")
BALANCE_FIELDS = ("insurance_year", "current_year_account_fen", "prior_years_account_fen",
                  "deductible_counted_ytd_fen", "deductible_fen", "pooled_fund_paid_ytd_fen", "pooled_fund_cap_fen")
REVERSE_RESULTS = {pb.REVERSE_OUTCOME_REVERSED: "reversed", pb.REVERSE_OUTCOME_NEVER_ARRIVED: "never_arrived",
                   pb.REVERSE_OUTCOME_ALREADY_REVERSED: "already_reversed"}
REVERSE_OUTCOMES = {name: number for number, name in REVERSE_RESULTS.items()}

RECORDS = sa.table("request_records", sa.column("terminal_id", sa.String), sa.column("message_id", sa.String),
                   sa.column("response", sa.LargeBinary), sa.column("recorded_outcome", sa.Text))


class UnconvertibleRecord(RuntimeError):
    """A stored answer that the recorded form would not reproduce exactly."""


def upgrade() -> None:
    with op.batch_alter_table("request_records") as batch:
        batch.add_column(sa.Column("recorded_outcome", sa.Text(), nullable=True))
    _convert(RECORDS.c.response, "recorded_outcome", _recorded_form_of)
    with op.batch_alter_table("request_records") as batch:
        batch.drop_column("response")


def downgrade() -> None:
    with op.batch_alter_table("request_records") as batch:
        batch.add_column(sa.Column("response", sa.LargeBinary(), nullable=True))
    _convert(RECORDS.c.recorded_outcome, "response", _answer_of)
    with op.batch_alter_table("request_records") as batch:
        batch.drop_column("recorded_outcome")


def _convert(source: sa.ColumnElement[Any], target: str, convert: Callable[[str, str, Any], Any]) -> None:
    """Each row holding `source` gets `convert(terminal id, message id, source)` in the column `target`; read by
    key in chunks, so that neither side holds more than a chunk of a ledger of millions of records. The rows go
    back through the driver's executemany as plain tuples: with ten million records, what SQLAlchemy would do
    per row costs more than the conversion."""
    bind = op.get_bind()
    chunk = (sa.select(RECORDS.c.terminal_id, RECORDS.c.message_id, source)
             .where(source.is_not(None),
                    sa.tuple_(RECORDS.c.terminal_id, RECORDS.c.message_id)
                    > sa.tuple_(sa.bindparam("after_terminal"), sa.bindparam("after_message")))
             .order_by(RECORDS.c.terminal_id, RECORDS.c.message_id).limit(CHUNK_ROWS))
    mark = "?" if bind.dialect.paramstyle == "qmark" else "%s"
    update = f"UPDATE request_records SET {target} = {mark} WHERE terminal_id = {mark} AND message_id = {mark}"
    after = ("", "")  # before every key: terminal and message ids are never empty
    while rows := bind.execute(chunk, {"after_terminal": after[0], "after_message": after[1]}).all():
        bind.exec_driver_sql(update, [(convert(terminal, message, value), terminal, message)
                                      for terminal, message, value in rows])
        after = (rows[-1][0], rows[-1][1])


# Protobuf answer -> recorded form ---------------------------------------------------------------------


def _recorded_form_of(terminal_id: str, message_id: str, stored: bytes) -> str:
    try:
        return _checked_form(message_id, pb.Response.FromString(stored))
    except (ValueError, DecodeError) as exc:
        raise UnconvertibleRecord(f"request record {terminal_id}/{message_id}: {exc}; nothing was migrated") from exc


def _checked_form(message_id: str, answer: pb.Response) -> str:
    if answer.status != pb.STATUS_CODE_OK or answer.message_id != message_id:
        raise ValueError("the stored answer is not an OK answer to this message")
    body = answer.WhichOneof("body")
    value: dict[str, Any]
    if body == "settle":
        result = answer.settle
        value = {"kind": "settled", "settlement_id": result.settlement_id, "card_number": result.card_number,
                 "split": _split_of(result.split), "settled_at": _instant_of(result.settled_at),
                 "policy_version": result.policy_version,
                 "balances_after": {name: getattr(result.balances_after, name) for name in BALANCE_FIELDS}}
    elif body == "revoke":
        value = {"kind": "revoked", "settlement_id": answer.revoke.settlement_id,
                 "revoke_id": answer.revoke.revoke_id, "refunded": _split_of(answer.revoke.refunded)}
    elif body == "reverse" and answer.reverse.outcome in REVERSE_RESULTS:
        reverse = answer.reverse
        value = {"kind": "reversed", "original_message_id": reverse.original_message_id,
                 "result": REVERSE_RESULTS[reverse.outcome],
                 "reversed": _split_of(reverse.reversed) if reverse.HasField("reversed") else None}
    else:
        raise ValueError(f"a stored answer with body {body!r}")
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    rebuilt = pb.Response()
    rebuilt.CopyFrom(answer)
    rebuilt.ClearField(body)  # type: ignore[arg-type]
    _fill_body(rebuilt, json.loads(text))
    if rebuilt != answer:
        raise ValueError(f"the stored answer is not reproduced by {text}")
    return text


def _split_of(message: pb.FundSplit) -> dict[str, int]:
    if message.fund_pay_fen != message.pooled_fund_fen:
        raise ValueError(f"a split whose fund_pay_fen is not its pooled_fund_fen: {message}")
    return {name: getattr(message, name) for name in SPLIT_FIELDS}


def _instant_of(stamp: Any) -> str:
    if stamp.nanos % 1000:
        raise ValueError(f"a time finer than a microsecond: {stamp}")
    moment = datetime.fromtimestamp(stamp.seconds, UTC).replace(microsecond=stamp.nanos // 1000)
    return moment.isoformat(timespec="microseconds")


# Recorded form -> protobuf answer (the downgrade, and the check of each converted row) ------------------------


def _answer_of(terminal_id: str, message_id: str, text: str) -> bytes:
    """The answer as the gateway of revision 0006 stored it: an OK with its texts, and the body."""
    answer = pb.Response(message_id=message_id, status=pb.STATUS_CODE_OK, message_en="OK", message_zh="成功")
    _fill_body(answer, json.loads(text))
    return answer.SerializeToString()


def _fill_body(answer: pb.Response, value: dict[str, Any]) -> None:
    kind = value["kind"]
    if kind == "settled":
        result = answer.settle
        result.settlement_id = value["settlement_id"]
        result.card_number = value["card_number"]
        _fill_split(result.split, value["split"])
        for name in BALANCE_FIELDS:
            setattr(result.balances_after, name, value["balances_after"][name])
        result.settled_at.FromDatetime(datetime.fromisoformat(value["settled_at"]))
        result.policy_version = value["policy_version"]
    elif kind == "revoked":
        answer.revoke.settlement_id = value["settlement_id"]
        answer.revoke.revoke_id = value["revoke_id"]
        _fill_split(answer.revoke.refunded, value["refunded"])
    else:
        answer.reverse.original_message_id = value["original_message_id"]
        answer.reverse.outcome = REVERSE_OUTCOMES[value["result"]]  # type: ignore[assignment]
        if value["reversed"] is not None:
            _fill_split(answer.reverse.reversed, value["reversed"])
        else:
            answer.reverse.SetInParent()


def _fill_split(message: pb.FundSplit, split: dict[str, int]) -> None:
    for name in SPLIT_FIELDS:
        setattr(message, name, split[name])
    message.fund_pay_fen = split["pooled_fund_fen"]
