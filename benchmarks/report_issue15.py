"""Issue 15's figures: each one measured by the last `make bench`, beside the issue's "today" and its target, with
the command that reproduces it; written into BENCHMARKS.md between two markers (the last step of `make bench`).

    .venv/bin/python -m benchmarks.report_issue15 [--results bench/results.json] [--ledger bench/ledger.json]
        [--processes bench/processes.json] [--markdown BENCHMARKS.md]

Sources: `benchmarks.system_bench` (bench/results.json), `benchmarks.ledger_bench` (bench/ledger.json) and
`benchmarks.processes_bench` (bench/processes.json). A file or a figure a source does not hold makes its row say
"not measured" and which file or key is missing; the table is still written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.report import write_into
from benchmarks.targets import (
    COUNTER_FLOW_RATIO_TARGET,
    IDLE_CONNECTIONS,
    IDLE_KB_TARGET,
    LEDGER_BATCH,
    LEDGER_FLOOR_RATIO_TARGET,
    P99_TARGET_MS,
    P99_TERMINALS,
    PROCESSES_RATIO_TARGET,
    SETTLE_ONLY_RATIO_TARGET,
    TLS_RATIO_TARGET,
)

ROOT = Path(__file__).resolve().parent.parent
BEGIN = ("<!-- issue15: begin (written by `make bench`, its last step `python -m benchmarks.report_issue15`; edits "
         "between these markers are overwritten) -->")
END = "<!-- issue15: end -->"

# Two gateway processes and the simulator in another process each want a core of their own: with fewer the
# second process has no core to grow into, and the ratio is measured and explained but not judged.
PROCESSES_CORES_NEEDED = 3

# Files written further apart than this are not of one `make bench` run (which takes about 20 minutes, the
# 10-million-settlement prefill included): the table says so, as its ratios are then not of one setup.
ONE_RUN_WINDOW_S = 3 * 3600.0

MET = "yes"
NOT_MET = "**no**"
NOT_MEASURED = "**not measured**"

SYSTEM_BENCH = "python -m benchmarks.system_bench"
LEDGER_BENCH = "python -m benchmarks.ledger_bench"
PROCESSES_BENCH = "python -m benchmarks.processes_bench"


class Missing(Exception):
    """A source file, or a figure in it, that the run did not write."""


@dataclass(frozen=True)
class Source:
    """One benchmark's JSON file: what it holds (None: absent or unreadable, `problem` says which)."""

    path: Path
    shown: str     # the path as the table names it
    program: str   # the benchmark that writes it
    data: dict[str, Any] | None
    problem: str

    @classmethod
    def read(cls, path: Path, shown: str, program: str) -> Source:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path, shown, program, None, f"no {shown}")
        except (OSError, ValueError) as exc:
            return cls(path, shown, program, None, f"{shown} unreadable: {exc}")
        if not isinstance(data, dict):
            return cls(path, shown, program, None, f"{shown} holds no JSON object")
        return cls(path, shown, program, data, "")

    def get(self, *keys: str) -> Any:
        """The figure at `keys`, or Missing naming the file and the key."""
        if self.data is None:
            raise Missing(self.problem)
        value: Any = self.data
        for depth, key in enumerate(keys):
            if not isinstance(value, dict) or value.get(key) is None:
                raise Missing(f"no `{'.'.join(keys[: depth + 1])}` in {self.shown}")
            value = value[key]
        return value

    def command(self) -> str:
        """The command line the source recorded (benchmarks of before they recorded it: the program alone)."""
        recorded = (self.data or {}).get("command")
        return recorded if isinstance(recorded, str) and recorded else self.program

    def when(self, key: str) -> datetime | None:
        try:
            return datetime.fromisoformat(str((self.data or {})[key]))
        except (KeyError, ValueError):
            return None

    def measured_at(self, key: str) -> str:
        when = (self.data or {}).get(key)
        if when:
            return f"{self.shown}, {when}"
        return self.problem or f"{self.shown} (undated)"


@dataclass(frozen=True)
class Row:
    figure: str
    today: str
    target: str
    measured: str
    met: str
    command: str


def _judged(ok: bool) -> str:
    return MET if ok else NOT_MET


def _n(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _row(figure: str, today: str, target: str, source: Source, figures: Callable[[], tuple[str, str]]) -> Row:
    """A row of `source`'s figures, or "not measured" and why when they are missing."""
    try:
        measured, met = figures()
    except Missing as exc:
        rerun = f" (run {source.program})" if source.data is None else ""
        return Row(figure, today, target, f"not measured: {exc}{rerun}", NOT_MEASURED, f"`{source.command()}`")
    except (TypeError, ValueError) as exc:  # a figure of another shape than this reader knows
        return Row(figure, today, target, f"not measured: {source.shown} holds an unexpected value ({exc})",
                   NOT_MEASURED, f"`{source.command()}`")
    return Row(figure, today, target, measured, met, f"`{source.command()}`")


def _ledger_row(ledger: Source, database: str) -> Callable[[], tuple[str, str]]:
    def figures() -> tuple[str, str]:
        runs = ledger.get(database)
        batch = next((run for run in runs if isinstance(run, dict) and run.get("batch_size") == LEDGER_BATCH),
                     None) if isinstance(runs, list) else None
        if batch is None:
            raise Missing(f"no `{database}` run at batch_size {LEDGER_BATCH} in {ledger.shown}")
        for key in ("to_floor_ratio", "settlements_per_s", "floor_settlements_per_s"):
            if batch.get(key) is None:
                raise Missing(f"no `{database}[batch_size={LEDGER_BATCH}].{key}` in {ledger.shown}")
        ratio = batch["to_floor_ratio"]
        return (f"{ratio:.3f} ({_n(batch['settlements_per_s'])} ÷ {_n(batch['floor_settlements_per_s'])} "
                "settlements/s)", _judged(ratio >= LEDGER_FLOOR_RATIO_TARGET))
    return figures


def rows(results: Source, ledger: Source, processes: Source) -> list[Row]:
    def settle_only() -> tuple[str, str]:
        ratio = results.get("settle_exchange_only", "to_heartbeat_ratio")
        return (f"{ratio:.3f} ({_n(results.get('settle_exchange_only', 'settlements_per_s'))} ÷ "
                f"{_n(results.get('heartbeat_requests_per_s'))}/s)", _judged(ratio >= SETTLE_ONLY_RATIO_TARGET))

    def counter_flow() -> tuple[str, str]:
        ratio = results.get("settlement_to_heartbeat_ratio")
        return (f"{ratio:.3f} ({_n(results.get('settlements_per_s'))} ÷ "
                f"{_n(results.get('heartbeat_requests_per_s'))}/s)", _judged(ratio >= COUNTER_FLOW_RATIO_TARGET))

    def p99() -> tuple[str, str]:
        latency_ms = results.get("half_peak", "settle_latency_ms", "p99")
        terminals = results.get("half_peak", "terminals")
        rate = results.get("half_peak", "rate_scenarios_per_s")
        measured = f"{latency_ms} ms ({terminals:,} terminals, {rate:,.0f} scenarios/s)"
        if terminals != P99_TERMINALS:
            return measured, f"not judged: {terminals:,} terminals, not {P99_TERMINALS:,}"
        return measured, _judged(latency_ms <= P99_TARGET_MS)

    def tls() -> tuple[str, str]:
        ratio = results.get("heartbeat_tls", "to_plain_tcp_ratio")
        return (f"{ratio:.3f} ({_n(results.get('heartbeat_tls', 'requests_per_s'))} ÷ "
                f"{_n(results.get('heartbeat_requests_per_s'))}/s)", _judged(ratio >= TLS_RATIO_TARGET))

    def idle() -> tuple[str, str]:
        plain_kb = results.get("idle_memory", "kb_per_connection")
        plain_count = results.get("idle_memory", "signed_in")
        try:
            tls_kb = results.get("idle_memory_tls", "kb_per_connection")
            tls_count = results.get("idle_memory_tls", "signed_in")
        except Missing as exc:  # the plain figure alone does not meet "TLS included"
            return f"plain TCP {plain_kb} KB ({plain_count:,}); over TLS not measured: {exc}", NOT_MEASURED
        measured = f"over TLS {tls_kb} KB ({tls_count:,}), plain TCP {plain_kb} KB ({plain_count:,})"
        if min(tls_count, plain_count) < IDLE_CONNECTIONS:
            return measured, f"not judged: fewer than {IDLE_CONNECTIONS:,} connections"
        return measured, _judged(max(tls_kb, plain_kb) <= IDLE_KB_TARGET)

    def two_processes() -> tuple[str, str]:
        ratio = processes.get("ratio")
        cores = processes.get("cores")
        measured = (f"{ratio:.3f} ({_n(processes.get('two', 'settlements_per_s'))} ÷ "
                    f"{_n(processes.get('one', 'settlements_per_s'))} settlements/s, {processes.get('database')}, "
                    f"{cores} cores)")
        if ratio >= PROCESSES_RATIO_TARGET:
            return measured, MET
        if cores < PROCESSES_CORES_NEEDED:
            return measured, (f"not judged: {cores} cores (≥ {PROCESSES_RATIO_TARGET} asks for "
                              f"{PROCESSES_CORES_NEEDED}: two gateways and the simulator)")
        return measured, NOT_MET

    return [
        _row("Settle exchange alone (mix `settle_only`) ÷ heartbeat requests/s", "0.08–0.10",
             f"≥ {SETTLE_ONLY_RATIO_TARGET}", results, settle_only),
        _row("whole counter flow (mix `settle`) ÷ heartbeat requests/s", "0.03–0.04",
             f"≥ {COUNTER_FLOW_RATIO_TARGET}", results, counter_flow),
        _row(f"ledger alone, batches of {LEDGER_BATCH}, ÷ the database's floor for the same rows: SQLite", "0.08",
             f"≥ {LEDGER_FLOOR_RATIO_TARGET}", ledger, _ledger_row(ledger, "sqlite")),
        _row(f"ledger alone, batches of {LEDGER_BATCH}, ÷ the database's floor for the same rows: PostgreSQL", "–",
             f"≥ {LEDGER_FLOOR_RATIO_TARGET}", ledger, _ledger_row(ledger, "postgresql")),
        _row(f"Settle p99 at {P99_TERMINALS:,} connected terminals, half the peak", "12.7 ms",
             f"≤ {P99_TARGET_MS:.0f} ms", results, p99),
        _row("heartbeat over TLS ÷ plain TCP", "–", f"≥ {TLS_RATIO_TARGET}", results, tls),
        _row(f"memory per idle signed-in connection at {IDLE_CONNECTIONS:,} (gateway RSS)", "4.6 KB (plain TCP)",
             f"≤ {IDLE_KB_TARGET:.0f} KB, TLS included", results, idle),
        _row("2 gateway processes ÷ 1 on the same ledger, settlements/s, simulator in another process", "–",
             f"measured and explained; ≥ {PROCESSES_RATIO_TARGET} where cores allow", processes, two_processes),
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(results: Source, ledger: Source, processes: Source) -> str:
    lines = [
        "From " + "; ".join([results.measured_at("date"), ledger.measured_at("when"),
                             processes.measured_at("measured_at")])
        + ". \"today\" is issue 15's column, measured before its work.",
        *_apart([results.when("date"), ledger.when("when"), processes.when("measured_at")]),
        "",
        "| figure | today | target | measured | met? | command |",
        "|---|---|---|---|---|---|",
        *(f"| {' | '.join(_cell(cell) for cell in (r.figure, r.today, r.target, r.measured, r.met, r.command))} |"
          for r in rows(results, ledger, processes)),
    ]
    return "\n".join(lines)


def _apart(moments: list[datetime | None]) -> list[str]:
    """A warning line when the sources were written further apart than one `make bench` run takes."""
    dated = [moment if moment.tzinfo else moment.replace(tzinfo=UTC) for moment in moments if moment is not None]
    if len(dated) < 2:
        return []
    span_s = (max(dated) - min(dated)).total_seconds()
    if span_s <= ONE_RUN_WINDOW_S:
        return []
    return ["", f"**These files are not of one `make bench` run** (written {span_s / 3600:,.1f} h apart): rerun "
                "`make bench` for figures of one setup."]


def sources(results: Path, ledger: Path, processes: Path, relative_to: Path) -> tuple[Source, Source, Source]:
    def shown(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(relative_to.resolve()))
        except ValueError:
            return str(path)

    return (Source.read(results, shown(results), SYSTEM_BENCH), Source.read(ledger, shown(ledger), LEDGER_BENCH),
            Source.read(processes, shown(processes), PROCESSES_BENCH))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report_issue15", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results.json")
    parser.add_argument("--ledger", type=Path, default=ROOT / "bench/ledger.json")
    parser.add_argument("--processes", type=Path, default=ROOT / "bench/processes.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    table = render(*sources(args.results, args.ledger, args.processes, args.markdown.parent))
    write_into(args.markdown, table, BEGIN, END)
    print(table)
    print(f"wrote issue 15's figures into {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
