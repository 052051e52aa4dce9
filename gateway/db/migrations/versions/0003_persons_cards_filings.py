"""Insured persons, their cards, filings for care elsewhere, look-up problems and opening balances.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "persons",
        sa.Column("social_security_number", sa.String(18), nullable=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("insurance_type", sa.String(20), nullable=False),
        sa.Column("insured_region_code", sa.String(6), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "insurance_type IN ('employee_active', 'employee_retired', 'resident')",
            name=op.f("ck_persons_insurance_type"),
        ),
        sa.PrimaryKeyConstraint("social_security_number", name=op.f("pk_persons")),
    )
    op.create_table(
        "cards",
        sa.Column("card_number", sa.String(9), nullable=False),
        sa.Column("social_security_number", sa.String(18), nullable=False),
        sa.Column("card_identification_code", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("expiry_date", sa.Date(), nullable=False),
        sa.Column("replaced_by", sa.String(9), nullable=True),
        sa.Column("first_used_on", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN ('social_security', 'old_medical_ic')", name=op.f("ck_cards_kind")),
        sa.CheckConstraint(
            "status IN ('active', 'lost_reported', 'replaced', 'cancelled')", name=op.f("ck_cards_status")
        ),
        sa.CheckConstraint("issue_date <= expiry_date", name=op.f("ck_cards_dates")),
        sa.CheckConstraint(
            "replaced_by IS NULL OR (status = 'replaced' AND replaced_by <> card_number)",
            name=op.f("ck_cards_replaced_by"),
        ),
        sa.ForeignKeyConstraint(
            ["social_security_number"], ["persons.social_security_number"],
            name=op.f("fk_cards_social_security_number_persons"),
        ),
        sa.ForeignKeyConstraint(["replaced_by"], ["cards.card_number"], name=op.f("fk_cards_replaced_by_cards")),
        sa.PrimaryKeyConstraint("card_number", name=op.f("pk_cards")),
    )
    op.create_index(op.f("ix_cards_social_security_number"), "cards", ["social_security_number"])
    op.create_table(
        "filings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("social_security_number", sa.String(18), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("region_code", sa.String(6), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN ('transfer', 'residence')", name=op.f("ck_filings_kind")),
        sa.CheckConstraint("valid_to IS NULL OR valid_from <= valid_to", name=op.f("ck_filings_dates")),
        sa.ForeignKeyConstraint(
            ["social_security_number"], ["persons.social_security_number"],
            name=op.f("fk_filings_social_security_number_persons"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_filings")),
        sa.UniqueConstraint(
            "social_security_number", "kind", "region_code", "valid_from",
            name=op.f("uq_filings_social_security_number"),
        ),
    )
    op.create_table(
        "lookup_problems",
        sa.Column("id_number", sa.String(18), nullable=False),
        sa.Column("problem", sa.String(32), nullable=False),
        sa.Column("note", sa.String(200), nullable=True),
        sa.CheckConstraint(
            "problem IN ('not_covered', 'id_mismatch', 'bank_account_changed', 'id_changed', "
            "'government_staff', 'hmt_or_foreign', 'multiple_accounts', 'duplicate_id')",
            name=op.f("ck_lookup_problems_problem"),
        ),
        sa.PrimaryKeyConstraint("id_number", name=op.f("pk_lookup_problems")),
    )
    op.create_table(
        "opening_balances",
        sa.Column("social_security_number", sa.String(18), nullable=False),
        sa.Column("insurance_year", sa.Integer(), nullable=False),
        sa.Column("current_year_fen", sa.BigInteger(), nullable=False),
        sa.Column("prior_years_fen", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("current_year_fen >= 0", name=op.f("ck_opening_balances_current_year_fen")),
        sa.CheckConstraint("prior_years_fen >= 0", name=op.f("ck_opening_balances_prior_years_fen")),
        sa.ForeignKeyConstraint(
            ["social_security_number"], ["persons.social_security_number"],
            name=op.f("fk_opening_balances_social_security_number_persons"),
        ),
        sa.PrimaryKeyConstraint("social_security_number", name=op.f("pk_opening_balances")),
    )


def downgrade() -> None:
    op.drop_table("opening_balances")
    op.drop_table("lookup_problems")
    op.drop_table("filings")
    op.drop_index(op.f("ix_cards_social_security_number"), table_name="cards")
    op.drop_table("cards")
    op.drop_table("persons")
