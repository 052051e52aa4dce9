"""`gateway simulate --verify OUTCOMES --db URL`: the terminals' record against the ledger.

Every settlement a terminal saw OK (or learned was committed, after a lost connection) is in the ledger exactly
once with the same amounts; every one revoked or reversed is undone; a reversal that found nothing left nothing
behind; the ledger holds no settlement under a message id of these runs that no terminal sent; and none still in
force that its terminal was told was refused, or never found out about.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, or_, select

from gateway.ledger.tables import TRANSACTIONS

AMOUNT_COLUMNS = {"total_fen": "total_fen", "pooled_fund_fen": "pooled_fund_fen",
                  "current_year_account_fen": "current_year_fen", "prior_years_account_fen": "prior_years_fen",
                  "cash_fen": "cash_fen", "deductible_counted_fen": "deductible_counted_fen"}
MAX_LISTED = 50


@dataclass
class Verification:
    outcomes: int = 0
    settlements_checked: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def render(self) -> str:
        lines = [f"verified {self.outcomes} outcomes; {self.settlements_checked} OK settlements checked against "
                 "the ledger"]
        lines.extend(f"  DIFFERENCE {d}" for d in self.differences[:MAX_LISTED])
        if len(self.differences) > MAX_LISTED:
            lines.append(f"  ... and {len(self.differences) - MAX_LISTED} more")
        lines.append("the ledger agrees with the terminals" if self.ok else
                     f"{len(self.differences)} difference(s) between the terminals and the ledger")
        return "\n".join(lines)


def read_outcomes(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path} line {number}: not JSON: {exc}") from exc
    return records


def verify(engine: Engine, outcomes: Iterable[dict[str, Any]]) -> Verification:
    result = Verification()
    records = list(outcomes)
    result.outcomes = len(records)
    runs = sorted({r["run"] for r in records})
    sent = {(r["terminal"], r["message_id"]) for r in records if r["body"] == "settle"}
    with engine.connect() as conn:
        rows = conn.execute(select(TRANSACTIONS).where(
            or_(*[TRANSACTIONS.c.message_id.like(f"{run}%") for run in runs]) if runs else TRANSACTIONS.c.id < 0,
        )).mappings().all()
        by_key: dict[tuple[str, str], list[Any]] = {}
        undone: dict[str, str] = {}
        for row in rows:
            if row["kind"] == "settlement":
                by_key.setdefault((row["terminal_id"], row["message_id"]), []).append(row)
            elif row["kind"] in ("revoke", "reversal") and row["original_ref"]:
                undone[row["original_ref"]] = row["kind"]
        originals = {r["original_ref"] for r in rows if r["kind"] in ("revoke", "reversal") and r["original_ref"]}
        missing_refs = originals - {r["ref"] for r in rows}
        if missing_refs:
            wanted = select(TRANSACTIONS).where(TRANSACTIONS.c.ref.in_(sorted(missing_refs)))
            for row in conn.execute(wanted).mappings():
                by_key.setdefault((row["terminal_id"], row["message_id"]), []).append(row)
        # Undoings of this run's settlements, whatever message id the undoing had.
        refs = [row["ref"] for rows_ in by_key.values() for row in rows_]
        if refs:
            for original_ref, kind in conn.execute(select(TRANSACTIONS.c.original_ref, TRANSACTIONS.c.kind).where(
                    TRANSACTIONS.c.original_ref.in_(refs), TRANSACTIONS.c.kind.in_(["revoke", "reversal"]))):
                undone[original_ref] = kind

    for record in records:
        key = (record["terminal"], record["message_id"])
        found = by_key.get(key, [])
        if record["body"] == "settle" and record["status"] == "STATUS_CODE_OK":
            result.settlements_checked += 1
            if len(found) != 1:
                result.differences.append(f"{key[0]}/{key[1]}: answered OK, in the ledger {len(found)} times")
                continue
            row = found[0]
            if row["ref"] != record.get("settlement_id"):
                result.differences.append(f"{key[0]}/{key[1]}: settlement id {record.get('settlement_id')} answered, "
                                          f"{row['ref']} in the ledger")
            for name, column in AMOUNT_COLUMNS.items():
                if record.get("amounts", {}).get(name) != row[column]:
                    result.differences.append(f"{key[0]}/{key[1]}: {name} answered "
                                              f"{record.get('amounts', {}).get(name)}, ledger {row[column]}")
        elif record["body"] == "revoke" and record["status"] == "STATUS_CODE_OK":
            if undone.get(record["revoked_settlement_id"]) != "revoke":
                result.differences.append(f"{record['revoked_settlement_id']}: revoked OK, not revoked in the ledger")
        elif record["body"] == "reverse" and record["status"] == "STATUS_CODE_OK":
            target = by_key.get((record["terminal"], record["original_message_id"]), [])
            live = [row for row in target if undone.get(row["ref"]) is None]
            if live:
                result.differences.append(f"{record['terminal']}/{record['original_message_id']}: reversed "
                                          f"({record.get('reverse_outcome')}) but still settled as {live[0]['ref']}")
    settled_ok = {(r["terminal"], r["message_id"]) for r in records
                  if r["body"] == "settle" and r["status"] == "STATUS_CODE_OK"}
    reversed_ok = {(r["terminal"], r["original_message_id"]) for r in records
                   if r["body"] == "reverse" and r["status"] == "STATUS_CODE_OK"}
    for key, found in by_key.items():
        if key not in sent:
            result.differences.append(f"{key[0]}/{key[1]}: in the ledger ({found[0]['ref']}) but no terminal sent it")
        elif len(found) > 1:
            result.differences.append(f"{key[0]}/{key[1]}: {len(found)} settlements under one key")
        elif key not in settled_ok and key not in reversed_ok and undone.get(found[0]["ref"]) is None:
            told = sorted({r["status"] for r in records if r["body"] == "settle"
                           and (r["terminal"], r["message_id"]) == key})
            result.differences.append(f"{key[0]}/{key[1]}: in force in the ledger ({found[0]['ref']}) but its "
                                      f"terminal has it as {', '.join(told)}")
    return result
