"""The ledger alone: durable settlements per second at batch sizes 1, 10 and 100, on SQLite (WAL,
synchronous=FULL) and on PostgreSQL, measured in one run so the ratios are comparable, each beside the
database's own floor for the same rows.

    .venv/bin/python -m benchmarks.ledger_bench [--settlements N] [--postgres URL] [--json OUT] [--profile]

Each batch is one transaction committed (fsynced) before the next starts: what the writer does when
intents queue up behind a commit. A cProfile of the largest batch size shows where the time goes.

The floor: the rows the ledger wrote in a run (its transactions, entries and request records, the balances and
year-to-date totals they moved), read back and written again into a second database of the same schema and
durability, batch for batch, by plain DBAPI `executemany` — no reads, no decisions, no SQLAlchemy. The ledger's
settlements/s divided by the floor's is how much of what its database offers the ledger uses.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.demo.population import Case, demo_population
from gateway.demo.registry import write_demo_registry
from gateway.ledger.intents import SettleIntent, business_date
from gateway.ledger.outcomes import Settled
from gateway.ledger.tables import RECORDS, TRANSACTIONS
from gateway.ledger.writer import InlineLedgerWriter
from gateway.serve.reads import load_institution, load_registry_facts
from gateway.settlement.facts import ChipFacts, Facts, Purpose, SettlementRequest
from gateway.settlement.policy import load_builtin_policies
from gateway.settlement.rules import Refusal, admit

BATCH_SIZES = (1, 10, 100)
PERSONS = 400
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
POLICIES = load_builtin_policies()


def in_city_intents(engine: Engine, count: int, tag: str) -> list[SettleIntent]:
    """`count` settlements spread over the demo's in-city holders (a few yuan each: nobody runs dry)."""
    holders = [h for h in demo_population(PERSONS) if h.case in (Case.NINGBO, Case.NINGBO_RETIRED_EMPLOYEE)]
    facts_by_holder = []
    with Session(engine) as session:
        institution = load_institution(session, "H33020300001")
        for holder in holders:
            card = holder.card
            registry = load_registry_facts(session, card.card_number, holder.person.social_security_number)
            chip = ChipFacts(card.card_number, holder.person.social_security_number, card.issuing_region_code,
                             card.expiry_date)
            facts_by_holder.append((card.card_number, registry, chip))
    intents = []
    for n in range(count):
        card_number, registry, chip = facts_by_holder[n % len(facts_by_holder)]
        request = SettlementRequest(Purpose.SETTLE, business_date(NOW), 11, 500 + n % 100)
        facts = Facts(request, chip, registry, institution)
        # As the request path sends it: admitted by the rules, the split left to the writer.
        admitted = admit(facts, POLICIES)
        if isinstance(admitted, Refusal):
            raise RuntimeError(f"the demo holder of {card_number} is refused ({admitted.rule}): no benchmark")
        intents.append(SettleIntent("H33020300001-01", f"{tag}-{n}", f"hash-{tag}-{n}", facts, card_number, NOW,
                                    admitted=admitted))
    return intents


def measure(engine: Engine, floor_engine: Engine, batch_size: int, count: int, profile: bool) -> dict[str, Any]:
    writer = InlineLedgerWriter(engine, POLICIES)
    tag = f"b{batch_size}-{uuid.uuid4().hex[:6]}"
    intents = in_city_intents(engine, count, tag)
    # Warm up: every person's accounts opened, caches warm.
    writer.write(in_city_intents(engine, 50, f"warm-{uuid.uuid4().hex[:6]}"))
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    ok = 0
    for start in range(0, count, batch_size):
        outcomes = writer.write(intents[start : start + batch_size])
        ok += sum(1 for outcome in outcomes if isinstance(outcome, Settled))
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    result: dict[str, Any] = {"batch_size": batch_size, "settlements": count, "ok": ok, "seconds": round(elapsed, 3),
                              "settlements_per_s": round(ok / elapsed, 1)}
    batches = written_batches(engine, tag, batch_size)
    floor_s = floor_seconds(engine, floor_engine, batches)
    floor_rate = ok / floor_s
    result.update({"floor_settlements_per_s": round(floor_rate, 1),
                   "to_floor_ratio": round(ok / elapsed / floor_rate, 3),
                   "rows_per_settlement": round(sum(b.rows() for b in batches) / max(ok, 1), 2)})
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
        result["profile"] = text.getvalue()
    return result


# The floor ---------------------------------------------------------------------------------------

_TRANSACTION_COLUMNS = tuple(c.name for c in TRANSACTIONS.c if c.name != "id")
_RECORD_COLUMNS = tuple(c.name for c in RECORDS.c)


@dataclass
class FloorBatch:
    """What the ledger wrote in one of its transactions, as the database holds it."""

    transactions: list[Sequence[Any]] = field(default_factory=list)
    entries: list[Sequence[Any]] = field(default_factory=list)
    records: list[Sequence[Any]] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)                       # account -> delta
    year_totals: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # (ID number, year) -> deltas

    def rows(self) -> int:
        return (len(self.transactions) + len(self.entries) + len(self.records) + len(self.balances)
                + len(self.year_totals))


def written_batches(engine: Engine, tag: str, batch_size: int) -> list[FloorBatch]:
    """The rows the ledger wrote for the intents tagged `tag` (message ids `<tag>-<n>`), in its batches."""
    like = {"tag": f"{tag}-%"}
    with engine.connect() as conn:
        # Raw values as stored (text() with no column types): written again as they are.
        transactions = conn.execute(text(f"SELECT {', '.join(_TRANSACTION_COLUMNS)} FROM ledger_transactions "
                                         "WHERE message_id LIKE :tag ORDER BY id"), like).all()
        entries = conn.execute(text("SELECT e.transaction_ref, e.account_code, e.amount_fen, t.message_id "
                                    "FROM ledger_entries e JOIN ledger_transactions t ON t.ref = e.transaction_ref "
                                    "WHERE t.message_id LIKE :tag ORDER BY e.id"), like).all()
        records = conn.execute(text(f"SELECT {', '.join(_RECORD_COLUMNS)} FROM request_records "
                                    "WHERE message_id LIKE :tag"), like).all()
    batches: dict[int, FloorBatch] = {}

    def batch_of(message_id: str) -> FloorBatch:
        return batches.setdefault(int(message_id.rsplit("-", 1)[1]) // batch_size, FloorBatch())

    column = {name: i for i, name in enumerate(_TRANSACTION_COLUMNS)}
    for row in transactions:
        batch = batch_of(row[column["message_id"]])
        batch.transactions.append(tuple(row))
        totals = batch.year_totals.setdefault((row[column["person_id"]], row[column["insurance_year"]]),
                                              [0, 0])
        totals[0] += row[column["deductible_counted_fen"]]
        totals[1] += row[column["pooled_fund_fen"]]
    for ref, account, amount, message_id in entries:
        batch = batch_of(message_id)
        batch.entries.append((ref, account, amount))
        batch.balances[account] = batch.balances.get(account, 0) + amount
    message_at = _RECORD_COLUMNS.index("message_id")
    for row in records:
        batch_of(row[message_at]).records.append(tuple(row))
    return [batches[n] for n in sorted(batches)]


def floor_seconds(engine: Engine, floor_engine: Engine, batches: list[FloorBatch]) -> float:
    """How long the database takes to write `batches` into `floor_engine`'s database with plain DBAPI
    `executemany`, one transaction each, committed before the next (the accounts and year totals they move are
    copied from `engine`'s database first, untimed)."""
    postgres = floor_engine.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"

    def marks(count: int) -> str:
        return ", ".join([mark] * count)

    def ignore(table: str, columns: Sequence[str]) -> str:
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks(len(columns))}) "
                "ON CONFLICT DO NOTHING")

    insert_transaction = (f"INSERT INTO ledger_transactions ({', '.join(_TRANSACTION_COLUMNS)}) "
                          f"VALUES ({marks(len(_TRANSACTION_COLUMNS))})")
    insert_entry = f"INSERT INTO ledger_entries (transaction_ref, account_code, amount_fen) VALUES ({marks(3)})"
    insert_record = f"INSERT INTO request_records ({', '.join(_RECORD_COLUMNS)}) VALUES ({marks(len(_RECORD_COLUMNS))})"
    add_balance = f"UPDATE ledger_accounts SET balance_fen = balance_fen + {mark} WHERE code = {mark}"
    add_year = ("INSERT INTO year_totals (person_id, insurance_year, deductible_counted_fen, "
                f"pooled_fund_paid_fen) VALUES ({marks(4)}) ON CONFLICT (person_id, insurance_year) "
                "DO UPDATE SET deductible_counted_fen = year_totals.deductible_counted_fen + "
                "excluded.deductible_counted_fen, pooled_fund_paid_fen = year_totals.pooled_fund_paid_fen + "
                "excluded.pooled_fund_paid_fen")
    moved: dict[str, int] = {}
    for batch in batches:
        for code, delta in batch.balances.items():
            moved[code] = moved.get(code, 0) + delta
    with engine.connect() as conn:
        # At their balances before the run: the floor moves them through the same balances as the ledger did.
        accounts = [(code, kind, owner, flag, balance - moved.get(code, 0)) for code, kind, owner, flag, balance
                    in conn.execute(text("SELECT code, kind, owner, must_not_go_negative, balance_fen "
                                         "FROM ledger_accounts"))]
        years = [tuple(row) for row in conn.execute(text(
            "SELECT person_id, insurance_year, deductible_counted_fen, pooled_fund_paid_fen "
            "FROM year_totals"))]
    raw = floor_engine.raw_connection()
    try:
        cursor = raw.cursor()
        if not postgres:
            cursor.execute("BEGIN")
        cursor.executemany("INSERT INTO ledger_accounts (code, kind, owner, must_not_go_negative, balance_fen) "
                           f"VALUES ({marks(5)}) ON CONFLICT (code) DO UPDATE SET balance_fen = excluded.balance_fen",
                           accounts)
        cursor.executemany(ignore("year_totals", ("person_id", "insurance_year",
                                                  "deductible_counted_fen", "pooled_fund_paid_fen")), years)
        raw.commit() if postgres else cursor.execute("COMMIT")
        started = time.perf_counter()
        for batch in batches:
            if not postgres:
                cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(insert_transaction, batch.transactions)
            cursor.executemany(insert_entry, batch.entries)
            cursor.executemany(add_balance, [(batch.balances[code], code) for code in sorted(batch.balances)])
            cursor.executemany(add_year, [(person, year, d, p)
                                          for (person, year), (d, p) in sorted(batch.year_totals.items())])
            cursor.executemany(insert_record, batch.records)
            raw.commit() if postgres else cursor.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        raw.close()


def prepared_engine(url: str, registry: bool = True) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    if registry:
        write_demo_registry(engine, persons=PERSONS)
    return engine


def postgres_database(admin_url: str) -> tuple[str, Any]:
    import psycopg

    name = f"gateway_bench_{uuid.uuid4().hex[:8]}"
    plain = admin_url.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin_url.rsplit("/", 1)[0] + f"/{name}", drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger_bench", description=__doc__)
    parser.add_argument("--settlements", type=int, default=2_000, help="settlements per batch size (default 2000)")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="admin URL of a PostgreSQL server ('' to skip)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--profile", action="store_true", help="profile the largest batch size")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "settlements": args.settlements,
                               # The command line that reproduces these figures (as `make bench` runs it).
                               "command": shlex.join(["python", "-m", "benchmarks.ledger_bench",
                                                      *(sys.argv[1:] if argv is None else argv)])}
    with tempfile.TemporaryDirectory() as tmp:
        engines = {"sqlite": (prepared_engine(f"sqlite:///{tmp}/bench.db"),
                              prepared_engine(f"sqlite:///{tmp}/floor.db", registry=False))}
        drops = []
        if args.postgres:
            try:
                url, drop = postgres_database(args.postgres)
                drops.append(drop)
                floor_url, drop = postgres_database(args.postgres)
                drops.append(drop)
                engines["postgresql"] = (prepared_engine(url), prepared_engine(floor_url, registry=False))
            except Exception as exc:  # the benchmark still reports SQLite
                print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        for name, (engine, floor_engine) in engines.items():
            rows = [measure(engine, floor_engine, size, args.settlements,
                            args.profile and size == BATCH_SIZES[-1]) for size in BATCH_SIZES]
            base = rows[0]["settlements_per_s"]
            for row in rows:
                row["ratio_to_batch_1"] = round(row["settlements_per_s"] / base, 2)
            results[name] = rows
            engine.dispose()
            floor_engine.dispose()
        for drop in drops:
            drop()
    for name in ("sqlite", "postgresql"):
        for row in results.get(name, []):
            print(f"{name:10} batch {row['batch_size']:>3}: {row['settlements_per_s']:>9.1f} settlements/s "
                  f"(x{row['ratio_to_batch_1']} of batch 1; {row['ok']}/{row['settlements']} OK in "
                  f"{row['seconds']} s); "
                  f"floor {row['floor_settlements_per_s']:>9.1f}/s ({row['rows_per_settlement']} rows each): "
                  f"ledger / floor {row['to_floor_ratio']:.3f}")
            if "profile" in row:
                print(row["profile"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
