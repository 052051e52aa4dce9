"""`gateway simulate` against a running gateway: every answer as expected, and the ledger agrees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ServerConfig
from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION, DEMO_INSTITUTIONS, demo_csv
from simulators.scenarios import MIXES
from tests.test_end_to_end import ROOT, RunningGateway


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "simulate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> RunningGateway:
    running = RunningGateway(tmp_path_factory.mktemp("simulate"))
    yield running  # type: ignore[misc]
    running.stop()


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_the_default_mix_gets_every_answer_it_expects_and_the_ledger_agrees(
    gateway: RunningGateway, tmp_path: Path, processes: int
) -> None:
    outcomes, figures = tmp_path / "outcomes.jsonl", tmp_path / "figures.json"
    run = simulate("--target", f"127.0.0.1:{gateway.port}", "--terminals", "12", "--requests", "600",
                   "--processes", str(processes), "--outcomes", str(outcomes), "--json", str(figures))
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(figures.read_text())
    assert summary["unexpected"] == [] and summary["requests"] >= 600
    assert summary["settlements_ok"] > 0 and summary["settlements_per_s"] > 0
    assert {"settle", "read_card", "card_event"} <= set(summary["latency_ms"])
    for key in ("requests_per_s", "settlements_per_s", "latency_ms", "unexpected"):
        assert key in summary
    lines = [json.loads(line) for line in outcomes.read_text().splitlines()]
    assert {"terminal", "message_id", "scenario", "status"} <= set(lines[0])
    verified = simulate("--verify", str(outcomes), "--db", gateway.db)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "the ledger agrees with the terminals" in verified.stdout


def test_verify_finds_what_the_ledger_does_not_hold(gateway: RunningGateway, tmp_path: Path) -> None:
    outcomes = tmp_path / "forged.jsonl"
    forged = {"run": "zzzzzzzz", "terminal": "H33020300001-01", "message_id": "zzzzzzzz-1", "scenario": "forged",
              "body": "settle", "status": "STATUS_CODE_OK", "settlement_id": "S20261124FFFFFFFFFFFF",
              "amounts": {"total_fen": 100}}
    outcomes.write_text(json.dumps(forged) + "\n")
    verified = simulate("--verify", str(outcomes), "--db", gateway.db)
    assert verified.returncode == 1
    assert "answered OK, in the ledger 0 times" in verified.stdout


def test_the_heartbeat_mix_and_bad_arguments(gateway: RunningGateway) -> None:
    run = simulate("--target", f"127.0.0.1:{gateway.port}", "--terminals", "4", "--duration", "1", "--mix",
                   "heartbeat")
    assert run.returncode == 0, run.stderr
    assert "heartbeat" in run.stdout
    assert simulate("--terminals", "4").returncode == 2


@pytest.mark.parametrize("mix", ["settle", "settle_only"])
def test_the_benchmark_mixes_settle_and_the_ledger_agrees(gateway: RunningGateway, tmp_path: Path, mix: str) -> None:
    outcomes, figures = tmp_path / "outcomes.jsonl", tmp_path / "figures.json"
    run = simulate("--target", f"127.0.0.1:{gateway.port}", "--terminals", "4", "--requests", "60", "--mix", mix,
                   "--outcomes", str(outcomes), "--json", str(figures))
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(figures.read_text())
    assert summary["unexpected"] == [] and summary["settlements_ok"] > 0
    settles = summary["latency_ms"]["settle"]["count"]
    reads = summary["latency_ms"]["read_card"]["count"]
    # settle_only reads each terminal's card once; settle reads it before every settlement (a scenario the run's
    # end cut short may have read without settling).
    if mix == "settle_only":
        assert reads == 4 and settles > 4
    else:
        assert settles <= reads <= settles + 4
    verified = simulate("--verify", str(outcomes), "--db", gateway.db)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_processes_share_the_terminal_ids_without_overloading_one(gateway: RunningGateway) -> None:
    """20 terminals over 5 processes fit 6 registered ids of 4 sessions each only if the processes split the
    ids between them (each starting from the first id would put 5 sessions on it)."""
    run = simulate("--target", f"127.0.0.1:{gateway.port}", "--terminals", "20", "--processes", "5",
                   "--requests", "200", "--mix", "default")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_the_demo_registry_takes_a_thousand_terminals_of_every_built_in_mix(mix: str) -> None:
    from simulators.load import plan_slots

    slots = plan_slots(MIXES[mix], 1000, DEFAULT_TERMINALS_PER_INSTITUTION)
    assert len(slots) == 1000
    sessions: dict[str, int] = {}
    for _, terminal_id in slots:
        sessions[terminal_id] = sessions.get(terminal_id, 0) + 1
    assert max(sessions.values()) <= ServerConfig().max_sessions_per_terminal
    numbers = {int(terminal_id.rsplit("-", 1)[1]) for terminal_id in sessions}
    assert max(numbers) <= DEFAULT_TERMINALS_PER_INSTITUTION and 3 not in numbers  # -03 reads a virtual card


def test_the_demo_registry_keeps_the_terminals_the_readme_names() -> None:
    """More terminal ids, the first four of each institution as they were: -03 reads a virtual card."""
    _, terminals = demo_csv()
    readers = dict(line.split(",")[0:5:4] for line in terminals.splitlines()[1:])
    assert readers["H33020300001-01"] == readers["H33020300001-02"] == readers["H33020300001-04"] == "terminal"
    assert readers["H33020300001-03"] == "virtual:N00000001" and readers["H33021200002-03"] == "virtual:Z00000101"
    assert len(readers) == len(DEMO_INSTITUTIONS) * DEFAULT_TERMINALS_PER_INSTITUTION


@pytest.mark.parametrize("terminals, mix", [("50", "default"), ("1000", "heartbeat")])
def test_the_readme_and_benchmark_runs_fit_the_demo_registry_as_it_is(
    gateway: RunningGateway, terminals: str, mix: str
) -> None:
    """`gateway simulate --terminals 50` against `make run`'s registry, nothing else passed (it failed with a
    ValueError after an all-zero summary when the registry had 4 ids per institution); the benchmark's 1,000."""
    run = simulate("--target", f"127.0.0.1:{gateway.port}", "--terminals", terminals, "--requests", terminals,
                   "--mix", mix)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"{terminals} terminals ")


def test_a_shortfall_is_one_line_before_anything_runs(gateway: RunningGateway, tmp_path: Path) -> None:
    target = f"127.0.0.1:{gateway.port}"
    outcomes = tmp_path / "outcomes.jsonl"
    outcomes.write_text("an earlier run's record\n")
    # More terminals than the ids the simulator may use can carry, 4 sessions each.
    too_many = simulate("--target", target, "--terminals", "5000", "--duration", "1", "--outcomes", str(outcomes))
    # More ids than the gateway's registry has.
    unknown = simulate("--target", target, "--terminals", "1200", "--terminals-per-institution", "400", "--mix",
                       "heartbeat", "--duration", "1", "--outcomes", str(outcomes))
    for run in (too_many, unknown):
        assert run.returncode == 2 and run.stdout == "", run.stdout + run.stderr
        [line] = run.stderr.splitlines()
        assert line.startswith("gateway: ") and "--terminals-per-institution" in line
    assert "625 terminal ids at H33020300001" in too_many.stderr
    assert "H33020300001-400" in unknown.stderr and "STATUS_CODE_UNKNOWN_TERMINAL" in unknown.stderr
    assert outcomes.read_text() == "an earlier run's record\n"  # nothing ran, nothing was replaced


def test_open_loop_latency_counts_the_backlog_and_the_achieved_rate_stands_beside_the_target(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """One terminal cannot start 2,000 counter visits a second. The starts queue for it, and every request is timed
    from when it was meant to be sent (as wrk2 does), so the backlog shows in the latencies instead of hiding in
    dropped starts (coordinated omission); the achieved rate stands beside the target, with a warning."""
    target, figures = f"127.0.0.1:{gateway.port}", tmp_path / "figures.json"
    behind = simulate("--target", target, "--terminals", "1", "--rate", "2000", "--duration", "2", "--mix", "settle",
                      "--json", str(figures))
    assert behind.returncode == 0, behind.stdout + behind.stderr
    summary = json.loads(figures.read_text())
    assert summary["target_rate_per_s"] == 2000 and 0 < summary["achieved_rate_per_s"] < 1000
    assert summary["rate_shortfall"] > 0.5 and summary["not_started"] > 0
    assert "WARNING" in behind.stdout and "below the target 2000" in behind.stderr
    # A visit started k-th waits about k/achieved - k/2000 s for its turn: by the end of 2 s, more than a second.
    assert summary["start_lag_ms"]["max"] > 500 and summary["latency_ms"]["card_event"]["max"] > 500
    assert summary["latency_ms"]["card_event"]["p90"] > 200

    required = simulate("--target", target, "--terminals", "1", "--rate", "2000", "--duration", "1", "--mix",
                        "settle", "--require-rate")
    assert required.returncode == 1 and "--require-rate" in required.stderr

    kept = simulate("--target", target, "--terminals", "4", "--rate", "20", "--duration", "2", "--mix", "heartbeat",
                    "--require-rate", "--json", str(figures))
    assert kept.returncode == 0, kept.stdout + kept.stderr
    summary = json.loads(figures.read_text())
    assert 19 <= summary["achieved_rate_per_s"] <= 21 and summary["rate_shortfall"] <= 0.05
    assert "WARNING" not in kept.stdout and "warning" not in kept.stderr
    assert simulate("--target", target, "--terminals", "4", "--duration", "1", "--require-rate").returncode == 2
