"""`gateway policy check`: the policy files the gateway would load, and the days ahead no policy covers."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from gateway.cli.support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Commands, add_config, date_argument
from gateway.config import GatewayConfig


def add_commands(commands: Commands) -> None:
    policy = commands.add_parser("policy", help="the policy calendar: what the policy files cover",
                                 description="The settlement policy files, one per insurance year.")
    actions = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="list the policies and the days ahead that none covers; exit 1 on a gap",
        description="List each policy the gateway would load (insurance year, version, valid from and to, whether "
                    "its figures are illustrative, its file) and the days from --date to --days after it that no "
                    "policy covers. Exit status 1 when there is such a day, 0 when there is none.")
    check.add_argument("--days", type=int, metavar="N",
                       help="days after --date to check (default: ledger.policy_warning_days, 30)")
    check.add_argument("--policy-dir", type=Path, metavar="DIR",
                       help="a directory of policy files (default: ledger.policy_dir; empty: the built-in ones)")
    check.add_argument("--date", type=date_argument, metavar="YYYY-MM-DD",
                       help="the day to check from (default: today, Beijing time)")
    add_config(check)
    check.set_defaults(run=_check)


def _check(args: argparse.Namespace, config: GatewayConfig) -> int:
    from gateway.settlement.calendar import beijing_today
    from gateway.settlement.policy import (
        MAX_POLICY_WARNING_DAYS,
        PolicyError,
        check_cover,
        load_builtin_policies,
        load_policy_directory,
    )

    days = args.days if args.days is not None else config.ledger.policy_warning_days
    if not 0 <= days <= MAX_POLICY_WARNING_DAYS:
        print(f"gateway: --days must be between 0 and {MAX_POLICY_WARNING_DAYS} (got {days})", file=sys.stderr)
        return EXIT_USAGE
    directory = args.policy_dir if args.policy_dir is not None else (
        Path(config.ledger.policy_dir) if config.ledger.policy_dir else None)
    try:
        book = load_policy_directory(directory) if directory is not None else load_builtin_policies()
    except PolicyError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    today = args.date or beijing_today()
    print(f"policies in {directory}:" if directory is not None else "policies (built in):")
    rows = [("year", "version", "valid from", "valid to", "illustrative", "file")]
    rows += [(str(p.insurance_year), p.version, p.valid_from.isoformat(), p.valid_to.isoformat(),
              "yes" if p.illustrative else "no", p.source) for p in book.policies]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    cover = check_cover(book, today, days)
    through = book.covered_through(today)
    if through is None:
        print(f"{today.isoformat()}: no policy covers it")
    else:
        print(f"{today.isoformat()}: covered without a gap through {through.isoformat()} "
              f"({cover.days_remaining} days after it)")
    for first, last in cover.gaps:
        print(f"no policy: {first.isoformat()} to {last.isoformat()} ({(last - first).days + 1} days)")
    problem = cover.problem()
    if problem is not None:
        print(f"gateway: {problem}", file=sys.stderr)
        return EXIT_FAILED
    print(f"every day from {today.isoformat()} through {(today + timedelta(days=days)).isoformat()} ({days} days "
          "after it) has a policy")
    return EXIT_OK
