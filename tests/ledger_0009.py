"""Builds a ledger with the gateway's code as of schema revision 0009 (before the ledger keyed persons by the
registry's person id), and writes what that code says of it as JSON: run by tests/test_person_ids.py as

    PYTHONPATH=<the old release's tree> python tests/ledger_0009.py DATABASE_URL SNAPSHOT.json WORK_DIR

so that every import below is the old release's (its gateway, and its tests' helpers), never this tree's. The
module's constants are plain data: the test reads SCENARIO from here to ask the same requests again after the
upgrade.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

# Settled on the last days of 2026 (Beijing), the year rolled over on 2027-01-01: the late revoke the test sends
# after the upgrade must find the rollover under its rewritten key.
SETTLED_AT = "2026-12-30T02:00:00+00:00"
ROLLED_OVER_ON = "2027-01-01"
DAY = "2026-12-30"
CLOSED_DAY = "2026-12-31"
# (kind, message id, card number or the original, total fen): written one batch each, in this order.
SCENARIO: list[tuple[str, str, str, int]] = [
    ("settle", "m-1", "N00000001", 1_000),        # from the current-year account: rolled over, revoked later
    ("settle", "m-2", "N00000001", 300_000),      # deductible and pooled fund too
    ("settle", "m-3", "N00000301", 50_000),       # retired
    ("settle", "m-4", "N00001602", 20_000),       # first use of a social security card: the old IC card is void
    ("settle", "m-5", "N00001001", 10_000),       # resident: no personal account
    ("settle", "m-6", "N00001302", 7_000),        # the replacement of a replaced card
    ("revoke", "rk-1", "m-2", 0),                 # revokes m-2's settlement (by its settlement id)
    ("reverse", "rv-1", "m-3", 0),                # reverses a committed settlement
    ("reverse", "rv-2", "never-1", 0),            # a tombstone: never-1 never arrived
]
PAYOUT_BATCH = "B1"
PAYOUT_ROWS = [("N00000001", 20_00), ("N00000301", 15_00)]   # contributions from the prior-years accounts
PERSONS = 40


def main(url: str, snapshot_path: str, work: str) -> None:
    from datetime import date, datetime

    from sqlalchemy import text

    import gateway
    from gateway.cli.main import main as gateway_main
    from gateway.db.engine import make_engine
    from gateway.db.migrate import current_revision, upgrade
    from gateway.demo.registry import write_demo_registry
    from gateway.finance.bank_files import read_amounts, write_payout_file
    from gateway.finance.payouts import PayoutKind, bank_lines, run_payout
    from gateway.ledger.rollover import rollover
    from gateway.ledger.writer import InlineLedgerWriter
    from gateway.settlement.policy import load_builtin_policies
    from tests.ledger_support import CARDS, mark_closed, reverse, revoke, settle, write

    if Path(gateway.__file__).resolve().is_relative_to(Path(__file__).resolve().parent.parent):
        raise SystemExit(f"this tree's gateway was imported ({gateway.__file__}), not the old release's")
    engine = make_engine(url)
    upgrade(engine)
    write_demo_registry(engine, persons=PERSONS)
    writer = InlineLedgerWriter(engine, load_builtin_policies())
    at = datetime.fromisoformat(SETTLED_AT)
    answers: dict[str, str] = {}
    settlement_of: dict[str, str] = {}
    for kind, message_id, target, total in SCENARIO:
        if kind == "settle":
            intent: Any = settle(engine, target, message_id, total, at=at)
        elif kind == "revoke":
            intent = revoke(settlement_of[target], message_id, at=at)
        else:
            intent = reverse(target, message_id, at=at)
        [response] = write(writer, [intent])
        if kind == "settle":
            settlement_of[message_id] = response.settle.settlement_id
        answers[message_id] = response.SerializeToString().hex()
    amounts = "social_security_number,amount\n" + "".join(
        f"{CARDS[card][0].person.social_security_number},{fen // 100}.{fen % 100:02d}\n" for card, fen in PAYOUT_ROWS)
    run_payout(engine, PayoutKind.CONTRIBUTION, PAYOUT_BATCH, read_amounts(amounts), date.fromisoformat(DAY))
    payout_file = io.StringIO()
    write_payout_file(bank_lines(engine, PAYOUT_BATCH), payout_file)
    mark_closed(engine, date.fromisoformat(CLOSED_DAY))
    rollover(engine, 2026, today=date.fromisoformat(ROLLED_OVER_ON))

    out = Path(work)
    statement = out / "statement.csv"
    commands = {
        "check": ["ledger", "check"],
        "export_csv": ["ledger", "export", "--date", DAY, "--output", str(out / "export.csv")],
        "export_statement": ["ledger", "export", "--date", DAY, "--format", "statement", "--output", str(statement)],
        "reconcile": ["reconcile", "--date", DAY, "--statement", str(statement), "--out", str(out / "recon")],
    }
    printed: dict[str, Any] = {}
    for name, argv in commands.items():
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
            status = gateway_main([*argv, "--db", url])
        printed[name] = {"status": status, "stdout": stdout.getvalue()}
    with engine.connect() as conn:
        snapshot = {
            "revision": current_revision(engine),
            "answers": answers,
            "settlement_of": settlement_of,
            "payout_file": payout_file.getvalue(),
            "printed": printed,
            "files": {name: (out / name).read_text(encoding="utf-8-sig")
                      for name in ("export.csv", "statement.csv", "recon/totals.csv", "recon/differences.csv")},
            "balances": dict(conn.execute(text("SELECT code, balance_fen FROM ledger_accounts")).all()),
            "accounts": [list(row) for row in conn.execute(text(
                "SELECT code, kind, owner, must_not_go_negative FROM ledger_accounts ORDER BY code"))],
            "entries": [list(row) for row in conn.execute(text(
                "SELECT id, transaction_ref, account_code, amount_fen FROM ledger_entries ORDER BY id"))],
            "transactions": [list(row) for row in conn.execute(text(
                "SELECT ref, kind, dedupe_key, social_security_number FROM ledger_transactions ORDER BY id"))],
            "year_totals": [list(row) for row in conn.execute(text(
                "SELECT social_security_number, insurance_year, deductible_counted_fen, pooled_fund_paid_fen "
                "FROM year_totals ORDER BY social_security_number, insurance_year"))],
            "records": dict(conn.execute(text(
                "SELECT message_id, recorded_outcome FROM request_records WHERE recorded_outcome IS NOT NULL")).all()),
            "id_numbers": sorted(conn.scalars(text("SELECT social_security_number FROM persons"))),
        }
    engine.dispose()
    Path(snapshot_path).write_text(json.dumps(snapshot, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:4])
