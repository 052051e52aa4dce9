"""`gateway day close --date D`: freeze a reconciled business day.

Once closed, the day's figures never change: the writer refuses to book on it (the ledger's clock never
goes back, so it only could by a wrong clock), and a later revoke or reversal of one of its settlements is
booked on its own day with a reference to the original, which reconciliation lists as such.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Engine, func, select

from gateway.ledger.export import of_the_day
from gateway.ledger.tables import CLOSED_DAYS, TRANSACTIONS
from gateway.settlement.calendar import beijing_today


class DayCloseRefused(ValueError):
    pass


@dataclass(frozen=True)
class ClosedDayFigures:
    day: date
    transactions: int
    total_fen: int


def close_day(engine: Engine, day: date, today: date | None = None, by: str | None = None) -> ClosedDayFigures:
    today = today or beijing_today()
    if day >= today:
        raise DayCloseRefused(f"{day} is not over yet (today is {today} in Beijing): only a past day can be closed")
    with engine.begin() as conn:
        already = select(CLOSED_DAYS.c.business_date).where(CLOSED_DAYS.c.business_date == day)
        if conn.execute(already).first() is not None:
            raise DayCloseRefused(f"{day} is closed already")
        count, total = conn.execute(select(func.count(), func.coalesce(func.sum(TRANSACTIONS.c.total_fen), 0))
                                    .where(*of_the_day(day))).one()
        conn.execute(CLOSED_DAYS.insert().values(business_date=day, transactions=count, total_fen=total,
                                            closed_by=(by or getpass.getuser())[:64]))
    return ClosedDayFigures(day, int(count), int(total))


def closed_days(engine: Engine) -> set[date]:
    with engine.connect() as conn:
        return set(conn.scalars(select(CLOSED_DAYS.c.business_date)))
