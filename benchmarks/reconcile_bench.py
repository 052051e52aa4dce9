"""Reconciling one business day of N settlements (default 1,000,000): the time `gateway reconcile` takes.

    .venv/bin/python -m benchmarks.reconcile_bench [--settlements N] [--json OUT]

The day is written straight into a fresh SQLite ledger's transactions (reconciliation reads those), exported
as the center's statement with `gateway ledger export --format statement`, and reconciled; only the
reconciliation (reading the statement, reading the ledger, comparing, writing the three files) is timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from benchmarks.prefill import CHUNK, synthetic_ssn
from benchmarks.targets import RECONCILE_SECONDS_TARGET, RECONCILE_SETTLEMENTS
from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.finance.reconcile import reconcile_file
from gateway.finance.report import write_report
from gateway.finance.statement import export_statement
from gateway.ledger.tables import TRANSACTIONS
from gateway.registry.models import new_person_id
from gateway.registry.tables import PERSONS

DAY = date(2026, 11, 24)


def fill(url: str, count: int) -> None:
    engine = make_engine(url, sqlite_synchronous="FULL")
    upgrade(engine)
    start = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    # Two settlements per holder: the statement's ID numbers are joined from the registry by person id, one
    # look-up per row, as on a real day.
    holders = [new_person_id() for _ in range(max(1, count // 2))]
    with engine.begin() as conn:
        for first in range(0, len(holders), CHUNK):
            conn.execute(PERSONS.insert(), [
                {"social_security_number": synthetic_ssn(n), "person_id": holders[n], "name": "测试",
                 "insurance_type": "employee_active", "insured_region_code": "330203"}
                for n in range(first, min(first + CHUNK, len(holders)))])
        for first in range(0, count, CHUNK):
            rows = []
            for n in range(first, min(first + CHUNK, count)):
                total = 1_000 + n % 100_000
                pooled = total * 3 // 4
                current = (total - pooled) // 2
                rows.append({"ref": f"S20261124{n:012X}", "kind": "settlement",
                             "terminal_id": f"H3302030000{n % 10}-01",
                             "message_id": f"m{n}", "institution_code": f"H3302030000{n % 10}",
                             "person_id": holders[n % len(holders)], "card_number": "N00000001",
                             "medical_type": 11, "insurance_year": 2026, "business_date": DAY,
                             "recorded_at": start + timedelta(microseconds=n * 50), "policy_version": "bench",
                             "total_fen": total, "pooled_fund_fen": pooled, "current_year_fen": current,
                             "prior_years_fen": 0, "cash_fen": total - pooled - current, "deductible_counted_fen": 0})
            conn.execute(TRANSACTIONS.insert(), rows)
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reconcile_bench", description=__doc__)
    parser.add_argument("--settlements", type=int, default=RECONCILE_SETTLEMENTS)
    parser.add_argument("--json", type=Path, default=Path("bench/reconcile.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/day.db"
        began = time.perf_counter()
        fill(url, args.settlements)
        filled = time.perf_counter() - began
        engine = make_engine(url)
        statement = Path(tmp) / "statement.csv"
        with statement.open("w", encoding="utf-8", newline="") as out:
            export_statement(engine, DAY, out)
        began = time.perf_counter()
        result = reconcile_file(engine, DAY, statement)  # what `gateway reconcile` runs
        write_report(result, Path(tmp) / "out")
        seconds = time.perf_counter() - began
        engine.dispose()
    figures = {"settlements": args.settlements, "fill_seconds": round(filled, 1),
               "reconcile_seconds": round(seconds, 1),
               "matches": result.matches, "target_seconds": RECONCILE_SECONDS_TARGET}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    print(json.dumps(figures, indent=2))
    return 0 if result.matches else 1


if __name__ == "__main__":
    sys.exit(main())
