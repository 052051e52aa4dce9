"""The ledger's tables as Core `Table` objects, for the set-wise SQL of the writer, the request path and finance.

The models declare them (gateway.ledger.models); this is the one place that gives them the type Core statements
want.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from gateway.ledger.models import ClosedDay, LedgerAccount, LedgerEntry, LedgerTransaction, RequestRecord, YearTotal

ACCOUNTS = cast(Table, LedgerAccount.__table__)
TRANSACTIONS = cast(Table, LedgerTransaction.__table__)
ENTRIES = cast(Table, LedgerEntry.__table__)
RECORDS = cast(Table, RequestRecord.__table__)
YEAR_TOTALS = cast(Table, YearTotal.__table__)
CLOSED_DAYS = cast(Table, ClosedDay.__table__)
