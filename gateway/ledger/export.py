"""A business day's settlements, revokes and reversals, one row each: as our CSV or JSON lines, and as the rows
finance writes in the center's statement format (gateway.finance.statement) and reconciles."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import date
from typing import IO, Any

from sqlalchemy import ColumnElement, Connection, Engine, select

from gateway.ledger.models import TransactionKind
from gateway.ledger.tables import TRANSACTIONS
from gateway.ledger.transactions import AMOUNT_COLUMNS, undone_by
from gateway.money import format_fen
from gateway.settlement.calendar import beijing_wall_clock

AMOUNTS = AMOUNT_COLUMNS
COLUMNS = ("business_date", "recorded_at", "kind", "status", "settlement_id", "original_settlement_id",
           "terminal_id", "message_id", "institution_code", "card_number", "medical_type", "policy_version",
           *AMOUNTS, "total_yuan")
KINDS = (TransactionKind.SETTLEMENT.value, TransactionKind.REVOKE.value, TransactionKind.REVERSAL.value)
UNDONE_STATUS = {TransactionKind.REVOKE.value: "revoked", TransactionKind.REVERSAL.value: "reversed"}


def of_the_day(day: date) -> list[ColumnElement[bool]]:
    """A business day's settlements, revokes and reversals: what the day's export, reconciliation and day close
    count. They carry an institution; a payout's reversal (finance's own) does not."""
    return [TRANSACTIONS.c.business_date == day, *_counted()]


def of_the_days(first: date, last: date) -> list[ColumnElement[bool]]:
    """What of_the_day counts, of every day from `first` to `last`."""
    return [TRANSACTIONS.c.business_date.between(first, last), *_counted()]


def _counted() -> list[ColumnElement[bool]]:
    t = TRANSACTIONS.c
    return [t.kind.in_(KINDS), t.institution_code.is_not(None)]


def undone_on(conn: Connection, day: date) -> dict[str, str]:
    """The day's settlements that were undone (at any date since): their ref -> "revoke" or "reversal"."""
    t = TRANSACTIONS.c
    return {ref: undoing.kind for ref, undoing in undone_by(conn, select(t.ref).where(t.business_date == day)).items()}


def status_of(kind: str, undone_by: str | None) -> str:
    """"settled", "revoked" or "reversed" for a settlement; a revoke or a reversal is its own kind."""
    if kind != TransactionKind.SETTLEMENT.value:
        return kind
    return UNDONE_STATUS.get(undone_by or "", "settled")


def export_rows(engine: Engine, day: date) -> Iterator[dict[str, Any]]:
    t = TRANSACTIONS.c
    with engine.connect() as conn:
        undone = undone_on(conn, day)
        rows = conn.execute(select(TRANSACTIONS).where(*of_the_day(day)).order_by(t.recorded_at, t.id)).mappings()
        for row in rows:
            status = status_of(row["kind"], undone.get(row["ref"]))
            yield {
                "business_date": row["business_date"].isoformat(),
                "recorded_at": row["recorded_at"].isoformat() if row["recorded_at"] else "",
                "kind": row["kind"], "status": status, "settlement_id": row["ref"],
                "original_settlement_id": row["original_ref"] or "", "terminal_id": row["terminal_id"] or "",
                "message_id": row["message_id"] or "", "institution_code": row["institution_code"] or "",
                "card_number": row["card_number"] or "", "medical_type": row["medical_type"] or "",
                "policy_version": row["policy_version"] or "",
                **{name: row[name] for name in AMOUNTS}, "total_yuan": format_fen(row["total_fen"]),
                # For the statement format only (not CSV columns). The holder by the registry's person id: the
                # statement's ID number is joined from the registry by finance (gateway.finance.statement).
                "person_id": row["person_id"],
                "recorded_at_beijing": beijing_wall_clock(row["recorded_at"]).strftime("%Y-%m-%d %H:%M:%S")
                if row["recorded_at"] else "",
            }


def write_export(engine: Engine, day: date, out: IO[str], fmt: str = "csv") -> int:
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in export_rows(engine, day):
            writer.writerow(row)
            count += 1
    elif fmt == "jsonl":
        for row in export_rows(engine, day):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    else:
        raise ValueError(f"unknown export format {fmt!r} (csv or jsonl; the center's statement: gateway.finance)")
    return count
