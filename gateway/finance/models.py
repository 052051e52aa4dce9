"""Finance's own table: every reconciliation `gateway reconcile` completed, which `gateway day close` requires
(a whole-day one that matched the day as it still is) and `gateway day list` shows.

The migrations in gateway/db/migrations create exactly this (tests/test_database.py checks).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import cast

from sqlalchemy import BigInteger, Boolean, Date, DateTime, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.base import Base
from gateway.ledger.models import MAX_USER_NAME_CHARS

MAX_STATEMENT_PATH_CHARS = 1000


class ReconciliationRun(Base):
    __tablename__ = "reconciliations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    business_date: Mapped[date] = mapped_column(Date, index=True)
    # NULL: the whole day. A run for one institution is recorded too, but does not let the day close.
    institution_code: Mapped[str | None] = mapped_column(String(12), nullable=True)
    reconciled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reconciled_by: Mapped[str] = mapped_column(String(MAX_USER_NAME_CHARS))
    matched: Mapped[bool] = mapped_column(Boolean)
    differences: Mapped[int] = mapped_column(Integer)
    # What the ledger's day held then: a close compares it with the day as it is, so a day that changed since
    # (it was reconciled before it was over) must be reconciled again.
    ledger_rows: Mapped[int] = mapped_column(Integer)
    ledger_total_fen: Mapped[int] = mapped_column(BigInteger)
    statement_rows: Mapped[int] = mapped_column(Integer)
    statement_path: Mapped[str] = mapped_column(String(MAX_STATEMENT_PATH_CHARS))
    statement_sha256: Mapped[str] = mapped_column(String(64))


RECONCILIATIONS = cast(Table, ReconciliationRun.__table__)
