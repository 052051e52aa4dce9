"""The `gateway` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.cli.support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, rejected, with_database
from gateway.config import ConfigError, GatewayConfig, load_config, validate_config

if TYPE_CHECKING:
    from sqlalchemy import Engine


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML configuration file (every key has a default; see docs/configuration.md)")


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL",
                        help="database URL, e.g. sqlite:///var/gateway.db (the default) or "
                             "postgresql+psycopg://user@127.0.0.1:5432/gateway; overrides the config file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Ningbo medical-settlement gateway: settles medical insurance with the social security card.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the gateway in the foreground",
                                description="Run the gateway in the foreground until Ctrl+C or SIGTERM.")
    _add_config(serve)
    serve.add_argument("--listen", action="append", metavar="ENDPOINT",
                       help="Twisted server endpoint, e.g. tcp:9500:interface=127.0.0.1 (repeatable; "
                            "overrides server.listen)")
    _add_db(serve)
    serve.add_argument("--log-format", choices=("text", "json"), help="log format (overrides log.format)")
    serve.add_argument("--log-level", choices=("debug", "info", "warn", "error"),
                       help="lowest level logged (overrides log.level)")

    db = commands.add_parser("db", help="database schema", description="Manage the database schema.")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = db_commands.add_parser("upgrade", help="migrate the schema to the newest revision",
                                     description="Create or migrate the schema (Alembic); safe to run again.")
    _add_config(upgrade)
    _add_db(upgrade)
    current = db_commands.add_parser("current", help="print the schema revision",
                                     description="Print the database's schema revision and the newest one.")
    _add_config(current)
    _add_db(current)

    registry = commands.add_parser("registry", help="load the registry",
                                   description="Load institutions, terminals, insured persons, cards, filings, "
                                               "look-up problems and opening balances into the registry.")
    registry_commands = registry.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    importing = registry_commands.add_parser(
        "import", help="import CSV files, all or nothing",
        description="Import registry CSV files (institutions, terminals, persons, cards, filings, lookup_problems, "
                    "balances). Each file is recognised by "
                    "its header; every row is validated and, if any is bad, nothing is written. "
                    "Importing the same files again changes nothing. docs/registry.md describes the columns.",
    )
    importing.add_argument("files", nargs="+", type=Path, metavar="FILE.csv")
    _add_config(importing)
    _add_db(importing)
    demo = registry_commands.add_parser(
        "demo", help="write the demo registry",
        description="Write the demo institutions and terminals (credential 'demo-secret') and the demo "
                    "population's persons, cards, filings and opening balances (the same people and cards as the "
                    "virtual cards), plus one ID number per look-up problem. Safe to run again.",
    )
    from gateway.demo.population import DEFAULT_PERSONS
    from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION

    demo.add_argument("--terminals-per-institution", type=int, default=DEFAULT_TERMINALS_PER_INSTITUTION,
                      metavar="N", help="terminals registered for each demo institution "
                                        f"(default {DEFAULT_TERMINALS_PER_INSTITUTION})")
    demo.add_argument("--persons", type=int, default=DEFAULT_PERSONS, metavar="N",
                      help=f"insured persons of the demo population to register (default {DEFAULT_PERSONS}, "
                           "as the simulators)")
    _add_config(demo)
    _add_db(demo)
    from gateway.cli.agency import add_agency_commands
    from gateway.cli.card import add_card_commands

    add_card_commands(commands, _add_config)
    add_agency_commands(commands, _add_config, _add_db)
    from gateway.cli.ledger import add_ledger_commands

    add_ledger_commands(commands, _add_config, _add_db)
    from gateway.cli.payout import add_payout_commands

    add_payout_commands(commands, _add_config, _add_db)
    from gateway.cli.simulate import add_simulate_command

    add_simulate_command(commands, _add_config, _add_db)
    from gateway.cli.finance import add_finance_commands

    add_finance_commands(commands, _add_config, _add_db)
    return parser


def resolve_config(args: argparse.Namespace) -> GatewayConfig:
    config = load_config(getattr(args, "config", None))
    if getattr(args, "db", None):
        config = replace(config, database=replace(config.database, url=args.db))
    if getattr(args, "listen", None):
        config = replace(config, server=replace(config.server, listen=tuple(args.listen)))
    if getattr(args, "log_format", None):
        config = replace(config, log=replace(config.log, format=args.log_format))
    if getattr(args, "log_level", None):
        config = replace(config, log=replace(config.log, level=args.log_level))
    validate_config(config, "command line")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "serve":
            return _serve(config)
        if args.command == "db":
            return _db(args, config)
        if args.command == "registry":
            return _registry(args, config)
        if args.command == "agency":
            from gateway.cli.agency import run_agency_command

            return run_agency_command(args, config)
        if args.command == "card":
            from gateway.cli.card import run_card_command

            return run_card_command(args, config)
        if args.command in ("reconcile", "day"):
            from gateway.cli.finance import run_finance_command

            return run_finance_command(args, config)
        if args.command == "simulate":
            from gateway.cli.simulate import run_simulate_command

            return run_simulate_command(args, config)
        if args.command == "ledger":
            from gateway.cli.ledger import run_ledger_command

            return run_ledger_command(args, config)
        if args.command == "payout":
            from gateway.cli.payout import run_payout_command

            return run_payout_command(args, config)
    except KeyboardInterrupt:
        return EXIT_FAILED
    raise AssertionError(f"unhandled command {args.command}")


def _serve(config: GatewayConfig) -> int:
    from gateway.serve.app import StartupError, serve

    try:
        return serve(config)
    except StartupError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _db(args: argparse.Namespace, config: GatewayConfig) -> int:
    from gateway.db.engine import redact_url
    from gateway.db.migrate import current_revision, head_revision, upgrade

    def command(engine: Engine) -> int:
        if args.db_command == "upgrade":
            upgrade(engine)
            print(f"database {redact_url(config.database.url)} is at schema revision {current_revision(engine)}")
        else:
            print(f"current: {current_revision(engine) or 'none'}; newest: {head_revision()}")
        return EXIT_OK

    return with_database(config, command, needs_current_schema=False)


def _registry(args: argparse.Namespace, config: GatewayConfig) -> int:
    from gateway.db.engine import redact_url
    from gateway.demo.registry import write_demo_registry
    from gateway.registry.importer import ImportFailed, import_files

    def command(engine: Engine) -> int:
        try:
            if args.registry_command == "import":
                report = import_files(engine, args.files)
            else:
                report = write_demo_registry(engine, args.terminals_per_institution, args.persons)
        except ImportFailed as exc:
            return rejected(exc.errors, "imported")
        except ValueError as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"registry imported into {redact_url(config.database.url)}: {report.summary()}")
        return EXIT_OK

    return with_database(config, command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
