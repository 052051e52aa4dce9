"""The tables as Core `Table` objects, for the set-wise SQL of the ledger, the request path and finance.

The models declare them (gateway.ledger.models, gateway.registry.models); this is the one place that gives
them the type Core statements want.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from gateway.ledger.models import ClosedDay, LedgerAccount, LedgerEntry, LedgerTransaction, RequestRecord, YearTotal
from gateway.registry.models import (
    Card,
    Filing,
    Institution,
    LookupProblemEntry,
    OpeningBalance,
    Person,
    RegistryVersion,
)

ACCOUNTS = cast(Table, LedgerAccount.__table__)
TRANSACTIONS = cast(Table, LedgerTransaction.__table__)
ENTRIES = cast(Table, LedgerEntry.__table__)
RECORDS = cast(Table, RequestRecord.__table__)
YEAR_TOTALS = cast(Table, YearTotal.__table__)
CLOSED_DAYS = cast(Table, ClosedDay.__table__)
CARDS = cast(Table, Card.__table__)
PERSONS = cast(Table, Person.__table__)
FILINGS = cast(Table, Filing.__table__)
INSTITUTIONS = cast(Table, Institution.__table__)
LOOKUP_PROBLEMS = cast(Table, LookupProblemEntry.__table__)
OPENING_BALANCES = cast(Table, OpeningBalance.__table__)
REGISTRY_VERSION = cast(Table, RegistryVersion.__table__)
