"""One head again: 0007 (recorded outcomes) and 0008 (reconciliations) both follow 0006, written at the same
time on two branches. Neither depends on the other (request records; a new table), so they may run in either
order; a database at either one gets the other on its way here. Changes nothing itself.

Revision ID: 0009
Revises: 0007, 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0009"
down_revision = ("0007", "0008")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
