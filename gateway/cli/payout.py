"""`gateway payout run | reconcile`: finance's batch payouts into cards' bank accounts (docs/ledger.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sqlalchemy import Engine

from gateway.cli.support import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    DatabaseAction,
    add_config,
    add_db,
    date_argument,
    on_database,
    rejected,
)

KINDS = ("contribution", "subsidy", "reimbursement")


def add_commands(commands: Commands) -> None:
    payout = commands.add_parser(
        "payout", help="batch payouts into cards' bank accounts, and the bank's return file",
        description="Pay the insurance center's amounts into the cards' bank (financial) accounts as one balanced, "
                    "repeatable ledger batch, write the bank's payout file, and reconcile the bank's return file.")
    actions = payout.add_subparsers(dest="payout_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run", help="pay a batch and write the bank's payout file",
        description="Check every row of the amounts file (social_security_number,amount[,note], amounts in yuan) "
                    "against the registry, all or nothing, then pay each person from the source account into the "
                    "bank account of their active social security card: contribution from the person's prior-years "
                    "account (never more than it holds; the shortfall is reported), subsidy from the subsidy fund, "
                    "reimbursement from the pooled fund of the person's insured city. Running the same batch again "
                    "pays nothing twice. The payout file (batch_id,line,card_number,bank_account,name,amount,ref) "
                    "is written from the ledger: the whole batch, whenever it was paid.")
    run.add_argument("--kind", required=True, choices=KINDS)
    run.add_argument("--batch", required=True, type=_batch_id, metavar="ID",
                     help="the batch id, e.g. 2026-05-contribution")
    run.add_argument("--amounts", required=True, type=Path, metavar="FILE.csv", help="the insurance center's file")
    run.add_argument("--out", required=True, type=Path, metavar="FILE.csv", help="the bank's payout file to write")
    run.add_argument("--date", type=date_argument, metavar="YYYY-MM-DD",
                     help="business day of the payouts (default: today in Beijing)")
    run.set_defaults(run=on_database(_explained(_run, "paid")))
    reconcile = actions.add_parser(
        "reconcile", help="compare the bank's return file with the batch",
        description="Compare the bank's return file (line,card_number,amount,status[,reason], status paid or "
                    "failed) with the batch's payouts: paid but missing from the file, in the file but not paid, "
                    "another amount, failed at the bank. Exits 0 only when everything matches. With "
                    "--book-failures, each failed payout is taken back by a compensating reversal that restores "
                    "its source account (once: reconciling again books nothing twice).")
    reconcile.add_argument("--batch", required=True, type=_batch_id, metavar="ID")
    reconcile.add_argument("--return", dest="return_file", required=True, type=Path, metavar="FILE.csv",
                           help="the bank's return file")
    reconcile.add_argument("--book-failures", action="store_true",
                           help="book a compensating reversal for each payout the bank could not pay")
    reconcile.add_argument("--date", type=date_argument, metavar="YYYY-MM-DD",
                           help="business day of booked reversals (default: today in Beijing)")
    reconcile.set_defaults(run=on_database(_explained(_reconcile, "booked")))
    for parser in (run, reconcile):
        add_config(parser)
        add_db(parser)


def _batch_id(text: str) -> str:
    """A batch id as the ledger keys it; a malformed one is a usage error, like any malformed argument."""
    from gateway.finance.bank_files import PayoutError
    from gateway.finance.payouts import check_batch_id

    try:
        check_batch_id(text)
    except PayoutError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _explained(action: DatabaseAction, nothing_was: str) -> DatabaseAction:
    """`action` with a refused file or batch and an unreadable file said in one line each."""

    def command(args: argparse.Namespace, engine: Engine) -> int:
        from gateway.finance.bank_files import PayoutError, PayoutRejected

        try:
            return action(args, engine)
        except PayoutRejected as exc:
            return rejected(exc.errors, nothing_was)
        except PayoutError as exc:
            print(f"gateway: {exc}; nothing was {nothing_was}", file=sys.stderr)
            return EXIT_FAILED
        except OSError as exc:
            print(f"gateway: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE

    return command


def _read(path: Path) -> str:
    # utf-8-sig: files saved by a spreadsheet start with a byte-order mark.
    return path.read_text(encoding="utf-8-sig")


def _run(args: argparse.Namespace, engine: Engine) -> int:
    from gateway.finance.bank_files import read_amounts, write_payout_file
    from gateway.finance.payouts import PayoutKind, bank_lines, run_payout
    from gateway.money import format_fen

    rows = read_amounts(_read(args.amounts), str(args.amounts))
    report = run_payout(engine, PayoutKind(args.kind), args.batch, rows, args.date, source=str(args.amounts))
    for line in report.short:
        print(f"short: {args.amounts} line {line.line} card {line.card_number}: asked {format_fen(line.requested_fen)}"
              f", paid {format_fen(line.paid_fen)} (the prior-years account held no more)", file=sys.stderr)
    for line in report.conflicts:
        print(f"warning: {args.amounts} line {line.line} card {line.card_number}: paid {format_fen(line.paid_fen)} "
              f"earlier in this batch ({line.ref}), the file now says {format_fen(line.requested_fen)}; "
              "nothing more was paid", file=sys.stderr)
    # Written beside the target and renamed: the bank never gets half a file.
    partial = args.out.with_name(args.out.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as out:
        count, total = write_payout_file(bank_lines(engine, args.batch), out)
    os.replace(partial, args.out)
    print(report.summary())
    print(f"payout file {args.out}: {count} lines, {format_fen(total)} yuan")
    return EXIT_OK


def _reconcile(args: argparse.Namespace, engine: Engine) -> int:
    from gateway.finance.bank_files import read_bank_return
    from gateway.finance.payouts import reconcile_bank_return

    rows = read_bank_return(_read(args.return_file), str(args.return_file))
    report = reconcile_bank_return(engine, args.batch, rows, book_failures=args.book_failures, on=args.date)
    for payout_ref, reversal_ref in report.booked:
        print(f"booked: {payout_ref} failed at the bank, taken back by {reversal_ref}")
    for difference in report.differences:
        print(f"DIFF {difference}")
    summary = (f"batch {args.batch}: {report.matched} matched, {len(report.differences)} difference(s), "
               f"{len(report.booked)} failure(s) booked back, {report.already_reversed} booked back earlier")
    print(summary)
    return EXIT_OK if report.ok else EXIT_FAILED
