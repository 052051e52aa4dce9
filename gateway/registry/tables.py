"""The registry's tables as Core `Table` objects, for the set-wise SQL of the request path and the ledger.

The models declare them (gateway.registry.models); this is the one place that gives them the type Core
statements want.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from gateway.registry.models import (
    Card,
    Filing,
    Institution,
    LookupProblemEntry,
    OpeningBalance,
    Person,
    RegistryVersion,
)

CARDS = cast(Table, Card.__table__)
PERSONS = cast(Table, Person.__table__)
FILINGS = cast(Table, Filing.__table__)
INSTITUTIONS = cast(Table, Institution.__table__)
LOOKUP_PROBLEMS = cast(Table, LookupProblemEntry.__table__)
OPENING_BALANCES = cast(Table, OpeningBalance.__table__)
REGISTRY_VERSION = cast(Table, RegistryVersion.__table__)
