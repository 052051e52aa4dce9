"""Dialect details the ledger needs on both SQLite and PostgreSQL: upserts and row locks."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Result, Select, Table, TextualSelect, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.ledger.accounts import AccountSpec
from gateway.ledger.postings import Posting
from gateway.ledger.tables import ACCOUNTS, ENTRIES, TRANSACTIONS

# Statements are built once per shape and dialect: building one costs more than SQLAlchemy's compiled-cache
# lookup that executes it, and the writer runs the same dozen for every batch.

def insert_ignore(conn: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING."""
    return _insert_ignore(conn.dialect.name, table)


@functools.lru_cache(maxsize=64)
def _insert_ignore(dialect_name: str, table: Table) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def insert_or_add(conn: Connection, table: Table, keys: Sequence[str], added: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET column = column + excluded.column for `added`."""
    return _insert_or_add(conn.dialect.name, table, tuple(keys), tuple(added))


@functools.lru_cache(maxsize=64)
def _insert_or_add(dialect_name: str, table: Table, keys: tuple[str, ...], added: tuple[str, ...]) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(table)
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={name: table.c[name] + statement.excluded[name] for name in added}
    )


_ADD_TO_BALANCE = (update(ACCOUNTS).where(ACCOUNTS.c.code == bindparam("account"))
                   .values(balance_fen=ACCOUNTS.c.balance_fen + bindparam("delta")))


def open_accounts(conn: Connection, specs: Iterable[AccountSpec]) -> None:
    """Create the accounts that do not exist yet, at balance 0 (another writer may be creating them too)."""
    rows = [{"code": s.code, "kind": s.kind.value, "owner": s.owner, "must_not_go_negative": s.must_not_go_negative,
             "balance_fen": 0} for s in sorted(specs, key=lambda s: s.code)]
    if rows:
        conn.execute(insert_ignore(conn, ACCOUNTS), rows)


def add_to_balances(conn: Connection, deltas: dict[str, int]) -> None:
    """Each account's cached balance moved by its delta: one statement, in account order, so that two writers
    never wait on each other in a circle and a hot account (a pooled fund) is updated once per batch."""
    rows = [{"account": code, "delta": deltas[code]} for code in sorted(deltas) if deltas[code]]
    if rows:
        conn.execute(_ADD_TO_BALANCE, rows)


_TRANSACTION_DEFAULTS = {
    c.name: getattr(c.default, "arg", None) if c.default is not None and c.default.is_scalar else None
    for c in TRANSACTIONS.c if c.name not in ("id", "recorded_at")}


def transaction_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Transactions as executemany needs them: every row naming every column, a column it leaves out at its
    default (recorded now unless said)."""
    out = []
    for row in rows:
        full = {name: row.get(name, default) for name, default in _TRANSACTION_DEFAULTS.items()}
        full["recorded_at"] = row.get("recorded_at") or datetime.now().astimezone()
        out.append(full)
    return out


def post_once(conn: Connection, keyed: Sequence[tuple[dict[str, Any], Sequence[Posting]]]) -> set[str]:
    """Write each transaction (a row with a `dedupe_key`) that the ledger does not hold yet, its entries, and
    the balances they move; the dedupe keys written. A key another writer posted first, even at the same
    moment, is left as it is: ON CONFLICT DO NOTHING ... RETURNING says which rows were this call's."""
    if not keyed:
        return set()
    statement = insert_ignore(conn, TRANSACTIONS).returning(TRANSACTIONS.c.dedupe_key)
    written = set(conn.execute(statement, transaction_rows(row for row, _ in keyed)).scalars())
    entries: list[dict[str, Any]] = []
    deltas: dict[str, int] = {}
    for row, postings in keyed:
        if row["dedupe_key"] not in written:
            continue
        for spec, amount in postings:
            entries.append({"transaction_ref": row["ref"], "account_code": spec.code, "amount_fen": amount})
            deltas[spec.code] = deltas.get(spec.code, 0) + amount
    if entries:
        conn.execute(ENTRIES.insert(), entries)
    add_to_balances(conn, deltas)
    return written


def row_locks(conn: Connection) -> bool:
    """Whether the database locks rows (PostgreSQL). SQLite's writer holds the whole database already:
    BEGIN IMMEDIATE."""
    return conn.dialect.name == "postgresql"


def for_update(conn: Connection, statement: Select[Any]) -> Select[Any]:
    """Lock the selected rows until commit where the database has row locks."""
    return statement.with_for_update() if row_locks(conn) else statement


_BALANCES = (select(ACCOUNTS.c.code, ACCOUNTS.c.balance_fen)
             .where(ACCOUNTS.c.code.in_(bindparam("codes", expanding=True))).order_by(ACCOUNTS.c.code))
_BALANCES_LOCKED = _BALANCES.with_for_update()


def locked_balances(conn: Connection, codes: Sequence[str]) -> dict[str, int]:
    """The accounts' balances (those that exist), locked until commit where rows lock; in account order, so
    that two writers never wait on each other in a circle."""
    statement = _BALANCES_LOCKED if row_locks(conn) else _BALANCES
    return {code: balance for code, balance in conn.execute(statement, {"codes": list(codes)})}


def select_by_keys(conn: Connection, table: Table, names: Sequence[str], keys: Sequence[tuple[Any, ...]],
                   lock: bool = False) -> Result[Any]:
    """The rows of `table` whose columns `names` equal one of `keys`, through the index on those columns (and
    locked until commit where the database has row locks, when `lock`).

    Written as a join with a VALUES list: SQLite answers `(a, b) IN (VALUES ...)` by scanning the whole table,
    which on a ledger of millions of request records costs more than everything else a batch does."""
    statement = _keyed_statement(table, tuple(names), len(keys), lock and row_locks(conn))
    parameters = {f"k{row}_{i}": value for row, key in enumerate(keys) for i, value in enumerate(key)}
    return conn.execute(statement, parameters)


@functools.lru_cache(maxsize=1024)
def _keyed_statement(table: Table, names: tuple[str, ...], count: int, lock: bool) -> TextualSelect:
    """Built once per shape as plain text: SQLAlchemy would compile a VALUES construct anew for every batch."""
    rows = ", ".join("(" + ", ".join(f":k{row}_{i}" for i in range(len(names))) + ")" for row in range(count))
    joined = " AND ".join(f"{table.name}.{name} = wanted.{name}" for name in names)
    columns = ", ".join(f"{table.name}.{c.name}" for c in table.c)
    sql = (f"WITH wanted({', '.join(names)}) AS (VALUES {rows}) SELECT {columns} FROM {table.name} "
           f"JOIN wanted ON {joined}" + (f" FOR UPDATE OF {table.name}" if lock else ""))
    return text(sql).columns(*table.c)
