"""`gateway ledger check`: the invariants the ledger must always satisfy, verified from the entries up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, case, func, or_, select

from gateway.ledger.models import (
    AccountKind,
    RequestOutcome,
    TransactionKind,
)
from gateway.ledger.tables import ACCOUNTS, ENTRIES, RECORDS, TRANSACTIONS, YEAR_TOTALS

MAX_LISTED = 20  # problems listed per check; the count says how many there are


@dataclass
class CheckReport:
    checks: list[tuple[str, int, list[str]]] = field(default_factory=list)
    transactions: int = 0
    entries: int = 0
    accounts: int = 0

    @property
    def ok(self) -> bool:
        return all(count == 0 for _, count, _ in self.checks)

    def add(self, name: str, problems: list[str]) -> None:
        self.checks.append((name, len(problems), problems[:MAX_LISTED]))

    def render(self) -> str:
        lines = [f"ledger: {self.transactions} transactions, {self.entries} entries, {self.accounts} accounts"]
        for name, count, examples in self.checks:
            lines.append(f"{'ok  ' if count == 0 else 'FAIL'} {name}" + (f": {count} problem(s)" if count else ""))
            lines.extend(f"       {example}" for example in examples)
            if count > len(examples):
                lines.append(f"       ... and {count - len(examples)} more")
        lines.append("all invariants hold" if self.ok else "THE LEDGER IS INCONSISTENT")
        return "\n".join(lines)


def check_ledger(engine: Engine) -> CheckReport:
    report = CheckReport()
    with engine.connect() as conn:
        report.transactions = conn.scalar(select(func.count()).select_from(TRANSACTIONS)) or 0
        report.entries = conn.scalar(select(func.count()).select_from(ENTRIES)) or 0
        report.accounts = conn.scalar(select(func.count()).select_from(ACCOUNTS)) or 0

        unbalanced = conn.execute(select(ENTRIES.c.transaction_ref, func.sum(ENTRIES.c.amount_fen))
                                  .group_by(ENTRIES.c.transaction_ref).having(func.sum(ENTRIES.c.amount_fen) != 0))
        report.add("every transaction sums to zero",
                   [f"{ref}: entries sum to {total} fen" for ref, total in unbalanced])

        empty = conn.execute(select(TRANSACTIONS.c.ref).where(~TRANSACTIONS.c.ref.in_(
            select(ENTRIES.c.transaction_ref)), TRANSACTIONS.c.total_fen != 0))
        report.add("every transaction with an amount has entries", [f"{ref} has no entries" for (ref,) in empty])

        sums = (select(ENTRIES.c.account_code, func.sum(ENTRIES.c.amount_fen).label("total"))
                .group_by(ENTRIES.c.account_code).subquery())
        drift = conn.execute(select(ACCOUNTS.c.code, ACCOUNTS.c.balance_fen, func.coalesce(sums.c.total, 0))
                             .outerjoin(sums, sums.c.account_code == ACCOUNTS.c.code)
                             .where(ACCOUNTS.c.balance_fen != func.coalesce(sums.c.total, 0)))
        report.add("cached balances equal the sum of their entries",
                   [f"{code}: cached {cached} fen, entries {total} fen" for code, cached, total in drift])

        negative = conn.execute(select(ACCOUNTS.c.code, ACCOUNTS.c.balance_fen).where(
            ACCOUNTS.c.must_not_go_negative, ACCOUNTS.c.balance_fen < 0))
        report.add("no personal account is negative", [f"{code}: {balance} fen" for code, balance in negative])

        report.add("every settlement's entries equal its recorded split", _split_mismatches(conn))
        report.add("year-to-date totals equal the year's settlements", _year_total_mismatches(conn))
        report.add("each request key has one outcome", _key_problems(conn))
    return report


def _by_kind(kind: AccountKind) -> Any:
    return func.sum(case((ACCOUNTS.c.kind == kind.value, ENTRIES.c.amount_fen), else_=0))


def _settlement_or_its_undoing() -> Any:
    """Settlements, and revokes and reversals of settlements: what has a split, year-to-date totals and a
    request key. A payout taken back is also a reversal, but of a payout: it has none of these."""
    t = TRANSACTIONS.c
    originals = TRANSACTIONS.alias("originals")  # an alias, so the subquery is not correlated to the outer table
    settlements = select(originals.c.ref).where(originals.c.kind == TransactionKind.SETTLEMENT.value)
    return or_(t.kind == TransactionKind.SETTLEMENT.value,
               and_(t.kind.in_([TransactionKind.REVOKE.value, TransactionKind.REVERSAL.value]),
                    t.original_ref.in_(settlements)))


def _split_mismatches(conn: Any) -> list[str]:
    per_transaction = (
        select(
            ENTRIES.c.transaction_ref.label("ref"),
            _by_kind(AccountKind.PERSON_CURRENT_YEAR).label("current"),
            _by_kind(AccountKind.PERSON_PRIOR_YEARS).label("prior"),
            _by_kind(AccountKind.POOLED_FUND).label("fund"),
            _by_kind(AccountKind.PERSONS_CASH).label("cash"),
            _by_kind(AccountKind.INSTITUTION_RECEIVABLE).label("receivable"),
            _by_kind(AccountKind.INSTITUTION_CASH).label("collected"),
        )
        .join(ACCOUNTS, ACCOUNTS.c.code == ENTRIES.c.account_code)
        .group_by(ENTRIES.c.transaction_ref)
        .subquery()
    )
    t = TRANSACTIONS.c
    rows = conn.execute(
        select(t.ref, t.current_year_fen, t.prior_years_fen, t.pooled_fund_fen, t.cash_fen, t.total_fen,
               per_transaction.c.current, per_transaction.c.prior, per_transaction.c.fund, per_transaction.c.cash,
               per_transaction.c.receivable, per_transaction.c.collected)
        .join(per_transaction, per_transaction.c.ref == t.ref)
        .where(_settlement_or_its_undoing())
    )
    problems = []
    for row in rows:
        expected = (-row.current_year_fen, -row.prior_years_fen, -row.pooled_fund_fen, -row.cash_fen,
                    row.current_year_fen + row.prior_years_fen + row.pooled_fund_fen, row.cash_fen)
        actual = (row.current, row.prior, row.fund, row.cash, row.receivable, row.collected)
        parts = row.current_year_fen + row.prior_years_fen + row.pooled_fund_fen + row.cash_fen
        if expected != actual or parts != row.total_fen:
            problems.append(f"{row.ref}: recorded split {expected} (total {row.total_fen}), entries {actual}")
    return problems


def _year_total_mismatches(conn: Any) -> list[str]:
    t = TRANSACTIONS.c
    sums = conn.execute(
        select(t.person_id, t.insurance_year, func.sum(t.deductible_counted_fen), func.sum(t.pooled_fund_fen))
        .where(_settlement_or_its_undoing())
        .group_by(t.person_id, t.insurance_year))
    expected = {(person, year): (int(d or 0), int(p or 0)) for person, year, d, p in sums}
    cached = {(r.person_id, r.insurance_year): (r.deductible_counted_fen, r.pooled_fund_paid_fen)
              for r in conn.execute(select(YEAR_TOTALS))}
    problems = []
    for key in sorted(set(expected) | set(cached), key=str):
        if expected.get(key, (0, 0)) != cached.get(key, (0, 0)):
            problems.append(f"person {key[0]} {key[1]}: cached {cached.get(key, (0, 0))}, "
                            f"transactions {expected.get(key, (0, 0))} (deductible, pooled fund)")
    return problems


def _key_problems(conn: Any) -> list[str]:
    t, r = TRANSACTIONS.c, RECORDS.c
    problems = []
    twice = conn.execute(select(t.terminal_id, t.message_id, func.count()).where(
        t.kind == TransactionKind.SETTLEMENT.value).group_by(t.terminal_id, t.message_id).having(func.count() > 1))
    problems += [f"{terminal}/{message}: {count} settlements under one key" for terminal, message, count in twice]
    unrecorded = conn.execute(select(t.ref, t.terminal_id, t.message_id).outerjoin(
        RECORDS, and_(r.terminal_id == t.terminal_id, r.message_id == t.message_id)).where(
        _settlement_or_its_undoing(), r.message_id.is_(None)))
    problems += [f"{ref} ({terminal}/{message}) has no request record" for ref, terminal, message in unrecorded]
    dangling = conn.execute(select(r.terminal_id, r.message_id, r.transaction_ref).outerjoin(
        TRANSACTIONS, t.ref == r.transaction_ref).where(
        r.outcome == RequestOutcome.COMMITTED.value, r.transaction_ref.is_not(None), t.ref.is_(None)))
    problems += [f"{terminal}/{message} points at missing {ref}" for terminal, message, ref in dangling]
    double = conn.execute(select(t.original_ref, func.count()).where(
        t.kind.in_([TransactionKind.REVOKE.value, TransactionKind.REVERSAL.value])).group_by(t.original_ref)
        .having(func.count() > 1))
    problems += [f"{ref} undone {count} times" for ref, count in double]
    return problems
