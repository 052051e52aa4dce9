"""A version number of the registry, moved by triggers on every registry table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The tables whose rows the request path reads as registry facts (gateway.serve.registry_cache).
REGISTRY_TABLES = ("institutions", "terminals", "persons", "cards", "filings", "lookup_problems")
OPERATIONS = ("insert", "update", "delete")


def upgrade() -> None:
    op.create_table(
        "registry_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_registry_version_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_version")),
    )
    op.execute("INSERT INTO registry_version (id, version) VALUES (1, 1)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE registry_version SET version = version + 1 WHERE id = 1;
                RETURN NULL;
            END $$""")
        for table in REGISTRY_TABLES:
            # Once per statement: a bulk import moves the version once, not once per row.
            op.execute(f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION registry_changed()")
        return
    for table in REGISTRY_TABLES:
        for operation in OPERATIONS:
            # SQLite has row triggers only.
            op.execute(f"CREATE TRIGGER {table}_{operation}_changed AFTER {operation.upper()} ON {table} "
                       "BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in REGISTRY_TABLES:
            op.execute(f"DROP TRIGGER {table}_changed ON {table}")
        op.execute("DROP FUNCTION registry_changed()")
    else:
        for table in REGISTRY_TABLES:
            for operation in OPERATIONS:
                op.execute(f"DROP TRIGGER {table}_{operation}_changed")
    op.drop_table("registry_version")
