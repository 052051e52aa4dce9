"""The ledger alone: durable settlements per second at batch sizes 1, 10 and 100, on SQLite (WAL,
synchronous=FULL) and on PostgreSQL, measured in one run so the ratios are comparable, each beside the
database's own floor for the same rows.

    .venv/bin/python -m benchmarks.ledger_bench [--settlements N] [--postgres URL] [--json OUT] [--profile]

Each batch is one transaction committed (fsynced) before the next starts: what the writer does when
intents queue up behind a commit. With --profile, a further run of the largest batch size under cProfile shows
where the time goes (its own run: the profiler slows the ledger, not the floor, so no figure comes from it).

The floor: the rows the ledger wrote in a batch (its transactions, entries and request records, the balances and
year-to-date totals they moved), read back and written again into a second database of the same schema and
durability, right after the ledger's batch, by plain DBAPI `executemany` — no reads, no decisions, no SQLAlchemy.
Ledger and floor take turns batch by batch, so both are timed under the same load of a shared machine. The
ledger's settlements/s divided by the floor's is how much of what its database offers the ledger uses; the JSON
gives it per database at the largest batch under "to_floor_ratio_at_batch_100" ({"sqlite": ..., "postgresql": ...}).
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

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.orm import Session

from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.demo.population import Case, DemoHolder, demo_population
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
RATIO_BATCH = 100
RATIO_KEY = f"to_floor_ratio_at_batch_{RATIO_BATCH}"  # {"sqlite": ratio, "postgresql": ratio}
PERSONS = 400
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
POLICIES = load_builtin_policies()


def in_city_holders() -> list[DemoHolder]:
    return [h for h in demo_population(PERSONS) if h.case in (Case.NINGBO, Case.NINGBO_RETIRED_EMPLOYEE)]


def in_city_intents(engine: Engine, count: int, tag: str) -> list[SettleIntent]:
    """`count` settlements spread over the demo's in-city holders (a few yuan each: nobody runs dry)."""
    holders = in_city_holders()
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
    # Warm up: every holder's accounts opened (a settlement for each), caches warm. The timed batches are the
    # steady state, where the ledger has met its holders before; the floor writes no opening either.
    writer.write(in_city_intents(engine, len(in_city_holders()), f"warm-{uuid.uuid4().hex[:6]}"))
    # Read after the warm-up, as the request path reads a holder's facts: a social security card's first use is
    # then behind it (facts read before it would make the writer decide every settlement again, rightly).
    intents = in_city_intents(engine, count, tag)
    profiler = cProfile.Profile() if profile else None
    floor = Floor(engine, floor_engine)
    ok = 0
    ledger_s = floor_s = 0.0
    rows = 0
    try:
        # Batch for batch, the ledger's and then the floor's same rows: the two are timed in the same moments of a
        # shared machine's load, so their ratio does not depend on which ran while the machine was busier.
        for start in range(0, count, batch_size):
            chunk = intents[start : start + batch_size]
            if profiler:
                profiler.enable()
            began = time.perf_counter()
            outcomes = writer.write(chunk)
            ledger_s += time.perf_counter() - began
            if profiler:
                profiler.disable()
            ok += sum(1 for outcome in outcomes if isinstance(outcome, Settled))
            written = written_batch(engine, [intent.message_id for intent in chunk])
            rows += written.rows()
            floor.open_accounts(engine, written)
            floor_s += floor.write(written)
    finally:
        floor.close()
    result: dict[str, Any] = {"batch_size": batch_size, "settlements": count, "ok": ok, "seconds": round(ledger_s, 3),
                              "settlements_per_s": round(ok / ledger_s, 1)}
    floor_rate = ok / floor_s
    result.update({"floor_settlements_per_s": round(floor_rate, 1), "floor_seconds": round(floor_s, 3),
                   "to_floor_ratio": round(floor_s / ledger_s, 3),
                   "rows_per_settlement": round(rows / max(ok, 1), 2)})
    if profiler:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("cumulative").print_stats(18)
        result["profile"] = text.getvalue()
        result["profile_shares"] = profile_shares(stats)
    return result


# The writer's parts, as shares of LedgerWriter.write's cumulative time in a profile: (file's ending, function).
_PARTS = {"reading the batch's state": ("gateway/ledger/batch.py", "_load"),
          "deciding": ("gateway/ledger/batch.py", "_decide"),
          "the bulk writes": ("gateway/ledger/batch.py", "_write"),
          "the commit": ("sqlalchemy/engine/default.py", "do_commit")}


def profile_shares(stats: pstats.Stats) -> dict[str, float]:
    cumulative: dict[tuple[str, str], float] = {}
    for (filename, _, function), (_, _, _, total_s, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = next(((ending, name) for ending, name in [*_PARTS.values(), ("gateway/ledger/writer.py", "write")]
                    if filename.endswith(ending) and function == name), None)
        if key is not None:
            cumulative[key] = cumulative.get(key, 0.0) + total_s
    whole = cumulative.get(("gateway/ledger/writer.py", "write"), 0.0)
    return {part: round(cumulative.get(key, 0.0) / whole, 3) if whole else 0.0 for part, key in _PARTS.items()}


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
    year_totals: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (person id, year) -> deltas

    def rows(self) -> int:
        return (len(self.transactions) + len(self.entries) + len(self.records) + len(self.balances)
                + len(self.year_totals))


def written_batch(engine: Engine, message_ids: Sequence[str]) -> FloorBatch:
    """The rows the ledger wrote for the intents of one batch (by their message ids), as stored."""
    wanted = {"ids": list(message_ids)}
    with engine.connect() as conn:
        # Raw values as stored (text() with no column types): written again as they are.
        transactions = conn.execute(text(f"SELECT {', '.join(_TRANSACTION_COLUMNS)} FROM ledger_transactions "
                                         "WHERE message_id IN :ids ORDER BY id").bindparams(
                                             bindparam("ids", expanding=True)), wanted).all()
        refs = {"refs": [row[0] for row in transactions]}
        entries = conn.execute(text("SELECT transaction_ref, account_code, amount_fen FROM ledger_entries "
                                    "WHERE transaction_ref IN :refs ORDER BY id").bindparams(
                                        bindparam("refs", expanding=True)), refs).all() if refs["refs"] else []
        records = conn.execute(text(f"SELECT {', '.join(_RECORD_COLUMNS)} FROM request_records "
                                    "WHERE message_id IN :ids").bindparams(bindparam("ids", expanding=True)),
                               wanted).all()
    batch = FloorBatch()
    column = {name: i for i, name in enumerate(_TRANSACTION_COLUMNS)}
    for row in transactions:
        batch.transactions.append(tuple(row))
        totals = batch.year_totals.setdefault((row[column["person_id"]], row[column["insurance_year"]]), [0, 0])
        totals[0] += row[column["deductible_counted_fen"]]
        totals[1] += row[column["pooled_fund_fen"]]
    for ref, account, amount in entries:
        batch.entries.append((ref, account, amount))
        batch.balances[account] = batch.balances.get(account, 0) + amount
    batch.records.extend(tuple(row) for row in records)
    return batch


class Floor:
    """The database's floor: the rows the ledger wrote, written again into `floor_engine`'s database (same schema,
    same durability) with plain DBAPI `executemany`, one transaction per batch, committed before the next."""

    def __init__(self, engine: Engine, floor_engine: Engine) -> None:
        """Copies, untimed, the accounts and year totals as `engine`'s database holds them now (before the timed
        batches): the floor moves them through the same balances as the ledger does."""
        self.postgres = floor_engine.dialect.name == "postgresql"
        mark = "%s" if self.postgres else "?"

        def marks(count: int) -> str:
            return ", ".join([mark] * count)

        self.insert_transaction = (f"INSERT INTO ledger_transactions ({', '.join(_TRANSACTION_COLUMNS)}) "
                                   f"VALUES ({marks(len(_TRANSACTION_COLUMNS))})")
        self.insert_entry = ("INSERT INTO ledger_entries (transaction_ref, account_code, amount_fen) "
                             f"VALUES ({marks(3)})")
        self.insert_record = (f"INSERT INTO request_records ({', '.join(_RECORD_COLUMNS)}) "
                              f"VALUES ({marks(len(_RECORD_COLUMNS))})")
        self.add_balance = f"UPDATE ledger_accounts SET balance_fen = balance_fen + {mark} WHERE code = {mark}"
        self.add_year = ("INSERT INTO year_totals (person_id, insurance_year, deductible_counted_fen, "
                         f"pooled_fund_paid_fen) VALUES ({marks(4)}) ON CONFLICT (person_id, insurance_year) "
                         "DO UPDATE SET deductible_counted_fen = year_totals.deductible_counted_fen + "
                         "excluded.deductible_counted_fen, pooled_fund_paid_fen = year_totals.pooled_fund_paid_fen + "
                         "excluded.pooled_fund_paid_fen")
        self.insert_accounts = ("INSERT INTO ledger_accounts (code, kind, owner, must_not_go_negative, balance_fen) "
                                f"VALUES ({marks(5)}) ON CONFLICT (code) DO UPDATE SET balance_fen = "
                                "excluded.balance_fen")
        with engine.connect() as conn:
            accounts = [tuple(row) for row in conn.execute(text(
                "SELECT code, kind, owner, must_not_go_negative, balance_fen FROM ledger_accounts"))]
            years = [tuple(row) for row in conn.execute(text(
                "SELECT person_id, insurance_year, deductible_counted_fen, pooled_fund_paid_fen FROM year_totals"))]
        self.accounts = {row[0] for row in accounts}
        self.raw = floor_engine.raw_connection()
        self.cursor = self.raw.cursor()
        self._begin(immediate=False)
        self.cursor.executemany(self.insert_accounts, accounts)
        self.cursor.executemany("INSERT INTO year_totals (person_id, insurance_year, deductible_counted_fen, "
                                f"pooled_fund_paid_fen) VALUES ({marks(4)}) ON CONFLICT (person_id, insurance_year) "
                                "DO UPDATE SET deductible_counted_fen = excluded.deductible_counted_fen, "
                                "pooled_fund_paid_fen = excluded.pooled_fund_paid_fen", years)
        self._commit()

    def open_accounts(self, engine: Engine, batch: FloorBatch) -> None:
        """Untimed: the accounts the ledger opened in `batch` (a city's pooled fund paying for the first time, say),
        at their balance before it, as the ledger's database had them when the batch began."""
        new = sorted(code for code in batch.balances if code not in self.accounts)
        if not new:
            return
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT code, kind, owner, must_not_go_negative, balance_fen FROM ledger_accounts "
                                     "WHERE code IN :codes").bindparams(bindparam("codes", expanding=True)),
                                {"codes": new}).all()
        self._begin(immediate=False)
        self.cursor.executemany(self.insert_accounts, [(code, kind, owner, flag, balance - batch.balances[code])
                                                       for code, kind, owner, flag, balance in rows])
        self._commit()
        self.accounts.update(new)

    def write(self, batch: FloorBatch) -> float:
        """Seconds to write and commit `batch`."""
        cursor = self.cursor
        started = time.perf_counter()
        self._begin(immediate=True)
        cursor.executemany(self.insert_transaction, batch.transactions)
        cursor.executemany(self.insert_entry, batch.entries)
        cursor.executemany(self.add_balance, [(batch.balances[code], code) for code in sorted(batch.balances)])
        cursor.executemany(self.add_year, [(person, year, d, p)
                                           for (person, year), (d, p) in sorted(batch.year_totals.items())])
        cursor.executemany(self.insert_record, batch.records)
        self._commit()
        return time.perf_counter() - started

    def _begin(self, immediate: bool) -> None:
        if not self.postgres:  # sqlite3's own transaction handling is off (the engine's isolation level)
            self.cursor.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")

    def _commit(self) -> None:
        self.raw.commit() if self.postgres else self.cursor.execute("COMMIT")

    def close(self) -> None:
        self.raw.close()


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
    parser.add_argument("--profile", action="store_true",
                        help="profile the largest batch size (a run of its own, after the timed ones)")
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
            rows = [measure(engine, floor_engine, size, args.settlements, False) for size in BATCH_SIZES]
            if args.profile:
                # A run of its own: under cProfile the ledger is slower and the floor is not, so the figures and
                # the ratio come from the run above, and this one gives only where the time goes.
                profiled = measure(engine, floor_engine, BATCH_SIZES[-1], args.settlements, True)
                rows[-1]["profile"] = profiled["profile"]
                rows[-1]["profile_shares"] = profiled["profile_shares"]
                rows[-1]["profiled_settlements_per_s"] = profiled["settlements_per_s"]
            base = rows[0]["settlements_per_s"]
            for row in rows:
                row["ratio_to_batch_1"] = round(row["settlements_per_s"] / base, 2)
            results[name] = rows
            # A stable key for the issue-15 table (benchmarks.report and others read it): ledger ÷ floor at batch 100.
            for row in rows:
                if row["batch_size"] == RATIO_BATCH:
                    results.setdefault(RATIO_KEY, {})[name] = row["to_floor_ratio"]
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
                print("shares of LedgerWriter.write:", ", ".join(f"{part} {share:.0%}"
                                                                 for part, share in row["profile_shares"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
