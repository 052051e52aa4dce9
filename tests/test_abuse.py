"""A peer that guesses credentials, never signs in, never reads, floods, piles up work or sends huge ids: each case
with its bound. In-memory transports and a test clock, and one real socket (issue 13, items 4 and 5)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_twisted
from sqlalchemy import Engine
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

import gateway.registry.credentials as credentials
from gateway.config import ServerConfig
from gateway.demo.registry import DEMO_CREDENTIAL
from gateway.ledger.writer import InlineLedgerWriter
from gateway.protocol.framing import FrameDecoder
from gateway.protocol.messages import pb
from gateway.registry.directory import TerminalDirectory
from gateway.serve.adapter import TerminalFactory, TerminalProtocol
from gateway.serve.dispatch import GatewayService
from gateway.serve.registry_cache import RegistryCache
from gateway.settlement.policy import load_builtin_policies
from tests.test_adapter import NOW, TODAY, Connection, Harness, run_now
from tests.test_settlement_flow import Counter
from tests.wire import DEMO_TERMINAL, frame, request, sign_in

OK = pb.STATUS_CODE_OK
UNKNOWN = pb.STATUS_CODE_UNKNOWN_TERMINAL
LOCKED = pb.STATUS_CODE_SIGN_IN_LOCKED
EMPTY_FRAME = frame(b"")  # a valid frame: an empty Request, refused BAD_REQUEST


@pytest.fixture
def harness(demo_engine: Engine) -> Harness:
    return Harness(demo_engine)


class ReactorTurns(Clock):
    """A test clock whose `advance` is one turn of a real reactor: it runs the calls due when it is called, and a
    call scheduled meanwhile, even for now, waits for the next turn (Clock's own would run it at once)."""

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        self._sortCalls()
        for call in [c for c in self.calls if c.getTime() <= self.seconds()]:
            if call in self.calls:  # not cancelled by a call before it
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


def turns(harness: Harness, count: int = 10_000) -> int:
    """Let the reactor turn until nothing is due now (at most `count` turns); how many it took."""
    for n in range(count):
        if not any(call.getTime() <= harness.clock.seconds() for call in harness.clock.getDelayedCalls()):
            return n
        harness.clock.advance(0)
    return count


def signed_in(harness: Harness, terminal_id: str = DEMO_TERMINAL) -> Connection:
    connection = harness.connect()
    assert connection.call(sign_in(terminal_id=terminal_id)).status == OK
    return connection


def answered_after(harness: Harness, connection: Connection, req: pb.Request) -> tuple[pb.Response, float]:
    """Send `req`; its answer and how long (on the test clock) it took to come."""
    start = harness.clock.seconds()
    connection.send(req)
    while not (answers := connection.responses()):
        due = min(call.getTime() for call in harness.clock.getDelayedCalls())
        harness.clock.advance(due - harness.clock.seconds())
    [answer] = answers
    return answer, harness.clock.seconds() - start


# Item 4: sign-in that cannot be guessed -------------------------------------------------------------------------


def test_an_unknown_terminal_and_a_wrong_credential_cost_one_keyed_hash_each_and_the_same_answer(
        demo_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails if the unknown id's path skips the hash: the work, not the time, is compared."""
    hashed: list[str] = []
    real = credentials._keyed_digest
    monkeypatch.setattr(credentials, "_keyed_digest", lambda salt, c: hashed.append(c) or real(salt, c))
    answers = {}
    for case, terminal_id in (("unknown", "H99999999999-01"), ("wrong", DEMO_TERMINAL)):
        hashed.clear()
        harness = Harness(demo_engine)  # a gateway of its own: no failure before this one
        answer, waited = answered_after(harness, harness.connect(), sign_in(terminal_id=terminal_id,
                                                                            credential="guess-1234"))
        assert hashed == ["guess-1234"], case  # one HMAC of the credential sent, against a stored or nobody's hash
        answer.ClearField("server_time")
        answers[case] = (answer, waited)
    assert answers["unknown"] == answers["wrong"]  # the same frame, after the same 0.5 s
    assert answers["wrong"][0].status == UNKNOWN and answers["wrong"][1] == 0.5


def test_failed_sign_ins_are_answered_ever_later_then_the_terminal_id_is_locked(harness: Harness) -> None:
    waits = []
    for n in range(5):  # a new connection each time: the count is the terminal id's, not the connection's
        answer, waited = answered_after(harness, harness.connect(), sign_in(f"g{n}", credential=f"guess-{n:04d}"))
        waits.append((answer.status, waited))
    assert waits == [(UNKNOWN, 0.5), (UNKNOWN, 1.0), (UNKNOWN, 2.0), (UNKNOWN, 4.0), (UNKNOWN, 8.0)]
    # Locked now: the right credential too is refused, unchecked, after the longest delay.
    answer, waited = answered_after(harness, harness.connect(), sign_in("right"))
    assert (answer.status, waited) == (LOCKED, 8.0)
    assert "this terminal id is locked: try again in 15 minutes" in answer.message_en
    assert "15分钟后再试" in answer.message_zh
    # Another terminal of the same address still signs in (5 of the address's 20), and is not delayed.
    assert answered_after(harness, harness.connect(), sign_in("other", terminal_id="H33020300001-02")) [1] == 0.0
    harness.clock.advance(900)
    answer, waited = answered_after(harness, harness.connect(), sign_in("later"))
    assert (answer.status, waited) == (OK, 0.0)


def test_a_success_forgets_the_terminal_ids_failures(harness: Harness) -> None:
    for n in range(4):
        answered_after(harness, harness.connect(), sign_in(f"g{n}", credential=f"guess-{n:04d}"))
    assert answered_after(harness, harness.connect(), sign_in("right"))[0].status == OK
    # The id starts again; the address keeps its 5 failures, so the delay is the address's.
    answer, waited = answered_after(harness, harness.connect(), sign_in("g5", credential="guess-0005"))
    assert (answer.status, waited) == (UNKNOWN, 8.0)
    assert answered_after(harness, harness.connect(), sign_in("right-2"))[0].status == OK


def test_the_third_failed_sign_in_closes_the_connection(harness: Harness) -> None:
    connection = harness.connect()
    for n in range(3):
        answer, _ = answered_after(harness, connection, sign_in(f"g{n}", credential=f"guess-{n:04d}"))
        assert answer.status == UNKNOWN
        assert connection.transport.disconnecting is (n == 2)
    assert "3 failed sign-ins on this connection: it is closed" in answer.message_en


def test_each_failure_is_one_log_line_with_its_reason_each_lock_a_warning_and_never_the_credential(
        harness: Harness) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for n in range(6):
            answered_after(harness, harness.connect(), sign_in(f"g{n}", credential=f"secret-guess-{n}"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    refused = [e for e in events if e.get("log_format", "").startswith("sign-in refused")]
    assert [e["reason"] for e in refused] == ["unknown_or_wrong"] * 5 + ["locked"]
    locks = [e for e in events if e.get("log_format", "").startswith("sign-in locked")]
    assert [(e["log_level"].name, e["key"], e["value"]) for e in locks] == [("warn", "terminal id", DEMO_TERMINAL)]
    text = " ".join(str(e) for e in events)
    assert "secret-guess" not in text and DEMO_CREDENTIAL not in text


# Item 4: send_time ----------------------------------------------------------------------------------------------


def settle(mid: str, *, sent: Any = NOW, total_fen: int = 5_000) -> pb.Request:
    req = request("settle", mid, DEMO_TERMINAL, medical_type=pb.MEDICAL_TYPE_ORDINARY_OUTPATIENT, total_fen=total_fen)
    if sent is not None:
        req.send_time.FromDatetime(sent)
    return req


SEND_TIMES = [
    # send_time, the status of a new Settle sent with it
    (NOW, OK),
    (NOW - timedelta(seconds=300), OK),
    (NOW + timedelta(seconds=300), OK),
    (NOW - timedelta(seconds=301), pb.STATUS_CODE_SEND_TIME_OUT_OF_WINDOW),
    (NOW + timedelta(seconds=301), pb.STATUS_CODE_SEND_TIME_OUT_OF_WINDOW),
    (NOW - timedelta(days=3), pb.STATUS_CODE_SEND_TIME_OUT_OF_WINDOW),
    (None, pb.STATUS_CODE_BAD_REQUEST),
]


@pytest.mark.parametrize(("sent", "status"), SEND_TIMES, ids=[str(s) for s, _ in SEND_TIMES])
def test_a_new_settle_is_booked_only_with_a_send_time_within_the_window(harness: Harness, sent: Any,
                                                                        status: int) -> None:
    counter = Counter(harness, DEMO_TERMINAL, "N00000001")
    if sent is None:  # straight to the gateway: the test connection would stamp it
        counter.connection.protocol.dataReceived(frame(settle("s-1", sent=None).SerializeToString()))
        [answer] = counter.connection.responses()
        assert "send_time is required on Settle, Revoke and Reverse" in answer.message_en
    else:
        answer = counter.terminal.run(settle("s-1", sent=sent))
    assert answer.status == status, answer.message_en
    if status != OK:
        assert counter.scripts() == 0  # refused before the card was read
        query = counter.run("query_transaction", message_id="s-1")
        assert query.status == pb.STATUS_CODE_ORIGINAL_NOT_FOUND  # nothing booked


def test_a_captured_settle_replayed_later_is_refused_under_a_new_id_and_answered_as_recorded_under_its_own(
        harness: Harness) -> None:
    counter = Counter(harness, DEMO_TERMINAL, "N00000001")
    booked = counter.terminal.run(settle("s-1"))
    assert booked.status == OK
    days_later = NOW - timedelta(days=2)
    replayed = counter.terminal.run(settle("s-1", sent=days_later))  # the exact frame, days later
    assert replayed == booked  # its recorded answer: nothing moves
    renamed = counter.terminal.run(settle("s-1-again", sent=days_later))
    assert renamed.status == pb.STATUS_CODE_SEND_TIME_OUT_OF_WINDOW
    assert "172800 s behind the gateway's clock" in renamed.message_en
    for body, fields in (("revoke", {"settlement_id": booked.settle.settlement_id}),
                         ("reverse", {"original_message_id": "s-1"})):
        stale = request(body, f"{body}-1", DEMO_TERMINAL, **fields)
        stale.send_time.FromDatetime(days_later)
        assert counter.terminal.run(stale).status == pb.STATUS_CODE_SEND_TIME_OUT_OF_WINDOW, body
    assert counter.run("query_transaction", message_id="s-1").query_transaction.state == pb.TRANSACTION_STATE_SETTLED


def test_a_pre_settle_books_nothing_and_is_not_held_to_the_window(harness: Harness) -> None:
    counter = Counter(harness, DEMO_TERMINAL, "N00000001")
    pre = request("pre_settle", "p-1", DEMO_TERMINAL, medical_type=11, total_fen=5_000)
    pre.send_time.FromDatetime(NOW - timedelta(days=1))
    assert counter.terminal.run(pre).status == OK


# Item 5: no unauthenticated peer can starve the gateway ---------------------------------------------------------


def test_connections_that_never_sign_in_are_closed_at_the_sign_in_timeout_however_busy(demo_engine: Engine) -> None:
    """300 such connections once held max_connections for good and locked a real terminal out."""
    harness = Harness(demo_engine, max_connections=300)
    squatters = [harness.connect() for _ in range(300)]
    assert harness.connect().responses()[0].status == pb.STATUS_CODE_TOO_MANY_CONNECTIONS
    for second in range(0, 30, 5):  # a refused frame every 5 s keeps each one far from idle
        harness.clock.advance(5 if second else 0)
        for n, squatter in enumerate(squatters):
            squatter.send(request("heartbeat", f"hb-{second}-{n}"))
        assert not any(s.transport.disconnecting for s in squatters)
    harness.clock.advance(4.999)
    assert not any(s.transport.disconnecting for s in squatters)
    harness.clock.advance(0.001)  # 30 s after each opened: every one closed, its last frame saying why
    for squatter in squatters:
        assert squatter.transport.disconnecting
        assert squatter.responses()[-1].status == pb.STATUS_CODE_SIGN_IN_TIMEOUT
        squatter.close()
    assert signed_in(harness) is not None  # the real terminal gets in


def test_a_sign_in_timeout_leaves_a_signed_in_connection_alone(harness: Harness) -> None:
    connection = signed_in(harness)
    harness.clock.advance(60)
    assert not connection.transport.disconnecting
    assert connection.call(request("heartbeat", "hb")).status == OK


class NeverReadTransport(StringTransport):
    """A TCP transport whose peer never reads: like Twisted's, it pauses its producer once more than bufferSize
    bytes wait to be sent, and it never drains."""

    bufferSize = 65536  # noqa: N815 - the name of Twisted's own attribute

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming and len(self.value()) > self.bufferSize:
            self.producer.pauseProducing()


def test_a_peer_that_never_reads_makes_the_gateway_hold_a_bounded_amount(harness: Harness) -> None:
    """Once 4.7 MB were held per peer for 64 KB sent: now at most the transport's buffer and one slice of answers,
    and the gateway stops reading from it."""
    transport = NeverReadTransport()
    protocol = harness.factory.buildProtocol(None)
    assert isinstance(protocol, TerminalProtocol)
    protocol.makeConnection(transport)
    slice_frames = harness.config.frames_per_slice
    for _ in range(16):  # 1 MiB in 64 KiB reads, all before sign-in
        protocol.dataReceived(EMPTY_FRAME * 16384)
        turns(harness)
    held = transport.value()
    decoder = FrameDecoder(1 << 20)
    decoder.feed(held)
    largest = max(len(payload) + 4 for payload in iter(decoder.next_frame, None))
    bound = NeverReadTransport.bufferSize + slice_frames * largest  # about 78 KiB
    assert 0 < len(held) <= bound, (len(held), bound)
    assert transport.producerState == "paused"  # not reading the peer any more
    assert protocol.session is not None and protocol.session.frames_received < 2 * (bound // len(EMPTY_FRAME))


def test_a_burst_is_handled_a_slice_per_reactor_turn(demo_engine: Engine) -> None:
    """A heartbeat once waited 1.4-2.4 s behind 512 KB of empty frames: each turn now takes at most
    frames_per_slice frames of one connection, and the others are served in between."""
    harness = Harness(demo_engine, ReactorTurns())
    flooder = harness.connect()
    other = signed_in(harness, "H33020300001-02")
    flooder.protocol.dataReceived(EMPTY_FRAME * 131_072)  # 512 KiB
    handled = [len(flooder.responses())]
    heartbeat = request("heartbeat", "hb-during", "H33020300001-02")
    assert other.call(heartbeat).status == OK  # answered at once, burst or not
    while handled[-1]:
        harness.clock.advance(0)  # the reactor's next turn
        handled.append(len(flooder.responses()))
    assert max(handled) == harness.config.frames_per_slice
    assert sum(handled) == 131_072  # every frame answered in the end


def test_requests_waiting_on_the_terminals_reader_are_bounded_by_max_in_flight(harness: Harness) -> None:
    """3,000 ReadCards once waited at once on one connection."""
    connection = signed_in(harness)  # its reader is the terminal's own: each ReadCard sends it an ApduScript
    connection.send(*(request("read_card", f"rc-{n}") for n in range(3_000)))
    turns(harness)
    answers = connection.responses()
    scripts = [a for a in answers if a.interim]
    refused = [a for a in answers if not a.interim]
    limit = harness.config.max_in_flight_per_connection
    assert len(scripts) == limit and connection.protocol.session is not None
    assert connection.protocol.session.in_flight == limit
    assert len(refused) == 3_000 - limit
    assert {a.status for a in refused} == {pb.STATUS_CODE_TEMPORARILY_UNAVAILABLE}


@pytest.mark.parametrize("field", ["message_id", "settlement_id"])
def test_a_huge_echoed_id_is_a_bad_request_not_an_internal_error(harness: Harness, field: str) -> None:
    connection = signed_in(harness)
    query = request("query_transaction", "q-1")
    setattr(query.query_transaction, field, "X" * 40_000)
    answer = connection.call(query)
    assert answer.status == pb.STATUS_CODE_BAD_REQUEST
    assert "40000 characters long" in answer.message_en and len(answer.SerializeToString()) < 1024


# One real socket ------------------------------------------------------------------------------------------------


class Counting(Protocol):
    """A client that sends what it is given when connected and counts the frames it gets back."""

    def __init__(self, payload: bytes, on_frame: Callable[[pb.Response], None] = lambda _: None) -> None:
        self.payload = payload
        self.on_frame = on_frame
        self.decoder = FrameDecoder(1 << 20)
        self.frames = 0
        self.ready: Deferred[Counting] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)  # type: ignore[union-attr]
        self.ready.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.decoder.feed(data)
        while (payload := self.decoder.next_frame()) is not None:
            self.frames += 1
            self.on_frame(pb.Response.FromString(payload))


def connect(port: int, client: Counting) -> Deferred[Counting]:
    factory = ClientFactory()
    factory.buildProtocol = lambda _addr: client  # type: ignore[method-assign]
    reactor.connectTCP("127.0.0.1", port, factory)  # type: ignore[attr-defined]
    return client.ready


@pytest.fixture
def listening(demo_engine: Engine) -> Iterator[tuple[TerminalFactory, int]]:
    config = ServerConfig()
    registry = RegistryCache(demo_engine, run_now)
    service = GatewayService(
        directory=TerminalDirectory(demo_engine), run_blocking=run_now, server_config=config, engine=demo_engine,
        writer=InlineLedgerWriter(demo_engine, load_builtin_policies()), today=lambda: TODAY, now=lambda: NOW,
        registry=registry, reactor=reactor)
    factory = TerminalFactory(service, config, reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    yield factory, port.getHost().port
    port.stopListening()
    for protocol in list(factory.connections):
        protocol.transport.abortConnection()


@pytest_twisted.inlineCallbacks
def test_over_a_real_socket_a_heartbeat_is_answered_while_a_burst_is_processed(
        listening: tuple[TerminalFactory, int]) -> Any:
    factory, port = listening
    burst = 131_072  # 512 KiB of empty frames
    beats: list[pb.Response] = []
    terminal = yield connect(port, Counting(frame(sign_in().SerializeToString()), beats.append))
    while not beats:
        yield deferLater(reactor, 0.01, lambda: None)
    assert beats[0].status == OK
    flooder = yield connect(port, Counting(EMPTY_FRAME * burst))
    flooded = next(p for p in factory.connections if p.context is not None
                   and p.context.peer.endswith(f":{flooder.transport.getHost().port}"))
    while flooded.session is None or flooded.session.frames_received == 0:
        yield deferLater(reactor, 0, lambda: None)
    # The burst has begun: without slices one 64 KiB read (16,384 frames) would now be handled in one go.
    terminal.transport.write(frame(request("heartbeat", "hb").SerializeToString()))
    while len(beats) < 2:
        yield deferLater(reactor, 0, lambda: None)
    behind = flooded.session.frames_received
    assert beats[1].status == OK and beats[1].message_id == "hb"
    assert behind < burst and behind <= 16 * factory.config.frames_per_slice, behind
    while flooder.frames < burst:
        yield deferLater(reactor, 0.01, lambda: None)
    assert flooder.frames == burst
