"""Alembic, driven from code: `gateway db upgrade` needs no alembic.ini."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MAX_LISTED_VIOLATIONS = 5  # foreign-key violations named in the message; the count says how many there are


class MigrationRefused(RuntimeError):
    """A migration that cannot apply to the database as it stands; the message says why and what to do. Raised
    inside the migration's transaction: nothing was changed."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's config is ConfigParser-based: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Alembic's downgrade, run as upgrade runs (the `gateway` command has none: for tests and a DBA)."""
    _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, step: Callable[[Config, str], None], revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with _connection_for_migrating(engine) as connection, connection.begin():
        config.attributes["connection"] = connection
        step(config, revision)
        if connection.dialect.name == "sqlite":
            _check_foreign_keys(connection)


@contextmanager
def _connection_for_migrating(engine: Engine) -> Iterator[Connection]:
    """A connection for one transaction of migrations. On SQLite its foreign keys are off: Alembic's batch mode
    alters a table by copying it into a new one and dropping the old, which foreign keys enforced would refuse (or
    cascade) for a table others refer to (SQLite's own procedure for altering a table says to turn them off). The
    pragma does nothing inside a transaction, so it is set on the driver's connection before BEGIN, and set back
    before the connection returns to the pool. What it would have caught is checked before the commit."""
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            yield connection
            return
        driver = connection.connection.driver_connection
        if driver is None:
            raise RuntimeError("an SQLite connection without its driver connection")
        driver.execute("PRAGMA foreign_keys=OFF")
        try:
            yield connection
        finally:
            driver.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection: Connection) -> None:
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if violations:
        named = ", ".join(f"{table} row {rowid} -> {parent}" for table, rowid, parent, _ in
                          violations[:MAX_LISTED_VIOLATIONS])
        raise MigrationRefused(f"the migrated schema breaks {len(violations)} foreign key(s) ({named}); "
                               "nothing was migrated")


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {script.dir}: this installation of the gateway is incomplete")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
