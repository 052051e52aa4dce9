"""`gateway serve --processes 2`: two reactor processes behind one port and one ledger, spoken to over real sockets,
driven by the project's simulator (another process), on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from twisted.logger import LogLevel

from gateway.cli.main import main
from gateway.config import (
    MAX_PROCESSES,
    GatewayConfig,
    ReaderConfig,
    ServerConfig,
    TlsConfig,
    config_from_mapping,
    config_to_mapping,
)
from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.demo.population import demo_population
from gateway.demo.registry import demo_balances, write_demo_registry
from gateway.ledger.models import LedgerTransaction
from gateway.ledger.writer import WriteTurn
from gateway.ops import logs
from gateway.protocol.messages import pb
from gateway.serve.app import StartupError
from gateway.serve.listeners import TcpAddress, tcp_address
from gateway.serve.processes import metrics_listen, plan
from tests.conftest import fresh_postgres_database
from tests.test_end_to_end import ROOT, RunningGateway, listening_message
from tests.test_ledger_end_to_end import VIRTUAL_IN_CITY, ledger_check, settle
from tests.wire import WireClient, request, sign_in

OK = pb.STATUS_CODE_OK
WORKER_METRICS = re.compile(r"http://\S+:(\d+)/ \(worker (\d+)\)")
PIDS = re.compile(r"\(pids ([0-9, ]+)\)")
CARD = "N00000001"
PERSONS = 40  # what each worker's virtual reader of VIRTUAL_IN_CITY holds


class TwoProcesses(RunningGateway):
    """`gateway serve --processes 2`, each worker's metrics on a port of its own: a free one each, or with
    `metrics_base` that port and the next."""

    def __init__(self, *args: Any, metrics_base: int = 0, **kwargs: Any) -> None:
        self.metrics_base = metrics_base
        super().__init__(*args, **kwargs)

    def start(self) -> None:
        if self.metrics_port == 0:
            self.metrics_port = self.metrics_base
        super().start()

    def serve_command(self) -> list[str]:
        return ["--processes", "2"]

    @property
    def announcement(self) -> str:
        message = next(m for line in self.lines if (m := listening_message(line)) is not None)
        return message

    def worker_metrics_ports(self) -> list[int]:
        ports = {int(worker): int(port) for port, worker in WORKER_METRICS.findall(self.announcement)}
        return [ports[k] for k in sorted(ports)]

    def worker_pids(self) -> list[int]:
        found = PIDS.search(self.announcement)
        assert found is not None, self.announcement
        return [int(pid) for pid in found.group(1).split(", ")]

    def status(self, worker: int) -> dict[str, object]:
        port = self.worker_metrics_ports()[worker]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as page:
            status: dict[str, object] = json.loads(page.read())
        return status

    def signed_in_count(self, worker: int) -> int:
        connections = self.status(worker)["connections"]
        assert isinstance(connections, dict)
        return int(connections["signed_in"])

    def clients_on_each_worker(self, terminal: str = VIRTUAL_IN_CITY) -> list[WireClient]:
        """A signed-in connection on worker 0 and one on worker 1 (the kernel picks the worker by a hash of the
        connection's ports: connections are opened until each worker has one)."""
        held: dict[int, WireClient] = {}
        for _ in range(40):
            before = [self.signed_in_count(k) for k in (0, 1)]
            client = WireClient("127.0.0.1", self.port)
            assert client.call(sign_in(terminal_id=terminal)).status == OK
            after = [self.signed_in_count(k) for k in (0, 1)]
            worker = 0 if after[0] > before[0] else 1
            assert after[worker] == before[worker] + 1
            if worker in held:
                client.close()
                continue
            held[worker] = client
            if len(held) == 2:
                return [held[0], held[1]]
        raise AssertionError("40 connections, and one worker never got one")


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "simulate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def requests_answered(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        text = page.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("gateway_requests_total{"))


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared SQLite ledger (the demo registry of 40 persons), copied by each gateway here: preparing one takes
    seconds on a busy machine."""
    tmp = tmp_path_factory.mktemp("template")
    prepare(f"sqlite:///{tmp / 'ledger.db'}")
    return tmp / "ledger.db"


def prepare(url: str) -> None:
    """The schema and the demo registry of PERSONS persons, written in this process (a `gateway` subprocess per
    step would cost seconds each on a busy machine)."""
    engine = make_engine(url)
    upgrade(engine)
    write_demo_registry(engine, persons=PERSONS)
    engine.dispose()


def sqlite_copy(template: Path, tmp: Path) -> str:
    shutil.copyfile(template, tmp / "ledger.db")
    return f"sqlite:///{tmp / 'ledger.db'}"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[TwoProcesses]:
    """Two processes on SQLite for the tests below that use it, in the file's order: the person's limits (on the
    untouched demo balances), the race, the registry change (which reports the card lost), and last kill -9."""
    tmp = tmp_path_factory.mktemp("shared")
    gateway = TwoProcesses(tmp, sqlite_copy(sqlite_template, tmp), prepare=False)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def on_postgresql(tmp_path_factory: pytest.TempPathFactory, postgres_admin: str) -> Iterator[TwoProcesses]:
    """Two processes on a PostgreSQL database of their own: the race, then the simulator (which ends with SIGTERM)."""
    with fresh_postgres_database(postgres_admin) as url:
        prepare(url)
        gateway = TwoProcesses(tmp_path_factory.mktemp("postgresql"), url, prepare=False)
        yield gateway
        gateway.stop()


def serve_the_simulator_then_stop(two: TwoProcesses, tmp_path: Path) -> None:
    """The simulator's run is answered by both workers; SIGTERM drains both and the supervisor exits 0; the ledger
    agrees with every answer the terminals got."""
    outcomes = tmp_path / "outcomes.jsonl"
    run = simulate("--target", f"127.0.0.1:{two.port}", "--terminals", "8", "--duration", "2", "--persons",
                   str(PERSONS), "--outcomes", str(outcomes))
    assert run.returncode == 0, run.stdout + run.stderr
    # The kernel spread the simulator's connections over both workers, and both answered.
    assert all(requests_answered(port) > 0 for port in two.worker_metrics_ports())
    pids = two.worker_pids()
    assert two.stop() == 0
    output = "".join(two.lines)
    assert output.count("gateway drained:") == 2
    assert "gateway stopped: every worker drained and exited" in output
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    verified = simulate("--verify", str(outcomes), "--db", two.db)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "the ledger agrees with the terminals" in verified.stdout


def race_at_both_workers(two: TwoProcesses) -> None:
    """The same message id, byte for byte, sent to both workers at once: booked once, and both terminals get the
    one settlement's answer (one of them the recorded one)."""
    first, second = two.clients_on_each_worker()
    for n in range(5):
        message = request("settle", f"race-{n}", VIRTUAL_IN_CITY, medical_type=11, total_fen=12_300)
        message.send_time.GetCurrentTime()
        first.send(message)
        second.send(message)
        answers = [first.receive(), second.receive()]
        assert [pb.StatusCode.Name(a.status) for a in answers] == ["STATUS_CODE_OK"] * 2
        assert answers[0].settle.settlement_id == answers[1].settle.settlement_id
    first.close()
    second.close()
    engine = make_engine(two.db)
    with engine.connect() as conn:
        counts = dict(conn.execute(select(LedgerTransaction.message_id, func.count()).where(
            LedgerTransaction.kind == "settlement", LedgerTransaction.message_id.like("race-%")).group_by(
            LedgerTransaction.message_id)).all())
    engine.dispose()
    assert counts == {f"race-{n}": 1 for n in range(5)}


def two_free_ports() -> int:
    """A port P with P + 1 free too, as far as can be told now (the gateway binds them a moment later)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two free ports in a row")


def test_two_processes_on_sqlite_serve_the_simulator_the_ledger_agrees_and_sigterm_stops_both(
    tmp_path: Path, sqlite_template: Path
) -> None:
    base = two_free_ports()
    two = TwoProcesses(tmp_path, sqlite_copy(sqlite_template, tmp_path), prepare=False, metrics_base=base)
    try:
        assert two.worker_metrics_ports() == [base, base + 1]
        # `gateway status` asks both workers, at the port and the next.
        status = subprocess.run([sys.executable, "-m", "gateway", "status", "--url", f"http://127.0.0.1:{base}",
                                 "--processes", "2"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"http://127.0.0.1:{base} (worker 0): ready" in status.stdout
        assert f"http://127.0.0.1:{base + 1} (worker 1): ready" in status.stdout
        serve_the_simulator_then_stop(two, tmp_path)
    finally:
        two.stop()


def test_on_postgresql_the_same_message_id_sent_to_both_workers_at_once_is_booked_once(
    on_postgresql: TwoProcesses
) -> None:
    race_at_both_workers(on_postgresql)


def test_two_processes_on_postgresql_serve_the_simulator_the_ledger_agrees_and_sigterm_stops_both(
    on_postgresql: TwoProcesses, tmp_path: Path
) -> None:
    serve_the_simulator_then_stop(on_postgresql, tmp_path)


def test_each_worker_sees_what_the_other_paid_for_one_person(shared: TwoProcesses) -> None:
    """Settlements for one holder alternate between the workers, each writer holding the state its last commit
    left: it must notice the other's commit (SQLite's data_version) and read again, so the accounts pay exactly
    what they held and the pooled fund stops at the yearly cap."""
    clients = shared.clients_on_each_worker()
    answers = []
    for n in range(16):
        answer = settle(clients[n % 2], VIRTUAL_IN_CITY, f"alt-{n}", 600_000)
        assert answer.status == OK, answer.message_en
        answers.append(answer)
    holder = next(h for h in demo_population(PERSONS) if h.card.card_number == CARD)
    opening_current, opening_prior = demo_balances(holder)
    assert sum(a.settle.split.current_year_account_fen for a in answers) == opening_current
    assert sum(a.settle.split.prior_years_account_fen for a in answers) == opening_prior
    assert sum(a.settle.split.pooled_fund_fen for a in answers) == 2_000_000
    for client in clients:
        client.close()


def test_on_sqlite_the_same_message_id_sent_to_both_workers_at_once_is_booked_once(shared: TwoProcesses) -> None:
    race_at_both_workers(shared)


def test_a_registry_change_reaches_both_workers(shared: TwoProcesses) -> None:
    clients = shared.clients_on_each_worker()
    for n, client in enumerate(clients):  # each worker's cache now holds the card's facts
        assert client.call(request("read_card", f"before-{n}", VIRTUAL_IN_CITY)).status == OK
    lost = subprocess.run([sys.executable, "-m", "gateway", "agency", "report-lost", CARD, "--db", shared.db], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert lost.returncode == 0, lost.stdout + lost.stderr
    deadline = time.monotonic() + 5  # registry.refresh_s is 0.2 s
    pending = {0, 1}
    n = 0
    while pending and time.monotonic() < deadline:
        for worker in sorted(pending):
            n += 1
            answer = clients[worker].call(request("read_card", f"after-{n}", VIRTUAL_IN_CITY))
            if answer.status == pb.STATUS_CODE_CARD_LOST:
                pending.discard(worker)
        time.sleep(0.1)
    assert pending == set(), f"workers still serving the card as active: {pending}"
    for client in clients:
        client.close()


def test_a_worker_killed_makes_the_supervisor_stop_the_other_and_exit_1(shared: TwoProcesses) -> None:
    two = shared
    victim, survivor = two.worker_pids()
    stopped = threading.Event()

    def wait() -> None:
        two.process.wait(timeout=60)
        stopped.set()

    threading.Thread(target=wait, daemon=True).start()
    os.kill(victim, signal.SIGKILL)
    assert stopped.wait(60)
    assert two.process.returncode == 1
    output = "".join(two.lines)
    assert f"gateway worker 0 (pid {victim}) exited unexpectedly (killed by SIGKILL)" in output
    assert "gateway drained:" in output  # the other worker stopped cleanly, finishing what it had
    deadline = time.monotonic() + 10
    while Path(f"/proc/{survivor}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{survivor}").exists()
    ledger_check(two.db)  # what both workers wrote, the person's limits and the race included



def test_writers_of_two_processes_on_sqlite_take_turns_bounded_by_the_wait(tmp_path: Path) -> None:
    """The turn is a lock of the file (flock: per open file, so two in one process conflict as two processes do):
    the second waits while the first holds it, gives up after its bound (then SQLite's own lock decides), and has
    it once it is given back."""
    path = tmp_path / "ledger.db-writer.lock"
    first, second = WriteTurn(path, wait_s=5.0), WriteTurn(path, wait_s=0.05)
    assert first.take()
    began = time.monotonic()
    assert not second.take()
    assert time.monotonic() - began >= 0.05 and second.missed == 1
    first.give_back()
    assert second.take()
    second.give_back()
    first.close()
    second.close()


# The parts, without processes ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("description", "expected"), [
    ("tcp:9500:interface=127.0.0.1:backlog=1024", TcpAddress("127.0.0.1", 9500, 1024, ipv6=False)),
    ("tcp:0", TcpAddress("", 0, 50, ipv6=False)),
    ("tcp:9500:127.0.0.1:16", TcpAddress("127.0.0.1", 9500, 16, ipv6=False)),  # Twisted's positional order
    ("tcp6:port=9543:interface=\\:\\:1", TcpAddress("::1", 9543, 50, ipv6=True)),
    ("tcp6:9543", TcpAddress("::", 9543, 50, ipv6=True)),
    ("unix:/run/gateway.sock", None),
    ("tcp:http", None),
    ("tcp:70000", None),
    ("tcp:9500:colour=blue", None),
])
def test_tcp_endpoints_are_read_as_twisted_reads_them(description: str, expected: TcpAddress | None) -> None:
    assert tcp_address(description) == expected
    if expected is not None:
        assert tcp_address(expected.description()) == expected  # what the supervisor hands its workers


def test_worker_k_serves_metrics_on_the_port_plus_k() -> None:
    assert metrics_listen("tcp:9501:interface=127.0.0.1", 1, 2) == "tcp:9502:interface=127.0.0.1:backlog=50"
    assert metrics_listen("tcp:9501:interface=127.0.0.1", 0, 2) == "tcp:9501:interface=127.0.0.1:backlog=50"
    assert metrics_listen("tcp:0:interface=127.0.0.1", 1, 2) == "tcp:0:interface=127.0.0.1"  # each its own port
    assert metrics_listen("", 1, 2) == ""
    with pytest.raises(StartupError, match="port \\+ its number"):
        metrics_listen("unix:/run/metrics.sock", 0, 2)
    with pytest.raises(StartupError, match="beyond 65535"):
        metrics_listen("tcp:65535", 0, 2)


def test_the_supervisor_fixes_port_zero_to_one_port_for_every_worker() -> None:
    config = GatewayConfig(server=ServerConfig(listen=("tcp:0:interface=127.0.0.1",), processes=3))
    planned = plan(config)
    try:
        ports = {worker.server.listen for worker in planned.configs}
        assert len(ports) == 1
        (address,) = [tcp_address(d) for d in ports.pop()]
        assert address is not None and address.port != 0
        # Held meanwhile: a socket without SO_REUSEPORT cannot take the port.
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", address.port))
    finally:
        planned.release()
    with pytest.raises(StartupError, match="tcp: and tcp6: endpoints only"):
        plan(replace(config, server=replace(config.server, listen=("unix:/tmp/gateway.sock",))))


def test_the_configuration_a_supervisor_hands_its_workers_is_the_same_configuration() -> None:
    config = GatewayConfig(server=ServerConfig(listen=("tcp:0", "tcp6:0"), processes=2),
                           tls=TlsConfig(listen=("tcp:9543:interface=0.0.0.0",)),
                           reader=ReaderConfig(terminals=(("H33020300001-02", "pcsc:Virtual PCD 00 00"),)))
    assert config_from_mapping(json.loads(json.dumps(config_to_mapping(config)))) == config


def test_a_worker_marks_every_line_it_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    event = {"log_format": "hello {who}", "who": "operator", "log_namespace": "gateway.x", "log_time": 0.0,
             "log_level": LogLevel.info}
    monkeypatch.setattr(logs, "_worker", 1)
    assert "[worker 1 gateway.x#info] hello operator" in logs.text_line(event)
    assert json.loads(logs.json_line(event))["worker"] == 1
    assert logs.log_message(logs.text_line(event)) == "hello operator"
    monkeypatch.setattr(logs, "_worker", None)
    assert "worker" not in json.loads(logs.json_line(event))


@pytest.mark.parametrize("processes", ["0", str(MAX_PROCESSES + 1)])
def test_processes_beyond_the_bounds_are_refused(processes: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--processes", processes, "--db", "sqlite:///nowhere.db"]) == 2
    assert "server.processes must be" in capsys.readouterr().err
