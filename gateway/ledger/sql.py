"""Dialect details the ledger needs on both SQLite and PostgreSQL: upserts and row locks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_ignore(conn: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def insert_or_add(conn: Connection, table: Table, keys: list[str], added: list[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET column = column + excluded.column for `added`."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    return statement.on_conflict_do_update(
        index_elements=keys, set_={name: table.c[name] + statement.excluded[name] for name in added}
    )


def for_update(conn: Connection, select: Select[Any]) -> Select[Any]:
    """Lock the selected rows until commit where the database has row locks (SQLite's writer holds the
    whole database already: BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        return select.with_for_update()
    return select
