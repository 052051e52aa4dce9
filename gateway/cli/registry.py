"""`gateway registry import | demo`: load the registry from CSV files, or write the demo registry."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from gateway.cli.support import EXIT_OK, EXIT_USAGE, Commands, Run, add_config, add_db, rejected, with_database
from gateway.config import GatewayConfig
from gateway.db.engine import redact_url
from gateway.demo.population import DEFAULT_PERSONS
from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION, write_demo_registry
from gateway.registry.cells import ImportReport
from gateway.registry.importer import ImportFailed, import_files


def add_commands(commands: Commands) -> None:
    registry = commands.add_parser("registry", help="load the registry",
                                   description="Load institutions, terminals, insured persons, cards, filings, "
                                               "look-up problems and opening balances into the registry.")
    actions = registry.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    importing = actions.add_parser(
        "import", help="import CSV files, all or nothing",
        description="Import registry CSV files (institutions, terminals, persons, cards, filings, lookup_problems, "
                    "balances). Each file is recognised by "
                    "its header; every row is validated and, if any is bad, nothing is written. "
                    "Importing the same files again changes nothing. docs/registry.md describes the columns.",
    )
    importing.add_argument("files", nargs="+", type=Path, metavar="FILE.csv")
    importing.set_defaults(run=_loading(_import))
    demo = actions.add_parser(
        "demo", help="write the demo registry",
        description="Write the demo institutions and terminals (credential 'demo-secret') and the demo "
                    "population's persons, cards, filings and opening balances (the same people and cards as the "
                    "virtual cards), plus one ID number per look-up problem. Safe to run again: it adds what is "
                    "missing and keeps every registered row as it is (what a card agency recorded stays).",
    )
    demo.add_argument("--terminals-per-institution", type=int, default=DEFAULT_TERMINALS_PER_INSTITUTION,
                      metavar="N", help="terminals registered for each demo institution "
                                        f"(default {DEFAULT_TERMINALS_PER_INSTITUTION})")
    demo.add_argument("--persons", type=int, default=DEFAULT_PERSONS, metavar="N",
                      help=f"insured persons of the demo population to register (default {DEFAULT_PERSONS}, "
                           "as the simulators)")
    demo.set_defaults(run=_loading(_demo))
    for parser in (importing, demo):
        add_config(parser)
        add_db(parser)


def _import(args: argparse.Namespace, engine: Engine) -> ImportReport:
    return import_files(engine, args.files)


def _demo(args: argparse.Namespace, engine: Engine) -> ImportReport:
    return write_demo_registry(engine, args.terminals_per_institution, args.persons)


def _loading(load: Callable[[argparse.Namespace, Engine], ImportReport]) -> Run:
    """The command that runs `load` in the database and reports it the same way for import and demo."""

    def run(args: argparse.Namespace, config: GatewayConfig) -> int:
        def command(engine: Engine) -> int:
            try:
                report = load(args, engine)
            except ImportFailed as exc:
                return rejected(exc.errors, "imported")
            except ValueError as exc:
                print(f"gateway: {exc}", file=sys.stderr)
                return EXIT_USAGE
            print(f"registry imported into {redact_url(config.database.url)}: {report.summary()}")
            return EXIT_OK

        return with_database(config, command)

    return run
