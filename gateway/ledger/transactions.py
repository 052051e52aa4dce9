"""A ledger transaction's row as the rest of the ledger reads it, written once: the split columns and the
`FundSplit` they hold, and which revoke or reversal undid a transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, Select, bindparam, select

from gateway.db.engine import MAX_IN_LIST_KEYS
from gateway.ledger.models import TransactionKind
from gateway.ledger.tables import TRANSACTIONS
from gateway.settlement.split import FundSplit

# FundSplit's fields -> the transaction's columns that record them.
SPLIT_COLUMNS = {
    "total_fen": "total_fen",
    "pooled_fund_fen": "pooled_fund_fen",
    "current_year_account_fen": "current_year_fen",
    "prior_years_account_fen": "prior_years_fen",
    "cash_fen": "cash_fen",
    "deductible_counted_fen": "deductible_counted_fen",
}
AMOUNT_COLUMNS = tuple(SPLIT_COLUMNS.values())
UNDOINGS = (TransactionKind.REVOKE.value, TransactionKind.REVERSAL.value)
CHUNK_REFS = MAX_IN_LIST_KEYS  # originals asked about in one statement


def split_columns(split: FundSplit, sign: int = 1) -> dict[str, int]:
    """The columns recording `split`: as decided for a settlement (sign 1), negated for its undoing (sign -1)."""
    if sign not in (1, -1):
        raise ValueError(f"a split is recorded as decided (1) or negated (-1), not times {sign}")
    return {column: sign * getattr(split, field) for field, column in SPLIT_COLUMNS.items()}


def split_amounts(split: FundSplit, sign: int = 1) -> tuple[int, ...]:
    """split_columns' values alone, in the order of AMOUNT_COLUMNS: a row as the writer binds it."""
    return tuple(split_columns(split, sign).values())


def split_of(row: RowMapping | Mapping[str, Any]) -> FundSplit:
    """The split a settlement's row (or its undoing's) records, as positive numbers: an undoing records it
    negated."""
    sign = -1 if row["total_fen"] < 0 else 1
    return FundSplit(**{field: sign * row[column] for field, column in SPLIT_COLUMNS.items()})


def negated_columns(row: RowMapping | Mapping[str, Any]) -> dict[str, int]:
    """The amount columns of the transaction that undoes `row`, any kind's: each of the row's negated. (A payout's
    columns are no FundSplit: a subsidy records only its total.)"""
    return {column: -row[column] for column in AMOUNT_COLUMNS}


@dataclass(frozen=True)
class Undoing:
    kind: str   # "revoke" or "reversal"
    ref: str    # the undoing transaction's own ref


_UNDOINGS = select(TRANSACTIONS.c.original_ref, TRANSACTIONS.c.kind, TRANSACTIONS.c.ref).where(
    TRANSACTIONS.c.kind.in_(UNDOINGS))
_UNDOINGS_OF = _UNDOINGS.where(TRANSACTIONS.c.original_ref.in_(bindparam("originals", expanding=True)))


def undone_by(conn: Connection, originals: Sequence[str] | Select[Any]) -> dict[str, Undoing]:
    """Which of `originals` (refs, or a statement selecting refs) a revoke or a reversal undid, and by which:
    original ref -> its undoing. A transaction is undone at most once (keyed "compensates:<ref>")."""
    if isinstance(originals, Select):
        return _undoings(conn.execute(_UNDOINGS.where(TRANSACTIONS.c.original_ref.in_(originals))))
    found: dict[str, Undoing] = {}
    refs = list(originals)
    for start in range(0, len(refs), CHUNK_REFS):
        found.update(_undoings(conn.execute(_UNDOINGS_OF, {"originals": refs[start : start + CHUNK_REFS]})))
    return found


def _undoings(rows: Any) -> dict[str, Undoing]:
    return {original: Undoing(kind, ref) for original, kind, ref in rows}


def rollover_key(year: int, person_id: int) -> str:
    """The dedupe key of a holder's rollover of `year`: it exists once the year's current-year balance moved."""
    return f"rollover:{year}:{person_id}"


def opening_key(person_id: int) -> str:
    """The dedupe key of a person's opening balances: posted once, the first time the ledger meets the person."""
    return f"opening:{person_id}"
