"""`gateway db upgrade | current`: the database schema (Alembic)."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import Engine

from gateway.cli.support import EXIT_FAILED, EXIT_OK, Commands, add_config, add_db, with_database
from gateway.config import GatewayConfig
from gateway.db.engine import redact_url
from gateway.db.migrate import MigrationRefused, current_revision, head_revision, upgrade


def add_commands(commands: Commands) -> None:
    db = commands.add_parser("db", help="database schema", description="Manage the database schema.")
    actions = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="migrate the schema to the newest revision",
                                 description="Create or migrate the schema (Alembic); safe to run again. The only "
                                             "command that creates a database (an SQLite file and its directory).")
    upgrade.set_defaults(run=_upgrade)
    current = actions.add_parser("current", help="print the schema revision",
                                 description="Print the database's schema revision and the newest one.")
    current.set_defaults(run=_current)
    for parser in (upgrade, current):
        add_config(parser)
        add_db(parser)


def _upgrade(_args: argparse.Namespace, config: GatewayConfig) -> int:
    def command(engine: Engine) -> int:
        try:
            upgrade(engine)
        except MigrationRefused as exc:  # it says why and what to do; nothing was changed
            print(f"gateway: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"database {redact_url(config.database.url)} is at schema revision {current_revision(engine)}")
        return EXIT_OK

    return with_database(config, command, needs_current_schema=False, creates=True)


def _current(_args: argparse.Namespace, config: GatewayConfig) -> int:
    def command(engine: Engine) -> int:
        print(f"current: {current_revision(engine) or 'none'}; newest: {head_revision()}")
        return EXIT_OK

    return with_database(config, command, needs_current_schema=False)
