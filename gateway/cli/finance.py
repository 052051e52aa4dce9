"""`gateway reconcile`, `gateway day close` and `gateway day list`: finance's daily work."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

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
    reconcile = commands.add_parser(
        "reconcile", help="reconcile a day of the ledger against the insurance center's statement",
        description="Compare a business day's settlements, revokes and reversals in the ledger with the insurance "
                    "center's detail statement (docs/finance.md). Writes DIR/totals.csv, DIR/differences.csv and "
                    "DIR/summary.html. Exit status 0 only when everything matches; 1 with differences, or when "
                    "--institution names no registered institution; 2 when the statement is malformed (every bad "
                    "line is listed) or none of its rows is of --date. Nothing is written unless it is reconciled. "
                    "Each reconciliation is recorded: `gateway day close` needs a whole-day one that matched.")
    reconcile.add_argument("--date", required=True, type=date_argument, metavar="YYYY-MM-DD")
    reconcile.add_argument("--statement", required=True, type=Path, metavar="FILE")
    reconcile.add_argument("--institution", metavar="CODE",
                           help="only this institution's rows (a code of the registry's institutions)")
    reconcile.add_argument("--out", required=True, type=Path, metavar="DIR")
    reconcile.set_defaults(run=on_database(_reconcile))
    add_config(reconcile)
    add_db(reconcile)
    day = commands.add_parser("day", help="close a reconciled business day; list the days",
                              description="Business days (Beijing time) of the ledger.")
    actions = day.add_subparsers(dest="day_command", metavar="ACTION", required=True)
    close = actions.add_parser("close", help="freeze a reconciled day",
                               description="Freeze a past business day: its figures are recorded and never change; "
                                           "later revokes and reversals of its settlements are booked on their own "
                                           "day with a reference to the original. The day's latest whole-day "
                                           "reconciliation (`gateway reconcile` without --institution) must have "
                                           "matched the day as it still is, unless --force is given with a "
                                           "--reason, which is recorded. Exit status 1 when refused.")
    close.add_argument("--date", required=True, type=date_argument, metavar="YYYY-MM-DD")
    close.add_argument("--force", action="store_true",
                       help="close it without a reconciliation that matched (needs --reason)")
    close.add_argument("--reason", metavar="TEXT", help="why it is closed by force: recorded with the close")
    close.set_defaults(run=on_database(_close))
    listing = actions.add_parser("list", help="each day's settlements, reconciliation and close",
                                 description="One line per business day that has settlements, a reconciliation "
                                             "or a close: its settlements, revokes and reversals, their net total, "
                                             "its latest whole-day reconciliation and whether it is closed.")
    listing.add_argument("--from", dest="first", type=date_argument, metavar="YYYY-MM-DD",
                         help="the first day (default: the first the ledger knows)")
    listing.add_argument("--to", dest="last", type=date_argument, metavar="YYYY-MM-DD",
                         help="the last day (default: the last the ledger knows)")
    listing.set_defaults(run=on_database(_list))
    for parser in (close, listing):
        add_config(parser)
        add_db(parser)


def _reconcile(args: argparse.Namespace, engine: Engine) -> int:
    from gateway.finance.reconcile import (
        StatementOfAnotherDay,
        UnknownInstitution,
        reconcile_file,
        record_reconciliation,
    )
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
    try:
        write_report(result, args.out, command)
    except OSError as exc:
        return cannot_write(args.out, exc)
    record_reconciliation(engine, result)
    verdict = "everything matches" if result.matches else f"{len(result.differences)} difference(s)"
    print(f"reconciled {args.date}: {result.ledger_rows} ledger rows, {result.statement_rows} statement rows: "
          f"{verdict}; see {args.out / 'summary.html'}")
    return EXIT_OK if result.matches else EXIT_FAILED


def _close(args: argparse.Namespace, engine: Engine) -> int:
    from gateway.finance.day_close import DayCloseRefused, close_day
    from gateway.money import format_fen

    if args.force != (args.reason is not None):
        print("gateway: --force and --reason go together: a day closed without a reconciliation that matched says "
              "why", file=sys.stderr)
        return EXIT_USAGE
    try:
        figures = close_day(engine, args.date, forced_reason=args.reason if args.force else None)
    except DayCloseRefused as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"closed {figures.day}: {figures.transactions} settlements, revokes and reversals, "
          f"{format_fen(figures.total_fen)} yuan in all; {figures.grounds}")
    return EXIT_OK


def _list(args: argparse.Namespace, engine: Engine) -> int:
    from gateway.finance.day_close import list_days
    from gateway.money import format_fen

    if args.first and args.last and args.first > args.last:
        print(f"gateway: --from {args.first} is after --to {args.last}", file=sys.stderr)
        return EXIT_USAGE
    states = list_days(engine, args.first, args.last)
    if not states:
        print("no business day with settlements, reconciliations or closes"
              + (f" from {args.first or 'the first'} to {args.last or 'the last'}" if args.first or args.last else ""))
        return EXIT_OK
    table = [("day", "settlements", "revokes/reversals", "net yuan", "reconciliation", "close")]
    table += [(s.day.isoformat(), str(s.settlements), str(s.undoings), format_fen(s.total_fen), s.reconciliation,
               s.close) for s in states]
    widths = [max(len(row[n]) for row in table) for n in range(len(table[0]))]
    for row in table:
        # Counts and yuan right-aligned, as in a spreadsheet; the last column unpadded.
        cells = [cell.rjust(widths[n]) if n in (1, 2, 3) else cell.ljust(widths[n]) for n, cell in enumerate(row)]
        print("  ".join(cells[:-1]) + "  " + row[-1])
    return EXIT_OK
