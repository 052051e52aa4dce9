"""The table of `make bench`'s figures against DESIGN.md §4, written into BENCHMARKS.md between two markers.

    .venv/bin/python -m benchmarks.report [bench/results.json] [BENCHMARKS.md]

`benchmarks.system_bench` calls it after each run; run alone, it writes the table of an earlier results file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.targets import (
    COUNTER_FLOW_RATIO_TARGET,
    IDLE_KB_TARGET,
    LARGE_LEDGER_SLOWDOWN_LIMIT,
    P99_TARGET_MS,
    SETTLE_ONLY_RATIO_TARGET,
    TLS_RATIO_TARGET,
)

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- system_bench: begin (written by `make bench`; edits between these markers are overwritten) -->"
END = "<!-- system_bench: end -->"

# The simulator runs' pages (benchmarks.system_bench REPORTED_RUNS), as the sentence under the table names them.
REPORT_LABELS = {"heartbeat": "heartbeats", "heartbeat_tls": "heartbeats over TLS", "settle": "the whole counter flow",
                 "settle_only": "the Settle exchange alone", "half_peak": "latency at half the peak",
                 "large_ledger": "the large ledger"}


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _n(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def render(results: dict[str, Any]) -> str:
    heartbeat = results["heartbeat_requests_per_s"]
    settlements = results["settlements_per_s"]
    ratio = results["settlement_to_heartbeat_ratio"]
    rows = [
        ("heartbeat requests/s, closed loop (the floor cost of server and simulator)", _n(heartbeat), "—", "—"),
        ("durable settlements/s, the whole counter flow (mix `settle`: card inserted, ReadCard by APDU relay, "
         "Settle, card removed: 5 exchanges)", _n(settlements), "—", "—"),
        ("settlements/s ÷ heartbeat requests/s", f"{ratio:.3f}", f"≥ {COUNTER_FLOW_RATIO_TARGET}",
         _met(ratio >= COUNTER_FLOW_RATIO_TARGET)),
    ]
    tls = results.get("heartbeat_tls")
    if tls:
        rows.append(("heartbeat requests/s over TLS (terminal certificates) ÷ over plain TCP, same run",
                     f"{_n(tls['requests_per_s'])} ÷ {_n(heartbeat)}: {tls['to_plain_tcp_ratio']:.3f}",
                     f"≥ {TLS_RATIO_TARGET}", _met(tls["to_plain_tcp_ratio"] >= TLS_RATIO_TARGET)))
    only = results.get("settle_exchange_only")
    if only:
        rows.append(("settlements/s, the Settle exchange alone (mix `settle_only`: the card left in the reader)",
                     f"{_n(only['settlements_per_s'])} (÷ heartbeat: {only['to_heartbeat_ratio']:.3f})",
                     f"÷ heartbeat ≥ {SETTLE_ONLY_RATIO_TARGET}",
                     _met(only["to_heartbeat_ratio"] >= SETTLE_ONLY_RATIO_TARGET)))
    half = results["half_peak"]
    latency = half["settle_latency_ms"] or {}
    p99 = latency.get("p99", float("inf"))
    achieved = half.get("achieved_rate_per_s")  # results of before the simulator reported it have none
    rows.append((f"Settle latency at {half['terminals']:,} connected terminals, half the peak "
                 f"({half['rate_scenarios_per_s']:,.0f} scenarios/s"
                 + (f" targeted, {achieved:,.0f}/s achieved, open loop, timed from the intended send)"
                    if achieved is not None else ", open loop)"),
                 f"p50 {latency.get('p50')} ms, p90 {latency.get('p90')} ms, p99 {latency.get('p99')} ms",
                 f"p99 ≤ {P99_TARGET_MS:.0f} ms", _met(p99 <= P99_TARGET_MS)))
    memory = results["idle_memory"]
    rows.append((f"gateway RSS per idle signed-in connection, {memory['signed_in']:,} connections",
                 f"{memory['kb_per_connection']} KB ({memory['rss_before_kb'] // 1024} MB → "
                 f"{memory['rss_after_kb'] // 1024} MB)", f"≤ {IDLE_KB_TARGET:.0f} KB, TLS included",
                 _met(memory["kb_per_connection"] <= IDLE_KB_TARGET)))
    memory_tls = results.get("idle_memory_tls")  # results of before system_bench measured it have none
    if memory_tls:
        rows.append((f"gateway RSS per idle signed-in connection over TLS, {memory_tls['signed_in']:,} connections "
                     "(a fresh gateway of its own)",
                     f"{memory_tls['kb_per_connection']} KB ({memory_tls['rss_before_kb'] // 1024} MB → "
                     f"{memory_tls['rss_after_kb'] // 1024} MB)", f"≤ {IDLE_KB_TARGET:.0f} KB, TLS included",
                     _met(memory_tls["kb_per_connection"] <= IDLE_KB_TARGET)))
    large = results.get("large_ledger")
    if large:
        empty = large["empty_settlements_per_s"]
        ratio_large = large["large_to_empty_ratio"]
        rows.append((f"settlements/s (mix `settle`) on a ledger of {large['prefill']['settlements']:,} settlements "
                     f"vs the empty one (runs before and after)",
                     f"{_n(large['large_settlements_per_s'])} vs {_n(empty[0])} and {_n(empty[1])}: "
                     f"×{ratio_large:.3f}", f"within {LARGE_LEDGER_SLOWDOWN_LIMIT:.0%}",
                     _met(ratio_large >= 1 - LARGE_LEDGER_SLOWDOWN_LIMIT)))
    else:
        rows.append(("settlements/s on a 10-million-settlement ledger vs empty", "not measured (--prefill 0)",
                     f"within {LARGE_LEDGER_SLOWDOWN_LIMIT:.0%}", "**not measured**"))
    unexpected = sum(len(run["unexpected"]) for run in results.get("runs", {}).values())
    unexpected += (large or {}).get("unexpected", 0)
    lines = [
        f"Measured {results['date']} on {results['machine']}, Python {results['python']}; gateway, simulator "
        f"and database on the same machine. Command: `{results['command']}`.",
        "",
        "| figure | measured | target (DESIGN.md §4) | met? |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        f"Unexpected answers in these runs: {unexpected}.",
    ]
    pages = results.get("reports") or {}
    if pages:
        links = ", ".join(f"[{REPORT_LABELS.get(name, name)}]({path})" for name, path in pages.items())
        lines += ["", "Each run's page (`gateway simulate --report`: throughput and p50/p99 per second, a latency "
                  "histogram and percentile distribution per message type, the run's parameters and command line; "
                  f"its raw data and HdrHistogram logs beside it): {links}."]
    return "\n".join(lines)


def write_into(markdown: Path, table: str, begin: str = BEGIN, end: str = END) -> None:
    """`table` in place of what is between the markers `begin` and `end` of `markdown` (this table's by default)."""
    text = markdown.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise ValueError(f"{markdown} has no {begin!r} … {end!r} section")
    before, rest = text.split(begin, 1)
    _, after = rest.split(end, 1)
    markdown.write_text(f"{before}{begin}\n{table}\n{end}{after}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    results = Path(args[0]) if args else ROOT / "bench/results.json"
    markdown = Path(args[1]) if len(args) > 1 else ROOT / "BENCHMARKS.md"
    write_into(markdown, render(json.loads(results.read_text(encoding="utf-8"))))
    print(f"wrote the table of {results} into {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
