"""`gateway ledger check | export | rollover`: finance's and the operator's view of the ledger."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import IO

from sqlalchemy import Engine

from gateway.cli.support import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_config,
    add_db,
    cannot_write,
    date_argument,
    on_database,
)


def add_commands(commands: Commands) -> None:
    ledger = commands.add_parser("ledger", help="check, export and roll over the ledger",
                                 description="The double-entry ledger: verify it, export a day, roll a year over.")
    actions = ledger.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="verify the ledger's invariants",
        description="Verify that every transaction balances, cached balances equal their entries, no personal "
                    "account is negative, every settlement's entries equal its recorded split, year-to-date totals "
                    "equal the settlements, and each request key has one outcome. Exits 1 with a report otherwise.")
    check.set_defaults(run=on_database(_check))
    export = actions.add_parser(
        "export", help="one row per settlement, revoke and reversal of a day",
        description="Write one row per settlement, revoke and reversal of a business day (Beijing time): terminal "
                    "id, message id, settlement id, institution, time, status and every fund amount in fen.")
    export.add_argument("--date", required=True, type=date_argument, metavar="YYYY-MM-DD")
    export.add_argument("--format", choices=("csv", "jsonl", "statement"), default="csv",
                        help="csv (our columns), jsonl, or statement (the insurance center's 3202 detail format, "
                             "which `gateway reconcile` reads)")
    export.add_argument("--output", type=Path, metavar="FILE", help="write here instead of standard output")
    export.set_defaults(run=on_database(_export_day))
    rollover = actions.add_parser(
        "rollover", help="year end: current-year balances into the prior-years accounts",
        description="Move each person's current-year balance into their prior-years account, one balanced "
                    "transaction per person. Running it again for the same year changes nothing.")
    rollover.add_argument("--year", required=True, type=int, metavar="YEAR")
    rollover.set_defaults(run=on_database(_rollover))
    for parser in (check, export, rollover):
        add_config(parser)
        add_db(parser)


def _check(_args: argparse.Namespace, engine: Engine) -> int:
    from gateway.ledger.check import check_ledger

    checked = check_ledger(engine)
    print(checked.render())
    return EXIT_OK if checked.ok else EXIT_FAILED


def _export_day(args: argparse.Namespace, engine: Engine) -> int:
    if args.output is not None:
        try:
            with args.output.open("w", encoding="utf-8", newline="") as out:
                count = _export(engine, args.date, out, args.format)
        except OSError as exc:
            return cannot_write(args.output, exc)
        print(f"{count} rows written to {args.output}", file=sys.stderr)
    else:
        _export(engine, args.date, sys.stdout, args.format)
    return EXIT_OK


def _rollover(args: argparse.Namespace, engine: Engine) -> int:
    from gateway.ledger.rollover import RolloverRefused, rollover
    from gateway.money import format_fen
    from gateway.settlement.calendar import FIRST_INSURANCE_YEAR, LAST_INSURANCE_YEAR, beijing_today

    if not FIRST_INSURANCE_YEAR <= args.year <= LAST_INSURANCE_YEAR:
        print(f"gateway: year {args.year} is out of range", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = rollover(engine, args.year, today=beijing_today())
    except RolloverRefused as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"rollover {args.year}: {report.persons} persons, {format_fen(report.moved_fen)} yuan moved into prior-years "
          f"accounts; {report.already_done} already rolled over")
    return EXIT_OK


def _export(engine: Engine, day: date, out: IO[str], fmt: str) -> int:
    if fmt == "statement":
        from gateway.finance.statement import export_statement

        return export_statement(engine, day, out)
    from gateway.ledger.export import write_export

    return write_export(engine, day, out, fmt)
