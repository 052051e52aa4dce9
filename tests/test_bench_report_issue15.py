"""Issue 15's table, the last step of `make bench`: every figure of the issue from the files the benchmarks wrote,
judged against the issue's target, beside its "today", with the command that reproduces it — and "not measured",
saying what is missing, where a file or a figure is absent."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report_issue15 import BEGIN, END, main

RESULTS: dict[str, Any] = {
    "date": "2026-12-03T06:00:00+00:00",
    "command": "python -m benchmarks.system_bench --json bench/results.json",
    "heartbeat_requests_per_s": 20_000.0, "settlements_per_s": 3_000.0, "settlement_to_heartbeat_ratio": 0.15,
    "settle_exchange_only": {"settlements_per_s": 7_000.0, "to_heartbeat_ratio": 0.35},
    "heartbeat_tls": {"requests_per_s": 15_000.0, "to_plain_tcp_ratio": 0.75},
    "half_peak": {"terminals": 1000, "rate_scenarios_per_s": 600.0,
                  "settle_latency_ms": {"p50": 4.1, "p90": 7.0, "p99": 9.5}},
    "idle_memory": {"signed_in": 10_000, "kb_per_connection": 4.6, "rss_before_kb": 96_000, "rss_after_kb": 142_000},
    "idle_memory_tls": {"signed_in": 10_000, "kb_per_connection": 4.9, "rss_before_kb": 92_000,
                        "rss_after_kb": 141_000},
}
LEDGER: dict[str, Any] = {
    "when": "2026-12-03T06:12:00+00:00",
    "command": "python -m benchmarks.ledger_bench --settlements 2000 --profile --json bench/ledger.json",
    "sqlite": [{"batch_size": 10, "settlements_per_s": 3_000.0, "floor_settlements_per_s": 4_000.0,
                "to_floor_ratio": 0.75},
               {"batch_size": 100, "settlements_per_s": 3_600.0, "floor_settlements_per_s": 6_000.0,
                "to_floor_ratio": 0.6}],
    "postgresql": [{"batch_size": 100, "settlements_per_s": 1_350.0, "floor_settlements_per_s": 3_000.0,
                    "to_floor_ratio": 0.45}],
}
PROCESSES: dict[str, Any] = {
    "measured_at": "2026-12-03T06:15:00+00:00", "database": "sqlite",
    "one": {"settlements_per_s": 1_000.0}, "two": {"settlements_per_s": 1_700.0}, "ratio": 1.7, "cores": 4,
    "command": "python -m benchmarks.processes_bench --json bench/processes.json",
}

Sources = dict[str, Any]  # "results", "ledger", "processes": the file's JSON, or None for no file


def table(tmp_path: Path, change: Callable[[Sources], None] | None = None) -> str:
    """The table `make bench`'s last step writes from the sample files as `change` leaves them."""
    files: Sources = {"results": copy.deepcopy(RESULTS), "ledger": copy.deepcopy(LEDGER),
                      "processes": copy.deepcopy(PROCESSES)}
    if change:
        change(files)
    (tmp_path / "bench").mkdir(parents=True)
    for name, data in files.items():
        if data is not None:
            text = data if isinstance(data, str) else json.dumps(data)
            (tmp_path / "bench" / f"{name}.json").write_text(text)
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text(f"# Benchmarks\n\nprose\n\n{BEGIN}\nthe old table\n{END}\n\nmore prose\n")
    assert main(["--results", str(tmp_path / "bench/results.json"), "--ledger", str(tmp_path / "bench/ledger.json"),
                 "--processes", str(tmp_path / "bench/processes.json"), "--markdown", str(markdown)]) == 0
    text = markdown.read_text()
    assert text.startswith(f"# Benchmarks\n\nprose\n\n{BEGIN}\n") and text.endswith(f"\n{END}\n\nmore prose\n")
    assert "the old table" not in text
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def row(text: str, starts: str) -> dict[str, str]:
    [line] = [line for line in text.splitlines() if line.startswith(f"| {starts}")]
    cells = [cell.strip() for cell in line.strip("|").split(" | ")]
    return dict(zip(("figure", "today", "target", "measured", "met", "command"), cells, strict=True))


SETTLE_ONLY = "Settle exchange alone"
COUNTER_FLOW = "whole counter flow"
SQLITE = "ledger alone, batches of 100, ÷ the database's floor for the same rows: SQLite"
POSTGRESQL = "ledger alone, batches of 100, ÷ the database's floor for the same rows: PostgreSQL"
P99 = "Settle p99"
TLS = "heartbeat over TLS"
IDLE = "memory per idle"
PROCESSES_ROW = "2 gateway processes"

# (figure, today, target, measured, met) as the sample files give them.
AS_SAMPLED = [
    (SETTLE_ONLY, "0.08–0.10", "≥ 0.33", "0.350 (7,000 ÷ 20,000/s)", "yes"),
    (COUNTER_FLOW, "0.03–0.04", "≥ 0.14", "0.150 (3,000 ÷ 20,000/s)", "yes"),
    (SQLITE, "0.08", "≥ 0.5", "0.600 (3,600 ÷ 6,000 settlements/s)", "yes"),
    (POSTGRESQL, "–", "≥ 0.5", "0.450 (1,350 ÷ 3,000 settlements/s)", "**no**"),
    (P99, "12.7 ms", "≤ 10 ms", "9.5 ms (1,000 terminals, 600 scenarios/s)", "yes"),
    (TLS, "–", "≥ 0.7", "0.750 (15,000 ÷ 20,000/s)", "yes"),
    (IDLE, "4.6 KB (plain TCP)", "≤ 5 KB, TLS included", "over TLS 4.9 KB (10,000), plain TCP 4.6 KB (10,000)",
     "yes"),
    (PROCESSES_ROW, "–", "measured and explained; ≥ 1.6 where cores allow",
     "1.700 (1,700 ÷ 1,000 settlements/s, sqlite, 4 cores)", "yes"),
]


@pytest.mark.parametrize(("figure", "today", "target", "measured", "met"), AS_SAMPLED)
def test_each_figure_beside_today_and_its_target(tmp_path: Path, figure: str, today: str, target: str,
                                                 measured: str, met: str) -> None:
    cells = row(table(tmp_path), figure)
    assert (cells["today"], cells["target"], cells["measured"], cells["met"]) == (today, target, measured, met)


def test_every_row_names_the_command_that_reproduces_it(tmp_path: Path) -> None:
    text = table(tmp_path)
    assert len([line for line in text.splitlines() if line.startswith("| ") and "---" not in line]) == 9
    for figure in (SETTLE_ONLY, COUNTER_FLOW, P99, TLS, IDLE):
        assert row(text, figure)["command"] == "`python -m benchmarks.system_bench --json bench/results.json`"
    for figure in (SQLITE, POSTGRESQL):
        assert row(text, figure)["command"] == ("`python -m benchmarks.ledger_bench --settlements 2000 --profile "
                                                "--json bench/ledger.json`")
    assert row(text, PROCESSES_ROW)["command"] == "`python -m benchmarks.processes_bench --json bench/processes.json`"
    assert "bench/results.json, 2026-12-03T06:00:00+00:00" in text and "bench/processes.json, 2026-12-03T06:15" in text


def _set(source: str, *path: Any) -> Callable[[Sources], None]:
    """A change: the value at `path` (its last element) in `source`'s JSON."""
    *keys, last, value = path

    def change(files: Sources) -> None:
        target = files[source]
        for key in keys:
            target = target[key]
        target[last] = value
    return change


def _drop(source: str, *keys: Any) -> Callable[[Sources], None]:
    def change(files: Sources) -> None:
        target = files[source]
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return change


def _no_file(source: str) -> Callable[[Sources], None]:
    def change(files: Sources) -> None:
        files[source] = None
    return change


def _text(source: str, text: str) -> Callable[[Sources], None]:
    def change(files: Sources) -> None:
        files[source] = text
    return change


# (case, change, figure, met, a part of what the measured cell says)
CASES = [
    ("settle alone below", _set("results", "settle_exchange_only", "to_heartbeat_ratio", 0.329), SETTLE_ONLY,
     "**no**", "0.329"),
    ("counter flow below", _set("results", "settlement_to_heartbeat_ratio", 0.139), COUNTER_FLOW, "**no**", "0.139"),
    ("SQLite below the floor's half", _set("ledger", "sqlite", 1, "to_floor_ratio", 0.49), SQLITE, "**no**", "0.490"),
    ("PostgreSQL at the target", _set("ledger", "postgresql", 0, "to_floor_ratio", 0.5), POSTGRESQL, "yes", "0.500"),
    ("p99 above", _set("results", "half_peak", "settle_latency_ms", "p99", 10.1), P99, "**no**", "10.1 ms"),
    ("p99 at fewer terminals", _set("results", "half_peak", "terminals", 200), P99,
     "not judged: 200 terminals, not 1,000", "200 terminals"),
    ("TLS below", _set("results", "heartbeat_tls", "to_plain_tcp_ratio", 0.69), TLS, "**no**", "0.690"),
    ("idle over TLS above", _set("results", "idle_memory_tls", "kb_per_connection", 43.3), IDLE, "**no**",
     "over TLS 43.3 KB"),
    ("idle plain above", _set("results", "idle_memory", "kb_per_connection", 5.1), IDLE, "**no**",
     "plain TCP 5.1 KB"),
    ("idle at fewer connections", _set("results", "idle_memory_tls", "signed_in", 1000), IDLE,
     "not judged: fewer than 10,000 connections", "over TLS 4.9 KB (1,000)"),
    ("two processes below, cores enough", _set("processes", "ratio", 1.2), PROCESSES_ROW, "**no**", "1.200"),
    ("two processes below, two cores",
     lambda files: files["processes"].update(ratio=1.05, cores=2), PROCESSES_ROW,
     "not judged: 2 cores (≥ 1.6 asks for 3: two gateways and the simulator)", "1.050"),
    # Absent files and figures.
    ("no processes file", _no_file("processes"), PROCESSES_ROW, "**not measured**",
     "not measured: no bench/processes.json (run python -m benchmarks.processes_bench)"),
    ("no PostgreSQL in the ledger file", _drop("ledger", "postgresql"), POSTGRESQL, "**not measured**",
     "not measured: no `postgresql` in bench/ledger.json"),
    ("no batch of 100", _set("ledger", "sqlite", 1, "batch_size", 50), SQLITE, "**not measured**",
     "no `sqlite` run at batch_size 100 in bench/ledger.json"),
    ("a ledger file without the floor", _drop("ledger", "sqlite", 1, "to_floor_ratio"), SQLITE, "**not measured**",
     "no `sqlite[batch_size=100].to_floor_ratio` in bench/ledger.json"),
    ("an unreadable ledger file", _text("ledger", "{not json"), SQLITE, "**not measured**",
     "bench/ledger.json unreadable"),
    ("a figure of another shape", _set("ledger", "sqlite", "a list no more"), SQLITE, "**not measured**",
     "no `sqlite` run at batch_size 100"),
    ("no TLS idle figure", _drop("results", "idle_memory_tls"), IDLE, "**not measured**",
     "plain TCP 4.6 KB (10,000); over TLS not measured: no `idle_memory_tls` in bench/results.json"),
    ("no results file", _no_file("results"), TLS, "**not measured**",
     "not measured: no bench/results.json (run python -m benchmarks.system_bench)"),
]


@pytest.mark.parametrize(("change", "figure", "met", "measured"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_each_figure_is_judged_or_said_missing(tmp_path: Path, change: Callable[[Sources], None], figure: str,
                                               met: str, measured: str) -> None:
    cells = row(table(tmp_path, change), figure)
    assert cells["met"] == met
    assert measured in cells["measured"]


def test_a_file_that_recorded_no_command_names_its_benchmark(tmp_path: Path) -> None:
    text = table(tmp_path, _drop("ledger", "command"))
    assert row(text, SQLITE)["command"] == "`python -m benchmarks.ledger_bench`"
    assert row(table(tmp_path / "none", _no_file("processes")), PROCESSES_ROW)["command"] == (
        "`python -m benchmarks.processes_bench`")


def test_files_of_different_runs_are_called_so(tmp_path: Path) -> None:
    assert "not of one `make bench` run" not in table(tmp_path / "one")
    text = table(tmp_path / "two", _set("processes", "measured_at", "2026-12-01T06:15:00+00:00"))
    assert "**These files are not of one `make bench` run** (written 48.0 h apart)" in text
