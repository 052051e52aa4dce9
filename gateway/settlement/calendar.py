"""Time as the gateway reckons it: business days are Beijing calendar days (one time zone, no DST)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

BEIJING = timezone(timedelta(hours=8))
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
