"""SQLAlchemy engines from a URL: SQLite embedded by default, PostgreSQL (psycopg 3) when shared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DB_URL = "sqlite:///var/gateway.db"
# SQLite: how long a connection waits for another's lock before failing.
DEFAULT_BUSY_TIMEOUT_MS = 5_000
# SQLite: fsync at every commit, so that an acknowledged settlement survives a power cut.
DEFAULT_SQLITE_SYNCHRONOUS = "FULL"
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
SQLITE_MMAP_BYTES = 256 * 1024 * 1024
# Keys bound in one statement's IN list, for code that looks up or locks rows by many keys in chunks: far
# below PostgreSQL's limit on one statement's bind parameters (65,535) and SQLite's (32,766).
MAX_IN_LIST_KEYS = 1_000
# Execution option: begin the transaction holding SQLite's write lock (ignored elsewhere).
IMMEDIATE_OPTION = "gateway_immediate"


class DatabaseUrlError(ValueError):
    pass


class DatabaseMissing(Exception):
    """The URL names an SQLite file that does not exist, and the caller does not create databases."""

    def __init__(self, path: Path) -> None:
        where = str(path) if path.is_absolute() else f"{path} ({path.absolute()})"
        super().__init__(f"no database at {where}")
        self.path = path


def normalise_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` as psycopg 3 URLs; check the backend is supported."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUrlError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
        parsed = parsed.set(drivername="postgresql")
    if backend not in SUPPORTED_BACKENDS:
        raise DatabaseUrlError(f"unsupported database {backend!r}; use sqlite:/// or postgresql+psycopg://")
    if backend == "postgresql" and parsed.drivername != "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(
    url: str = DEFAULT_DB_URL,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS,
    pool_size: int = 5,
    create: bool = True,
) -> Engine:
    """An engine for `url`. create=False: a missing SQLite file is DatabaseMissing, and neither it nor its
    directory is made (SQLite would otherwise create an empty database on the first connection)."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, busy_timeout_ms, sqlite_synchronous, pool_size, create)
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _sqlite_engine(url: str, busy_timeout_ms: int, synchronous: str, pool_size: int, create: bool) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        path = Path(database)
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise DatabaseMissing(path)
    connect_args: dict[str, Any] = {
        # Our worker threads share the pool; SQLAlchemy serialises use of each connection.
        "check_same_thread": False,
        "timeout": busy_timeout_ms / 1000,
    }
    engine = create_engine(url, connect_args=connect_args, pool_size=pool_size, max_overflow=pool_size)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling starts transactions late (at the first write) and breaks
        # SAVEPOINT; SQLAlchemy's documented remedy: driver in autocommit, BEGIN emitted by us below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # WAL lets readers run beside the one writer; FULL fsyncs every commit (a settlement
            # answered OK must survive a power cut).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Readers start cold after every commit of the writer (WAL); mapped pages make that cheap.
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # The ledger's writer takes the write lock at once (BEGIN IMMEDIATE), so that what it reads
        # stays true until it commits; everyone else begins as SQLite does by default.
        immediate = connection.get_execution_options().get(IMMEDIATE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def redact_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"
