"""The table `make bench` writes into BENCHMARKS.md: every figure of DESIGN.md §4, judged against its target."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report import BEGIN, END, render, write_into

RESULTS: dict[str, Any] = {
    "date": "2026-11-24T16:51:37+00:00", "machine": "x86_64, 2 cores", "python": "3.11.7",
    "command": "make bench (python -m benchmarks.system_bench)",
    "heartbeat_requests_per_s": 40_000.0, "settlements_per_s": 1_200.0, "settlement_to_heartbeat_ratio": 0.03,
    "heartbeat_tls": {"requests_per_s": 30_000.0, "to_plain_tcp_ratio": 0.75},
    "settle_exchange_only": {"settlements_per_s": 2_500.0, "to_heartbeat_ratio": 0.0625},
    "half_peak": {"terminals": 1000, "rate_scenarios_per_s": 600.0,
                  "settle_latency_ms": {"p50": 5.7, "p90": 7.7, "p99": 9.9}},
    "idle_memory": {"signed_in": 10_000, "kb_per_connection": 4.8, "rss_before_kb": 96_956, "rss_after_kb": 145_164},
    "large_ledger": {"prefill": {"settlements": 10_000_000}, "empty_settlements_per_s": [1147.2, 1139.2],
                     "large_settlements_per_s": 1136.3, "large_to_empty_ratio": 0.994, "unexpected": 0},
    "runs": {"settle": {"unexpected": []}},
}


def _row(table: str, starts: str) -> list[str]:
    [line] = [line for line in table.splitlines() if line.startswith(f"| {starts}")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_each_figure_is_judged_against_its_target() -> None:
    table = render(RESULTS)
    assert _row(table, "durable settlements/s")[-1] == "—"  # DESIGN.md §4 asks for ratios, not a rate
    assert _row(table, "settlements/s ÷ heartbeat")[-1] == "**no**"  # 0.03 < 0.14
    assert _row(table, "settlements/s, the Settle exchange alone")[-1] == "**no**"  # 0.0625 < 0.33
    assert _row(table, "Settle latency")[-1] == "yes"
    assert _row(table, "gateway RSS")[-1] == "yes"
    assert _row(table, "heartbeat requests/s over TLS")[-1] == "yes"
    assert _row(table, "settlements/s (mix `settle`) on a ledger of 10,000,000")[-1] == "yes"
    assert "make bench (python -m benchmarks.system_bench)" in table and "2026-11-24" in table


def test_a_slow_large_ledger_and_a_slow_p99_are_not_met() -> None:
    results = copy.deepcopy(RESULTS)
    results["large_ledger"]["large_to_empty_ratio"] = 0.89
    results["half_peak"]["settle_latency_ms"]["p99"] = 10.5
    table = render(results)
    assert _row(table, "settlements/s (mix `settle`) on a ledger")[-1] == "**no**"
    assert _row(table, "Settle latency")[-1] == "**no**"


def test_the_latency_row_gives_the_achieved_rate_beside_the_target() -> None:
    results = copy.deepcopy(RESULTS)
    results["half_peak"]["achieved_rate_per_s"] = 571.4
    [label] = _row(render(results), "Settle latency")[:1]
    assert "600 scenarios/s targeted, 571/s achieved" in label and "from the intended send" in label
    assert "achieved" not in _row(render(RESULTS), "Settle latency")[0]


def test_without_the_large_ledger_it_says_not_measured() -> None:
    results = copy.deepcopy(RESULTS)
    results["large_ledger"] = None
    assert _row(render(results), "settlements/s on a 10-million")[-1] == "**not measured**"


def test_the_table_replaces_only_what_is_between_the_markers(tmp_path: Path) -> None:
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text(f"# Benchmarks\n\nprose before\n\n{BEGIN}\nold table\n{END}\n\nprose after\n")
    write_into(markdown, "new table")
    assert markdown.read_text() == f"# Benchmarks\n\nprose before\n\n{BEGIN}\nnew table\n{END}\n\nprose after\n"
    markdown.write_text("no markers")
    with pytest.raises(ValueError, match="section"):
        write_into(markdown, "new table")


def test_the_table_links_each_run_s_page_when_the_run_wrote_them() -> None:
    assert "bench/reports" not in render(RESULTS)
    results = copy.deepcopy(RESULTS)
    results["reports"] = {"heartbeat": "bench/reports/heartbeat/index.html",
                          "settle_only": "bench/reports/settle_only/index.html"}
    [line] = [line for line in render(results).splitlines() if line.startswith("Each run's page")]
    assert line.endswith(": [heartbeats](bench/reports/heartbeat/index.html), "
                         "[the Settle exchange alone](bench/reports/settle_only/index.html).")


def test_the_memory_over_tls_has_a_row_when_the_run_measured_it() -> None:
    assert "over TLS, " not in render(RESULTS)
    results = copy.deepcopy(RESULTS)
    results["idle_memory_tls"] = {"signed_in": 10_000, "kb_per_connection": 43.3, "rss_before_kb": 92_000,
                                  "rss_after_kb": 515_000}
    cells = _row(render(results), "gateway RSS per idle signed-in connection over TLS, 10,000 connections")
    assert cells[1:] == ["43.3 KB (89 MB → 502 MB)", "≤ 5 KB, TLS included", "**no**"]
