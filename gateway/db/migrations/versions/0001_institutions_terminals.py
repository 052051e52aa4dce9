"""Institutions and terminals.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "institutions",
        sa.Column("code", sa.String(12), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("region_code", sa.String(6), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=True),
        sa.Column("cross_region_designated", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN ('hospital', 'pharmacy', 'kiosk')", name=op.f("ck_institutions_kind")),
        sa.CheckConstraint(
            "level IS NULL OR level IN ('community', 'secondary', 'tertiary')",
            name=op.f("ck_institutions_level"),
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_institutions")),
    )
    op.create_table(
        "terminals",
        sa.Column("terminal_id", sa.String(32), nullable=False),
        sa.Column("institution_code", sa.String(12), nullable=False),
        sa.Column("credential_hash", sa.String(128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_code"], ["institutions.code"],
            name=op.f("fk_terminals_institution_code_institutions"),
        ),
        sa.PrimaryKeyConstraint("terminal_id", name=op.f("pk_terminals")),
    )
    op.create_index(op.f("ix_terminals_institution_code"), "terminals", ["institution_code"])


def downgrade() -> None:
    op.drop_index(op.f("ix_terminals_institution_code"), table_name="terminals")
    op.drop_table("terminals")
    op.drop_table("institutions")
