"""`gateway agency ...`: card agency operations on the registry (gateway.registry.agency), one transaction each."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gateway.cli.support import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    Run,
    add_config,
    add_db,
    date_argument,
    on_database,
)
from gateway.registry import agency
from gateway.settlement.facts import FilingKind


def add_commands(commands: Commands) -> None:
    group = commands.add_parser(
        "agency", help="card agency operations on the registry",
        description="Card agency operations: loss reports, replacement cards, filings for care elsewhere, "
                    "changes of pooling region. Each runs in one transaction and prints what it did; one that "
                    "does not apply (or would change nothing) is refused with exit status 1. Dates are "
                    "YYYY-MM-DD or YYYYMMDD.",
    )
    actions = group.add_subparsers(dest="agency_command", metavar="ACTION", required=True)
    lost = actions.add_parser("report-lost", help="report a card lost (active -> lost_reported)",
                              description="Record a loss report: the card is refused until the report is lifted "
                                          "or the card replaced.")
    lost.add_argument("card", metavar="CARD", help="card number, e.g. N00000001")
    lost.set_defaults(run=_in_one_transaction(lambda args, session: agency.report_lost(session, args.card)))
    lift = actions.add_parser("lift-report", help="lift a loss report (lost_reported -> active)",
                              description="Lift a loss report: the holder has shown the ID document and the card.")
    lift.add_argument("card", metavar="CARD", help="card number")
    lift.set_defaults(run=_in_one_transaction(lambda args, session: agency.lift_report(session, args.card)))
    replace = actions.add_parser(
        "replace-card", help="issue a replacement card (the old card is refused forever)",
        description="Register a new social security card for the holder of CARD (active or reported lost); "
                    "CARD becomes 'replaced' and is refused forever.",
    )
    replace.add_argument("card", metavar="CARD", help="the card being replaced")
    replace.add_argument("--new-card", required=True, metavar="NUMBER", help="the new card's number")
    replace.add_argument("--issue-date", required=True, type=date_argument, metavar="DATE")
    replace.add_argument("--expiry-date", required=True, type=date_argument, metavar="DATE")
    replace.add_argument("--identification-code", metavar="CODE",
                         help="the new card's identification code (region + D156000005 + 16 hex digits)")
    replace.set_defaults(run=_in_one_transaction(lambda args, session: agency.replace_card(
        session, args.card, args.new_card, args.issue_date, args.expiry_date, args.identification_code)))
    filing = actions.add_parser(
        "register-filing", help="register (or end) a filing for care elsewhere",
        description="Register a filing for care elsewhere. The same kind, region and start date again with "
                    "another --to changes the filing's end.",
    )
    filing.add_argument("ssn", metavar="SSN", help="the person's social security number")
    filing.add_argument("--kind", required=True, choices=[k.value for k in FilingKind])
    filing.add_argument("--region", required=True, metavar="CODE", help="where care is filed for, e.g. 330200")
    filing.add_argument("--from", dest="valid_from", required=True, type=date_argument, metavar="DATE")
    filing.add_argument("--to", dest="valid_to", type=date_argument, metavar="DATE",
                        help="last day (default: open-ended)")
    filing.set_defaults(run=_in_one_transaction(lambda args, session: agency.register_filing(
        session, args.ssn, FilingKind(args.kind), args.region, args.valid_from, args.valid_to)))
    region = actions.add_parser(
        "change-region", help="change a person's pooling region (the card stays)",
        description="Change the person's insured (pooling) region; the rules follow it from now on. "
                    "The person keeps their cards.",
    )
    region.add_argument("ssn", metavar="SSN", help="the person's social security number")
    region.add_argument("region", metavar="REGION", help="the new insured region, e.g. 330212")
    region.set_defaults(run=_in_one_transaction(lambda args, session: agency.change_region(
        session, args.ssn, args.region)))
    for parser in (lost, lift, replace, filing, region):
        add_config(parser)
        add_db(parser)


def _in_one_transaction(operation: Callable[[argparse.Namespace, Session], str]) -> Run:
    """The command that applies `operation` in one transaction and prints what it did."""

    def command(args: argparse.Namespace, engine: Engine) -> int:
        try:
            with Session(engine) as session, session.begin():
                done = operation(args, session)
        except agency.AgencyRefused as exc:
            print(f"gateway: refused: {exc}", file=sys.stderr)
            return EXIT_FAILED  # the agency's rules refuse the operation
        except ValueError as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(done)
        return EXIT_OK

    return on_database(command)
