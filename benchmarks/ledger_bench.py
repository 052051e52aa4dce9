"""The ledger alone: durable settlements per second at batch sizes 1, 10 and 100, on SQLite (WAL,
synchronous=FULL) and on PostgreSQL, measured in one run so the ratios are comparable.

    .venv/bin/python -m benchmarks.ledger_bench [--settlements N] [--postgres URL] [--json OUT] [--profile]

Each batch is one transaction committed (fsynced) before the next starts: what the writer does when
intents queue up behind a commit. A cProfile of the largest batch size shows where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.demo.population import Case, demo_population
from gateway.demo.registry import write_demo_registry
from gateway.ledger.intents import SettleIntent, business_date
from gateway.ledger.outcomes import Settled
from gateway.ledger.writer import InlineLedgerWriter
from gateway.serve.reads import load_institution, load_registry_facts
from gateway.settlement.facts import ChipFacts, Facts, Purpose, SettlementRequest
from gateway.settlement.policy import load_builtin_policies

BATCH_SIZES = (1, 10, 100)
PERSONS = 400
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


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
        intents.append(SettleIntent("H33020300001-01", f"{tag}-{n}", f"hash-{tag}-{n}", facts, card_number, NOW))
    return intents


def measure(engine: Engine, batch_size: int, count: int, profile: bool) -> dict[str, Any]:
    writer = InlineLedgerWriter(engine, load_builtin_policies())
    intents = in_city_intents(engine, count, f"b{batch_size}-{uuid.uuid4().hex[:6]}")
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
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
        result["profile"] = text.getvalue()
    return result


def prepared_engine(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
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
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "settlements": args.settlements}
    with tempfile.TemporaryDirectory() as tmp:
        engines = {"sqlite": prepared_engine(f"sqlite:///{tmp}/bench.db")}
        drop = None
        if args.postgres:
            try:
                url, drop = postgres_database(args.postgres)
                engines["postgresql"] = prepared_engine(url)
            except Exception as exc:  # the benchmark still reports SQLite
                print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        for name, engine in engines.items():
            rows = [measure(engine, size, args.settlements, args.profile and size == BATCH_SIZES[-1])
                    for size in BATCH_SIZES]
            base = rows[0]["settlements_per_s"]
            for row in rows:
                row["ratio_to_batch_1"] = round(row["settlements_per_s"] / base, 2)
            results[name] = rows
            engine.dispose()
        if drop:
            drop()
    for name in ("sqlite", "postgresql"):
        for row in results.get(name, []):
            print(f"{name:10} batch {row['batch_size']:>3}: {row['settlements_per_s']:>9.1f} settlements/s "
                  f"(x{row['ratio_to_batch_1']} of batch 1; {row['ok']}/{row['settlements']} OK in {row['seconds']} s)")
            if "profile" in row:
                print(row["profile"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
