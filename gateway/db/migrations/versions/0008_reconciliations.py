"""Reconciliations as they were run, and why a day was closed (a reconciliation that matched, or a reason).

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconciliations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("institution_code", sa.String(length=12), nullable=True),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reconciled_by", sa.String(length=64), nullable=False),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.Column("differences", sa.Integer(), nullable=False),
        sa.Column("ledger_rows", sa.Integer(), nullable=False),
        sa.Column("ledger_total_fen", sa.BigInteger(), nullable=False),
        sa.Column("statement_rows", sa.Integer(), nullable=False),
        sa.Column("statement_path", sa.String(length=1000), nullable=False),
        sa.Column("statement_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliations")),
    )
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reconciliations_business_date"), ["business_date"], unique=False)
    with op.batch_alter_table("closed_days", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reconciliation_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("forced_reason", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("closed_days", schema=None) as batch_op:
        batch_op.drop_column("forced_reason")
        batch_op.drop_column("reconciliation_id")
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reconciliations_business_date"))
    op.drop_table("reconciliations")
