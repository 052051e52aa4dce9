"""`gateway reconcile` and `gateway day close`: finance's daily work."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import date
from pathlib import Path

from sqlalchemy import Engine

from gateway.cli.support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Commands, add_config, add_db, on_database


def add_commands(commands: Commands) -> None:
    reconcile = commands.add_parser(
        "reconcile", help="reconcile a day of the ledger against the insurance center's statement",
        description="Compare a business day's settlements, revokes and reversals in the ledger with the insurance "
                    "center's detail statement (docs/finance.md). Writes DIR/totals.csv, DIR/differences.csv and "
                    "DIR/summary.html. Exit status 0 only when everything matches; 1 with differences, or when "
                    "--institution names no registered institution; 2 when the statement is malformed (every bad "
                    "line is listed) or none of its rows is of --date. Nothing is written unless it is reconciled.")
    reconcile.add_argument("--date", required=True, type=date.fromisoformat, metavar="YYYY-MM-DD")
    reconcile.add_argument("--statement", required=True, type=Path, metavar="FILE")
    reconcile.add_argument("--institution", metavar="CODE",
                           help="only this institution's rows (a code of the registry's institutions)")
    reconcile.add_argument("--out", required=True, type=Path, metavar="DIR")
    reconcile.set_defaults(run=on_database(_reconcile))
    add_config(reconcile)
    add_db(reconcile)
    day = commands.add_parser("day", help="close a reconciled business day",
                              description="Business days (Beijing time) of the ledger.")
    actions = day.add_subparsers(dest="day_command", metavar="ACTION", required=True)
    close = actions.add_parser("close", help="freeze a reconciled day",
                               description="Freeze a past business day: its figures are recorded and never change; "
                                           "later revokes and reversals of its settlements are booked on their own "
                                           "day with a reference to the original.")
    close.add_argument("--date", required=True, type=date.fromisoformat, metavar="YYYY-MM-DD")
    close.set_defaults(run=on_database(_close))
    add_config(close)
    add_db(close)


def _reconcile(args: argparse.Namespace, engine: Engine) -> int:
    from gateway.finance.reconcile import StatementOfAnotherDay, UnknownInstitution, reconcile_file
    from gateway.finance.report import write_report
    from gateway.finance.statement import StatementError

    try:
        result = reconcile_file(engine, args.date, args.statement, args.institution)
    except UnknownInstitution as exc:
        print(f"gateway: {exc}; nothing was reconciled", file=sys.stderr)
        return EXIT_FAILED
    except StatementOfAnotherDay as exc:
        print(f"gateway: {exc}; nothing was reconciled (is it the statement of another day?)", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"gateway: cannot read {args.statement}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except UnicodeDecodeError:
        print(f"gateway: {args.statement} is not UTF-8 text; save it as UTF-8 CSV", file=sys.stderr)
        return EXIT_USAGE
    except StatementError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"gateway: the statement is malformed ({len(exc.problems)} problem(s)); nothing was reconciled",
              file=sys.stderr)
        return EXIT_USAGE
    command = "gateway " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_report(result, args.out, command)
    verdict = "everything matches" if result.matches else f"{len(result.differences)} difference(s)"
    print(f"reconciled {args.date}: {result.ledger_rows} ledger rows, {result.statement_rows} statement rows: "
          f"{verdict}; see {args.out / 'summary.html'}")
    return EXIT_OK if result.matches else EXIT_FAILED


def _close(args: argparse.Namespace, engine: Engine) -> int:
    from gateway.finance.day_close import DayCloseRefused, close_day
    from gateway.money import format_fen

    try:
        figures = close_day(engine, args.date)
    except DayCloseRefused as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"closed {figures.day}: {figures.transactions} settlements, revokes and reversals, "
          f"{format_fen(figures.total_fen)} yuan in all")
    return EXIT_OK
