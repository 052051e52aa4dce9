"""Fill a migrated SQLite ledger with a year's history of settlements, fast, for the 10-million-row benchmark.

    .venv/bin/python -m benchmarks.prefill --db sqlite:///var/big.db --settlements 10000000

The rows are the gateway's own shape: one `ledger_transactions` row, its entries (pooled fund, persons' cash,
the institution's receivable and cash) and one `request_records` row with a recorded outcome of the real size per
settlement, every index in place, spread over the 365 business days before today and over
`--persons` holders registered in `persons` (a city's worth). Account balances and year totals are the sums
of what was written, so the ledger's invariants hold. Holders of the demo population are left untouched: the
benchmark that follows settles for them on a ledger that is merely large.

Written with the sqlite3 module directly and `synchronous=OFF` while filling (the file is a benchmark's
scratch ledger): going through the gateway's writer would take hours for ten million settlements.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from gateway.identity import id_check_char
from gateway.ledger import accounts
from gateway.ledger.batch import new_ref
from gateway.ledger.outcomes import HolderBalances, Settled, recorded_form
from gateway.registry.models import new_person_id
from gateway.settlement.calendar import beijing_today
from gateway.settlement.split import FundSplit

INSTITUTIONS = ("H33020300001", "H33020300002", "P33020300001")
FUND_REGION = "330200"  # the Ningbo city fund every prefilled settlement draws on
CHUNK = 50_000  # settlements per transaction while filling
# DESIGN.md §4: settlements/s on a ledger of 10 million settlements against an empty one.
LARGE_LEDGER_SETTLEMENTS = 10_000_000


def persons_for(settlements: int) -> int:
    """A tenth as many persons as settlements (at least 1,000): each person settles about ten times."""
    return max(1000, settlements // 10)


def synthetic_ssn(index: int) -> str:
    """A well-formed ID number no demo holder has (birth years 1940-1999, sequence from `index`)."""
    birth = date(1940, 1, 1) + timedelta(days=index % 21_900)
    first17 = f"330299{birth:%Y%m%d}{index // 21_900 % 1000:03d}"
    return first17 + id_check_char(first17)


def _template_outcome() -> str:
    split = FundSplit(12_345, 8_000, 0, 0, 4_345, 1_000)
    return recorded_form(Settled("S20260101000000000000", "N00000001", split,
                                 HolderBalances(2026, 0, 0, 100_000, 100_000, 500_000, 40_000_000),
                                 datetime(2026, 1, 1, tzinfo=UTC), "2026-illustrative"))


Rows = tuple[list[tuple[object, ...]], list[tuple[str, str, int]], list[tuple[object, ...]]]


def _rows(settlements: int, holders: list[int], today: date, seed: int) -> Iterator[Rows]:
    """`holders`: the persons' ids, by which the ledger knows them."""
    rng = random.Random(seed)
    outcome = _template_outcome()
    per_day = max(1, settlements // 365)
    transactions: list[tuple[object, ...]] = []
    entries: list[tuple[str, str, int]] = []
    records: list[tuple[object, ...]] = []
    fund = accounts.pooled_fund(FUND_REGION).code
    receivable = {code: accounts.institution_receivable(code).code for code in INSTITUTIONS}
    cash_of = {code: accounts.institution_cash(code).code for code in INSTITUTIONS}
    for n in range(settlements):
        day = today - timedelta(days=365 - n // per_day % 365)
        institution = INSTITUTIONS[n % len(INSTITUTIONS)]
        holder = holders[rng.randrange(len(holders))]
        total = rng.randrange(500, 200_000)
        pooled = total * 7 // 10
        cash = total - pooled
        ref = new_ref("S", day)
        terminal = f"{institution}-{n % 50 + 1:02d}"
        message_id = f"P{n:019d}"
        recorded = f"{day:%Y-%m-%d} 02:00:00.000000"
        transactions.append((ref, "settlement", terminal, message_id, institution, holder, "N99999999", 11,
                             day.year, day.isoformat(), recorded, "prefill", total, pooled, 0, 0, cash, 0))
        entries.extend(((ref, fund, -pooled), (ref, accounts.PERSONS_CASH, -cash),
                        (ref, receivable[institution], pooled), (ref, cash_of[institution], cash)))
        records.append((terminal, message_id, "settle", "0" * 64, "committed", ref, outcome, recorded))
        if len(transactions) == CHUNK:
            yield transactions, entries, records
            transactions, entries, records = [], [], []
    if transactions:
        yield transactions, entries, records


def prefill(path: Path, settlements: int, persons: int, seed: int = 1) -> dict[str, float]:
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("PRAGMA foreign_keys=OFF")
    today = beijing_today()
    holders = {synthetic_ssn(i): new_person_id() for i in range(persons)}
    conn.execute("BEGIN")
    # A city's registry of holders: the request path reads persons by key among a realistic number.
    conn.executemany(
        "INSERT OR IGNORE INTO persons (social_security_number, person_id, name, insurance_type, "
        "insured_region_code, updated_at) VALUES (?, ?, '测试', 'employee_active', '330203', '2025-01-01 00:00:00')",
        holders.items())
    for spec in (accounts.pooled_fund(FUND_REGION), accounts.persons_cash(),
                 *(f(code) for code in INSTITUTIONS for f in (accounts.institution_receivable,
                                                               accounts.institution_cash))):
        conn.execute("INSERT OR IGNORE INTO ledger_accounts (code, kind, owner, must_not_go_negative, balance_fen) "
                     "VALUES (?, ?, ?, ?, 0)", (spec.code, spec.kind.value, spec.owner, spec.must_not_go_negative))
    conn.execute("COMMIT")
    deltas: dict[str, int] = defaultdict(int)
    year_totals: dict[tuple[int, int], int] = defaultdict(int)
    written = 0
    for transactions, entries, records in _rows(settlements, list(holders.values()), today, seed):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO ledger_transactions (ref, kind, terminal_id, message_id, institution_code, "
            "person_id, card_number, medical_type, insurance_year, business_date, recorded_at, "
            "policy_version, total_fen, pooled_fund_fen, current_year_fen, prior_years_fen, cash_fen, "
            "deductible_counted_fen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", transactions)
        conn.executemany("INSERT INTO ledger_entries (transaction_ref, account_code, amount_fen) VALUES (?, ?, ?)",
                         entries)
        conn.executemany("INSERT INTO request_records (terminal_id, message_id, body, content_hash, outcome, "
                         "transaction_ref, recorded_outcome, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", records)
        conn.execute("COMMIT")
        for _, code, amount in entries:
            deltas[code] += amount
        for row in transactions:
            year_totals[(int(str(row[5])), int(str(row[8])))] += int(str(row[13]))
        written += len(transactions)
        if sys.stderr.isatty():
            print(f"\rprefill: {written:,} / {settlements:,} settlements", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    conn.execute("BEGIN")
    conn.executemany("UPDATE ledger_accounts SET balance_fen = balance_fen + ? WHERE code = ?",
                     [(amount, code) for code, amount in deltas.items()])
    conn.executemany(
        "INSERT INTO year_totals (person_id, insurance_year, deductible_counted_fen, "
        "pooled_fund_paid_fen) VALUES (?, ?, 0, ?) ON CONFLICT (person_id, insurance_year) "
        "DO UPDATE SET pooled_fund_paid_fen = pooled_fund_paid_fen + excluded.pooled_fund_paid_fen",
        [(person, year, pooled) for (person, year), pooled in year_totals.items()])
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    conn.close()
    # On disk before anything is measured on it: written with synchronous=OFF, it is still in the page cache.
    with path.open("rb") as written_file:
        os.fsync(written_file.fileno())
    return {"settlements": written, "persons": persons, "seconds": round(time.perf_counter() - started, 1),
            "bytes": path.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prefill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="sqlite:///PATH of a migrated ledger")
    parser.add_argument("--settlements", type=int, default=LARGE_LEDGER_SETTLEMENTS)
    parser.add_argument("--persons", type=int, default=persons_for(LARGE_LEDGER_SETTLEMENTS))
    args = parser.parse_args(argv)
    if not args.db.startswith("sqlite:///"):
        parser.error("--db must be a sqlite:/// URL")
    print(prefill(Path(args.db.removeprefix("sqlite:///")), args.settlements, args.persons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
