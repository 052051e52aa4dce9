"""The Twisted side of a terminal connection: a thin adapter over `gateway.protocol.session.Session`.

It moves bytes between the transport and the session, runs the idle timer (TimeoutMixin) and the sign-in timer,
applies backpressure both ways (stop reading at the in-flight limit; stop reading while the transport's write
buffer is full, which our answers to refused frames fill too), reads a burst one slice of frames per reactor turn
so that other connections wait a slice at most, and hands requests to the service.

An impossible event (`LocalProtocolError`: the session's table has no such move, or an answer names no
request in flight) is a bug on our side. It is logged and that connection alone is aborted; it never
reaches the reactor, and the connection's slots are freed when Twisted reports the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from twisted.internet import interfaces
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.config import ServerConfig
from gateway.ops.metrics import GatewayMetrics
from gateway.pki.names import terminal_id_of
from gateway.protocol.messages import pb
from gateway.protocol.session import (
    ConnectionClosed,
    LocalProtocolError,
    NeedData,
    Paused,
    RequestReceived,
    Session,
    SliceEnded,
)
from gateway.protocol.status import status_name
from gateway.reader.relay import ApduRelay
from gateway.serve.dispatch import ConnectionContext, GatewayService

log = Logger(namespace="gateway.serve.adapter")


@implementer(interfaces.IPushProducer, interfaces.IHandshakeListener)
class TerminalProtocol(Protocol, TimeoutMixin):
    factory: TerminalFactory
    # Twisted's interfaces are zope interfaces, which mypy cannot follow: typed loosely on purpose.
    transport: Any

    def __init__(self) -> None:
        self.session: Session | None = None
        self.context: ConnectionContext | None = None
        self._pumping = False
        self._reading_paused = False
        self._write_blocked = False
        self._admitted = False
        self._closing = False
        self._linger_timer: Any = None
        self._sign_in_timer: Any = None
        self._next_slice_call: Any = None  # the next slice's turn, while one is due
        # Made when someone waits for the close (close_all): an idle connection keeps no Deferred.
        self._closed: Deferred[None] | None = None
        self._lost = False

    @property
    def closed(self) -> Deferred[None]:
        """Fires once the connection is gone (at once if it is gone already)."""
        if self._closed is None:
            self._closed = Deferred()
            if self._lost:
                self._closed.callback(None)
        return self._closed

    def callLater(self, period: float, func: Any) -> Any:
        # TimeoutMixin's timer, on the factory's clock (a test clock in tests).
        return self.factory.clock.callLater(period, func)

    # Connection lifecycle -------------------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        self.session = Session(factory.session_limits)
        self.context = factory.service.new_context(*_peer_name(self.transport))
        self.context.relay = ApduRelay(
            send_interim=self._send_interim,
            terminal_answered=self.session.terminal_answered,
            clock=factory.clock,
            timeout_s=factory.service.reader_config.relay_timeout_s,
        )
        # Our outgoing bytes: the transport pauses us when the peer stops reading its answers.
        self.transport.registerProducer(self, True)
        if not factory.admit(self):
            log.warn("connection from {peer} refused: {count} connections open (max_connections)",
                     peer=self.context.peer, count=len(factory.connections))
            self.session.refuse_connection(pb.STATUS_CODE_TOO_MANY_CONNECTIONS)
            self._flush()
            return
        self._admitted = True
        self.setTimeout(factory.session_limits.idle_timeout_s)  # type: ignore[no-untyped-call]
        self._sign_in_timer = factory.clock.callLater(factory.session_limits.sign_in_timeout_s, self._sign_in_timeout)

    def handshakeCompleted(self) -> None:
        """TLS (gateway.serve.tls) checked the terminal's certificate: its SignIn must be for the terminal it names."""
        certificate = self.transport.getPeerCertificate()
        terminal_id = terminal_id_of(certificate.to_cryptography()) if certificate is not None else None
        if terminal_id is None or self.context is None:
            self.transport.abortConnection()  # the TLS policy admits no such certificate; never serve one
            return
        self.context.certificate_terminal_id = terminal_id

    def dataReceived(self, data: bytes) -> None:
        # try/except rather than _dropped_on_session_error on the paths every request takes: a context manager
        # costs a generator and two calls each time.
        try:
            self._live_session().receive_data(data)
            self._pump()
        except LocalProtocolError as error:
            self._drop(error)

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        self._cancel_timers(self._linger_timer)
        if self.session is not None:
            self.session.connection_lost()
        if self.context is not None:
            self.factory.service.connection_closed(self.context)
        if self._admitted:
            self.factory.release(self)
        self._lost = True
        if self._closed is not None:
            self._closed.callback(None)

    def timeoutConnection(self) -> None:
        with self._dropped_on_session_error():
            if self._live_session().idle_timed_out():
                log.info("closing idle connection from {peer}", peer=self.context.peer if self.context else "?")
                self._flush()
            else:
                self.resetTimeout()  # type: ignore[no-untyped-call]

    def _sign_in_timeout(self) -> None:
        self._sign_in_timer = None
        with self._dropped_on_session_error():
            if self._live_session().sign_in_timed_out():
                if self.context is not None:
                    self.factory.service.sign_in_timed_out(self.context)
                self._flush()

    def shut_down(self) -> int:
        """Read nothing more; close once the requests in flight are answered. Those waiting on the terminal's reader
        are answered GATEWAY_SHUTTING_DOWN at once: its answer would no longer be read. How many they were."""
        relayed = 0
        with self._dropped_on_session_error():
            if self.session is not None:
                self.session.shut_down()
                if self.context is not None and self.context.relay is not None:
                    relayed = self.context.relay.shut_down()
                self._flush()
        return relayed

    @property
    def closing(self) -> bool:
        """Every answer is written: the connection only lingers before it closes."""
        return self._closing

    def _live_session(self) -> Session:
        if self.session is None:
            raise LocalProtocolError("the connection was never made: there is no session")
        return self.session

    @contextmanager
    def _dropped_on_session_error(self) -> Iterator[None]:
        """Abort this connection, and only this one, when the session refuses an impossible event."""
        try:
            yield
        except LocalProtocolError as error:
            self._drop(error)

    def _drop(self, error: LocalProtocolError) -> None:
        log.failure("dropping the connection from {peer}: {error}",
                    peer=self.context.peer if self.context else "?", error=str(error))
        self._closing = True
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        self._cancel_timers()
        if self.session is not None:
            # Nothing more is decoded or written: the session's state is no longer to be trusted.
            self.session.connection_lost()
        if self.transport is not None:
            self.transport.abortConnection()

    def _cancel_sign_in_timer(self) -> None:
        if self._sign_in_timer is not None and self._sign_in_timer.active():
            self._sign_in_timer.cancel()
        self._sign_in_timer = None

    def _cancel_timers(self, *others: Any) -> None:
        """The session's own timers (and `others`): none may fire once the connection is gone."""
        for timer in (self._sign_in_timer, self._next_slice_call, *others):
            if timer is not None and timer.active():
                timer.cancel()
        self._sign_in_timer = self._next_slice_call = None

    # IPushProducer: called by the transport about our outgoing data -------------------------

    def pauseProducing(self) -> None:
        self._write_blocked = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._write_blocked = False
        with self._dropped_on_session_error():
            self._update_reading()
            self._pump()

    def stopProducing(self) -> None:
        self._write_blocked = True

    # Moving events --------------------------------------------------------------------------

    def _pump(self) -> None:
        """Take events from the session until it needs data or pauses; then flush."""
        if self._pumping:
            return  # an answer given synchronously inside the loop below: the loop picks it up
        session = self._live_session()
        self._pumping = True
        frames_before = session.frames_received
        try:
            while not self._write_blocked:
                event = session.next_event()
                if isinstance(event, RequestReceived):
                    self._dispatch(event)
                elif isinstance(event, SliceEnded):
                    # Other connections' turn: the rest of the burst is read on the reactor's next turn.
                    if self._next_slice_call is None:
                        self._next_slice_call = self.factory.clock.callLater(0, self._next_slice)
                    break
                elif isinstance(event, ConnectionClosed):
                    if event.truncated:
                        log.info("{peer} closed the connection in the middle of a frame",
                                 peer=self.context.peer if self.context else "?")
                    break
                elif isinstance(event, NeedData | Paused):
                    break
        finally:
            self._pumping = False
        if session.frames_received != frames_before and not self._closing:
            self.resetTimeout()  # type: ignore[no-untyped-call]  # any frame, even a refused one, is activity
        self._flush()

    def _next_slice(self) -> None:
        self._next_slice_call = None
        with self._dropped_on_session_error():
            session = self._live_session()
            session.start_slice()
            self._update_reading()
            if not self._write_blocked:
                self._pump()

    def _dispatch(self, event: RequestReceived) -> None:
        if self.context is None:
            raise LocalProtocolError("a request before the connection was made: there is no context to serve it in")
        received = perf_counter()
        try:
            answer = self.factory.service.answer(self.context, event)
        except Exception:
            self._answer_failed(Failure(), event)  # type: ignore[no-untyped-call]
            return
        if isinstance(answer, Deferred):
            answer.addCallback(self._answer, event.token, event.body, received)
            answer.addErrback(self._answer_failed, event)
        else:
            # Answered at once (a heartbeat, a CardEvent, an ApduResult): no Deferred made for it. What _answer
            # raises is handled as a Deferred's errback would have.
            try:
                self._answer(answer, event.token, event.body, received)
            except Exception:
                self._answer_failed(Failure(), event)  # type: ignore[no-untyped-call]

    def _send_interim(self, token: int, response: pb.Response) -> None:
        try:
            self._live_session().send_interim(token, response)
            if not self._pumping:
                self._flush()
        except LocalProtocolError as error:
            self._drop(error)

    def _answer(self, response: pb.Response | None, token: int, body: str, received: float) -> None:
        try:
            session = self._live_session()
            if response is None:
                session.discard(token)
            else:
                session.send_response(token, response)
                if self._sign_in_timer is not None and session.terminal_id is not None:
                    # Signed in: the sign-in timer would change nothing (Session.sign_in_timed_out); an idle
                    # connection need not keep it for sign_in_timeout_s.
                    self._cancel_sign_in_timer()
                metrics = self.factory.metrics
                if metrics is not None:
                    metrics.request_answered(body, status_name(response.status), perf_counter() - received)
            if not self._pumping:
                self._pump()
        except LocalProtocolError as error:
            self._drop(error)

    def _answer_failed(self, failure: Failure, event: RequestReceived) -> None:
        log.failure("could not answer {message_id}", failure, message_id=event.request.message_id)
        if self.session is not None and self.transport is not None:
            self.transport.abortConnection()

    def _flush(self) -> None:
        session = self._live_session()
        data = session.data_to_send(self.factory.clock.seconds())  # the reactor's time: a test clock in tests
        if data and self.transport is not None:
            self.transport.write(data)
        if session.wants_close and not self._closing:
            self._closing = True
            self.setTimeout(None)  # type: ignore[no-untyped-call]
            if session.close_reason:
                log.info("closing connection from {peer}: {reason}",
                         peer=self.context.peer if self.context else "?", reason=session.close_reason)
            self._close_lingering()
        self._update_reading()

    def _close_lingering(self) -> None:
        """Send our last bytes and a FIN, keep draining the peer's bytes for a while, then close.

        Closing a socket with unread bytes makes the kernel send a reset that can overtake our
        final frame; half-closing first lets the terminal read why it was disconnected.
        """
        if interfaces.INegotiated.providedBy(self.transport):  # Twisted's TLS transport (and only it) provides it
            # TLS sends its close_notify after our last frame and reads on until the peer's: cut it after the
            # linger. (Its loseWriteConnection would be the TCP socket's, under TLS's buffered last frame.)
            self.transport.loseConnection()
            self._linger_timer = self.factory.clock.callLater(
                self.factory.config.close_linger_s, self.transport.abortConnection
            )
            return
        lose_write = getattr(self.transport, "loseWriteConnection", None)
        if lose_write is None:
            self.transport.loseConnection()
            return
        lose_write()
        self._linger_timer = self.factory.clock.callLater(
            self.factory.config.close_linger_s, self.transport.loseConnection
        )

    def _update_reading(self) -> None:
        session = self.session
        should_pause = (self._write_blocked or self._next_slice_call is not None
                        or (session is not None and session.reading_paused))
        if should_pause and not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()
        elif not should_pause and self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()


class TerminalFactory(ServerFactory):
    protocol = TerminalProtocol  # type: ignore[assignment]
    noisy = False  # our own log lines say when we listen and stop

    def __init__(self, service: GatewayService, config: ServerConfig, clock: Any,
                 metrics: GatewayMetrics | None = None) -> None:
        self.service = service
        self.config = config
        self.clock = clock
        # Each answer is counted and timed here, where it is sent (None: not measured).
        self.metrics = metrics
        self.session_limits = config.session_limits()
        self.connections: set[TerminalProtocol] = set()

    def admit(self, protocol: TerminalProtocol) -> bool:
        if len(self.connections) >= self.config.max_connections:
            return False
        self.connections.add(protocol)
        return True

    def release(self, protocol: TerminalProtocol) -> None:
        self.connections.discard(protocol)

    def close_all(self, before_cut: Callable[[], Deferred[Any]] | None = None) -> Drain:
        """Close every connection: gently once its requests in flight are answered (those waiting on a terminal's
        reader at once, GATEWAY_SHUTTING_DOWN). After shutdown_grace_s the connections still open are cut, once
        `before_cut` fired (the requests at the ledger's writer answered), waiting at most another
        shutdown_grace_s for it."""
        closing = [p.closed for p in self.connections]
        drain = Drain(len(closing), sum(protocol.shut_down() for protocol in list(self.connections)))
        if not self.connections:
            drain.done.callback(drain)
            return drain
        grace_s = self.config.shutdown_grace_s
        timers: list[Any] = []

        def cut() -> None:
            for timer in timers:
                if timer.active():
                    timer.cancel()
            for protocol in list(self.connections):
                # One closing already has nothing in flight: it closes after its linger, its last answers sent
                # (an abort would drop what the kernel has not taken yet).
                if not protocol.closing:
                    drain.cut += 1
                    protocol.transport.abortConnection()

        def grace_over() -> None:
            timers.append(self.clock.callLater(grace_s, cut))
            if before_cut is not None:
                # On the next turn: the answers of what `before_cut` waited for are written in the same turn.
                before_cut().addCallback(lambda _: None if drain.done.called else timers.append(
                    self.clock.callLater(0, cut)))
            else:
                cut()

        timers.append(self.clock.callLater(grace_s, grace_over))

        def finished(_: Any) -> Drain:
            for timer in timers:
                if timer.active():
                    timer.cancel()
            return drain

        DeferredList(closing).addCallback(finished).chainDeferred(drain.done)
        return drain


@dataclass
class Drain:
    """What closing every connection at shutdown did (TerminalFactory.close_all); `done` fires with it once every
    connection is closed."""

    connections: int  # open when it began
    relayed: int      # requests waiting on a terminal's reader, answered GATEWAY_SHUTTING_DOWN
    cut: int = 0      # still open after the grace period, closed without waiting more
    done: Deferred[Drain] = field(default_factory=Deferred, repr=False)


def _peer_name(transport: Any) -> tuple[str, str]:
    """The peer as the log names it (host:port), and the address its failed sign-ins are counted against (host)."""
    try:
        address = transport.getPeer()
    except Exception:  # a transport that cannot say
        return "unknown", "unknown"
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    return (f"{host}:{port}", str(host)) if host is not None else (str(address), str(address))
