"""Time as the gateway reckons it: business days are Beijing calendar days (one time zone, no DST)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

BEIJING_OFFSET = timedelta(hours=8)
BEIJING = timezone(BEIJING_OFFSET)
# Insurance years accepted anywhere (policy files, registry balances, the year-end rollover): a typo such as
# 226 or 20266 is refused, not stored.
FIRST_INSURANCE_YEAR, LAST_INSURANCE_YEAR = 2000, 2100


def beijing_today() -> date:
    return datetime.now(BEIJING).date()


def utc_now() -> datetime:
    return datetime.now(UTC)


def business_date(moment: datetime) -> date:
    """The Beijing calendar day of a moment: what a settlement's day, year and revoke window go by."""
    return moment.astimezone(BEIJING).date()


def next_business_day_start(moment: datetime) -> datetime:
    """The moment the business day after `moment`'s begins: the next Beijing midnight, in UTC."""
    day = business_date(moment) + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=BEIJING).astimezone(UTC)


def beijing_naive(stored: datetime) -> datetime:
    """A moment read from the database as Beijing wall-clock time without a zone. SQLite hands moments back without
    their zone; they were stored in UTC (the writer's clock and CURRENT_TIMESTAMP are UTC), so a naive one is read
    as UTC, not as the host's zone. The naive case, a million times a day in reconciliation, is one addition."""
    if stored.tzinfo is None:
        return stored + BEIJING_OFFSET
    return stored.astimezone(BEIJING).replace(tzinfo=None)


def beijing_wall_clock(stored: datetime) -> datetime:
    """beijing_naive to the second: what the center's statement writes as `setl_time`."""
    return beijing_naive(stored).replace(microsecond=0)
