"""The Twisted adapter over in-memory transports: real service and registry, a test clock, no sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session as DbSession
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from gateway.config import ReaderConfig, ServerConfig
from gateway.ledger.writer import InlineLedgerWriter
from gateway.ops.metrics import GatewayMetrics
from gateway.protocol.framing import FrameDecoder
from gateway.protocol.messages import pb
from gateway.protocol.session import RequestReceived
from gateway.protocol.states import ImpossibleTransition, State, Trigger
from gateway.registry.directory import TerminalDirectory
from gateway.registry.models import Institution, Terminal
from gateway.serve.adapter import TerminalFactory, TerminalProtocol
from gateway.serve.dispatch import ConnectionContext, GatewayService
from gateway.serve.registry_cache import RegistryCache
from gateway.settlement.policy import load_builtin_policies
from tests.wire import DEMO_TERMINAL, frame, request, sign_in

OK = pb.STATUS_CODE_OK
TODAY = date(2026, 11, 24)
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def run_now(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return maybeDeferred(function, *args)


class Harness:
    def __init__(self, engine: Engine, clock: Clock | None = None, metrics: GatewayMetrics | None = None,
                 **server: Any) -> None:
        self.clock = clock or Clock()
        self.config = ServerConfig(**server)
        self.registry = RegistryCache(engine, run_now)
        self.registry.start(self.clock)
        self.service = GatewayService(
            directory=TerminalDirectory(engine), run_blocking=run_now, server_config=self.config,
            engine=engine, writer=InlineLedgerWriter(engine, load_builtin_policies()), today=lambda: TODAY,
            now=lambda: NOW, registry=self.registry, clock=self.clock, metrics=metrics,
        )
        self.factory = TerminalFactory(self.service, self.config, self.clock, metrics)

    def connect(self) -> Connection:
        return Connection(self)


class Connection:
    def __init__(self, harness: Harness) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol = harness.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert isinstance(protocol, TerminalProtocol)
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        self._decoder = FrameDecoder(1 << 20)

    def send(self, *requests: pb.Request) -> None:
        for r in requests:
            if not r.HasField("send_time"):
                r.send_time.FromDatetime(NOW)  # a terminal stamps its requests; this one's clock is the gateway's
        self.protocol.dataReceived(b"".join(frame(r.SerializeToString()) for r in requests))

    def responses(self) -> list[pb.Response]:
        self._decoder.feed(self.transport.value())
        self.transport.clear()
        out = []
        while (payload := self._decoder.next_frame()) is not None:
            out.append(pb.Response.FromString(payload))
        return out

    def call(self, req: pb.Request) -> pb.Response:
        self.send(req)
        [response] = self.responses()
        return response

    def close(self) -> None:
        self.protocol.connectionLost(None)


@pytest.fixture
def harness(demo_engine: Engine) -> Harness:
    return Harness(demo_engine)


def test_a_demo_terminal_signs_in_and_heartbeats(harness: Harness) -> None:
    connection = harness.connect()
    response = connection.call(sign_in())
    assert response.status == OK, response.message_en
    assert response.sign_in.institution_code == "H33020300001"
    assert response.sign_in.limits.max_frame_bytes == harness.config.max_frame_bytes
    assert response.sign_in.limits.idle_timeout_s == 120
    heartbeat = connection.call(request("heartbeat", "hb-1"))
    assert (heartbeat.message_id, heartbeat.status, heartbeat.HasField("heartbeat")) == ("hb-1", OK, True)


SIGN_IN_REFUSALS = [
    # a guess (an unknown id or a wrong credential) is answered after the throttle's first delay; a right credential
    # of a disabled terminal or institution at once
    ("unregistered terminal", "H99999999999-01", "demo-secret", None, pb.STATUS_CODE_UNKNOWN_TERMINAL, 0.5),
    ("wrong credential", DEMO_TERMINAL, "not-the-secret", None, pb.STATUS_CODE_UNKNOWN_TERMINAL, 0.5),
    ("empty credential", DEMO_TERMINAL, "", None, pb.STATUS_CODE_UNKNOWN_TERMINAL, 0.5),
    ("disabled terminal", DEMO_TERMINAL, "demo-secret", "terminal", pb.STATUS_CODE_TERMINAL_DISABLED, 0.0),
    ("disabled institution", DEMO_TERMINAL, "demo-secret", "institution", pb.STATUS_CODE_INSTITUTION_DISABLED, 0.0),
]


@pytest.mark.parametrize(("case", "terminal_id", "credential", "disable", "status", "delay_s"), SIGN_IN_REFUSALS,
                         ids=[r[0] for r in SIGN_IN_REFUSALS])
def test_sign_in_refusals(demo_engine: Engine, case: str, terminal_id: str, credential: str,
                          disable: str | None, status: int, delay_s: float) -> None:
    with DbSession(demo_engine) as db, db.begin():
        if disable == "terminal":
            db.execute(update(Terminal).where(Terminal.terminal_id == DEMO_TERMINAL).values(enabled=False))
        if disable == "institution":
            db.execute(update(Institution).where(Institution.code == "H33020300001").values(enabled=False))
    harness = Harness(demo_engine)
    connection = harness.connect()
    connection.send(sign_in(terminal_id=terminal_id, credential=credential))
    if delay_s:
        harness.clock.advance(delay_s - 0.001)
        assert connection.responses() == []
        harness.clock.advance(0.001)
    [response] = connection.responses()
    assert response.status == status
    assert "demo-secret" not in response.message_en + response.message_zh
    # Still not signed in, still open.
    assert connection.call(request("heartbeat", "hb", terminal_id)).status == pb.STATUS_CODE_NOT_SIGNED_IN
    assert not connection.transport.disconnecting


def test_sessions_per_terminal_are_limited_and_freed_on_disconnect(demo_engine: Engine) -> None:
    harness = Harness(demo_engine, max_sessions_per_terminal=1)
    first, second = harness.connect(), harness.connect()
    assert first.call(sign_in()).status == OK
    assert second.call(sign_in()).status == pb.STATUS_CODE_TOO_MANY_SESSIONS
    first.close()
    assert second.call(sign_in("again")).status == OK


def test_signing_in_twice_on_one_connection_takes_one_session(demo_engine: Engine) -> None:
    harness = Harness(demo_engine, max_sessions_per_terminal=1)
    connection = harness.connect()
    assert connection.call(sign_in("one")).status == OK
    assert connection.call(sign_in("two")).status == OK
    assert harness.service.sessions.open_sessions(DEMO_TERMINAL) == 1


def test_connections_over_the_limit_are_answered_and_closed(demo_engine: Engine) -> None:
    harness = Harness(demo_engine, max_connections=1)
    kept, refused = harness.connect(), harness.connect()
    [response] = refused.responses()
    assert response.status == pb.STATUS_CODE_TOO_MANY_CONNECTIONS
    assert refused.transport.disconnecting
    assert not kept.transport.disconnecting
    refused.close()
    kept.close()
    assert harness.factory.connections == set()


def test_idle_connections_are_closed_after_idle_timeout_s(demo_engine: Engine) -> None:
    harness = Harness(demo_engine, idle_timeout_s=30.0)
    connection = harness.connect()
    connection.call(sign_in())
    harness.clock.advance(29)
    connection.call(request("heartbeat", "hb"))  # resets the timer
    harness.clock.advance(29)
    assert not connection.transport.disconnecting
    harness.clock.advance(1.5)
    [response] = connection.responses()
    assert response.status == pb.STATUS_CODE_IDLE_TIMEOUT
    assert connection.transport.disconnecting


def test_a_signed_in_connection_keeps_only_its_idle_timer(harness: Harness) -> None:
    """An idle signed-in connection holds one timer, not also the sign-in timer for sign_in_timeout_s (each is
    memory per connection: BENCHMARKS.md, "What TLS costs")."""
    connection = harness.connect()
    timers_before = len(harness.clock.getDelayedCalls())
    assert connection.call(sign_in()).status == OK
    assert len(harness.clock.getDelayedCalls()) == timers_before - 1
    harness.clock.advance(harness.config.sign_in_timeout_s + 1)
    assert connection.call(request("heartbeat", "hb")).status == OK  # signed in all along


def test_a_refused_sign_in_keeps_the_sign_in_timer(harness: Harness) -> None:
    connection = harness.connect()
    connection.send(sign_in(credential="not-the-secret"))
    harness.clock.advance(harness.config.sign_in_timeout_s + 0.5)
    assert pb.STATUS_CODE_SIGN_IN_TIMEOUT in [r.status for r in connection.responses()]
    assert connection.transport.disconnecting


def test_sign_out_answers_then_closes(harness: Harness) -> None:
    connection = harness.connect()
    connection.call(sign_in())
    response = connection.call(request("sign_out", "bye"))
    assert response.status == OK and response.HasField("sign_out")
    assert connection.transport.disconnecting


def test_money_messages_without_their_fields_are_bad_requests(harness: Harness) -> None:
    connection = harness.connect()
    connection.call(sign_in())
    for body in ("revoke", "reverse", "query_transaction"):
        response = connection.call(request(body, f"m-{body}"))
        assert response.status == pb.STATUS_CODE_BAD_REQUEST, body
        assert response.message_id == f"m-{body}"
    assert not connection.transport.disconnecting


def test_card_events_are_acknowledged_and_an_unsolicited_apdu_result_refused(harness: Harness) -> None:
    connection = harness.connect()
    connection.call(sign_in())
    event = request("card_event", "ce", kind=pb.CARD_EVENT_KIND_REMOVED)
    assert connection.call(event).status == OK
    assert connection.call(request("card_event", "ce2")).status == pb.STATUS_CODE_BAD_REQUEST
    result = connection.call(request("apdu_result", "ar", script_id="nope"))
    assert result.status == pb.STATUS_CODE_BAD_REQUEST


class HeldService:
    """A service whose answers the test releases by hand."""

    reader_config = ReaderConfig()

    def __init__(self) -> None:
        self.pending: list[tuple[RequestReceived, Deferred[pb.Response | None]]] = []

    def new_context(self, peer: str, peer_host: str | None = None) -> ConnectionContext:
        return ConnectionContext(peer=peer, session_id="S1", peer_host=peer_host or peer)

    def connection_closed(self, context: ConnectionContext) -> None:
        pass

    def answer(self, context: ConnectionContext, event: RequestReceived) -> Deferred[pb.Response | None]:
        # What the adapter asks GatewayService for: an answer to come later.
        answer: Deferred[pb.Response | None] = Deferred()
        self.pending.append((event, answer))
        return answer

    def release(self, index: int = 0) -> None:
        _event, answer = self.pending.pop(index)
        answer.callback(pb.Response(status=OK))


@pytest.fixture
def held() -> Iterator[tuple[HeldService, Connection]]:
    service = HeldService()
    harness = Harness.__new__(Harness)
    harness.clock = Clock()
    harness.config = ServerConfig(max_in_flight_per_connection=2)
    harness.service = service  # type: ignore[assignment]
    harness.factory = TerminalFactory(service, harness.config, harness.clock)  # type: ignore[arg-type]
    connection = harness.connect()
    connection.send(sign_in())
    service.release()
    connection.responses()
    yield service, connection


def test_reading_stops_at_the_in_flight_limit_and_resumes(held: tuple[HeldService, Connection]) -> None:
    service, connection = held
    connection.send(*(request("heartbeat", f"h{i}") for i in range(3)))
    assert len(service.pending) == 2
    assert connection.transport.producerState == "paused"
    service.release(1)
    assert len(service.pending) == 2  # the third was taken from the buffer
    assert connection.transport.producerState == "paused"
    service.release()
    assert connection.transport.producerState == "producing"
    assert [r.message_id for r in connection.responses()] == ["h1", "h0"]


def test_a_peer_that_does_not_read_its_answers_stops_our_reading(held: tuple[HeldService, Connection]) -> None:
    service, connection = held
    connection.protocol.pauseProducing()  # what the transport does when its write buffer fills
    assert connection.transport.producerState == "paused"
    connection.send(request("heartbeat", "queued"))
    assert service.pending == []  # not even decoded while writes are blocked
    connection.protocol.resumeProducing()
    assert connection.transport.producerState == "producing"
    assert len(service.pending) == 1


def test_shutdown_waits_for_requests_in_flight(held: tuple[HeldService, Connection]) -> None:
    service, connection = held
    connection.send(request("heartbeat", "last"))
    closed = connection.protocol.factory.close_all()
    assert not connection.transport.disconnecting
    service.release()
    assert connection.transport.disconnecting
    assert [r.message_id for r in connection.responses()] == ["last"]
    connection.close()
    assert closed.done.called and (closed.connections, closed.relayed, closed.cut) == (1, 0, 0)


class BrokenDirectory:
    def find_terminal(self, terminal_id: str) -> Any:
        raise RuntimeError("database on fire")


def test_a_failing_handler_answers_internal_error_and_keeps_serving(demo_engine: Engine) -> None:
    harness = Harness(demo_engine)
    harness.service._directory = BrokenDirectory()  # type: ignore[assignment]
    connection = harness.connect()
    response = connection.call(sign_in())
    assert response.status == pb.STATUS_CODE_INTERNAL_ERROR
    assert not connection.transport.disconnecting


def test_pins_never_reach_the_log(demo_engine: Engine) -> None:
    """A PIN that travels all the way — to the card's VERIFY and into a request whose handling fails with a
    traceback — appears in no logged event, its text, its repr or its traceback."""
    from tests.test_settlement_flow import HOLDERS, Counter

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    _, card = HOLDERS["Z00001201"]  # a holder with a PIN of their own
    try:
        harness = Harness(demo_engine)
        counter = Counter(harness, "H33020300001-01", card.card_number)
        wrong = "987654" if card.pin != "987654" else "987655"
        assert counter.run("settle", medical_type=11, total_fen=100, pin=wrong).status == pb.STATUS_CODE_PIN_WRONG
        settlement = harness.service.settlement
        assert settlement is not None

        def broken(intent: Any) -> Any:
            raise RuntimeError("the ledger's writer broke")

        settlement.writer.submit = broken  # type: ignore[method-assign]
        failed = counter.run("settle", medical_type=11, total_fen=100, pin=card.pin)
        assert failed.status == pb.STATUS_CODE_INTERNAL_ERROR
    finally:
        globalLogPublisher.removeObserver(events.append)
    from twisted.logger import formatEvent

    failures = [event["log_failure"] for event in events if "log_failure" in event]
    assert failures, "expected the failure to be logged with its traceback"
    for event in events:
        text = formatEvent(event) + repr(event)
        if "log_failure" in event:
            text += event["log_failure"].getTraceback(detail="verbose")
        assert wrong not in text and card.pin not in text


def test_any_frame_counts_as_activity_for_the_idle_timer(demo_engine: Engine) -> None:
    harness = Harness(demo_engine, idle_timeout_s=30.0, sign_in_timeout_s=100.0)  # the idle timer, not the sign-in's
    connection = harness.connect()
    harness.clock.advance(29)
    connection.call(request("heartbeat", "refused-but-alive"))  # NOT_SIGNED_IN, still a frame
    harness.clock.advance(29)
    assert not connection.transport.disconnecting
    harness.clock.advance(2)
    assert connection.transport.disconnecting


# An impossible event in the session (our bug, never the terminal's) -------------------------------------------


class HeldPair:
    """Two signed-in connections of one factory over a HeldService; `faulty` is the one the tests break."""

    def __init__(self) -> None:
        self.service = HeldService()
        self.harness = Harness.__new__(Harness)
        self.harness.clock = Clock()
        self.harness.config = ServerConfig(idle_timeout_s=30.0)
        self.harness.service = self.service  # type: ignore[assignment]
        self.harness.factory = TerminalFactory(self.service, self.harness.config, self.harness.clock)  # type: ignore[arg-type]
        self.faulty, self.other = self.signed_in(), self.signed_in()

    def signed_in(self) -> Connection:
        connection = self.harness.connect()
        connection.send(sign_in())
        self.service.release()
        [response] = connection.responses()
        assert response.status == OK
        return connection


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def logged_failures(events: list[dict[str, Any]]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(event) for event in events if "log_failure" in event]


def _frame_arrives(pair: HeldPair) -> None:
    pair.faulty.send(request("heartbeat", "hb"))


def _answer_given(pair: HeldPair) -> None:
    pair.service.release()


def _idle_timer_fires(pair: HeldPair) -> None:
    pair.harness.clock.advance(pair.harness.config.idle_timeout_s - 1)
    pair.other.send(request("heartbeat", "keep-alive"))  # only the faulty connection is idle
    pair.service.release()
    pair.other.responses()
    pair.harness.clock.advance(1)


def _gateway_shuts_down(pair: HeldPair) -> None:
    pair.harness.factory.close_all()


def _peer_reads_again(pair: HeldPair) -> None:
    pair.faulty.protocol.pauseProducing()
    pair.faulty.protocol.resumeProducing()


# (where the adapter meets the session, the session call that fails there, how it is reached)
ENTRY_POINTS = [
    ("a frame arrives", "receive_data", _frame_arrives),
    ("an answer is given", "send_response", _answer_given),
    ("the idle timer fires", "idle_timed_out", _idle_timer_fires),
    ("the gateway shuts down", "shut_down", _gateway_shuts_down),
    ("the peer reads again", "next_event", _peer_reads_again),
]


@pytest.mark.parametrize(("case", "session_call", "reach"), ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
def test_an_impossible_event_drops_that_connection_only(
    log_events: list[dict[str, Any]], case: str, session_call: str, reach: Callable[[HeldPair], None]
) -> None:
    pair = HeldPair()
    if session_call == "send_response":
        pair.faulty.send(request("heartbeat", "held"))
    session = pair.faulty.protocol.session
    assert session is not None

    def impossible(*_args: object) -> None:
        raise ImpossibleTransition(State.SIGNED_IN, Trigger.CONNECTION_REFUSED)

    # This session alone fails (the session has __slots__: its class is swapped for one failing there).
    session.__class__ = type("FailingSession", (type(session),), {"__slots__": (), session_call: impossible})
    reach(pair)  # nothing escapes into the reactor
    assert pair.faulty.transport.disconnected  # aborted, not left open
    assert pair.faulty.responses() == []  # and nothing more written to it
    [failure] = logged_failures(log_events)
    assert "SIGNED_IN" in failure and "CONNECTION_REFUSED" in failure
    pair.faulty.close()  # Twisted reports the loss: the slots are freed
    assert pair.harness.factory.connections == {pair.other.protocol}
    assert not pair.other.transport.disconnected
    if session_call != "shut_down":
        pair.other.send(request("heartbeat", "still-served"))
        pair.service.release()
        assert [r.message_id for r in pair.other.responses()] == ["still-served"]


def test_an_interim_frame_for_an_answered_request_drops_the_connection(log_events: list[dict[str, Any]]) -> None:
    pair = HeldPair()
    pair.faulty.send(request("read_card", "rc"))
    event, _ = pair.service.pending[0]
    pair.service.release()
    assert [r.message_id for r in pair.faulty.responses()] == ["rc"]
    relay = pair.faulty.protocol.context.relay if pair.faulty.protocol.context else None
    assert relay is not None
    relay.send(event.token, [b"\x00\xb0\x00\x00\x00"], False)  # a handler's script after its own answer
    assert pair.faulty.transport.disconnected
    assert pair.faulty.responses() == []
    [failure] = logged_failures(log_events)
    assert f"request {event.token} is not in flight" in failure


def test_the_idle_timer_of_a_gone_connection_is_logged_not_raised(log_events: list[dict[str, Any]]) -> None:
    pair = HeldPair()
    pair.faulty.close()
    pair.faulty.protocol.timeoutConnection()  # a timer that outlived its connection
    [failure] = logged_failures(log_events)
    assert "CLOSED" in failure and "IDLE_TIMEOUT" in failure
    assert pair.harness.factory.connections == {pair.other.protocol}


def test_frames_carry_the_reactors_time(harness: Harness) -> None:
    connection = harness.connect()
    connection.call(sign_in())
    harness.clock.advance(99.25)
    first = connection.call(request("heartbeat", "hb-1"))
    harness.clock.advance(100)
    second = connection.call(request("heartbeat", "hb-2"))
    assert [(r.server_time.seconds, r.server_time.nanos) for r in (first, second)] == [(99, 250_000_000),
                                                                                       (199, 250_000_000)]


@pytest.mark.parametrize("body", ["card_event", "settle", "read_card"])
def test_a_request_without_a_signed_in_terminal_fails_with_its_reason(
    harness: Harness, log_events: list[dict[str, Any]], body: str
) -> None:
    """Dispatch checks its invariants with explicit code that says what broke, not asserts `python -O` strips."""
    context = harness.service.new_context("127.0.0.1:40000")  # never signed in
    fields = {"kind": pb.CARD_EVENT_KIND_REMOVED} if body == "card_event" else {}
    event = RequestReceived(token=1, request=request(body, "early", **fields), body=body)
    answered: list[pb.Response | None] = []
    harness.service.handle(context, event).addCallback(answered.append)
    [response] = answered
    assert response is not None and response.status == pb.STATUS_CODE_INTERNAL_ERROR
    [logged] = [event for event in log_events if "log_failure" in event]
    assert logged["log_failure"].getErrorMessage() == (
        f"a request of connection {context.session_id} reached the service before its sign-in")
    assert logged["message_id"] == "early"


@pytest.mark.parametrize("body", ["heartbeat", "card_event"])
def test_what_is_answered_at_once_comes_without_a_deferred(harness: Harness, body: str) -> None:
    """A heartbeat or a CardEvent waits on nothing: its answer is the Response itself (the request path makes a
    Deferred only for what waits on the card or the ledger); `handle` gives the same answer in a Deferred."""
    connection = harness.connect()
    connection.call(sign_in())
    [protocol] = harness.factory.connections
    context = protocol.context
    assert context is not None
    fields = {"kind": pb.CARD_EVENT_KIND_REMOVED} if body == "card_event" else {}
    event = RequestReceived(token=1, request=request(body, "now", **fields), body=body)
    answer = harness.service.answer(context, event)
    assert isinstance(answer, pb.Response) and answer.status == pb.STATUS_CODE_OK
    answered: list[pb.Response | None] = []
    harness.service.handle(context, event).addCallback(answered.append)
    assert [a.status for a in answered if a is not None] == [pb.STATUS_CODE_OK]


def test_a_handler_that_raises_at_once_is_answered_internal_error(harness: Harness,
                                                                  log_events: list[dict[str, Any]]) -> None:
    context = harness.service.new_context("127.0.0.1:40000")  # never signed in: the CardEvent's handler raises
    event = RequestReceived(token=1, request=request("card_event", "early", kind=pb.CARD_EVENT_KIND_REMOVED),
                            body="card_event")
    answer = harness.service.answer(context, event)
    assert isinstance(answer, pb.Response) and answer.status == pb.STATUS_CODE_INTERNAL_ERROR
    assert [event["message_id"] for event in log_events if "log_failure" in event] == ["early"]
