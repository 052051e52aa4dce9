"""/healthz, /readyz and /status, and `gateway status`: each readiness check says what it found, one failed check
makes the gateway not ready (503), a policy calendar running out only degrades it (200)."""

from __future__ import annotations

import ipaddress
import json
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from gateway import __version__
from gateway.cli.main import main
from gateway.cli.status import url_of_endpoint
from gateway.config import GatewayConfig, config_from_mapping
from gateway.db.engine import make_engine
from gateway.db.migrate import head_revision, upgrade
from gateway.ledger.intents import Intent
from gateway.ledger.outcomes import Outcome, Settled
from gateway.ledger.writer import LedgerWriter
from gateway.protocol.messages import pb
from gateway.serve.health import (
    DEGRADED,
    FAILED,
    NOT_READY,
    OK,
    READY,
    HealthChecks,
    ListenerState,
    Readiness,
    check_policies,
    check_writer,
    policy_remaining_s,
)
from gateway.settlement.policy import load_builtin_policies
from tests.ledger_support import settle
from tests.test_cli import unused_port
from tests.test_end_to_end import RunningGateway
from tests.wire import sign_in

POLICIES = load_builtin_policies()  # 2025, 2026 and 2027: covered without a gap through 2027-12-31
LISTENING = ListenerState(expected=1, listening=["127.0.0.1:9500 (plain TCP)"])


def synchronously(function: Any, *args: Any) -> Deferred[Any]:
    return maybeDeferred(function, *args)


@pytest.fixture
def writer(demo_engine: Engine) -> Iterator[LedgerWriter]:
    running = LedgerWriter(demo_engine, POLICIES, lambda f, *a: f(*a))
    running.start()
    yield running
    running.stop()


def readiness(engine: Engine, writer: LedgerWriter, *, today: date = date(2026, 11, 24),
              listeners: ListenerState = LISTENING, config: GatewayConfig | None = None,
              run_blocking: Any = synchronously, clock: Clock | None = None) -> Readiness:
    checks = HealthChecks(engine=engine, run_blocking=run_blocking, writer=writer, policies=POLICIES,
                          listeners=listeners, config=config or GatewayConfig(), head=head_revision(),
                          clock=clock or Clock(), today=lambda: today)
    answered: list[Readiness] = []
    checks.readiness().addCallback(answered.append)
    if clock is not None and not answered:
        clock.advance(60)
    [result] = answered
    return result


def statuses(result: Readiness) -> dict[str, str]:
    return {check.name: check.status for check in result.checks}


def test_ready_when_every_check_passes(demo_engine: Engine, writer: LedgerWriter) -> None:
    result = readiness(demo_engine, writer)
    assert statuses(result) == {"database": OK, "schema": OK, "ledger_writer": OK, "policy": OK, "listeners": OK}
    assert result.status == READY and result.serving
    body = result.as_json()
    assert body["failed"] == [] and body["checks"]["policy"]["detail"] == "covered through 2027-12-31 (402 more days)"
    assert body["checks"]["listeners"]["detail"] == "127.0.0.1:9500 (plain TCP)"


WITHIN = "within the next"
INSTALL_2028 = "; install 2028.toml in ledger.policy_dir and restart"
REFUSED_THEN = ": PreSettle and Settle will be refused then"


@pytest.mark.parametrize(
    ("today", "warning_days", "status", "detail"),
    [
        (date(2026, 11, 24), 30, OK, "covered through 2027-12-31 (402 more days)"),
        (date(2027, 12, 1), 30, OK, "covered through 2027-12-31 (30 more days)"),
        # The words of the startup and daily warning and of `gateway policy check`: check_cover's.
        (date(2027, 12, 2), 30, DEGRADED,
         f"no policy covers 2028-01-01, {WITHIN} 30 days{REFUSED_THEN}{INSTALL_2028}"),
        (date(2027, 12, 31), 30, DEGRADED,
         f"no policy covers 2028-01-01 to 2028-01-30, {WITHIN} 30 days{REFUSED_THEN}{INSTALL_2028}"),
        (date(2026, 11, 24), 500, DEGRADED,
         f"no policy covers 2028-01-01 to 2028-04-07, {WITHIN} 500 days{REFUSED_THEN}{INSTALL_2028}"),
        (date(2028, 1, 1), 30, FAILED, "no policy covers today, 2028-01-01: PreSettle and Settle are refused; days "
                                       f"without a policy: 2028-01-01 to 2028-01-31{INSTALL_2028}"),
    ],
)
def test_the_policy_check_degrades_before_the_calendar_runs_out(
    today: date, warning_days: int, status: str, detail: str
) -> None:
    check = check_policies(POLICIES, today, warning_days)
    assert (check.status, check.detail) == (status, detail)


def test_a_degraded_gateway_still_serves(demo_engine: Engine, writer: LedgerWriter) -> None:
    result = readiness(demo_engine, writer, today=date(2027, 12, 20))
    assert result.status == DEGRADED and result.serving and result.as_json()["failed"] == []


@pytest.mark.parametrize(
    ("moment", "remaining_s"),
    [
        (datetime(2027, 12, 31, 15, 0, tzinfo=UTC), 60 * 60),   # 23:00 in Beijing on the last day covered
        (datetime(2027, 12, 30, 16, 0, tzinfo=UTC), 86400),     # midnight in Beijing: the last day begins
        (datetime(2027, 12, 31, 16, 0, tzinfo=UTC), 0),         # 2028-01-01 in Beijing: not covered
    ],
)
def test_the_policy_metric_counts_down_to_the_end_of_the_last_covered_day(moment: datetime, remaining_s: float) -> None:
    assert policy_remaining_s(POLICIES, moment, 30) == remaining_s


def test_a_database_that_cannot_be_reached_fails_readiness(demo_engine: Engine, writer: LedgerWriter) -> None:
    gone = make_engine(f"postgresql+psycopg://gateway@127.0.0.1:{unused_port()}/gateway")
    result = readiness(gone, writer)
    assert statuses(result)["database"] == FAILED and statuses(result)["schema"] == FAILED
    assert result.status == NOT_READY and not result.serving
    assert result.as_json()["failed"] == ["database", "schema"]
    assert result.as_json()["checks"]["database"]["detail"].startswith("cannot be reached: ")
    gone.dispose()


def test_a_database_that_does_not_answer_in_time_fails_readiness(demo_engine: Engine, writer: LedgerWriter) -> None:
    def never(*_: Any) -> Deferred[Any]:
        return Deferred()

    config = config_from_mapping({"metrics": {"check_timeout_s": 1.5}})
    result = readiness(demo_engine, writer, config=config, run_blocking=never, clock=Clock())
    assert result.as_json()["checks"]["database"] == {"status": FAILED, "detail": "did not answer within 1.5 s"}


def test_a_schema_behind_the_code_fails_readiness(tmp_path: Path, writer: LedgerWriter) -> None:
    behind = make_engine(f"sqlite:///{tmp_path / 'behind.db'}")
    upgrade(behind, "0008")
    result = readiness(behind, writer)
    assert statuses(result)["database"] == OK and statuses(result)["schema"] == FAILED
    assert f"at revision 0008, this gateway needs {head_revision()}" in result.as_json()["checks"]["schema"]["detail"]
    behind.dispose()


def test_a_writer_that_is_not_running_fails_readiness(demo_engine: Engine) -> None:
    stopped = LedgerWriter(demo_engine, POLICIES, lambda f, *a: f(*a))
    stopped.start()
    stopped.stop()
    result = readiness(demo_engine, stopped)
    assert result.as_json()["checks"]["ledger_writer"] == {
        "status": FAILED, "detail": "the ledger's writer thread is not running"}
    assert result.status == NOT_READY


def submit_and_wait(writer: LedgerWriter, intent: Intent, timeout_s: float = 30) -> Outcome:
    """An intent through the writer's thread; its answer (given on that thread here) waited for."""
    answered: list[Outcome] = []
    done = threading.Event()
    writer.submit(intent).addCallback(lambda outcome: (answered.append(outcome), done.set()))
    assert done.wait(timeout_s), "the writer did not answer"
    return answered[0]


def test_a_writer_stuck_on_a_locked_database_fails_readiness_until_it_commits(
    sqlite_url: str, demo_engine: Engine
) -> None:
    engine = make_engine(sqlite_url, busy_timeout_ms=30_000)
    writer = LedgerWriter(engine, POLICIES, lambda f, *a: f(*a))
    writer.start()
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database's write lock
    answered: list[Outcome] = []
    writer.submit(settle(demo_engine, "N00000001", "stuck-1", 1000)).addCallback(answered.append)
    try:
        deadline = time.monotonic() + 10
        check = check_writer(writer, time.monotonic(), stale_s=0.3)
        while check.status == OK and time.monotonic() < deadline:
            time.sleep(0.05)
            check = check_writer(writer, time.monotonic(), stale_s=0.3)
        assert check.status == FAILED and "one batch has been in hand for" in check.detail, check
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    outcome = submit_and_wait(writer, settle(demo_engine, "N00000001", "stuck-2", 1000))
    assert isinstance(outcome, Settled) and answered and isinstance(answered[0], Settled)
    check = check_writer(writer, time.monotonic(), stale_s=0.3)
    assert check.status == OK and check.detail.startswith("running; last commit "), check
    writer.stop()
    engine.dispose()


@pytest.mark.parametrize(
    ("listeners", "detail"),
    [
        (ListenerState(expected=2, listening=["127.0.0.1:9500 (plain TCP)"]), "1 of 2 listening"),
        (ListenerState(expected=1), "0 of 1 listening"),
        (ListenerState(expected=1, listening=["127.0.0.1:9500 (plain TCP)"], stopping=True),
         "the gateway is stopping: no new connections"),
    ],
)
def test_listeners_not_all_up_fail_readiness(demo_engine: Engine, writer: LedgerWriter, listeners: ListenerState,
                                             detail: str) -> None:
    result = readiness(demo_engine, writer, listeners=listeners)
    assert result.as_json()["checks"]["listeners"] == {"status": FAILED, "detail": detail}


# Over HTTP, and `gateway status` ----------------------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    running = RunningGateway(tmp_path_factory.mktemp("health"))
    yield running
    running.stop()


def test_healthz_and_readyz_answer_200_with_json(gateway: RunningGateway) -> None:
    assert get(gateway.metrics_port, "/healthz") == (200, {"status": "ok", "version": __version__})
    code, body = get(gateway.metrics_port, "/readyz")
    assert code == 200 and body["status"] in (READY, DEGRADED), body
    assert set(body["checks"]) == {"database", "schema", "ledger_writer", "policy", "listeners"}
    assert body["checks"]["listeners"]["detail"] == f"127.0.0.1:{gateway.port} (plain TCP)"


def test_status_and_gateway_status_list_the_signed_in_terminals_by_institution(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = [gateway.client() for _ in range(3)]
    for client, terminal_id in zip(clients, ["H33020300001-01", "H33020300001-01", "H33021200002-02"], strict=True):
        assert client.call(sign_in(terminal_id=terminal_id)).status == pb.STATUS_CODE_OK
    try:
        code, body = get(gateway.metrics_port, "/status")
        assert code == 200 and body["connections"] == {"open": 3, "signed_in": 3}
        assert [(i["code"], i["sessions"], i["terminals"]) for i in body["institutions"]] == [
            ("H33020300001", 2, [{"terminal_id": "H33020300001-01", "sessions": 2}]),
            ("H33021200002", 1, [{"terminal_id": "H33021200002-02", "sessions": 1}]),
        ]
        assert main(["status", "--url", f"http://127.0.0.1:{gateway.metrics_port}"]) == 0
        printed = capsys.readouterr().out.splitlines()
        assert printed[0] == f"gateway at http://127.0.0.1:{gateway.metrics_port}: {body['status']}"
        assert any(line.split()[:2] == ["database", "ok"] for line in printed)
        assert "connections: 3 open, 3 signed in" in printed
        assert printed[-4].startswith("H33020300001 ") and printed[-4].endswith(": 2 session(s)")
        assert printed[-3].split() == ["H33020300001-01", "2"]
        assert printed[-2].startswith("H33021200002 ") and printed[-2].endswith(": 1 session(s)")
        assert printed[-1].split() == ["H33021200002-02", "1"]
        assert main(["status", "--url", f"http://127.0.0.1:{gateway.metrics_port}", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["institutions"] == body["institutions"]
    finally:
        for client in clients:
            client.close()


def test_gateway_status_where_nothing_listens_is_one_line_and_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    assert main(["status", "--url", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"gateway: no answer from {url}/status: ")


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("tcp:9501:interface=127.0.0.1", "http://127.0.0.1:9501"),
        ("tcp:9501", "http://127.0.0.1:9501"),
        ("tcp:port=9601:interface=0.0.0.0", "http://127.0.0.1:9601"),
        (r"tcp6:9501:interface=\:\:1", "http://[::1]:9501"),
        (r"tcp:9501:interface=\:\:", "http://[::1]:9501"),
        ("tcp:9501:interface=10.0.0.7:backlog=50", "http://10.0.0.7:9501"),
        ("tcp:0:interface=127.0.0.1", None),
        ("unix:/run/gateway.sock", None),
        ("", None),
    ],
)
def test_gateway_status_finds_the_url_in_metrics_listen(endpoint: str, url: str | None) -> None:
    assert url_of_endpoint(endpoint) == url


def outward_address() -> str | None:
    """This host's address on its network (not loopback), if it has one: a UDP socket's, sending nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routed like any other address, never reached
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


class OpenMetrics(RunningGateway):
    def serve_command(self) -> list[str]:
        return ["--metrics-listen", "tcp:0:interface=0.0.0.0"]


def test_the_metrics_listener_may_face_the_network_but_status_answers_loopback_only(tmp_path: Path) -> None:
    address = outward_address()
    if address is None:
        pytest.skip("this host has no address but loopback")
    running = OpenMetrics(tmp_path)
    try:
        with urllib.request.urlopen(f"http://{address}:{running.metrics_port}/metrics", timeout=10) as page:
            assert page.status == 200 and b"gateway_requests" in page.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{address}:{running.metrics_port}/status", timeout=10)
        assert refused.value.code == 403
        assert json.loads(refused.value.read()) == {"error": "/status answers loopback clients only"}
        assert get(running.metrics_port, "/status")[0] == 200  # from loopback
    finally:
        running.stop()


@pytest.mark.postgres
def test_a_database_dropped_under_a_running_gateway_makes_it_not_ready(
    tmp_path: Path, postgres_url: str, postgres_admin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    running = RunningGateway(tmp_path, postgres_url)
    try:
        assert get(running.metrics_port, "/readyz")[0] == 200
        with psycopg.connect(postgres_admin.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{postgres_url.rsplit("/", 1)[1]}" WITH (FORCE)')
        code, body = get(running.metrics_port, "/readyz")
        assert code == 503 and body["status"] == NOT_READY and body["failed"] == ["database", "schema"], body
        assert body["checks"]["database"]["detail"].startswith("cannot be reached: ")
        assert get(running.metrics_port, "/healthz")[0] == 200  # the reactor still answers
        assert main(["status", "--url", f"http://127.0.0.1:{running.metrics_port}"]) == 1
        printed = capsys.readouterr().out
        assert printed.startswith(f"gateway at http://127.0.0.1:{running.metrics_port}: not ready\n")
        assert "database" in printed and "failed" in printed
    finally:
        running.stop()
