"""`gateway payout run | reconcile`: batch payouts into cards' bank accounts, and the bank's return file.

Money flows into a card's bank (financial) account (DESIGN.md 3.1 item 8): in May the prior-years account
pays the previous year's 2% personal contribution (`contribution`), in July the fund pays the
burden-reduction subsidy (`subsidy`), and the pooled fund pays its share of manual reimbursements
(`reimbursement`). The insurance center sends the amounts; finance runs the batch, sends the bank the
payout file, and reconciles the bank's return file against the ledger.

Each person is one balanced `payout` transaction keyed "payout:<batch>:<person id>" (the registry's person id,
the ledger's key of the person), so running a batch again changes nothing. Persons are paid in chunks, each chunk
one database transaction with the persons' accounts locked, as the year-end rollover does. The payout file is
written from the ledger, not from the run, so the file of a batch run twice (or resumed after a crash) is the whole
batch, numbered the same.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from gateway.db.engine import IMMEDIATE_OPTION, MAX_IN_LIST_KEYS
from gateway.finance.bank_files import (
    AmountRow,
    BankLine,
    PayoutError,
    PayoutRejected,
    ReturnRow,
)
from gateway.identity import mask_id
from gateway.ledger import accounts
from gateway.ledger.accounts import AccountSpec
from gateway.ledger.batch import new_ref, open_persons
from gateway.ledger.models import (
    AccountKind,
    TransactionKind,
)
from gateway.ledger.postings import Posting, compensation_postings
from gateway.ledger.sql import add_to_balances, for_update, insert_ignore, locked_balances, open_accounts, post_once
from gateway.ledger.tables import ACCOUNTS, CLOSED_DAYS, ENTRIES, TRANSACTIONS
from gateway.ledger.transactions import negated_columns, undone_by
from gateway.money import format_fen
from gateway.registry.cells import RowError
from gateway.registry.tables import CARDS, PERSONS
from gateway.settlement.calendar import beijing_today
from gateway.settlement.facts import CardKind, CardStatus

CHUNK_PERSONS = MAX_IN_LIST_KEYS  # persons per transaction and per look-up
# No colon, so "payout:<batch>:<person id>" splits one way only; short enough for the 96-character dedupe key.
BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
REVERSAL_PREFIX = "PV"


class PayoutKind(enum.StrEnum):
    CONTRIBUTION = "contribution"    # May: prior-years account -> card, the previous year's 2% contribution
    SUBSIDY = "subsidy"              # July: subsidy fund -> card, the burden-reduction subsidy
    REIMBURSEMENT = "reimbursement"  # pooled fund of the person's city -> card, a manual reimbursement

    @property
    def ref_prefix(self) -> str:
        # The ledger has one transaction kind "payout"; the ref says which payout it is, so that a
        # batch id cannot be reused for another kind and a reader of an export can tell them apart.
        return {"contribution": "PC", "subsidy": "PS", "reimbursement": "PR"}[self.value]

    @classmethod
    def of_ref(cls, ref: str) -> PayoutKind | None:
        return next((kind for kind in cls if ref.startswith(kind.ref_prefix)), None)










@dataclass
class PayoutLine:
    line: int                     # line of the amounts file
    social_security_number: str
    card_number: str
    requested_fen: int
    paid_fen: int
    ref: str
    already_paid: bool
    note: str = ""

    @property
    def shortfall_fen(self) -> int:
        return max(0, self.requested_fen - self.paid_fen)


@dataclass
class PayoutReport:
    kind: PayoutKind
    batch_id: str
    business_date: date
    lines: list[PayoutLine] = field(default_factory=list)

    @property
    def paid(self) -> list[PayoutLine]:
        return [line for line in self.lines if not line.already_paid]

    @property
    def already_paid(self) -> list[PayoutLine]:
        return [line for line in self.lines if line.already_paid]

    @property
    def paid_fen(self) -> int:
        return sum(line.paid_fen for line in self.paid)

    @property
    def short(self) -> list[PayoutLine]:
        """Contribution rows the prior-years account could not pay in full."""
        if self.kind is not PayoutKind.CONTRIBUTION:
            return []
        return [line for line in self.lines if line.shortfall_fen]

    @property
    def conflicts(self) -> list[PayoutLine]:
        """Rows paid earlier under this batch with another amount than the file now asks (not contributions,
        whose paid amount may be less than asked by design)."""
        if self.kind is PayoutKind.CONTRIBUTION:
            return []
        return [line for line in self.already_paid if line.paid_fen != line.requested_fen]

    def summary(self) -> str:
        text = (f"payout {self.kind.value} batch {self.batch_id} on {self.business_date}: {len(self.paid)} paid, "
                f"{format_fen(self.paid_fen)} yuan; {len(self.already_paid)} already paid")
        if self.short:
            text += (f"; {len(self.short)} short by {format_fen(sum(line.shortfall_fen for line in self.short))} "
                     "yuan in all (prior-years balance)")
        return text




@dataclass(frozen=True)
class Difference:
    kind: str           # missing | unexpected | amount | failed | paid_after_reversal
    line: int
    card_number: str
    ref: str
    ledger_fen: int | None
    bank_fen: int | None
    detail: str = ""

    def __str__(self) -> str:
        ledger = "-" if self.ledger_fen is None else format_fen(self.ledger_fen)
        bank = "-" if self.bank_fen is None else format_fen(self.bank_fen)
        what = {
            "missing": "paid in the ledger, not in the bank's return file",
            "unexpected": "in the bank's return file, not paid in this batch",
            "amount": "the bank paid another amount",
            "failed": "failed at the bank; the money must come back (--book-failures)",
            "paid_after_reversal": "the bank paid it, but the ledger took the payout back",
        }[self.kind]
        ref = f" {self.ref}" if self.ref else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"line {self.line} card {self.card_number}{ref}: {what}: ledger {ledger}, bank {bank}{detail}"


@dataclass
class ReconcileReport:
    batch_id: str
    matched: int = 0
    differences: list[Difference] = field(default_factory=list)
    booked: list[tuple[str, str]] = field(default_factory=list)   # (payout ref, reversal ref) booked now
    already_reversed: int = 0   # failed rows whose payout was taken back earlier

    @property
    def ok(self) -> bool:
        return not self.differences


# Reading the input files ---------------------------------------------------------------------------










def check_batch_id(batch_id: str) -> None:
    if not BATCH_ID.fullmatch(batch_id):
        raise PayoutError(f"batch id {batch_id!r} must be 1 to 40 letters, digits, '.', '_' or '-' "
                          "(starting with a letter or digit)")


# Paying -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    row: AmountRow
    person_id: int   # the registry's: what the ledger keys the person by
    name: str
    insured_region_code: str
    card_number: str


def run_payout(engine: Engine, kind: PayoutKind, batch_id: str, rows: Sequence[AmountRow],
               on: date | None = None, *, source: str = "amounts") -> PayoutReport:
    """Pay every row (all rows are checked against the registry first: any bad row, nothing is paid)."""
    check_batch_id(batch_id)
    day = on or beijing_today()
    report = PayoutReport(kind, batch_id, day)
    with engine.connect() as conn:
        _refuse_closed_day(conn, day)
        other = conn.scalars(select(TRANSACTIONS.c.ref).where(
            TRANSACTIONS.c.kind == TransactionKind.PAYOUT.value,
            TRANSACTIONS.c.dedupe_key.startswith(f"payout:{batch_id}:", autoescape=True),
            ~TRANSACTIONS.c.ref.startswith(kind.ref_prefix, autoescape=True)).limit(1)).first()
        if other is not None:
            other_kind = PayoutKind.of_ref(other)
            raise PayoutError(f"batch {batch_id} is a {other_kind.value if other_kind else 'different'} batch "
                              f"({other}): choose another batch id for a {kind.value} batch")
        targets = _targets(conn, rows, source)
    for start in range(0, len(targets), CHUNK_PERSONS):
        with engine.connect().execution_options(**{IMMEDIATE_OPTION: True}) as conn, conn.begin():
            report.lines += _pay_chunk(conn, kind, batch_id, day, targets[start : start + CHUNK_PERSONS])
    return report


def _refuse_closed_day(conn: Connection, day: date) -> None:
    # Finance closes a reconciled day; nothing more may be booked on it.
    if conn.scalar(select(CLOSED_DAYS.c.business_date).where(CLOSED_DAYS.c.business_date == day)) is not None:
        raise PayoutError(f"business day {day} is closed: book the payout on another day (--date)")


def _targets(conn: Connection, rows: Sequence[AmountRow], source: str) -> list[_Target]:
    """Each row's person and the card paid into: the person's active social security card (the newest if
    several); a row without one is an error, since the bank must have an account to pay into."""
    persons: dict[str, tuple[int, str, str]] = {}
    cards: dict[str, tuple[date, str]] = {}
    ssns = sorted({row.social_security_number for row in rows})
    for start in range(0, len(ssns), CHUNK_PERSONS):  # bounded IN lists: SQLite limits bound parameters
        part = ssns[start : start + CHUNK_PERSONS]
        for ssn, person_id, name, region in conn.execute(
                select(PERSONS.c.social_security_number, PERSONS.c.person_id, PERSONS.c.name,
                       PERSONS.c.insured_region_code).where(PERSONS.c.social_security_number.in_(part))):
            persons[ssn] = (person_id, name, region)
        for ssn, number, issued in conn.execute(select(CARDS.c.social_security_number, CARDS.c.card_number,
                                                       CARDS.c.issue_date).where(
                CARDS.c.social_security_number.in_(part), CARDS.c.kind == CardKind.SOCIAL_SECURITY.value,
                CARDS.c.status == CardStatus.ACTIVE.value)):
            if ssn not in cards or (issued, number) > cards[ssn]:
                cards[ssn] = (issued, number)
    errors: list[RowError] = []
    targets: list[_Target] = []
    for row in rows:
        ssn = row.social_security_number
        if ssn not in persons:
            errors.append(RowError(source, row.line, f"{mask_id(ssn)} is not an insured person in the registry"))
        elif ssn not in cards:
            errors.append(RowError(source, row.line, f"{mask_id(ssn)} has no active social security card: "
                                                        "no bank account to pay into"))
        else:
            person_id, name, region = persons[ssn]
            targets.append(_Target(row, person_id, name, region, cards[ssn][1]))
    if errors:
        raise PayoutRejected(errors)
    return targets


def _source(kind: PayoutKind, target: _Target) -> AccountSpec:
    if kind is PayoutKind.CONTRIBUTION:
        return accounts.person_prior_years(target.person_id)
    if kind is PayoutKind.SUBSIDY:
        return accounts.subsidy_fund()
    return accounts.pooled_fund(target.insured_region_code)


def _split_columns(kind: PayoutKind, amount: int) -> dict[str, int]:
    """What the payout paid, in the split columns a reader of the ledger already knows: the prior-years
    account for a contribution, the pooled fund for a reimbursement; a subsidy has only its total."""
    return {"total_fen": amount,
            "prior_years_fen": amount if kind is PayoutKind.CONTRIBUTION else 0,
            "pooled_fund_fen": amount if kind is PayoutKind.REIMBURSEMENT else 0,
            "current_year_fen": 0, "cash_fen": 0, "deductible_counted_fen": 0}


def _pay_chunk(conn: Connection, kind: PayoutKind, batch_id: str, day: date,
               targets: Sequence[_Target]) -> list[PayoutLine]:
    persons = sorted({t.person_id for t in targets})
    if kind is PayoutKind.CONTRIBUTION:
        # A person the ledger never met has no prior-years account yet: opened as the settlement batch opens
        # them (registry balances posted once, keyed "opening:<person id>").
        open_persons(conn, persons)
    specs = {spec.code: spec for t in targets for spec in (_source(kind, t), accounts.card_bank(t.card_number))}
    open_accounts(conn, specs.values())
    balances: dict[str, int] = {}
    if kind is PayoutKind.CONTRIBUTION:
        balances = locked_balances(conn, [accounts.person_prior_years(person).code for person in persons])
    keys = [_payout_key(batch_id, person) for person in persons]
    existing = {row.dedupe_key: row for row in conn.execute(
        select(TRANSACTIONS.c.dedupe_key, TRANSACTIONS.c.ref, TRANSACTIONS.c.total_fen, TRANSACTIONS.c.card_number)
        .where(TRANSACTIONS.c.dedupe_key.in_(keys)))}
    lines: list[PayoutLine] = []
    entries: list[dict[str, Any]] = []
    deltas: dict[str, int] = {}
    now = datetime.now(UTC)
    for target in targets:
        row = target.row
        key = _payout_key(batch_id, target.person_id)
        if key not in existing:
            source = _source(kind, target)
            amount = row.amount_fen
            if source.must_not_go_negative:
                amount = min(amount, balances.get(source.code, 0))  # pay what the account holds, never more
            ref = new_ref(kind.ref_prefix, day)
            inserted = conn.execute(insert_ignore(conn, TRANSACTIONS).returning(TRANSACTIONS.c.ref), {
                "ref": ref, "kind": TransactionKind.PAYOUT.value, "dedupe_key": key,
                "person_id": target.person_id, "card_number": target.card_number,
                "business_date": day, "recorded_at": now, **_split_columns(kind, amount),
            }).first()  # RETURNING: another process may have paid the same key since the read above
            if inserted is not None:
                if amount:
                    for spec, value in _payout_postings(source, accounts.card_bank(target.card_number), amount):
                        entries.append({"transaction_ref": ref, "account_code": spec.code, "amount_fen": value})
                        deltas[spec.code] = deltas.get(spec.code, 0) + value
                    if source.code in balances:
                        balances[source.code] -= amount
                lines.append(PayoutLine(row.line, row.social_security_number, target.card_number, row.amount_fen,
                                        amount, ref, False, row.note))
                continue
            existing[key] = conn.execute(select(
                TRANSACTIONS.c.dedupe_key, TRANSACTIONS.c.ref, TRANSACTIONS.c.total_fen, TRANSACTIONS.c.card_number)
                .where(TRANSACTIONS.c.dedupe_key == key)).one()
        done = existing[key]
        lines.append(PayoutLine(row.line, row.social_security_number, done.card_number or "", row.amount_fen,
                                done.total_fen, done.ref, True, row.note))
    if entries:
        conn.execute(ENTRIES.insert(), entries)
    add_to_balances(conn, deltas)
    return lines


def _payout_postings(source: AccountSpec, card: AccountSpec, amount: int) -> list[Posting]:
    # One amount out of the source and into the card: balanced by construction, so nothing to check here
    # (`gateway ledger check` verifies that every transaction sums to zero).
    return [(source, -amount), (card, amount)]


def _payout_key(batch_id: str, person_id: int) -> str:
    return f"payout:{batch_id}:{person_id}"




# The payout file -----------------------------------------------------------------------------------


def bank_lines(engine: Engine, batch_id: str) -> list[BankLine]:
    """Every payout of the batch with an amount, numbered in the order paid; a payout with nothing to pay
    (a contribution whose prior-years account was empty) is not sent to the bank."""
    check_batch_id(batch_id)
    t = TRANSACTIONS.c
    with engine.connect() as conn:
        rows = conn.execute(select(t.ref, t.card_number, t.total_fen, PERSONS.c.name)
                            .outerjoin(PERSONS, PERSONS.c.person_id == t.person_id)
                            .where(t.kind == TransactionKind.PAYOUT.value, t.total_fen > 0,
                                   t.dedupe_key.startswith(f"payout:{batch_id}:", autoescape=True))
                            .order_by(t.id)).all()
        reversed_by = undone_by(conn, [row.ref for row in rows])
    return [BankLine(batch_id, number, row.card_number or "", row.name or "", row.total_fen, row.ref,
                     reversed_by[row.ref].ref if row.ref in reversed_by else None)
            for number, row in enumerate(rows, start=1)]




# Reconciling the bank's return file -------------------------------------------------------------------


def reconcile_bank_return(engine: Engine, batch_id: str, return_rows: Sequence[ReturnRow], *,
                          book_failures: bool = False, on: date | None = None) -> ReconcileReport:
    """Compare the bank's answers with the batch's payouts; with book_failures, take failed payouts back."""
    lines = bank_lines(engine, batch_id)
    if not lines:
        raise PayoutError(f"the ledger has no payouts in batch {batch_id}")
    report = ReconcileReport(batch_id)
    answers = {row.card_number: row for row in return_rows}
    failed: list[BankLine] = []
    for line in lines:
        answer = answers.pop(line.card_number, None)
        if answer is None:
            if line.reversed_by is None:
                report.differences.append(Difference("missing", line.line, line.card_number, line.ref,
                                                     line.amount_fen, None))
            continue
        if answer.status == "failed":
            if line.reversed_by is not None:
                report.already_reversed += 1
            elif book_failures:
                failed.append(line)
            else:
                report.differences.append(Difference("failed", line.line, line.card_number, line.ref,
                                                     line.amount_fen, answer.amount_fen, answer.reason))
        elif line.reversed_by is not None:
            report.differences.append(Difference("paid_after_reversal", line.line, line.card_number, line.ref,
                                                 line.amount_fen, answer.amount_fen, f"reversed by {line.reversed_by}"))
        elif answer.amount_fen != line.amount_fen:
            report.differences.append(Difference("amount", line.line, line.card_number, line.ref, line.amount_fen,
                                                 answer.amount_fen))
        else:
            report.matched += 1
    for answer in sorted(answers.values(), key=lambda a: a.file_line):
        report.differences.append(Difference("unexpected", answer.line, answer.card_number, "", None,
                                             answer.amount_fen, answer.reason))
    if failed:
        report.booked = _book_reversals(engine, failed, on or beijing_today())
    report.differences.sort(key=lambda d: (d.line, d.card_number))
    return report


def _book_reversals(engine: Engine, failed: Sequence[BankLine], day: date) -> list[tuple[str, str]]:
    """Each failed payout undone by a compensating reversal: exactly its entries negated, keyed
    "compensates:<ref>" so that reconciling the same return file again books nothing twice."""
    with engine.connect().execution_options(**{IMMEDIATE_OPTION: True}) as conn, conn.begin():
        _refuse_closed_day(conn, day)
        refs = sorted(line.ref for line in failed)
        originals = {row.ref: row for row in conn.execute(select(TRANSACTIONS).where(TRANSACTIONS.c.ref.in_(refs)))}
        postings_of: dict[str, list[tuple[str, int]]] = {ref: [] for ref in refs}
        for ref, code, amount in conn.execute(select(ENTRIES.c.transaction_ref, ENTRIES.c.account_code,
                                                     ENTRIES.c.amount_fen)
                                              .where(ENTRIES.c.transaction_ref.in_(refs)).order_by(ENTRIES.c.id)):
            postings_of[ref].append((code, amount))
        codes = sorted({code for entries in postings_of.values() for code, _ in entries})
        # Lock the accounts given money back in account order, as every ledger writer does.
        specs = {row.code: AccountSpec(row.code, AccountKind(row.kind), row.owner, row.must_not_go_negative)
                 for row in conn.execute(for_update(conn, select(ACCOUNTS).where(ACCOUNTS.c.code.in_(codes))
                                                    .order_by(ACCOUNTS.c.code)))}
        now = datetime.now(UTC)
        keyed = []
        for line in sorted(failed, key=lambda item: item.line):
            original = originals[line.ref]
            keyed.append(({
                "ref": new_ref(REVERSAL_PREFIX, day), "kind": TransactionKind.REVERSAL.value,
                "dedupe_key": f"compensates:{line.ref}", "original_ref": line.ref,
                "person_id": original.person_id, "card_number": original.card_number,
                "business_date": day, "recorded_at": now, **negated_columns(original._mapping),
            }, compensation_postings(postings_of[line.ref], specs)))
        written = post_once(conn, keyed)  # one reversed meanwhile by another run is left as it is
    return [(row["original_ref"], row["ref"]) for row, _ in keyed if row["dedupe_key"] in written]


__all__ = [
    "Difference", "PayoutKind", "PayoutLine", "PayoutReport", "ReconcileReport", "bank_lines",
    "reconcile_bank_return", "run_payout",
]
