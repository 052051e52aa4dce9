"""What the ledger's writer knows of the state it committed, for its next batch: the holders' balances, their
year-to-date totals, their cards' status and first use.

Trusted only where the database says nobody else wrote since (SQLite's `PRAGMA data_version`, read in the
next batch's transaction, which holds the write lock from its BEGIN IMMEDIATE): then every value here is still
the database's, and the batch reads only what is not here. Anywhere else, and after a transaction that failed,
the writer reads everything under lock as a batch always did. docs/ledger.md gives the reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass
class KnownState:
    version: int                                     # the data_version under which all this is the database's
    balances: dict[str, int] = field(default_factory=dict)                      # person account code -> fen
    year_totals: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # (person id, year) -> totals
    # card number -> (status, first used on, kind), as the registry's row has them
    cards: dict[str, tuple[str, date | None, str]] = field(default_factory=dict)
    used_social_security_card: dict[int, bool] = field(default_factory=dict)     # person id -> used one yet

    def holders(self) -> int:
        return len(self.used_social_security_card)
