"""Business days as finance keeps them: reconciled (every run `gateway reconcile` completes is recorded), closed
(`gateway day close --date D`), and listed (`gateway day list`).

A day closes only on a whole-day reconciliation that matched the day as it still is (the latest whole-day run
decides), or by force with a reason, which is recorded. Once closed, the day's figures never change: the writer
refuses to book on it (the ledger's clock never goes back, so it only could by a wrong clock), and a later revoke or
reversal of one of its settlements is booked on its own day with a reference to the original, which reconciliation
lists as such.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection, Engine, RowMapping, func, select

from gateway.finance.models import RECONCILIATIONS
from gateway.ledger.export import of_the_day, of_the_days
from gateway.ledger.models import MAX_FORCED_REASON_CHARS, MAX_USER_NAME_CHARS, TransactionKind
from gateway.ledger.tables import CLOSED_DAYS, TRANSACTIONS
from gateway.money import format_fen
from gateway.settlement.calendar import beijing_today, beijing_wall_clock

FORCE_HINT = "or close it with --force --reason TEXT"


class DayCloseRefused(ValueError):
    pass


@dataclass(frozen=True)
class ClosedDayFigures:
    day: date
    transactions: int
    total_fen: int
    grounds: str = ""    # why it could close: the reconciliation that matched, or the reason it was forced with


@dataclass(frozen=True)
class DayState:
    """One line of `gateway day list`."""

    day: date
    settlements: int
    undoings: int            # revokes and reversals booked on the day
    total_fen: int           # the day's net total
    reconciliation: str      # the latest whole-day run: "none", "matched …", "N difference(s) …"
    close: str               # "open", "closed …"


def close_day(engine: Engine, day: date, today: date | None = None, by: str | None = None,
              forced_reason: str | None = None) -> ClosedDayFigures:
    """Close `day` on its latest whole-day reconciliation, which must have matched the day as it is now; or, with
    `forced_reason`, without one. Raises DayCloseRefused saying what to do."""
    today = today or beijing_today()
    if day >= today:
        raise DayCloseRefused(f"{day} is not over yet (today is {today} in Beijing): only a past day can be closed")
    if forced_reason is not None:
        forced_reason = forced_reason.strip()
        if not forced_reason:
            raise DayCloseRefused("--reason must say why the day is closed without a reconciliation that matched")
        if len(forced_reason) > MAX_FORCED_REASON_CHARS:
            raise DayCloseRefused(f"--reason is {len(forced_reason)} characters long; at most "
                                  f"{MAX_FORCED_REASON_CHARS}")
    with engine.begin() as conn:
        already = select(CLOSED_DAYS.c.business_date).where(CLOSED_DAYS.c.business_date == day)
        if conn.execute(already).first() is not None:
            raise DayCloseRefused(f"{day} is closed already")
        count, total = conn.execute(select(func.count(), func.coalesce(func.sum(TRANSACTIONS.c.total_fen), 0))
                                    .where(*of_the_day(day))).one()
        run = None if forced_reason is not None else _grounds(conn, day, int(count), int(total))
        conn.execute(CLOSED_DAYS.insert().values(business_date=day, transactions=count, total_fen=total,
                                                 closed_by=user_name(by), reconciliation_id=run["id"] if run else None,
                                                 forced_reason=forced_reason))
    grounds = (f"by force: {forced_reason}" if run is None else
               f"on the reconciliation of {_beijing(run['reconciled_at'])}, which matched")
    return ClosedDayFigures(day, int(count), int(total), grounds)


def _grounds(conn: Connection, day: date, count: int, total_fen: int) -> RowMapping:
    """The reconciliation `day` closes on, or DayCloseRefused."""
    run = _latest_runs(conn, day, day).get(day)
    if run is None:
        raise DayCloseRefused(f"{day} has not been reconciled: run `gateway reconcile --date {day}` for the whole day "
                              f"(without --institution) until it matches, {FORCE_HINT}")
    at = _beijing(run["reconciled_at"])
    if not run["matched"]:
        raise DayCloseRefused(f"{day}'s last reconciliation ({at}) found {run['differences']} difference(s): "
                              f"reconcile it again until it matches, {FORCE_HINT}")
    if (run["ledger_rows"], run["ledger_total_fen"]) != (count, total_fen):
        raise DayCloseRefused(f"{day} changed since its reconciliation of {at} ({run['ledger_rows']} rows, "
                              f"{format_fen(run['ledger_total_fen'])} yuan then; {count} rows, "
                              f"{format_fen(total_fen)} yuan now): reconcile it again, {FORCE_HINT}")
    return run


def _latest_runs(conn: Connection, first: date, last: date) -> dict[date, RowMapping]:
    """Each day's latest whole-day reconciliation."""
    r = RECONCILIATIONS.c
    runs = conn.execute(select(RECONCILIATIONS).where(r.business_date.between(first, last),
                                                      r.institution_code.is_(None)).order_by(r.id)).mappings()
    return {run["business_date"]: run for run in runs}   # the later run of a day replaces the earlier


def closed_days(engine: Engine) -> set[date]:
    with engine.connect() as conn:
        return set(conn.scalars(select(CLOSED_DAYS.c.business_date)))


def list_days(engine: Engine, first: date | None = None, last: date | None = None) -> list[DayState]:
    """Every day from `first` to `last` (default: the first and the last day the ledger, the reconciliations or
    the closes know) that has settlements, a reconciliation or a close."""
    t, r, c = TRANSACTIONS.c, RECONCILIATIONS.c, CLOSED_DAYS.c
    with engine.connect() as conn:
        if first is None or last is None:
            bounds = [conn.execute(select(func.min(column), func.max(column)).where(*where)).one() for column, where
                      in ((t.business_date, of_the_days(date.min, date.max)), (r.business_date, ()),
                          (c.business_date, ()))]
            known = [day for pair in bounds for day in pair if day is not None]
            if not known:
                return []
            first, last = first or min(known), last or max(known)
        figures: dict[date, list[int]] = {}
        for day, kind, count, total in conn.execute(
                select(t.business_date, t.kind, func.count(), func.coalesce(func.sum(t.total_fen), 0))
                .where(*of_the_days(first, last)).group_by(t.business_date, t.kind)):
            sums = figures.setdefault(day, [0, 0, 0])
            sums[0 if kind == TransactionKind.SETTLEMENT.value else 1] += int(count)
            sums[2] += int(total)
        runs = _latest_runs(conn, first, last)
        closes = {row["business_date"]: row for row in conn.execute(
            select(CLOSED_DAYS).where(c.business_date.between(first, last))).mappings()}
    states = []
    for day in sorted(set(figures) | set(runs) | set(closes)):
        settlements, undoings, total_fen = figures.get(day, [0, 0, 0])
        states.append(DayState(day, settlements, undoings, total_fen,
                               _run_text(runs.get(day), settlements + undoings, total_fen),
                               _close_text(closes.get(day))))
    return states


def _run_text(run: RowMapping | None, rows: int, total_fen: int) -> str:
    if run is None:
        return "none"
    when = f"({_beijing(run['reconciled_at'])} by {run['reconciled_by']})"
    if not run["matched"]:
        return f"{run['differences']} difference(s) {when}"
    if (run["ledger_rows"], run["ledger_total_fen"]) != (rows, total_fen):
        return f"matched, but the day changed since {when}"
    return f"matched {when}"


def _close_text(closed: RowMapping | None) -> str:
    if closed is None:
        return "open"
    when = f"({_beijing(closed['closed_at'])} by {closed['closed_by']})"
    if closed["forced_reason"] is not None:
        return f"closed by force {when}: {closed['forced_reason']}"
    return f"closed {when}"


def _beijing(moment: datetime) -> str:
    return f"{beijing_wall_clock(moment):%Y-%m-%d %H:%M} Beijing time"


def user_name(by: str | None) -> str:
    return (by or getpass.getuser())[:MAX_USER_NAME_CHARS]
