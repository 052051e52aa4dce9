"""Closed business days.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "closed_days",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("transactions", sa.Integer(), nullable=False),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("closed_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("business_date", name=op.f("pk_closed_days")),
    )


def downgrade() -> None:
    op.drop_table("closed_days")
