"""`gateway simulate` against a running gateway: every answer as expected, and the ledger agrees."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.config import ServerConfig
from gateway.db.engine import make_engine
from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION, DEMO_INSTITUTIONS, demo_csv
from gateway.ledger.tables import TRANSACTIONS
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


def test_processes_share_the_terminal_ids_without_overloading_one(gateway: RunningGateway, tmp_path: Path) -> None:
    """20 terminals over 5 processes fit 6 registered ids of 4 sessions each only if the processes split the
    ids between them (each starting from the first id would put 5 sessions on it). Their latency histograms merge
    into the run's."""
    run = simulate("--target", f"127.0.0.1:{gateway.port}", "--terminals", "20", "--processes", "5",
                   "--requests", "200", "--mix", "default", "--json", str(tmp_path / "figures.json"))
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((tmp_path / "figures.json").read_text())
    assert summary["processes"] == 5 and summary["latency_ms"]["sign_in"]["count"] == 20
    assert sum(row["count"] for body, row in summary["latency_ms"].items() if body != "sign_in") == summary["requests"]


def test_thresholds_turn_a_run_into_pass_or_fail_and_the_report_marks_them(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{gateway.port}"
    run = ("--target", target, "--terminals", "4", "--duration", "1", "--mix", "settle")
    failed = simulate(*run, "--min-rate", "1e9", "--max-p99-ms", "Settle=60000", "--report", str(tmp_path / "failed"))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    [line] = [line for line in failed.stderr.splitlines() if "threshold" in line]
    assert line.startswith("gateway: threshold failed: requests/s ") and line.endswith(
        "/s, limit ≥ 1e+09/s (--min-rate 1e+09)")
    assert "threshold settle p99 ≤ 60000 ms: measured " in failed.stdout
    page = (tmp_path / "failed/index.html").read_text(encoding="utf-8")
    assert "FAIL: 1 of 3 threshold(s) not met" in page
    for body in ("card_event", "read_card", "settle", "sign_in"):
        assert f"<section id='type-{body}'>" in page and (tmp_path / f"failed/{body}.hlog").exists()

    passed = simulate(*run, "--min-rate", "1", "--min-settle-rate", "1", "--max-p99-ms", "60000", "--json",
                      str(tmp_path / "passed.json"))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    summary = json.loads((tmp_path / "passed.json").read_text())
    assert {v["name"]: v["passed"] for v in summary["thresholds"]} == {
        "card_event p99": True, "read_card p99": True, "settle p99": True, "requests/s": True,
        "settlements/s": True, "unexpected answers": True}


@pytest.mark.parametrize("threshold, complaint", [
    (("--max-p99-ms", "Setle=10"), "gateway: 'Setle' is no message type; one of sign_in, sign_out, heartbeat, "),
    (("--max-p99-ms", "settle=fast"), "gateway: --max-p99-ms settle=fast: 'fast' is not a number\n"),
    (("--min-rate", "-5"), "gateway: --min-rate: -5 is not a number ≥ 0\n"),
    (("--max-unexpected", "-1"), "gateway: --max-unexpected: -1 is not a number ≥ 0\n"),
])
def test_a_threshold_that_cannot_be_measured_is_refused_before_anything_runs(
    threshold: tuple[str, str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.main import main

    # Nothing listens on port 1: the refusal comes before any connection.
    assert main(["simulate", "--target", "127.0.0.1:1", "--terminals", "1", "--duration", "1", *threshold]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(complaint) and err.count("\n") == 1


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
    assert outcomes.read_text() == ""  # nothing ran


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


def _grow(path: Path, beyond: int, timeout_s: float = 60.0) -> int:
    """Wait until the file holds more than `beyond` bytes (the simulator writing outcomes); its size then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else 0
        if size > beyond:
            return size
        time.sleep(0.1)
    raise AssertionError(f"{path} did not grow beyond {beyond} bytes in {timeout_s} s")


@pytest.mark.slow
def test_after_a_kill_minus_nine_the_terminals_reconnect_find_out_and_verify_is_exact(tmp_path: Path) -> None:
    """The gateway is frozen (so every terminal's request in flight goes unanswered), killed with SIGKILL and
    started again under a running simulator: the terminals reconnect, learn what became of every Settle, Revoke
    and Reverse they had no answer to (QueryTransaction, Reverse, or the same request again), go on settling,
    and the ledger agrees with their record exactly."""
    gateway = RunningGateway(tmp_path)
    mix, outcomes, figures = tmp_path / "mix.json", tmp_path / "outcomes.jsonl", tmp_path / "figures.json"
    mix.write_text(json.dumps({"settle_card_in_reader": 6, "revoke": 2, "timeout_then_retry": 1,
                               "timeout_then_reverse": 1, "in_city_outpatient": 1}))
    run = subprocess.Popen([sys.executable, "-m", "gateway", "simulate", "--target", f"127.0.0.1:{gateway.port}",
                            "--terminals", "6", "--requests", "800", "--mix", str(mix), "--outcomes", str(outcomes),
                            "--json", str(figures)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        size = _grow(outcomes, 0)
        gateway.process.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        gateway.kill()
        engine = make_engine(gateway.db)
        with engine.connect() as conn:
            last_before = conn.execute(select(func.max(TRANSACTIONS.c.id))).scalar_one()
        gateway.start()
        _grow(outcomes, size)
        stdout, stderr = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
        gateway.stop()
    assert run.returncode == 0, stdout + stderr
    summary = json.loads(figures.read_text())
    assert summary["connections_lost"] >= 6 and summary["reconnects"] >= 6
    assert summary["outcomes_resolved"] >= 1 and summary["outcomes_unknown"] == 0 and summary["unexpected"] == []
    with engine.connect() as conn:
        after = conn.execute(select(func.count()).where(TRANSACTIONS.c.id > last_before,
                                                        TRANSACTIONS.c.kind == "settlement")).scalar_one()
    engine.dispose()
    assert after > 0, "the terminals settled nothing after the restart"
    learned = [json.loads(line) for line in outcomes.read_text().splitlines() if '"learned_by"' in line]
    assert learned, "no outcome was found out after the restart"
    verified = simulate("--verify", str(outcomes), "--db", gateway.db)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "the ledger agrees with the terminals" in verified.stdout


class CuttingProxy:
    """A TCP relay between the simulator and the gateway that cuts every connection the way a network can: the
    terminal's side closes at once, while the gateway, still connected for a second, answers into the void. The
    requests it had (a Settle being committed) take effect and their answers are lost."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.swallowed: set[socket.socket] = set()  # gateway sides whose answers reach nobody
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            if source not in self.swallowed:
                with contextlib.suppress(OSError):
                    sink.sendall(data)

    def cut(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for client, upstream in pairs:
            self.swallowed.add(upstream)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
            threading.Timer(1.0, upstream.close).start()

    def close(self) -> None:
        self.listener.close()


def test_a_settlement_committed_after_its_connection_dropped_is_learned_and_verify_is_exact(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """The connections drop while Settles are being committed: their answers never come. The terminals reconnect
    and ask QueryTransaction; the settlements they learn of are in their record, so --verify does not call them
    "in the ledger but no terminal sent it" (it did: such a Settle was missing from the outcomes)."""
    proxy = CuttingProxy(gateway.port)
    mix, outcomes, figures = tmp_path / "mix.json", tmp_path / "outcomes.jsonl", tmp_path / "figures.json"
    mix.write_text(json.dumps({"settle_card_in_reader": 1}))
    run = subprocess.Popen([sys.executable, "-m", "gateway", "simulate", "--target", f"127.0.0.1:{proxy.port}",
                            "--terminals", "8", "--requests", "1200", "--mix", str(mix), "--outcomes", str(outcomes),
                            "--json", str(figures)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        size = _grow(outcomes, 0)
        proxy.cut()
        size = _grow(outcomes, size)
        proxy.cut()
        stdout, stderr = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
        proxy.close()
    assert run.returncode == 0, stdout + stderr
    summary = json.loads(figures.read_text())
    assert summary["connections_lost"] >= 8 and summary["outcomes_unknown"] == 0 and summary["unexpected"] == []
    learned = [json.loads(line) for line in outcomes.read_text().splitlines() if '"learned_by"' in line]
    assert any(record["learned_by"] == "query_transaction" for record in learned), learned
    verified = simulate("--verify", str(outcomes), "--db", gateway.db)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "the ledger agrees with the terminals" in verified.stdout


def test_verify_finds_a_settlement_in_force_whose_terminal_never_learned_it(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    outcomes = tmp_path / "outcomes.jsonl"
    run = simulate("--target", f"127.0.0.1:{gateway.port}", "--terminals", "2", "--requests", "20", "--mix",
                   "settle_only", "--outcomes", str(outcomes))
    assert run.returncode == 0, run.stdout + run.stderr
    records = [json.loads(line) for line in outcomes.read_text().splitlines()]
    settled = next(r for r in records if r["body"] == "settle" and r["status"] == "STATUS_CODE_OK")
    for told in ("NO_ANSWER", "STATUS_CODE_PIN_WRONG"):
        forged = tmp_path / f"{told}.jsonl"
        forged.write_text("".join(json.dumps({**r, "status": told} if r is settled else r) + "\n" for r in records))
        verified = simulate("--verify", str(forged), "--db", gateway.db)
        assert verified.returncode == 1, verified.stdout
        assert (f"{settled['terminal']}/{settled['message_id']}: in force in the ledger ({settled['settlement_id']}) "
                f"but its terminal has it as {told}") in verified.stdout
