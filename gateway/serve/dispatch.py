"""What the gateway does with each request a session delivers.

The session (gateway.protocol.session) has already checked the envelope and the sign-in state; here
each body gets its answer. Blocking work (the registry, later the card readers and the ledger) goes
through `run_blocking`, which the server backs with a thread pool so the reactor never waits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.config import ReaderConfig, ServerConfig
from gateway.ops.metrics import GatewayMetrics
from gateway.protocol.messages import pb
from gateway.protocol.responses import make_response
from gateway.protocol.session import RequestReceived
from gateway.protocol.throttle import Key, Locked, SignInFailure, SignInThrottle
from gateway.reader.card import CardData
from gateway.reader.relay import ApduRelay
from gateway.registry.credentials import credential_matches
from gateway.registry.directory import TerminalDirectory, TerminalRecord
from gateway.serve import handlers
from gateway.serve.audit import audit, audited
from gateway.serve.handlers import Served, SettlementHandlers
from gateway.serve.readers import ReaderAssignments
from gateway.serve.registry_cache import RegistryCache
from gateway.settlement.calendar import beijing_today, utc_now
from gateway.settlement.policy import PolicyBook, load_builtin_policies

if TYPE_CHECKING:
    from gateway.ledger.writer import LedgerWriter

RunBlocking = Callable[..., "Deferred[Any]"]

log = Logger(namespace="gateway.serve.dispatch")

# The bodies that move money or read the card: gateway.serve.handlers answers them.


@dataclass(slots=True)  # one per connection, idle ones included: no instance dict
class ConnectionContext:
    """What the service remembers about one connection."""

    peer: str
    session_id: str
    # The address failed sign-ins are counted against (the peer's host, without its port).
    peer_host: str = ""
    terminal: TerminalRecord | None = None
    # The terminal's own card reader, driven over this connection (set by the server adapter).
    relay: ApduRelay | None = None
    # Over TLS, the terminal id its certificate names (set by the adapter after the handshake); None over plain TCP.
    certificate_terminal_id: str | None = None


@dataclass
class TerminalSessions:
    """Open signed-in sessions per terminal id, bounded by max_sessions_per_terminal."""

    max_sessions_per_terminal: int
    _open: dict[str, int] = field(default_factory=dict)

    def try_acquire(self, terminal_id: str) -> bool:
        count = self._open.get(terminal_id, 0)
        if count >= self.max_sessions_per_terminal:
            return False
        self._open[terminal_id] = count + 1
        return True

    def release(self, terminal_id: str) -> None:
        count = self._open.get(terminal_id, 0) - 1
        if count > 0:
            self._open[terminal_id] = count
        else:
            self._open.pop(terminal_id, None)

    def open_sessions(self, terminal_id: str) -> int:
        return self._open.get(terminal_id, 0)

    def signed_in(self) -> int:
        """Signed-in sessions, all terminals together."""
        return sum(self._open.values())


class GatewayService:
    def __init__(
        self,
        *,
        directory: TerminalDirectory,
        run_blocking: RunBlocking,
        server_config: ServerConfig,
        reader_config: ReaderConfig | None = None,
        reactor: Any = None,
        today: Callable[[], date] = beijing_today,
        engine: Engine | None = None,
        writer: LedgerWriter | None = None,
        policies: PolicyBook | None = None,
        now: Callable[[], datetime] = utc_now,
        registry: RegistryCache | None = None,
        clock: Any = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        """`clock` (IReactorTime: a test's Clock) times the delayed answers to failed sign-ins; `reactor` by
        default."""
        self._directory = directory
        self._clock = clock if clock is not None else reactor
        if self._clock is None:
            raise ValueError("the service needs a clock for the delayed answers to failed sign-ins: pass reactor or "
                             "clock")
        self.throttle = SignInThrottle(server_config.throttle_limits())
        self._metrics = metrics
        if metrics is not None:
            metrics.expect_sign_in_failures(reason.value for reason in SignInFailure)
        self._run_blocking = run_blocking
        self._config = server_config
        self.reader_config = reader_config or ReaderConfig()
        self.sessions = TerminalSessions(server_config.max_sessions_per_terminal)
        self.readers = ReaderAssignments(self.reader_config, reactor, self.forget_card)
        # The card last read at each terminal, until it is removed (a CardEvent or the reader's own
        # monitor says so). Later requests of the same visit use it instead of reading again.
        self.card_cache: dict[str, CardData] = {}
        self.settlement: SettlementHandlers | None = None
        if engine is not None and writer is not None:
            if registry is None:
                raise ValueError("settling needs the registry's facts: pass a started RegistryCache")
            self.settlement = SettlementHandlers(
                engine=engine, run_blocking=run_blocking, writer=writer,
                policies=policies or load_builtin_policies(), readers=self.readers, card_cache=self.card_cache,
                today=today, now=now, registry=registry, send_time_window_s=server_config.send_time_window_s,
                metrics=metrics,
            )
        self._session_ids = itertools.count(1)
        self._handlers: dict[str, Callable[[ConnectionContext, RequestReceived], Any]] = {
            "sign_in": self._sign_in,
            "sign_out": self._sign_out,
            "heartbeat": self._heartbeat,
            "card_event": self._card_event,
            "apdu_result": self._apdu_result,
        }

    def new_context(self, peer: str, peer_host: str | None = None) -> ConnectionContext:
        return ConnectionContext(peer=peer, session_id=f"S{next(self._session_ids):08d}",
                                 peer_host=peer if peer_host is None else peer_host)

    def forget_card(self, key: str) -> None:
        self.card_cache.pop(key, None)

    def card_key(self, context: ConnectionContext) -> str:
        """Where the card read for this connection is remembered. A card in the terminal's own reader belongs
        to this connection (a terminal id may hold several); a reader of the gateway's to the terminal id."""
        terminal = _terminal_of(context)
        if self.readers.spec_for(terminal.terminal_id, terminal.reader).kind == "terminal":
            return f"{terminal.terminal_id}/{context.session_id}"
        return terminal.terminal_id

    def connection_closed(self, context: ConnectionContext) -> None:
        if context.relay is not None:
            context.relay.connection_lost()
        if context.terminal is not None:
            if self.readers.spec_for(context.terminal.terminal_id, context.terminal.reader).kind == "terminal":
                self.forget_card(self.card_key(context))
            self.sessions.release(context.terminal.terminal_id)
            log.info("terminal {terminal_id} disconnected ({session_id})",
                     terminal_id=context.terminal.terminal_id, session_id=context.session_id)
            context.terminal = None

    def handle(self, context: ConnectionContext, event: RequestReceived) -> Deferred[pb.Response | None]:
        """The answer to one request; never fails (errors become INTERNAL_ERROR). Where the answer leaves the
        service, it goes into the audit trail (gateway.serve.audit)."""
        result = self.answer(context, event)
        return result if isinstance(result, Deferred) else succeed(result)

    def answer(self, context: ConnectionContext, event: RequestReceived
               ) -> pb.Response | Deferred[pb.Response | None] | None:
        """As `handle`, the answer itself when it is given at once (a heartbeat, a CardEvent, an ApduResult, a
        refusal): the request path makes no Deferred for those, only for what waits (the card, the ledger)."""
        served = Served()
        handler = self._handlers.get(event.body)
        if handler is None and event.body in handlers.BODIES and self.settlement is not None:
            handler = partial(self._settling, self.settlement, served)
        if handler is None:
            return self._audited(make_response(
                event.request.message_id, pb.STATUS_CODE_UNSUPPORTED_MESSAGE,
                detail_en=f"{event.body} is not offered by this gateway",
                detail_zh=f"本网关不支持{event.body}交易",
            ), context, event, served)
        try:
            result = handler(context, event)
        except Exception:
            failure = Failure()  # type: ignore[no-untyped-call]
            result = self._internal_error(failure, context, event)
        if isinstance(result, Deferred):
            return result.addErrback(self._internal_error, context, event).addCallback(
                self._audited, context, event, served)
        return self._audited(result, context, event, served)

    def _audited(self, response: pb.Response | None, context: ConnectionContext, event: RequestReceived,
                 served: Served) -> pb.Response | None:
        if audited(event.body, response) and response is not None:
            terminal = context.terminal
            # The card read for a request that reads one: at this terminal, the card this request used.
            card = self.card_cache.get(self.card_key(context)) if (
                terminal is not None and event.body in handlers.CARD_BODIES) else None
            audit(event.request, event.body, response, session_id=context.session_id,
                  terminal_id=terminal.terminal_id if terminal is not None else event.request.terminal_id,
                  card_number=card.card_number if card is not None else "", retry=served.retry)
        return response

    def _internal_error(self, failure: Any, context: ConnectionContext, event: RequestReceived) -> pb.Response:
        # The request itself is not logged: it may carry a PIN.
        log.failure("request {message_id} ({body}) from {session_id} failed", failure,
                    message_id=event.request.message_id, body=event.body, session_id=context.session_id)
        return make_response(event.request.message_id, pb.STATUS_CODE_INTERNAL_ERROR)

    # Handlers -------------------------------------------------------------------------------

    def _sign_in(self, context: ConnectionContext, event: RequestReceived) -> Deferred[pb.Response]:
        request = event.request
        # A refusal goes out a delay after the SignIn arrived, not after it was decided: how long the look-up and
        # the check took (a known id or not) does not show in when the answer comes.
        arrived = self._clock.seconds()
        certified = context.certificate_terminal_id
        if certified is not None and request.terminal_id != certified:
            return self._refuse_sign_in(context, request, SignInFailure.CERTIFICATE_MISMATCH, arrived,
                                        f"its TLS certificate names {certified}", certified=certified)
        locked = self.throttle.locked(request.terminal_id, context.peer_host, arrived)
        if locked is not None:
            return self._refuse_locked(context, request, locked, arrived)
        looked_up: Deferred[TerminalRecord | None] = self._run_blocking(
            self._directory.find_terminal, request.terminal_id
        )
        return looked_up.addCallback(self._signed_in, context, request, arrived)

    def _signed_in(
        self, record: TerminalRecord | None, context: ConnectionContext, request: pb.Request, arrived: float
    ) -> pb.Response | Deferred[pb.Response]:
        message_id = request.message_id
        terminal_id = request.terminal_id
        # Asked again: other guesses at this id or from this address may have failed during the look-up.
        locked = self.throttle.locked(terminal_id, context.peer_host, self._clock.seconds())
        if locked is not None:
            return self._refuse_locked(context, request, locked, arrived)
        # An unknown id is checked against nobody's hash: the same work, the same answer as a wrong credential.
        if not credential_matches(request.sign_in.credential, record.credential_hash if record is not None else None):
            return self._refuse_sign_in(context, request, SignInFailure.UNKNOWN_OR_WRONG, arrived,
                                        "unknown terminal or wrong credential")
        if record is None:  # credential_matches never matches without a record
            raise RuntimeError(f"a credential matched for {terminal_id}, which the registry does not hold")
        self.throttle.succeeded(terminal_id)
        if not record.enabled:
            self._sign_in_failed(SignInFailure.DISABLED)
            log.warn("sign-in refused for {terminal_id} from {peer}: {reason} (terminal disabled)",
                     terminal_id=terminal_id, peer=context.peer, reason=SignInFailure.DISABLED.value)
            return make_response(message_id, pb.STATUS_CODE_TERMINAL_DISABLED)
        if not record.institution_enabled:
            self._sign_in_failed(SignInFailure.DISABLED)
            log.warn("sign-in refused for {terminal_id} from {peer}: {reason} (institution {institution} disabled)",
                     terminal_id=terminal_id, peer=context.peer, reason=SignInFailure.DISABLED.value,
                     institution=record.institution_code)
            return make_response(message_id, pb.STATUS_CODE_INSTITUTION_DISABLED)
        already_signed_in = context.terminal is not None
        if not already_signed_in and not self.sessions.try_acquire(terminal_id):
            log.warn("sign-in refused for {terminal_id}: {count} sessions already open",
                     terminal_id=terminal_id, count=self.sessions.open_sessions(terminal_id))
            return make_response(
                message_id, pb.STATUS_CODE_TOO_MANY_SESSIONS,
                detail_en=f"at most {self._config.max_sessions_per_terminal}",
                detail_zh=f"上限{self._config.max_sessions_per_terminal}个",
            )
        context.terminal = record
        if context.relay is not None:
            context.relay.pin_pad = request.sign_in.pin_pad
        log.info("terminal {terminal_id} of {institution} signed in from {peer} ({session_id}, software {software})",
                 terminal_id=terminal_id, institution=record.institution_code, peer=context.peer,
                 session_id=context.session_id, software=request.sign_in.software_version[:64])
        response = make_response(message_id, pb.STATUS_CODE_OK)
        result = response.sign_in
        result.institution_code = record.institution_code
        result.institution_name = record.institution_name
        result.session_id = context.session_id
        result.limits.max_frame_bytes = self._config.max_frame_bytes
        result.limits.idle_timeout_s = int(self._config.idle_timeout_s)
        result.limits.max_in_flight_requests = self._config.max_in_flight_per_connection
        result.pin_pad = request.sign_in.pin_pad
        return response

    def _refuse_sign_in(self, context: ConnectionContext, request: pb.Request, reason: SignInFailure, arrived: float,
                        why: str, **fields: str) -> Deferred[pb.Response]:
        """Count the failure, log it (never the credential) with `fields`, and answer after the throttle's delay."""
        terminal_id = request.terminal_id
        penalty = self.throttle.failed(terminal_id, context.peer_host, reason, self._clock.seconds())
        self._sign_in_failed(reason)
        log.info("sign-in refused for {terminal_id} from {peer}: {reason} ({why}); answered after {delay_s} s "
                 "({terminal_failures} failures of this terminal id, {peer_failures} from this address)",
                 terminal_id=terminal_id, peer=context.peer, reason=reason.value, why=why, delay_s=penalty.delay_s,
                 terminal_failures=penalty.terminal_failures, peer_failures=penalty.peer_failures, **fields)
        for key in penalty.now_locked:
            log.warn("sign-in locked for {key} {value} for {lock_s} s after {failures} failed sign-ins",
                     key=key.value, value=terminal_id if key is Key.TERMINAL_ID else context.peer_host,
                     lock_s=self.throttle.limits.lock_s,
                     failures=penalty.terminal_failures if key is Key.TERMINAL_ID else penalty.peer_failures)
        status = (pb.STATUS_CODE_CERTIFICATE_MISMATCH if reason is SignInFailure.CERTIFICATE_MISMATCH
                  else pb.STATUS_CODE_UNKNOWN_TERMINAL)
        return self._answer_at(arrived + penalty.delay_s, make_response(request.message_id, status))

    def _refuse_locked(self, context: ConnectionContext, request: pb.Request, locked: Locked,
                       arrived: float) -> Deferred[pb.Response]:
        penalty = self.throttle.failed(request.terminal_id, context.peer_host, SignInFailure.LOCKED,
                                       self._clock.seconds())
        self._sign_in_failed(SignInFailure.LOCKED)
        minutes = max(1, math.ceil(locked.retry_after_s / 60))
        log.info("sign-in refused for {terminal_id} from {peer}: {reason} (the {key} is locked for {left_s} s more); "
                 "answered after {delay_s} s", terminal_id=request.terminal_id, peer=context.peer,
                 reason=SignInFailure.LOCKED.value, key=locked.key.value, left_s=round(locked.retry_after_s),
                 delay_s=penalty.delay_s)
        what_en, what_zh = ("this terminal id", "该终端编号") if locked.key is Key.TERMINAL_ID else (
            "this address", "本地址")
        response = make_response(
            request.message_id, pb.STATUS_CODE_SIGN_IN_LOCKED,
            detail_en=f"{what_en} is locked: try again in {minutes} minutes, or call the system administrator",
            detail_zh=f"{what_zh}已锁定，请{minutes}分钟后再试，或联系系统管理员")
        return self._answer_at(arrived + penalty.delay_s, response)

    def _sign_in_failed(self, reason: SignInFailure) -> None:
        if self._metrics is not None:
            self._metrics.sign_in_failed(reason.value)

    def _answer_at(self, moment: float, response: pb.Response) -> Deferred[pb.Response]:
        return deferLater(self._clock, max(0.0, moment - self._clock.seconds()), lambda: response)

    def sign_in_timed_out(self, context: ConnectionContext) -> None:
        """The connection did not sign in within sign_in_timeout_s and is being closed."""
        self._sign_in_failed(SignInFailure.TIMEOUT)
        log.info("connection from {peer} closed: {reason} (not signed in within {timeout_s} s)", peer=context.peer,
                 reason=SignInFailure.TIMEOUT.value, timeout_s=self._config.sign_in_timeout_s)

    def _sign_out(self, context: ConnectionContext, event: RequestReceived) -> pb.Response:
        response = make_response(event.request.message_id, pb.STATUS_CODE_OK)
        response.sign_out.SetInParent()
        return response

    def _heartbeat(self, context: ConnectionContext, event: RequestReceived) -> pb.Response:
        response = make_response(event.request.message_id, pb.STATUS_CODE_OK)
        response.heartbeat.SetInParent()
        return response

    def _settling(self, settlement: SettlementHandlers, served: Served, context: ConnectionContext,
                  event: RequestReceived) -> Deferred[pb.Response]:
        return Deferred.fromCoroutine(settlement.handle(_terminal_of(context), context.relay, event,
                                                        self.card_key(context), served))

    def _card_event(self, context: ConnectionContext, event: RequestReceived) -> pb.Response:
        request = event.request
        kind = request.card_event.kind
        if kind == pb.CARD_EVENT_KIND_UNSPECIFIED:
            return make_response(request.message_id, pb.STATUS_CODE_BAD_REQUEST,
                                 detail_en="card_event.kind must be INSERTED or REMOVED",
                                 detail_zh="插拔卡事件类型缺失")
        key = self.card_key(context)
        if context.relay is None:
            raise RuntimeError(f"connection {context.session_id} has no relay: the adapter sets one when it is made")
        # Either way the card data read before belongs to a card that is no longer there.
        self.forget_card(key)
        context.relay.card_event(kind, request.card_event.atr)
        response = make_response(request.message_id, pb.STATUS_CODE_OK)
        response.card_event.SetInParent()
        return response

    def _apdu_result(self, context: ConnectionContext, event: RequestReceived) -> pb.Response | None:
        request = event.request
        if context.relay is not None and context.relay.deliver(request.apdu_result):
            return None  # an answer to our script: not answered itself
        script_id = request.apdu_result.script_id[:64]
        return make_response(
            request.message_id, pb.STATUS_CODE_BAD_REQUEST,
            detail_en=f"no APDU script {script_id!r} is outstanding for this terminal (late or unknown)",
            detail_zh=f"没有待回复的APDU脚本{script_id}（已超时或不存在）",
        )


def _terminal_of(context: ConnectionContext) -> TerminalRecord:
    """The terminal a request's connection signed in as. The session takes no other body before sign-in, so
    a missing one is our bug: it fails the request (INTERNAL_ERROR) rather than serve it for no terminal."""
    if context.terminal is None:
        raise RuntimeError(f"a request of connection {context.session_id} reached the service before its sign-in")
    return context.terminal
