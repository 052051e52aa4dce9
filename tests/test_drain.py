"""A clean stop: requests waiting on a terminal's reader are answered GATEWAY_SHUTTING_DOWN, requests at the
ledger's writer finish and are answered, and the drain is logged with its counts — over in-memory transports with
a test clock, then with a real `gateway serve` and SIGTERM."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from twisted.logger import formatEvent, globalLogPublisher

from gateway.ledger.writer import LedgerWriter, _answer_all
from gateway.protocol.messages import pb
from gateway.serve.drain import drain
from gateway.serve.handlers import SettlementHandlers
from gateway.settlement.policy import load_builtin_policies
from tests.test_adapter import Connection, Harness
from tests.test_end_to_end import RunningGateway
from tests.wire import request, sign_in

OK = pb.STATUS_CODE_OK
SHUTTING_DOWN = pb.STATUS_CODE_GATEWAY_SHUTTING_DOWN
RELAY_TERMINAL = "H33020300001-01"     # reads the card in its own reader, by APDU relay
VIRTUAL_TERMINAL = "H33020300001-03"   # a virtual reader on the gateway holding N00000001 (in Ningbo, no PIN)
GRACE_S = 10.0


@pytest.fixture
def drain_log() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "gateway.serve.drain":
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def waiting_on_the_reader(harness: Harness, message_id: str) -> Connection:
    """A terminal whose ReadCard's script is out at its reader, unanswered."""
    connection = harness.connect()
    assert connection.call(sign_in(terminal_id=RELAY_TERMINAL)).status == OK
    connection.send(request("read_card", message_id, RELAY_TERMINAL))
    [script] = connection.responses()
    assert script.interim and script.HasField("apdu_script")
    return connection


def test_a_request_waiting_on_the_terminals_reader_is_answered_shutting_down_not_reader_unavailable(
    demo_engine: Engine, drain_log: list[str]
) -> None:
    harness = Harness(demo_engine, shutdown_grace_s=GRACE_S)
    waiting = waiting_on_the_reader(harness, "rc-1")
    idle = harness.connect()
    assert idle.call(sign_in()).status == OK
    stopping = drain(harness.factory, None)
    [answer] = waiting.responses()
    assert (answer.message_id, answer.status, answer.interim) == ("rc-1", SHUTTING_DOWN, False)
    assert "retry the same request with the same message id" in answer.message_en
    assert "reader is fine" in answer.message_en and "读卡器无需检查" in answer.message_zh
    assert "check the reader" not in answer.message_en
    # Nothing is in flight any more: both close gently, now, without waiting for the grace period.
    assert waiting.transport.disconnecting and idle.transport.disconnecting
    waiting.close()
    idle.close()
    done = _result(stopping)
    assert (done.connections, done.relayed, done.cut) == (2, 1, 0)
    assert drain_log == [
        "gateway stopping: no new connections; 2 connections open, 1 requests waiting on a terminal's reader "
        "answered STATUS_CODE_GATEWAY_SHUTTING_DOWN, 0 at the ledger's writer; finishing the requests in flight "
        "(up to 10.0 s)",
        "gateway drained: 2 connections closed (0 cut after the grace period), 1 requests waiting on a terminal's "
        "reader answered STATUS_CODE_GATEWAY_SHUTTING_DOWN, 0 ledger intents finished and answered",
    ]


def test_the_terminals_late_answer_to_its_script_changes_nothing(demo_engine: Engine) -> None:
    harness = Harness(demo_engine)
    waiting = waiting_on_the_reader(harness, "rc-1")
    harness.factory.close_all()
    assert [r.status for r in waiting.responses()] == [SHUTTING_DOWN]
    waiting.send(request("apdu_result", "late", RELAY_TERMINAL, script_id="A1", responses=[b"\x90\x00"]))
    assert waiting.responses() == []  # a closing connection reads nothing more


class HeldWriter:
    """The ledger's threaded writer on the demo database, whose answers reach the 'reactor' (the test) only when
    the test releases them, as the reactor would run them from callFromThread."""

    def __init__(self, harness: Harness, engine: Engine) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        self.writer = LedgerWriter(engine, load_builtin_policies(), self._from_thread)
        settlement = harness.service.settlement
        assert isinstance(settlement, SettlementHandlers)
        self.writer.on_registry_write = settlement.registry.written_by_ledger
        settlement.writer = self.writer
        self.writer.start()

    def _from_thread(self, function: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self.calls.append((function, args))

    def release(self, answers: int = 1) -> None:
        """Run what the writer handed over once `answers` answers are among it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                # The writer hands a batch's answers over in one call (gateway.ledger.writer._answer_all).
                ready = sum(len(args[0]) for function, args in self.calls if function is _answer_all)
                if ready >= answers:
                    calls, self.calls = self.calls, []
                    break
            time.sleep(0.01)
        else:
            raise AssertionError("the ledger's writer did not answer in 10 s")
        for function, args in calls:
            function(*args)

    def stop(self) -> None:
        self.writer.stop()


@pytest.fixture
def held(demo_engine: Engine) -> Iterator[tuple[Harness, HeldWriter]]:
    harness = Harness(demo_engine, shutdown_grace_s=GRACE_S)
    writer = HeldWriter(harness, demo_engine)
    yield harness, writer
    writer.stop()


def at_the_writer(harness: Harness, message_id: str) -> Connection:
    connection = harness.connect()
    assert connection.call(sign_in(terminal_id=VIRTUAL_TERMINAL)).status == OK
    connection.send(request("settle", message_id, VIRTUAL_TERMINAL, medical_type=11, total_fen=4_321))
    assert connection.responses() == []  # the card is read, the rules passed: it waits for the ledger
    return connection


def test_a_settle_at_the_ledgers_writer_is_answered_even_after_the_grace_period(
    held: tuple[Harness, HeldWriter], drain_log: list[str]
) -> None:
    harness, writer = held
    settling = at_the_writer(harness, "s-1")
    assert writer.writer.in_hand == 1
    stopping = drain(harness.factory, writer.writer)
    harness.clock.advance(GRACE_S + 1)
    assert not settling.transport.disconnecting  # not cut while its answer is being written
    writer.release()
    [answer] = settling.responses()
    assert (answer.message_id, answer.status) == ("s-1", OK) and answer.settle.settlement_id
    assert settling.protocol.closing  # answered: it closes after its linger, uncut
    harness.clock.advance(0)
    settling.close()
    done = _result(stopping)
    assert (done.connections, done.relayed, done.cut) == (1, 0, 0)
    assert "1 at the ledger's writer" in drain_log[0]
    assert drain_log[1].endswith("1 ledger intents finished and answered")


def test_connections_still_busy_after_twice_the_grace_period_are_cut(held: tuple[Harness, HeldWriter]) -> None:
    harness, writer = held
    settling = at_the_writer(harness, "s-1")
    stopping = drain(harness.factory, writer.writer)
    harness.clock.advance(GRACE_S)
    harness.clock.advance(GRACE_S)
    assert settling.transport.disconnected or settling.transport.disconnecting
    settling.close()
    assert _result(stopping).cut == 1
    writer.release()  # committed all the same: a retry of s-1 gets this answer from the record
    assert [call for call in harness.clock.getDelayedCalls() if "RegistryCache" not in str(call)] == []


def test_a_request_reaching_the_reader_after_the_stop_began_is_answered_shutting_down(demo_engine: Engine) -> None:
    harness = Harness(demo_engine)
    connection = harness.connect()
    assert connection.call(sign_in(terminal_id=RELAY_TERMINAL)).status == OK
    relay = connection.protocol.context.relay if connection.protocol.context else None
    assert relay is not None
    relay.shut_down()  # as the stop does; the request below was taken before it
    answer = connection.call(request("read_card", "rc-late", RELAY_TERMINAL))
    assert answer.status == SHUTTING_DOWN


def _result(deferred: Any) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the drain has not finished"
    return results[0]


# A real gateway, a real SIGTERM ------------------------------------------------------------------------------


def test_sigterm_answers_a_request_waiting_on_the_terminals_reader_and_logs_the_drain(tmp_path: Any) -> None:
    running = RunningGateway(tmp_path)
    client = running.client()
    assert client.call(sign_in(terminal_id=RELAY_TERMINAL)).status == OK
    client.send(request("read_card", "rc-sigterm", RELAY_TERMINAL))
    script = client.receive()
    assert script.interim and script.HasField("apdu_script")
    started = time.monotonic()
    running.process.terminate()
    answer = client.receive()
    assert (answer.message_id, answer.status, answer.interim) == ("rc-sigterm", SHUTTING_DOWN, False)
    assert time.monotonic() - started < 5  # at once: not after the reader's timeout nor the grace period
    assert client.closed_by_peer()
    assert running.stop() == 0
    events = [json.loads(line) for line in running.lines]
    stopping = [e for e in events if e["namespace"] == "gateway.serve.drain"]
    assert [(e.get("connections"), e.get("closed"), e["relayed"]) for e in stopping] == [(1, None, 1), (None, 1, 1)]
    assert stopping[0]["at_writer"] == 0 and (stopping[1]["cut"], stopping[1]["ledger_finished"]) == (0, 0)
    [audited] = [e for e in events if e["namespace"] == "gateway.serve.audit"]
    assert (audited["message_id"], audited["status"]) == ("rc-sigterm", "STATUS_CODE_GATEWAY_SHUTTING_DOWN")
