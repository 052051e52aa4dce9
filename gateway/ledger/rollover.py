"""`gateway ledger rollover --year Y`: each current-year balance moves into the prior-years account.

One balanced transaction per person, keyed "rollover:Y:<person id>", so running it again changes nothing.
Persons are handled in chunks, each chunk one database transaction with the persons' accounts locked.

It runs only once year Y is over in Beijing time and its last business day (Y-12-31) is closed: a rollover
during the year would move money that the year's own settlements and revokes still use, and the real rollover
would then find every person "already rolled over" and never move what came back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, select

from gateway.db.engine import IMMEDIATE_OPTION, MAX_IN_LIST_KEYS
from gateway.ledger import accounts
from gateway.ledger.batch import new_ref
from gateway.ledger.models import AccountKind, TransactionKind
from gateway.ledger.postings import Posting, rollover_postings
from gateway.ledger.sql import locked_balances, post_once
from gateway.ledger.tables import ACCOUNTS, CLOSED_DAYS
from gateway.ledger.transactions import rollover_key

CHUNK_PERSONS = MAX_IN_LIST_KEYS  # persons per transaction: their accounts are locked by one IN list


class RolloverRefused(ValueError):
    """The year cannot be rolled over yet; the message says why and what to do."""


@dataclass
class RolloverReport:
    year: int
    persons: int = 0
    moved_fen: int = 0
    already_done: int = 0


def rollover(engine: Engine, year: int, *, today: date, on: date | None = None) -> RolloverReport:
    """Roll `year` over on `today` (the Beijing business day it runs), booked on `on` (default: Y+1-01-01)."""
    last_day = date(year, 12, 31)
    if today <= last_day:
        raise RolloverRefused(f"insurance year {year} is not over: today is {today} in Beijing; "
                              f"the rollover runs from {year + 1}-01-01")
    report = RolloverReport(year)
    day = on or date(year + 1, 1, 1)
    with engine.connect() as conn:
        closed = conn.execute(select(CLOSED_DAYS.c.business_date).where(
            CLOSED_DAYS.c.business_date == last_day)).first()
        if closed is None:
            raise RolloverRefused(f"{last_day}, the last day of {year}, is not closed: reconcile and close it first "
                                  f"(gateway day close --date {last_day})")
        # A person account's owner is the person id (gateway.ledger.accounts).
        persons = sorted(int(owner) for owner in conn.scalars(select(ACCOUNTS.c.owner).where(
            ACCOUNTS.c.kind == AccountKind.PERSON_CURRENT_YEAR.value)))
    for start in range(0, len(persons), CHUNK_PERSONS):
        chunk = persons[start : start + CHUNK_PERSONS]
        with engine.connect().execution_options(**{IMMEDIATE_OPTION: True}) as conn, conn.begin():
            balances = locked_balances(conn, [accounts.person_current_year(person).code for person in chunk])
            now = datetime.now(UTC)
            keyed: list[tuple[dict[str, Any], list[Posting]]] = []
            for person in chunk:
                amount = balances.get(accounts.person_current_year(person).code, 0)
                keyed.append(({"ref": new_ref("Y", day), "kind": TransactionKind.ROLLOVER.value,
                               "dedupe_key": rollover_key(year, person), "person_id": person,
                               "insurance_year": year, "business_date": day, "recorded_at": now,
                               "total_fen": amount}, rollover_postings(person, amount) if amount else []))
            written = post_once(conn, keyed)
            report.persons += len(written)
            report.already_done += len(keyed) - len(written)
            report.moved_fen += sum(int(row["total_fen"]) for row, _ in keyed if row["dedupe_key"] in written)
    return report
