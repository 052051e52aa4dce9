"""Dialect details the ledger needs on both SQLite and PostgreSQL: upserts, row locks, and the writer's hot
writes as plain SQL through the DBAPI."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Dialect, Result, Select, Table, TextualSelect, bindparam, select, text
from sqlalchemy.dialects import postgresql, sqlite

from gateway.ledger.accounts import AccountSpec
from gateway.ledger.models import TransactionKind
from gateway.ledger.postings import Posting
from gateway.ledger.tables import ACCOUNTS, ENTRIES, RECORDS, TRANSACTIONS, YEAR_TOTALS
from gateway.ledger.transactions import AMOUNT_COLUMNS, SPLIT_COLUMNS
from gateway.settlement.split import FundSplit

# Statements are built once per shape and dialect: building one costs more than SQLAlchemy's compiled-cache
# lookup that executes it, and the writer runs the same dozen for every batch.

def insert_ignore(conn: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING."""
    return _insert_ignore(conn.dialect.name, table)


@functools.lru_cache(maxsize=64)
def _insert_ignore(dialect_name: str, table: Table) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


# The hot writes ------------------------------------------------------------------------------------
# What the writer writes for every batch goes to the DBAPI's `executemany` as plain SQL with rows of plain values
# (`Connection.exec_driver_sql`): the same statement text each time, which sqlite3 keeps prepared in its statement
# cache and psycopg 3 prepares on the server and sends as one pipeline. SQLAlchemy Core would process every
# parameter of every row in Python first (a fifth of the writer's time). The two values it would convert, a date
# and a time, are converted here by the dialect's own converters, so the rows stored are the same.

TRANSACTION_COLUMNS = ("ref", "kind", "dedupe_key", "original_ref", "terminal_id", "message_id", "institution_code",
                       "person_id", "card_number", "medical_type", "insurance_year", "business_date",
                       "recorded_at", "policy_version", "total_fen", "pooled_fund_fen", "current_year_fen",
                       "prior_years_fen", "cash_fen", "deductible_counted_fen")
RECORD_COLUMNS = ("terminal_id", "message_id", "body", "content_hash", "outcome", "transaction_ref",
                  "recorded_outcome", "recorded_at")
_SETTLEMENT = TransactionKind.SETTLEMENT.value
_ENTRY_COLUMNS = ("transaction_ref", "account_code", "amount_fen")
_YEAR_KEY = ("person_id", "insurance_year")
_YEAR_ADDED = ("deductible_counted_fen", "pooled_fund_paid_fen")


def _same_columns(table: Table, columns: Sequence[str], generated: Sequence[str] = ()) -> None:
    """A table whose columns changed must change the hot writes too: checked when the module loads."""
    expected = {c.name for c in table.c} - set(generated)
    if set(columns) != expected or len(columns) != len(expected):
        raise RuntimeError(f"the writer's columns for {table.name} are {sorted(columns)}, the table's "
                           f"{sorted(expected)}: gateway/ledger/sql.py must follow the models")


_same_columns(TRANSACTIONS, TRANSACTION_COLUMNS, generated=("id",))
if TRANSACTION_COLUMNS[-len(AMOUNT_COLUMNS):] != AMOUNT_COLUMNS:
    raise RuntimeError("transaction_row takes the amounts in the order of AMOUNT_COLUMNS: keep them last, in order")
# settlement_row writes the split's fields in the order of AMOUNT_COLUMNS, which SPLIT_COLUMNS maps them to.
if tuple(SPLIT_COLUMNS) != ("total_fen", "pooled_fund_fen", "current_year_account_fen", "prior_years_account_fen",
                            "cash_fen", "deductible_counted_fen"):
    raise RuntimeError("settlement_row binds FundSplit's fields in SPLIT_COLUMNS' order: keep the two in step")
_same_columns(RECORDS, RECORD_COLUMNS)
_same_columns(ENTRIES, _ENTRY_COLUMNS, generated=("id",))
_same_columns(YEAR_TOTALS, _YEAR_KEY + _YEAR_ADDED)


@dataclass(frozen=True)
class HotSql:
    """The hot writes' statements for one dialect, and its conversions of the values they bind."""

    insert_transactions: str     # a row: TRANSACTION_COLUMNS
    insert_entries: str          # (transaction ref, account code, amount)
    insert_records: str          # a row: RECORD_COLUMNS
    add_to_balances: str         # (delta, account code)
    add_to_year_totals: str      # (person id, year, deductible counted, pooled fund paid), added to what is there
    day: Callable[[date], Any]   # a Date column's value as the DBAPI is given it
    moment: Callable[[datetime], Any]  # a DateTime column's


def hot_sql(conn: Connection) -> HotSql:
    return _hot_sql(conn.dialect.name, conn.dialect)


@functools.lru_cache(maxsize=8)
def _hot_sql(name: str, dialect: Dialect) -> HotSql:
    if dialect.paramstyle == "qmark":
        mark = "?"
    elif dialect.paramstyle in ("format", "pyformat"):
        mark = "%s"
    else:
        raise ValueError(f"no hot writes for the {name} driver's parameter style {dialect.paramstyle}")

    def insert(table: Table, columns: Sequence[str]) -> str:
        return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"

    added = ", ".join(f"{c} = {YEAR_TOTALS.name}.{c} + excluded.{c}" for c in _YEAR_ADDED)
    return HotSql(
        insert_transactions=insert(TRANSACTIONS, TRANSACTION_COLUMNS),
        insert_entries=insert(ENTRIES, _ENTRY_COLUMNS),
        insert_records=insert(RECORDS, RECORD_COLUMNS),
        add_to_balances=f"UPDATE ledger_accounts SET balance_fen = balance_fen + {mark} WHERE code = {mark}",
        add_to_year_totals=(insert(YEAR_TOTALS, _YEAR_KEY + _YEAR_ADDED)
                            + f" ON CONFLICT ({', '.join(_YEAR_KEY)}) DO UPDATE SET {added}"),
        day=_converter(TRANSACTIONS.c.business_date.type.dialect_impl(dialect).bind_processor(dialect)),
        moment=_converter(TRANSACTIONS.c.recorded_at.type.dialect_impl(dialect).bind_processor(dialect)),
    )


def _converter(processor: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    return processor if processor is not None else _as_is


def _as_is(value: Any) -> Any:
    return value


def transaction_row(hot: HotSql, *, ref: str, kind: str, business_date: date, recorded_at: datetime,
                    dedupe_key: str | None = None, original_ref: str | None = None, terminal_id: str | None = None,
                    message_id: str | None = None, institution_code: str | None = None,
                    person_id: int | None = None, card_number: str | None = None,
                    medical_type: int | None = None, insurance_year: int | None = None,
                    policy_version: str | None = None, amounts: Sequence[int] = (0, 0, 0, 0, 0, 0)) -> tuple[Any, ...]:
    """A transaction as `hot.insert_transactions` binds it; `amounts` in the order of the columns total_fen to
    deductible_counted_fen (gateway.ledger.transactions.AMOUNT_COLUMNS)."""
    return (ref, kind, dedupe_key, original_ref, terminal_id, message_id, institution_code, person_id,
            card_number, medical_type, insurance_year, hot.day(business_date), hot.moment(recorded_at),
            policy_version, *amounts)


def settlement_row(ref: str, terminal_id: str, message_id: str, institution_code: str, person_id: int,
                   card_number: str, medical_type: int, insurance_year: int, day: Any, moment: Any,
                   policy_version: str | None, split: FundSplit) -> tuple[Any, ...]:
    """A settlement as `hot.insert_transactions` binds it, its day and time converted already (`hot.day`,
    `hot.moment`: the writer converts each once, not once per row that holds it). Positional and without the
    split's dictionary: the writer builds one per settlement."""
    return (ref, _SETTLEMENT, None, None, terminal_id, message_id, institution_code, person_id, card_number,
            medical_type, insurance_year, day, moment, policy_version, split.total_fen, split.pooled_fund_fen,
            split.current_year_account_fen, split.prior_years_account_fen, split.cash_fen,
            split.deductible_counted_fen)


def record_row(terminal_id: str, message_id: str, body: str, content_hash: str | None, outcome: str,
               transaction_ref: str | None, recorded_outcome: str | None, moment: Any) -> tuple[Any, ...]:
    """A request record as `hot.insert_records` binds it (RECORD_COLUMNS); `moment` converted (`hot.moment`)."""
    return (terminal_id, message_id, body, content_hash, outcome, transaction_ref, recorded_outcome, moment)


def data_version(conn: Connection) -> int | None:
    """SQLite's `PRAGMA data_version` in the connection's transaction: it changes exactly when another connection
    (in this process or another) committed a change to the database since this connection last looked. None where
    the database has no such thing (PostgreSQL)."""
    if conn.dialect.name != "sqlite":
        return None
    version: int = conn.exec_driver_sql("PRAGMA data_version").scalar_one()
    return version


def open_accounts(conn: Connection, specs: Iterable[AccountSpec]) -> None:
    """Create the accounts that do not exist yet, at balance 0 (another writer may be creating them too)."""
    rows = [{"code": s.code, "kind": s.kind.value, "owner": s.owner, "must_not_go_negative": s.must_not_go_negative,
             "balance_fen": 0} for s in sorted(specs, key=lambda s: s.code)]
    if rows:
        conn.execute(insert_ignore(conn, ACCOUNTS), rows)


def add_to_balances(conn: Connection, deltas: dict[str, int]) -> None:
    """Each account's cached balance moved by its delta: one statement, in account order, so that two writers
    never wait on each other in a circle and a hot account (a pooled fund) is updated once per batch."""
    rows = [(deltas[code], code) for code in sorted(deltas) if deltas[code]]
    if rows:
        conn.exec_driver_sql(hot_sql(conn).add_to_balances, rows)


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


def rows_by_keys(conn: Connection, table: Table, names: Sequence[str], columns: Sequence[str],
                 keys: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """select_by_keys' rows, only `columns` (which need no conversion: text and numbers), as dictionaries, through
    the DBAPI with positional parameters: a batch reads its request records so, without SQLAlchemy processing
    each of its keys' parameters and each row."""
    if not keys:
        return []
    statement = _keyed_driver_statement(conn.dialect.paramstyle, table.name, tuple(names), tuple(columns), len(keys))
    parameters = tuple(value for key in keys for value in key)
    return [dict(zip(columns, row, strict=True)) for row in conn.exec_driver_sql(statement, parameters)]


@functools.lru_cache(maxsize=1024)
def _keyed_driver_statement(paramstyle: str, table: str, names: tuple[str, ...], columns: tuple[str, ...],
                            count: int) -> str:
    mark = "?" if paramstyle == "qmark" else "%s"
    rows = ", ".join("(" + ", ".join([mark] * len(names)) + ")" for _ in range(count))
    joined = " AND ".join(f"{table}.{name} = wanted.{name}" for name in names)
    return (f"WITH wanted({', '.join(names)}) AS (VALUES {rows}) SELECT {', '.join(f'{table}.{c}' for c in columns)} "
            f"FROM {table} JOIN wanted ON {joined}")


@functools.lru_cache(maxsize=1024)
def _keyed_statement(table: Table, names: tuple[str, ...], count: int, lock: bool) -> TextualSelect:
    """Built once per shape as plain text: SQLAlchemy would compile a VALUES construct anew for every batch."""
    rows = ", ".join("(" + ", ".join(f":k{row}_{i}" for i in range(len(names))) + ")" for row in range(count))
    joined = " AND ".join(f"{table.name}.{name} = wanted.{name}" for name in names)
    columns = ", ".join(f"{table.name}.{c.name}" for c in table.c)
    sql = (f"WITH wanted({', '.join(names)}) AS (VALUES {rows}) SELECT {columns} FROM {table.name} "
           f"JOIN wanted ON {joined}" + (f" FOR UPDATE OF {table.name}" if lock else ""))
    return text(sql).columns(*table.c)


# PostgreSQL: a batch of settlements' state in one round trip ----------------------------------------
# A batch of Settles reads, under lock, the request records of its keys, the holders' balances and year-to-date
# totals, their cards and whether a social security card of theirs was used: five statements, which SQLAlchemy
# would send one after another, each waiting for the server, each key a bind parameter of its own. Here they go as
# one pipeline of plain SQL with one array per key column (`= ANY(%s)`, `unnest(...)`), through the index of each
# table (the plans: docs/ledger.md), and the writer waits once.

_PG_RECORD_KEYS = ("SELECT request_records.terminal_id, request_records.message_id FROM request_records "
                   "JOIN unnest(%s::text[], %s::text[]) AS wanted(terminal_id, message_id) "
                   "ON request_records.terminal_id = wanted.terminal_id "
                   "AND request_records.message_id = wanted.message_id")
_PG_BALANCES_LOCKED = ("SELECT code, balance_fen FROM ledger_accounts WHERE code = ANY(%s::text[]) ORDER BY code "
                       "FOR UPDATE")
_PG_YEAR_TOTALS_LOCKED = ("SELECT year_totals.person_id, year_totals.insurance_year, "
                          "year_totals.deductible_counted_fen, year_totals.pooled_fund_paid_fen FROM year_totals "
                          "JOIN unnest(%s::bigint[], %s::integer[]) AS wanted(person_id, insurance_year) "
                          "ON year_totals.person_id = wanted.person_id "
                          "AND year_totals.insurance_year = wanted.insurance_year "
                          "ORDER BY year_totals.person_id, year_totals.insurance_year FOR UPDATE OF year_totals")
_PG_CARDS = "SELECT card_number, status, first_used_on, kind FROM cards WHERE card_number = ANY(%s::text[])"
_PG_USED_SOCIAL_SECURITY_CARDS = ("SELECT DISTINCT persons.person_id FROM persons "
                                  "JOIN cards ON cards.social_security_number = persons.social_security_number "
                                  "WHERE persons.person_id = ANY(%s::bigint[]) AND cards.kind = %s "
                                  "AND cards.first_used_on IS NOT NULL")


@dataclass
class SettlesState:
    """What `settles_state` read."""

    recorded: set[tuple[str, str]]                    # the keys asked about that hold a request record
    balances: dict[str, int]                          # account code -> fen, of the codes asked about that exist
    year_totals: dict[tuple[int, int], tuple[int, int]]  # (person id, year) -> (deductible counted, pooled paid)
    cards: dict[str, tuple[str, date | None, str]]    # card number -> (status, first used on, kind)
    used_social_security_card: set[int]               # person ids


def pipelines(conn: Connection) -> bool:
    """Whether `settles_state` can read on this connection (psycopg 3 on PostgreSQL)."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def settles_state(conn: Connection, keys: Sequence[tuple[str, str]], codes: Sequence[str],
                  year_keys: Sequence[tuple[int, int]], card_numbers: Sequence[str], persons: Sequence[int],
                  social_security_kind: str) -> SettlesState:
    """The state a batch of settlements reads, in one pipeline on the connection's transaction (psycopg 3): which
    of `keys` are recorded; the balances of `codes` and the year totals of `year_keys`, locked until commit (each in
    key order, as every writer locks them); the cards' registry rows; which of `persons` used a social security
    card."""
    driver = conn.connection.driver_connection
    if driver is None:
        raise RuntimeError("the connection was closed under the ledger's batch")
    with driver.pipeline():
        cursors = [driver.cursor() for _ in range(5)]
        cursors[0].execute(_PG_RECORD_KEYS, ([t for t, _ in keys], [m for _, m in keys]))
        cursors[1].execute(_PG_BALANCES_LOCKED, (list(codes),))
        cursors[2].execute(_PG_YEAR_TOTALS_LOCKED, ([p for p, _ in year_keys], [y for _, y in year_keys]))
        cursors[3].execute(_PG_CARDS, (list(card_numbers),))
        cursors[4].execute(_PG_USED_SOCIAL_SECURITY_CARDS, (list(persons), social_security_kind))
    recorded, balances, years, cards, used = (cursor.fetchall() for cursor in cursors)
    return SettlesState(
        recorded={(terminal, message) for terminal, message in recorded},
        balances={code: balance for code, balance in balances},
        year_totals={(person, year): (deductible, pooled) for person, year, deductible, pooled in years},
        cards={number: (status, first_used_on, kind) for number, status, first_used_on, kind in cards},
        used_social_security_card={person for (person,) in used})
