"""`gateway simulate` against a running gateway: every answer as expected, and the ledger agrees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    too_many = simulate("--target", f"127.0.0.1:{gateway.port}", "--terminals", "500", "--duration", "1")
    assert too_many.returncode == 1 and "--terminals-per-institution" in too_many.stderr


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
