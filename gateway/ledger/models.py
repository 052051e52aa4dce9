"""The ledger's tables: accounts, append-only transactions and their entries, idempotency records.

Nothing here is updated or deleted in place except the cached `balance_fen` of an account and the
cached year-to-date totals, both of which `gateway ledger check` recomputes from the entries.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.base import Base

MAX_FORCED_REASON_CHARS = 500
MAX_USER_NAME_CHARS = 64   # who closed a day (and who reconciled it: gateway.finance.models)


class AccountKind(enum.StrEnum):
    PERSON_CURRENT_YEAR = "person_current_year"
    PERSON_PRIOR_YEARS = "person_prior_years"
    POOLED_FUND = "pooled_fund"                  # per insured city
    INSTITUTION_RECEIVABLE = "institution_receivable"  # what the fund owes an institution
    INSTITUTION_CASH = "institution_cash"        # cash an institution collected from persons
    PERSONS_CASH = "persons_cash"                # where persons' cash comes from (goes negative)
    CARD_BANK = "card_bank"                      # a card's bank (financial) account, for payouts
    OPENING = "opening"                          # counterpart of opening balances (goes negative)
    SUBSIDY_FUND = "subsidy_fund"                # source of burden-reduction subsidies


class TransactionKind(enum.StrEnum):
    OPENING = "opening"
    SETTLEMENT = "settlement"
    REVOKE = "revoke"
    REVERSAL = "reversal"
    ROLLOVER = "rollover"
    PAYOUT = "payout"


class RequestOutcome(enum.StrEnum):
    COMMITTED = "committed"    # the request's effect is in the ledger; `recorded_outcome` is its answer
    TOMBSTONE = "tombstone"    # reversed before it arrived: a late original is refused


class LedgerAccount(Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        CheckConstraint("NOT must_not_go_negative OR balance_fen >= 0", name="not_negative"),
    )

    # e.g. "person:3141592653589793238:current_year" (the registry's person id, never the ID number), "fund:3302",
    # "institution:H33020300001:receivable"
    code: Mapped[str] = mapped_column(String(80), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(32), index=True)
    must_not_go_negative: Mapped[bool] = mapped_column(Boolean)
    # Cached: always the sum of the account's entries.
    balance_fen: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The public id: a settlement id, revoke id, reversal id.
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    # What may exist only once: "compensates:<ref>", "rollover:<year>:<person id>", "opening:<person id>", a payout
    # key ("payout:<batch>:<person id>").
    dedupe_key: Mapped[str | None] = mapped_column(String(96), unique=True, nullable=True)
    original_ref: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    terminal_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    institution_code: Mapped[str | None] = mapped_column(String(12), nullable=True, index=True)
    # The holder: the registry's person id (persons.person_id). The ID number is in the registry alone; finance
    # joins it from there where the center's statement wants it.
    person_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    card_number: Mapped[str | None] = mapped_column(String(9), nullable=True)
    medical_type: Mapped[int | None] = mapped_column(Integer, nullable=True)
    insurance_year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    business_date: Mapped[date] = mapped_column(Date, index=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    policy_version: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The split as decided (negated in a compensation), so that checks and exports need no entries.
    total_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    pooled_fund_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    current_year_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    prior_years_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    cash_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    deductible_counted_fen: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_ref: Mapped[str] = mapped_column(ForeignKey("ledger_transactions.ref"), index=True)
    account_code: Mapped[str] = mapped_column(ForeignKey("ledger_accounts.code"), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)


class RequestRecord(Base):
    """The idempotency key (terminal id, message id) and the one outcome it has."""

    __tablename__ = "request_records"

    terminal_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[str] = mapped_column(String(24))
    # SHA-256 of the request's content, PIN excluded (a hash of six digits would give the PIN away).
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    transaction_ref: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The committed request's outcome as canonical JSON (gateway.ledger.outcomes.recorded_form): a retry's answer.
    recorded_outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class YearTotal(Base):
    """Cached year-to-date totals per person (by the registry's person id); always what the year's transactions add
    up to."""

    __tablename__ = "year_totals"

    person_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    insurance_year: Mapped[int] = mapped_column(Integer, primary_key=True)
    deductible_counted_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    pooled_fund_paid_fen: Mapped[int] = mapped_column(BigInteger, default=0)


class ClosedDay(Base):
    """A business day finance has reconciled and closed: nothing more is booked on it."""

    __tablename__ = "closed_days"

    business_date: Mapped[date] = mapped_column(Date, primary_key=True)
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # What the day held when it was closed, so that a later change would be evident.
    transactions: Mapped[int] = mapped_column(Integer)
    total_fen: Mapped[int] = mapped_column(BigInteger)
    closed_by: Mapped[str] = mapped_column(String(MAX_USER_NAME_CHARS))
    # Why it may close: the reconciliation that matched (finance's reconciliations.id; no foreign key, so that the
    # ledger's tables stand without finance's), or the reason given for closing it without one. Both NULL only
    # for days closed before closing required either (migration 0008).
    reconciliation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    forced_reason: Mapped[str | None] = mapped_column(String(MAX_FORCED_REASON_CHARS), nullable=True)
