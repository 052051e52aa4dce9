"""The ledger: accounts, append-only transactions and entries, request records, year-to-date totals.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("code", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("must_not_go_negative", sa.Boolean(), nullable=False),
        sa.Column("balance_fen", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "NOT must_not_go_negative OR balance_fen >= 0", name=op.f("ck_ledger_accounts_not_negative")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_ledger_accounts")),
    )
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_accounts_owner"), ["owner"], unique=False)

    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ref", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("dedupe_key", sa.String(length=96), nullable=True),
        sa.Column("original_ref", sa.String(length=32), nullable=True),
        sa.Column("terminal_id", sa.String(length=32), nullable=True),
        sa.Column("message_id", sa.String(length=64), nullable=True),
        sa.Column("institution_code", sa.String(length=12), nullable=True),
        sa.Column("social_security_number", sa.String(length=18), nullable=True),
        sa.Column("card_number", sa.String(length=9), nullable=True),
        sa.Column("medical_type", sa.Integer(), nullable=True),
        sa.Column("insurance_year", sa.Integer(), nullable=True),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("policy_version", sa.String(length=40), nullable=True),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("pooled_fund_fen", sa.BigInteger(), nullable=False),
        sa.Column("current_year_fen", sa.BigInteger(), nullable=False),
        sa.Column("prior_years_fen", sa.BigInteger(), nullable=False),
        sa.Column("cash_fen", sa.BigInteger(), nullable=False),
        sa.Column("deductible_counted_fen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_ledger_transactions_dedupe_key")),
        sa.UniqueConstraint("ref", name=op.f("uq_ledger_transactions_ref")),
    )
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_transactions_business_date"), ["business_date"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_transactions_institution_code"), ["institution_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_transactions_original_ref"), ["original_ref"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ledger_transactions_social_security_number"), ["social_security_number"], unique=False
        )

    op.create_table(
        "request_records",
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.String(length=24), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("transaction_ref", sa.String(length=32), nullable=True),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("terminal_id", "message_id", name=op.f("pk_request_records")),
    )
    op.create_table(
        "year_totals",
        sa.Column("social_security_number", sa.String(length=18), nullable=False),
        sa.Column("insurance_year", sa.Integer(), nullable=False),
        sa.Column("deductible_counted_fen", sa.BigInteger(), nullable=False),
        sa.Column("pooled_fund_paid_fen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("social_security_number", "insurance_year", name=op.f("pk_year_totals")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("transaction_ref", sa.String(length=32), nullable=False),
        sa.Column("account_code", sa.String(length=80), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_code"], ["ledger_accounts.code"], name=op.f("fk_ledger_entries_account_code_ledger_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_ref"],
            ["ledger_transactions.ref"],
            name=op.f("fk_ledger_entries_transaction_ref_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_entries_account_code"), ["account_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_entries_transaction_ref"), ["transaction_ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entries_transaction_ref"))
        batch_op.drop_index(batch_op.f("ix_ledger_entries_account_code"))

    op.drop_table("ledger_entries")
    op.drop_table("year_totals")
    op.drop_table("request_records")
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_social_security_number"))
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_original_ref"))
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_institution_code"))
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_business_date"))

    op.drop_table("ledger_transactions")
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_accounts_owner"))

    op.drop_table("ledger_accounts")
