"""What every command of the `gateway` CLI shares: the exit statuses, the options --config and --db, the
configuration they make, and how a database command opens, checks and reports on its database."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TypeAlias

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.config import GatewayConfig, load_config, validate_config
from gateway.db.engine import DatabaseMissing, DatabaseUrlError, make_engine, redact_url
from gateway.db.migrate import current_revision, head_revision
from gateway.registry.cells import RowProblem, parse_date

# Every command's exit status (README, "Operating it"): 0 done (and everything matches); 1 refused (by the rules,
# the card, or a database that is missing, not current or failing), or differences found; 2 the request is
# malformed (an argument, the configuration, an input file's rows) or a file cannot be read or written.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DATE_FORMS = "YYYY-MM-DD or YYYYMMDD"

# What each command group's add_commands() adds its parsers to (argparse's type is not subscriptable at run time).
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# What a leaf sub-command sets as its `run` default: it does the command and returns the exit status.
Run: TypeAlias = Callable[[argparse.Namespace, GatewayConfig], int]
# What a database command does once its database is open and its schema checked: the exit status.
DatabaseAction: TypeAlias = Callable[[argparse.Namespace, Engine], int]


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML configuration file (every key has a default; see docs/configuration.md)")


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL",
                        help="database URL, e.g. sqlite:///var/gateway.db (the default) or "
                             "postgresql+psycopg://user@127.0.0.1:5432/gateway; overrides the config file")


def date_argument(text: str) -> date:
    """The type of every date option: one message for a date that is not one, whichever command it is."""
    try:
        return parse_date("date", text.strip())
    except RowProblem as exc:
        why = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise argparse.ArgumentTypeError(f"{text!r} is not a calendar date ({DATE_FORMS}){why}") from exc


def resolve_config(args: argparse.Namespace) -> GatewayConfig:
    """The configuration file of --config (or the defaults) with --db applied; ConfigError when it is bad."""
    config = load_config(getattr(args, "config", None))
    if getattr(args, "db", None):
        config = replace(config, database=replace(config.database, url=args.db))
    validate_config(config, "command line")
    return config


def with_database(config: GatewayConfig, command: Callable[[Engine], int], *,
                  needs_current_schema: bool = True, creates: bool = False) -> int:
    """Run `command` on the configured database (every setting of [database] applied) and dispose of it after.
    A malformed URL is a usage error; an SQLite file that is not there (only `creates`, which is `gateway db
    upgrade`, makes a new database), a schema that is not current, or a database error, a refusal, said once the
    same way for every command."""
    try:
        engine = make_engine(config.database.url, busy_timeout_ms=config.database.busy_timeout_ms,
                             sqlite_synchronous=config.database.sqlite_synchronous, create=creates)
    except DatabaseUrlError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseMissing as exc:
        return no_database(exc)
    try:
        if needs_current_schema and not _schema_is_current(engine):
            return EXIT_FAILED
        return command(engine)
    except SQLAlchemyError as exc:
        print(_database_error(config.database.url, exc), file=sys.stderr)
        return EXIT_FAILED
    finally:
        engine.dispose()


def on_database(action: DatabaseAction) -> Run:
    """The command that runs `action` on the configured database, as with_database does."""

    def run(args: argparse.Namespace, config: GatewayConfig) -> int:
        return with_database(config, lambda engine: action(args, engine))

    return run


def no_database(missing: DatabaseMissing) -> int:
    """A mistyped SQLite path must not become a new, empty ledger: say so, and who would create one. Refused like
    a database whose schema is not current: neither is a ledger this command can work on."""
    print(f"gateway: {no_database_advice(missing)}", file=sys.stderr)
    return EXIT_FAILED


def no_database_advice(missing: DatabaseMissing) -> str:
    return (f"{missing}: check --db (or database.url in the config file); only `gateway db upgrade` creates a "
            "database")


def rejected(errors: Sequence[object], nothing_was: str) -> int:
    """An input file refused as a whole: every problem (with its line), then how many and that nothing was done.
    A malformed request, like a statement reconcile cannot read."""
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"gateway: {len(errors)} problem(s) found; nothing was {nothing_was}", file=sys.stderr)
    return EXIT_USAGE


def cannot_write(path: object, exc: OSError) -> int:
    """An output file (or directory) that cannot be written: which, and why, in one line."""
    print(f"gateway: cannot write {exc.filename or path}: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_USAGE


def _schema_is_current(engine: Engine) -> bool:
    """True, or False after telling the operator what to run."""
    if current_revision(engine) == head_revision():
        return True
    print("gateway: the database schema is not current: run `gateway db upgrade` first", file=sys.stderr)
    return False


def _database_error(url: str, exc: SQLAlchemyError) -> str:
    """The message for a database failure: which database (without its password) and what the driver said, on
    one line (psycopg's messages carry a hint on a line of their own)."""
    cause = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return f"gateway: database error on {redact_url(url)}: {exc.__class__.__name__}: {cause}"
