"""`gateway reconcile`: a day of the ledger against the insurance center's detail statement.

Matched by settlement id (`setl_id`, our settlement, revoke or reversal id). Every difference is one row:
in the ledger only, in the statement only, an amount that differs (naming the fund), a status that differs
(settled vs revoked), an id the statement lists twice, another field that differs (the institution, our message
id, the person, the settlement time).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from gateway.finance.day_close import closed_days, user_name
from gateway.finance.models import MAX_STATEMENT_PATH_CHARS, RECONCILIATIONS
from gateway.finance.statement import StatementRow, garbage_collector_paused, read_statement
from gateway.identity import mask_id
from gateway.ledger.export import of_the_day, status_of, undone_on
from gateway.ledger.tables import TRANSACTIONS
from gateway.money import format_fen
from gateway.registry.tables import INSTITUTIONS, PERSONS
from gateway.settlement.calendar import beijing_naive, utc_now

# (fund, national statement column, ledger column)
FUNDS = (
    ("total", "medfee_sumamt", "total_fen"), ("funds", "fund_pay_sumamt", "pooled_fund_fen"),
    ("pooled fund", "hifp_pay", "pooled_fund_fen"), ("current-year account", "acct_pay_current", "current_year_fen"),
    ("prior-years account", "acct_pay_prior", "prior_years_fen"), ("cash", "psn_cash_pay", "cash_fen"),
)
TOTAL_FUNDS = ("total", "pooled fund", "current-year account", "prior-years account", "cash")
# The center stamps setl_time with its own clock, to the second: a few seconds apart is the same settlement, a
# minute is not (and another day never is).
SETTLEMENT_TIME_TOLERANCE_S = 60
SETTLEMENT_TIME_TOLERANCE = timedelta(seconds=SETTLEMENT_TIME_TOLERANCE_S)
HASH_CHUNK_BYTES = 1024 * 1024


class StatementOfAnotherDay(ValueError):
    """A statement none of whose rows is of the day asked for: not thousands of differences, one message."""

    def __init__(self, day: date, dates: list[date]) -> None:
        when = dates[0].isoformat() if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        super().__init__(f"the statement's rows are dated {when}, not {day}")


class UnknownInstitution(LookupError):
    def __init__(self, code: str) -> None:
        super().__init__(f"{code} is not a registered institution")


@dataclass(frozen=True)
class Difference:
    kind: str              # in_ledger_only, in_statement_only, amount_differs, status_differs, duplicated_id, ...
    setl_id: str
    institution: str
    field: str = ""
    ledger_value: str = ""
    statement_value: str = ""
    statement_line: int | None = None
    note: str = ""


@dataclass
class TotalsRow:
    institution: str
    fund: str
    ledger_count: int = 0
    statement_count: int = 0
    ledger_fen: int = 0
    statement_fen: int = 0

    @property
    def balanced(self) -> bool:
        return not (self.count_differs or self.amount_differs)

    @property
    def count_differs(self) -> bool:
        return self.ledger_count != self.statement_count

    @property
    def amount_differs(self) -> bool:
        return self.ledger_fen != self.statement_fen


@dataclass(frozen=True)
class StatementFile:
    """Which file a reconciliation read, so that its report can be traced to it."""

    path: str
    size_bytes: int
    sha256: str


def describe_file(path: Path) -> StatementFile:
    digest = hashlib.sha256()
    size_bytes = 0
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size_bytes += len(chunk)
    return StatementFile(str(path), size_bytes, digest.hexdigest())


@dataclass
class Reconciliation:
    day: date
    institution: str | None
    ledger_rows: int = 0
    ledger_total_fen: int = 0
    statement_rows: int = 0
    differences: list[Difference] = field(default_factory=list)
    totals: list[TotalsRow] = field(default_factory=list)
    late_undoings: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    institution_names: dict[str, str] = field(default_factory=dict)   # by code, as the registry has them
    made_at: datetime = field(default_factory=utc_now)
    ledger_database: str = ""    # its URL, without a password
    statement_file: StatementFile | None = None

    @property
    def matches(self) -> bool:
        return not self.differences and all(t.balanced for t in self.totals)

    @property
    def grand_totals(self) -> list[TotalsRow]:
        """Every institution's totals added up, one row per fund of TOTAL_FUNDS."""
        grand = {fund: TotalsRow("", fund) for fund in TOTAL_FUNDS}
        for row in self.totals:
            sums = grand[row.fund]
            sums.ledger_count += row.ledger_count
            sums.statement_count += row.statement_count
            sums.ledger_fen += row.ledger_fen
            sums.statement_fen += row.statement_fen
        return list(grand.values())


def reconcile(engine: Engine, day: date, statement: Iterable[StatementRow],
              institution: str | None = None) -> Reconciliation:
    """Raises UnknownInstitution for an `institution` the registry does not know (it would match: nothing on
    either side), StatementOfAnotherDay for a statement none of whose rows is of `day`."""
    with garbage_collector_paused():
        if institution is not None:
            _check_registered(engine, institution)
        rows = statement if isinstance(statement, list) else list(statement)
        # A statement of the day says so on its first row: the dates are gathered only to say which they are.
        if rows and not any(row.setl_time.date() == day for row in rows):
            raise StatementOfAnotherDay(day, sorted({row.setl_time.date() for row in rows}))
        return _reconcile(engine, day, rows, institution, ledger_rows(engine, day, institution))


def _check_registered(engine: Engine, institution: str) -> None:
    with engine.connect() as conn:
        if conn.scalar(select(INSTITUTIONS.c.code).where(INSTITUTIONS.c.code == institution)) is None:
            raise UnknownInstitution(institution)


def reconcile_file(engine: Engine, day: date, path: Path, institution: str | None = None) -> Reconciliation:
    """What `gateway reconcile` runs; raises StatementError for a malformed statement.

    One pass after another with the garbage collector off throughout: reading the ledger in a second thread
    was tried and is slower (the two fight over the interpreter).
    """
    with garbage_collector_paused():
        with path.open(encoding="utf-8") as handle:
            rows = read_statement(handle, str(path))
        result = reconcile(engine, day, rows, institution)
    result.statement_file = describe_file(path)
    return result


def _reconcile(engine: Engine, day: date, statement: Iterable[StatementRow],
               institution: str | None, ledger: list[dict[str, Any]]) -> Reconciliation:
    result = Reconciliation(day, institution, ledger_database=engine.url.render_as_string(hide_password=True))
    rows = [r for r in statement if institution is None or r.fixmedins_code == institution]
    result.ledger_rows, result.statement_rows = len(ledger), len(rows)
    result.ledger_total_fen = sum(entry["total_fen"] for entry in ledger)
    closed = closed_days(engine)
    result.closed = day in closed
    _late_undoings(engine, day, ledger, closed, result)
    by_ref = {r["settlement_id"]: r for r in ledger}
    counts = Counter(r.setl_id for r in rows)
    first: dict[str, StatementRow] = {}
    for row in rows:
        if row.setl_id in first:
            result.differences.append(Difference("duplicated_id", row.setl_id, row.fixmedins_code,
                                                 statement_line=row.line,
                                                 note=f"also on line {first[row.setl_id].line} "
                                                      f"({counts[row.setl_id]} times in all)"))
            continue
        first[row.setl_id] = row
    for ref, entry in by_ref.items():
        matched = first.get(ref)
        if matched is None:
            result.differences.append(Difference("in_ledger_only", ref, entry["institution_code"],
                                                 ledger_value=format_fen(entry["total_fen"]), note=entry["status"]))
            continue
        _compare(entry, matched, result.differences)
    for ref, only in first.items():
        if ref not in by_ref:
            result.differences.append(Difference("in_statement_only", ref, only.fixmedins_code,
                                                 statement_value=format_fen(only.amounts["medfee_sumamt"]),
                                                 statement_line=only.line))
    result.totals = _totals(ledger, list(first.values()))
    result.institution_names = institution_names(engine)
    return result


def institution_names(engine: Engine) -> dict[str, str]:
    """Every registered institution's name by code: a city has thousands, fewer than a day has rows."""
    with engine.connect() as conn:
        return {code: name for code, name in conn.execute(select(INSTITUTIONS.c.code, INSTITUTIONS.c.name))}


def ledger_rows(engine: Engine, day: date, institution: str | None) -> list[dict[str, Any]]:
    """The day's settlements, revokes and reversals: only what reconciliation compares (cheap per row). The ledger
    knows the holder by the registry's person id; the statement's `psn_no` is the ID number, joined from the
    registry here."""
    t = TRANSACTIONS.c
    condition = of_the_day(day)
    if institution is not None:
        condition.append(t.institution_code == institution)
    with engine.connect() as conn:
        undone = undone_on(conn, day)
        result = conn.execute(select(t.ref, t.kind, t.institution_code, t.message_id, t.original_ref, t.total_fen,
                                     t.pooled_fund_fen, t.current_year_fen, t.prior_years_fen, t.cash_fen,
                                     PERSONS.c.social_security_number, t.recorded_at)
                              .outerjoin(PERSONS, PERSONS.c.person_id == t.person_id)
                              .where(*condition)).all()  # one fetchall: a row at a time costs twice as much
        rows = []
        for ref, kind, code, message_id, original, total, pooled, current, prior, cash, person, at in result:
            status = status_of(kind, undone.get(ref))
            rows.append({"settlement_id": ref, "kind": kind, "institution_code": code or "",
                         "message_id": message_id or "", "original_settlement_id": original or "",
                         "total_fen": total, "pooled_fund_fen": pooled, "current_year_fen": current,
                         "prior_years_fen": prior, "cash_fen": cash, "status": status, "psn_no": person or "",
                         "setl_time": beijing_naive(at)})
        return rows


def _compare(entry: dict[str, Any], row: StatementRow, differences: list[Difference]) -> None:
    ref, institution = entry["settlement_id"], entry["institution_code"]
    ledger_refund = entry["kind"] != "settlement"
    amounts = row.amounts
    if (ledger_refund == row.refunded and institution == row.fixmedins_code
            and entry["message_id"] == row.medins_setl_id and entry["total_fen"] == amounts["medfee_sumamt"]
            and entry["pooled_fund_fen"] == amounts["hifp_pay"] == amounts["fund_pay_sumamt"]
            and entry["current_year_fen"] == amounts["acct_pay_current"]
            and entry["prior_years_fen"] == amounts["acct_pay_prior"] and entry["cash_fen"] == amounts["psn_cash_pay"]
            and entry["psn_no"] == row.psn_no and -SETTLEMENT_TIME_TOLERANCE <= entry["setl_time"] - row.setl_time
            <= SETTLEMENT_TIME_TOLERANCE and entry["setl_time"].day == row.setl_time.day):  # so within it, one date
        return  # the common case, decided without building anything
    if ledger_refund != row.refunded:
        differences.append(Difference("status_differs", ref, institution, "refd_setl_flag",
                                      "revoke/reversal" if ledger_refund else "settlement",
                                      "refunded (1)" if row.refunded else "settled (0)", row.line))
    for fund, column, ledger_column in FUNDS:
        if entry[ledger_column] != row.amounts[column]:
            differences.append(Difference("amount_differs", ref, institution, f"{column} ({fund})",
                                          format_fen(entry[ledger_column]), format_fen(row.amounts[column]), row.line))
    for name, ours, theirs in (("fixmedins_code", institution, row.fixmedins_code),
                               ("medins_setl_id", entry["message_id"], row.medins_setl_id)):
        if ours != theirs:
            differences.append(Difference("field_differs", ref, institution, name, ours, theirs, row.line))
    if entry["psn_no"] != row.psn_no:
        differences.append(Difference("field_differs", ref, institution, "psn_no", mask_id(entry["psn_no"]),
                                      mask_id(row.psn_no), row.line, note=_where_ids_differ(entry["psn_no"],
                                                                                             row.psn_no)))
    ours_at, theirs_at = entry["setl_time"], row.setl_time
    if ours_at.date() != theirs_at.date() or abs(theirs_at - ours_at) > SETTLEMENT_TIME_TOLERANCE:
        differences.append(Difference("field_differs", ref, institution, "setl_time", f"{ours_at:%Y-%m-%d %H:%M:%S}",
                                      f"{theirs_at:%Y-%m-%d %H:%M:%S}", row.line,
                                      note="another day" if ours_at.date() != theirs_at.date() else
                                      f"more than {SETTLEMENT_TIME_TOLERANCE_S} s apart"))


def _where_ids_differ(ours: str, theirs: str) -> str:
    """Both ID numbers are shown masked, so the masked forms may look alike: say where they part."""
    position = next((n for n, (a, b) in enumerate(zip(ours, theirs, strict=False), start=1) if a != b),
                    min(len(ours), len(theirs)) + 1)
    return f"ID numbers masked; they differ from character {position}"


def _totals(ledger: list[dict[str, Any]], rows: list[StatementRow]) -> list[TotalsRow]:
    # One dictionary lookup per row: a day has a million of them.
    ours: dict[str, list[int]] = {}
    theirs: dict[str, list[int]] = {}
    for entry in ledger:
        sums = ours.setdefault(entry["institution_code"], [0, 0, 0, 0, 0, 0])
        sums[0] += 1
        sums[1] += entry["total_fen"]
        sums[2] += entry["pooled_fund_fen"]
        sums[3] += entry["current_year_fen"]
        sums[4] += entry["prior_years_fen"]
        sums[5] += entry["cash_fen"]
    for row in rows:
        sums = theirs.setdefault(row.fixmedins_code, [0, 0, 0, 0, 0, 0])
        amounts = row.amounts
        sums[0] += 1
        sums[1] += amounts["medfee_sumamt"]
        sums[2] += amounts["hifp_pay"]
        sums[3] += amounts["acct_pay_current"]
        sums[4] += amounts["acct_pay_prior"]
        sums[5] += amounts["psn_cash_pay"]
    totals = []
    empty = [0, 0, 0, 0, 0, 0]
    for institution in sorted(set(ours) | set(theirs)):
        mine, other = ours.get(institution, empty), theirs.get(institution, empty)
        for position, fund in enumerate(TOTAL_FUNDS, start=1):
            totals.append(TotalsRow(institution, fund, mine[0], other[0], mine[position], other[position]))
    return totals


def _late_undoings(engine: Engine, day: date, ledger: list[dict[str, Any]], closed: set[date],
                   result: Reconciliation) -> None:
    """Revokes and reversals booked today of settlements of an earlier (possibly closed) day."""
    originals = {r["original_settlement_id"]: r for r in ledger if r["original_settlement_id"]}
    if not originals:
        return
    with engine.connect() as conn:
        found = conn.execute(select(TRANSACTIONS.c.ref, TRANSACTIONS.c.business_date).where(
            TRANSACTIONS.c.ref.in_(sorted(originals)))).all()
    for ref, original_day in found:
        if original_day < day:
            entry = originals[ref]
            result.late_undoings.append({"settlement_id": entry["settlement_id"], "kind": entry["kind"],
                                         "original_settlement_id": ref, "original_date": original_day.isoformat(),
                                         "original_day_closed": original_day in closed,
                                         "total_yuan": format_fen(entry["total_fen"])})


def record_reconciliation(engine: Engine, result: Reconciliation, by: str | None = None) -> int:
    """Record a completed reconciliation, which `gateway day close` and `gateway day list` read; its id."""
    statement = result.statement_file
    with engine.begin() as conn:
        inserted = conn.execute(RECONCILIATIONS.insert().returning(RECONCILIATIONS.c.id).values(
            business_date=result.day, institution_code=result.institution, reconciled_at=result.made_at,
            reconciled_by=user_name(by), matched=result.matches, differences=len(result.differences),
            ledger_rows=result.ledger_rows, ledger_total_fen=result.ledger_total_fen,
            statement_rows=result.statement_rows,
            # The path's end names the file; the hash tells it apart.
            statement_path=statement.path[-MAX_STATEMENT_PATH_CHARS:] if statement else "",
            statement_sha256=statement.sha256 if statement else ""))
        return int(inserted.scalar_one())
