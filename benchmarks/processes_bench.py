"""Settlements/s of one gateway with `--processes 1`, then `--processes 2`, on the same kind of ledger, under the
same simulator (`gateway simulate --mix settle_only`, another process), in one run.

    .venv/bin/python -m benchmarks.processes_bench [--seconds S] [--terminals N] [--rounds R] [--no-postgresql]
                                                   [--json OUT]

Each run gets a fresh ledger (SQLite in a temporary directory; PostgreSQL, when it answers at
GATEWAY_BENCH_POSTGRES, a database of its own, dropped afterwards). The two settings take turns, round after round,
and each figure is the median of its rounds (these machines are noisy). Besides settlements/s, each run records
what bounds it: the CPU seconds the gateway's processes and the simulator used per second of the run (the host's
cores are the ceiling of their sum), the settle latency, every answer that was not OK (a writer that waited for the
other's write lock longer than database.busy_timeout_ms would show as STATUS_CODE_TEMPORARILY_UNAVAILABLE), and from
each worker's /metrics its ledger batches and their mean time from BEGIN to the COMMIT's return (on SQLite that
includes the wait for the other writer's lock).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION
from gateway.ops.logs import log_message
from simulators.load import SESSIONS_PER_TERMINAL_ID

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = [sys.executable, "-m", "gateway"]
POSTGRES_ADMIN = os.environ.get("GATEWAY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PIDS = re.compile(r"\(pids ([0-9, ]+)\)")
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 120.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S  # utime, stime: fields 14 and 15 of stat


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def scrape(address: str) -> dict[str, float]:
    """The ledger's batch and commit figures of one worker's /metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as page:
        text = page.read().decode()
    wanted = ("gateway_ledger_batch_size_sum", "gateway_ledger_batch_size_count",
              "gateway_ledger_commit_duration_seconds_sum", "gateway_ledger_unavailable_total")
    found = {name: 0.0 for name in wanted}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] += float(value)
    return found


@contextmanager
def fresh_database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'ledger-{uuid.uuid4().hex[:8]}.db'}"
        return
    import psycopg

    name = f"gateway_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgresql_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN, connect_timeout=3):
            return True
    except Exception:  # any reason: the PostgreSQL figures are optional
        return False


def one_run(db: str, processes: int, per_institution: int, args: argparse.Namespace) -> dict[str, Any]:
    """A gateway of `processes` on the fresh ledger `db`, the simulator against it for args.seconds."""
    for command in (["db", "upgrade", "--db", db],
                    ["registry", "demo", "--db", db, "--terminals-per-institution", str(per_institution)]):
        subprocess.run([*GATEWAY, *command], check=True, capture_output=True, cwd=ROOT)
    gateway = subprocess.Popen([*GATEWAY, "serve", "--db", db, "--processes", str(processes), "--listen",
                                "tcp:0:interface=127.0.0.1:backlog=4096", "--metrics-listen",
                                "tcp:0:interface=127.0.0.1", "--log-level", "warn"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port, metrics, pids = _listening(gateway, processes)
        pids = pids or [gateway.pid]
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            gateway_cpu_before = sum(cpu_s(pid) for pid in pids)
            simulator_cpu_before = children_cpu_s()
            began = time.monotonic()
            run = subprocess.run([*GATEWAY, "simulate", "--target", f"127.0.0.1:{port}", "--terminals",
                                  str(args.terminals), "--terminals-per-institution", str(per_institution),
                                  "--duration", str(args.seconds), "--mix", "settle_only", "--processes",
                                  str(args.simulator_processes), "--json", out.name, "--max-unexpected", "1000000"],
                                 cwd=ROOT, capture_output=True, text=True, env={**os.environ, "CI": "1"})
            wall_s = time.monotonic() - began
            gateway_cpu = sum(cpu_s(pid) for pid in pids) - gateway_cpu_before
            simulator_cpu = children_cpu_s() - simulator_cpu_before
            if run.returncode not in (0, 1):
                raise RuntimeError(run.stderr[-2000:])
            summary: dict[str, Any] = json.loads(Path(out.name).read_text())
        ledger = [scrape(address) for address in metrics]
    finally:
        gateway.terminate()
        gateway.wait(timeout=120)
    batches = sum(worker["gateway_ledger_batch_size_count"] for worker in ledger)
    settle = summary["latency_ms"].get("settle", {})
    return {"settlements_per_s": float(summary["settlements_per_s"]),
            "settle_latency_ms": {key: settle.get(key) for key in ("p50", "p99", "max") if key in settle},
            "not_ok": {status: count for status, count in summary["statuses"].items() if status != "STATUS_CODE_OK"},
            "gateway_cpu_per_s": round(gateway_cpu / wall_s, 3),
            "simulator_cpu_per_s": round(simulator_cpu / wall_s, 3),
            "ledger_batches": int(batches),
            "mean_batch": round(sum(w["gateway_ledger_batch_size_sum"] for w in ledger) / max(batches, 1), 1),
            "mean_transaction_ms": round(1000 * sum(w["gateway_ledger_commit_duration_seconds_sum"] for w in ledger)
                                         / max(batches, 1), 2),
            "ledger_unavailable": int(sum(w["gateway_ledger_unavailable_total"] for w in ledger)),
            # Seconds spent in ledger transactions per second of the run, all writers together: near 1 on SQLite
            # means its one write lock was held all the time (the bound); on PostgreSQL writers overlap (above 1).
            "ledger_transaction_s_per_s": round(sum(w["gateway_ledger_commit_duration_seconds_sum"] for w in ledger)
                                                / wall_s, 3)}


def _listening(gateway: subprocess.Popen[str], processes: int) -> tuple[int, list[str], list[int]]:
    """The terminals' port, each worker's metrics address and (several processes) the workers' pids, from the line
    the gateway logs once it listens."""
    if gateway.stdout is None:
        raise RuntimeError("the gateway's output is not a pipe")
    deadline = time.monotonic() + START_TIMEOUT_S
    lines = []
    for line in gateway.stdout:
        lines.append(line)
        message = log_message(line) or ""
        if message.startswith("Gateway listening on "):
            port = int(message.split()[3].rstrip(".;").rsplit(":", 1)[1])
            metrics_part = message.split("metrics and health on ", 1)[1].split("; database", 1)[0]
            metrics = re.findall(r"http://([^/\s]+)/", metrics_part)
            found = PIDS.search(message)
            pids = [int(pid) for pid in found.group(1).split(", ")] if found else []
            if len(metrics) != processes:
                raise RuntimeError(f"expected {processes} metrics addresses in {message!r}")
            return port, metrics, pids
        if time.monotonic() > deadline:
            break
    raise RuntimeError("the gateway did not start:\n" + "".join(lines[-20:]))


def measure(kind: str, per_institution: int, args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_number in range(args.rounds):
            order = (("one", 1), ("two", 2)) if round_number % 2 == 0 else (("two", 2), ("one", 1))
            for name, processes in order:
                with fresh_database(kind, Path(tmp)) as db:
                    runs[name].append(one_run(db, processes, per_institution, args))
                print(f"{kind} round {round_number + 1} --processes {processes}: "
                      f"{runs[name][-1]['settlements_per_s']} settlements/s", file=sys.stderr)
    # The shape another table reads: {"one": {"settlements_per_s"}, "two": {...}, "ratio"}; what explains the
    # figures (each round's run, the median one in full) under "details".
    figures: dict[str, Any] = {"details": {}}
    for name in ("one", "two"):
        rates = [run["settlements_per_s"] for run in runs[name]]
        figures[name] = {"settlements_per_s": float(statistics.median(rates))}
        median_run = sorted(runs[name], key=lambda run: run["settlements_per_s"])[len(runs[name]) // 2]
        figures["details"][name] = {"rounds_settlements_per_s": rates, "median_run": median_run}
    figures["ratio"] = round(figures["two"]["settlements_per_s"] / figures["one"]["settlements_per_s"], 3)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.processes_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="each simulator run")
    parser.add_argument("--terminals", type=int, default=40)
    parser.add_argument("--simulator-processes", type=int, default=1,
                        help="`gateway simulate --processes` (the same for both settings)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setting, taking turns")
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite only")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/processes.json")
    args = parser.parse_args(argv)
    per_institution = max(DEFAULT_TERMINALS_PER_INSTITUTION, args.terminals // SESSIONS_PER_TERMINAL_ID + 10)
    sqlite = measure("sqlite", per_institution, args)
    results: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "database": "sqlite",
        "one": sqlite["one"], "two": sqlite["two"], "ratio": sqlite["ratio"], "cores": os.cpu_count() or 1,
        "command": shlex.join(["python", "-m", "benchmarks.processes_bench", *(argv if argv is not None
                                                                               else sys.argv[1:])]),
        "details": {**sqlite["details"], "seconds": args.seconds, "terminals": args.terminals,
                    "simulator_processes": args.simulator_processes, "rounds": args.rounds,
                    "mix": "settle_only"}}
    if not args.no_postgresql and postgresql_available():
        results["postgresql"] = measure("postgresql", per_institution, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
