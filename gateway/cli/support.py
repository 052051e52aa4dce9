"""What every database command of the `gateway` CLI says the same way."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.db.engine import DatabaseUrlError, make_engine, redact_url
from gateway.db.migrate import current_revision, head_revision

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def with_database(config: Any, command: Callable[[Engine], int], *, needs_current_schema: bool = True) -> int:
    """Run `command` on the configured database (every setting of [database] applied) and dispose of it after.
    A malformed URL is a usage error; a schema that is not current, or a database error, a failure, said once
    the same way for every command."""
    try:
        engine = make_engine(config.database.url, busy_timeout_ms=config.database.busy_timeout_ms,
                             sqlite_synchronous=config.database.sqlite_synchronous)
    except DatabaseUrlError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if needs_current_schema and not _schema_is_current(engine):
            return EXIT_FAILED
        return command(engine)
    except SQLAlchemyError as exc:
        print(_database_error(config.database.url, exc), file=sys.stderr)
        return EXIT_FAILED
    finally:
        engine.dispose()


def rejected(errors: Sequence[object], nothing_was: str) -> int:
    """A file refused as a whole: every problem, then how many and that nothing was done."""
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"gateway: {len(errors)} problem(s) found; nothing was {nothing_was}", file=sys.stderr)
    return EXIT_FAILED


def _schema_is_current(engine: Engine) -> bool:
    """True, or False after telling the operator what to run."""
    if current_revision(engine) == head_revision():
        return True
    print("gateway: the database schema is not current: run `gateway db upgrade` first", file=sys.stderr)
    return False


def _database_error(url: str, exc: SQLAlchemyError) -> str:
    """The message for a database failure: which database (without its password) and what the driver said."""
    cause = getattr(exc, "orig", None) or exc
    return f"gateway: database error on {redact_url(url)}: {exc.__class__.__name__}: {cause}"
