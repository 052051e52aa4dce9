"""One terminal connection as a state machine, with no I/O (after python-hyper/h11).

Bytes go in with `receive_data`; requests the application must answer come out of `next_event`;
the application's answers go in with `send_response`; bytes to write come out of `data_to_send`.
The session reads no clock: the time it needs, the server_time of each frame, is the `now` passed to
`data_to_send` (after aioquic's `datagrams_to_send(now)`), so whoever drives it decides what time it is.
Everything the protocol itself decides — framing limits, decoding, the envelope's checks, sign-in
state and failed sign-ins per connection, requests in flight (those waiting on the terminal's reader
included), how many frames one slice reads, what an idle or sign-in timeout does — happens here, so the
Twisted adapter only moves bytes and timers.

The states and every transition between them are the table of `gateway.protocol.states`; the session
changes state only through it, so an event the table does not allow raises `ImpossibleTransition`
instead of leaving the session in a state nobody designed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from gateway.protocol.framing import FrameDecoder, FrameTooLarge, encode_frame
from gateway.protocol.messages import pb
from gateway.protocol.responses import make_response
from gateway.protocol.states import TAKES_REQUESTS, LocalProtocolError, State, Trigger, next_state
from gateway.protocol.status import status_name

__all__ = [
    "MAX_ECHOED_MESSAGE_ID_CHARS", "MAX_MESSAGE_ID_CHARS", "MAX_TERMINAL_ID_CHARS", "REGISTERED_TERMINAL_ID",
    "SIGN_IN_FAILURES", "ConnectionClosed", "Event",
    "LocalProtocolError", "NeedData", "Paused", "RequestReceived", "Session", "SessionLimits", "SliceEnded", "State",
]

MAX_MESSAGE_ID_CHARS = 64
MAX_TERMINAL_ID_CHARS = 32
# The form of a terminal id the registry takes and `gateway pki` puts in certificates (stricter than the envelope's
# printable token: it is also a file name, terminals/<TERMINAL_ID>.crt).
REGISTERED_TERMINAL_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_TERMINAL_ID_CHARS - 1}}}$")
MAX_ECHOED_MESSAGE_ID_CHARS = 256

# The answers to a SignIn that count as a failed sign-in on the connection (sign_in_failures_per_connection): the
# ones a guesser gets. A disabled terminal or institution, or too many sessions, answer a right credential.
SIGN_IN_FAILURES = frozenset({
    pb.STATUS_CODE_UNKNOWN_TERMINAL, pb.STATUS_CODE_SIGN_IN_LOCKED, pb.STATUS_CODE_CERTIFICATE_MISMATCH,
})
# What a session whose every slot is taken still takes while some of its requests wait on the terminal's own
# reader: the terminal's answers about that reader, which those requests need to finish (answered at once).
_READER_ANSWERS = frozenset({"apdu_result", "card_event"})


@dataclass(frozen=True)
class SessionLimits:
    max_frame_bytes: int = 64 * 1024
    # Requests of the connection in flight at once, those waiting on the terminal's own reader included.
    max_in_flight: int = 32
    idle_timeout_s: float = 120.0
    # A connection not signed in this long after it opened is closed, whatever it sends meanwhile.
    sign_in_timeout_s: float = 30.0
    # Failed SignIns (SIGN_IN_FAILURES) one connection may have; the last of them closes it.
    sign_in_failures_per_connection: int = 3
    # Frames read from one connection before the others get their turn (gateway.serve.adapter runs the next slice
    # on the reactor's next turn): one connection's burst delays the others by one slice at most.
    frames_per_slice: int = 64


# Events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestReceived:
    """A well-formed request the application must answer with `send_response(token, ...)`."""

    token: int
    request: pb.Request
    body: str  # the name of the Request.body field that is set


@dataclass(frozen=True)
class NeedData:
    """Nothing more until more bytes arrive."""


@dataclass(frozen=True)
class Paused:
    """The in-flight limit is reached (or the session is closing): stop reading the socket."""


@dataclass(frozen=True)
class SliceEnded:
    """`frames_per_slice` frames read since `start_slice`: let other connections run, then `start_slice` again."""


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed its side; `truncated` if it left half a frame behind."""

    truncated: bool = False


Event = RequestReceived | NeedData | Paused | SliceEnded | ConnectionClosed


@dataclass(slots=True)
class _InFlight:
    message_id: str
    body: str
    terminal_id: str
    # An interim frame (ApduScript) went out: the request waits for the terminal itself. It still counts against the
    # in-flight limit, but while one waits so the session reads on for the terminal's ApduResult.
    awaiting_terminal: bool = False


@dataclass(slots=True)  # one per connection, idle ones included: no instance dict
class Session:
    limits: SessionLimits = field(default_factory=SessionLimits)

    state: State = State.CONNECTED
    terminal_id: str | None = None
    # Why the session is closing: the status of the last frame it sends, for the operator's log.
    close_reason: str | None = None
    frames_received: int = field(default=0, init=False)
    sign_in_failures: int = field(default=0, init=False)
    _decoder: FrameDecoder = field(init=False, repr=False)
    # Answers waiting for data_to_send, which stamps them with its `now`: the moment they are written.
    _outgoing: list[pb.Response] = field(default_factory=list, init=False, repr=False)
    _in_flight: dict[int, _InFlight] = field(default_factory=dict, init=False, repr=False)
    _tokens: Iterator[int] = field(default_factory=lambda: itertools.count(1), init=False, repr=False)
    _peer_closed: bool = field(default=False, init=False, repr=False)
    _slice_left: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._decoder = FrameDecoder(self.limits.max_frame_bytes)
        self._slice_left = self.limits.frames_per_slice

    # Input ----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; b"" means the peer closed its side.

        While closing, bytes are read and dropped: unread bytes would make the kernel reset the
        connection and destroy the answer that explains the close.
        """
        if self.state is State.CLOSED:
            return
        if not data:
            self._peer_closed = True
        elif self.state in TAKES_REQUESTS:
            self._decoder.feed(data)

    def next_event(self) -> Event:
        while True:
            if self.state is State.CLOSED:
                return ConnectionClosed(truncated=False)
            if self.state not in TAKES_REQUESTS:
                return self._closed_by_peer() if self._peer_closed else Paused()
            if self.reading_paused:
                return Paused()
            if self._slice_left <= 0 and self._decoder.buffered_bytes > 0:
                return SliceEnded()
            try:
                frame = self._decoder.next_frame()
            except FrameTooLarge as exc:
                self._refuse_and_close(
                    Trigger.FRAME_TOO_LARGE,
                    pb.STATUS_CODE_FRAME_TOO_LARGE,
                    detail_en=f"{exc.declared_bytes} bytes declared, at most {exc.max_frame_bytes}",
                    detail_zh=f"报文长度{exc.declared_bytes}字节，上限{exc.max_frame_bytes}字节",
                )
                continue
            if frame is None:
                return self._closed_by_peer() if self._peer_closed else NeedData()
            self.frames_received += 1
            self._slice_left -= 1
            event = self._decode(frame)
            if event is not None:
                return event

    def _closed_by_peer(self) -> ConnectionClosed:
        truncated = self._decoder.buffered_bytes > 0
        self._move(Trigger.PEER_CLOSED)
        return ConnectionClosed(truncated=truncated)

    def _decode(self, frame: bytes) -> RequestReceived | None:
        try:
            request = pb.Request.FromString(frame)
        except DecodeError:
            self._refuse("", pb.STATUS_CODE_BAD_REQUEST, detail_en="undecodable protobuf", detail_zh="报文无法解析")
            return None
        message_id = request.message_id
        if not _is_token(message_id, MAX_MESSAGE_ID_CHARS):
            self._refuse(
                # Echo a bad id the terminal can still correlate; never a huge one.
                message_id if len(message_id) <= MAX_ECHOED_MESSAGE_ID_CHARS else "",
                pb.STATUS_CODE_BAD_REQUEST,
                detail_en=f"message_id must be 1 to {MAX_MESSAGE_ID_CHARS} printable ASCII characters",
                detail_zh=f"报文编号须为1至{MAX_MESSAGE_ID_CHARS}位可打印ASCII字符",
            )
            return None
        body = request.WhichOneof("body")
        if body is None:
            self._refuse(
                message_id,
                pb.STATUS_CODE_UNSUPPORTED_MESSAGE,
                detail_en="the request has no body this gateway knows",
                detail_zh="请求缺少交易内容或交易类型未知",
            )
            return None
        if not _is_token(request.terminal_id, MAX_TERMINAL_ID_CHARS):
            self._refuse(
                message_id,
                pb.STATUS_CODE_BAD_REQUEST,
                detail_en=f"terminal_id must be 1 to {MAX_TERMINAL_ID_CHARS} printable ASCII characters",
                detail_zh=f"终端编号须为1至{MAX_TERMINAL_ID_CHARS}位可打印ASCII字符",
            )
            return None
        if self.state is State.CONNECTED and body != "sign_in":
            self._refuse(message_id, pb.STATUS_CODE_NOT_SIGNED_IN)
            return None
        if body == "sign_in" and any(p.body == "sign_in" for p in self._in_flight.values()):
            self._refuse(message_id, pb.STATUS_CODE_BAD_REQUEST,
                         detail_en="a SignIn is already in progress on this connection: wait for its answer",
                         detail_zh="本连接已有签到正在处理，请等待其应答")
            return None
        if self.state is State.SIGNED_IN and request.terminal_id != self.terminal_id:
            self._refuse(message_id, pb.STATUS_CODE_TERMINAL_MISMATCH)
            return None
        if len(self._in_flight) >= self.limits.max_in_flight and body not in _READER_ANSWERS:
            # Read only because requests wait on the terminal's reader (reading_paused otherwise): their answers
            # must get in, and nothing more may be taken.
            self._refuse(message_id, pb.STATUS_CODE_TEMPORARILY_UNAVAILABLE,
                         detail_en=f"{len(self._in_flight)} requests of this connection are in flight, the most it "
                                   "may have, some waiting on its card reader: send it again once they are answered",
                         detail_zh=f"本连接已有{len(self._in_flight)}笔请求正在处理（已达上限），部分在等待终端读卡器，"
                                   "请在其应答后重新发送")
            return None
        token = next(self._tokens)
        self._in_flight[token] = _InFlight(message_id, body, request.terminal_id)
        return RequestReceived(token=token, request=request, body=body)

    # Output ---------------------------------------------------------------------------------

    def send_response(self, token: int, response: pb.Response) -> None:
        """The final answer to the request `token`; applies SignIn/SignOut outcomes to the state.

        The session owns `response` from here on: it sets the message id and, when written, the time.
        """
        pending = self._pending(token)
        # The state moves before the request leaves the books: an impossible answer changes nothing.
        if response.status == pb.STATUS_CODE_OK and pending.body == "sign_in":
            self._move(Trigger.SIGN_IN_ACCEPTED)
            if self.state is State.SIGNED_IN:
                self.terminal_id = pending.terminal_id
        elif response.status in SIGN_IN_FAILURES and pending.body == "sign_in":
            self._sign_in_failed(response)
        elif response.status == pb.STATUS_CODE_OK and pending.body == "sign_out":
            self._move(Trigger.SIGN_OUT_ACCEPTED, close_reason="signed out")
        self._finish(token)
        response.message_id = pending.message_id
        response.interim = False
        self._write(response)

    def send_interim(self, token: int, response: pb.Response) -> None:
        """A frame that does not finish request `token` (an ApduScript for the terminal's reader)."""
        pending = self._pending(token)
        pending.awaiting_terminal = True
        response.message_id = pending.message_id
        response.interim = True
        self._write(response)

    def terminal_answered(self, token: int) -> None:
        """The terminal answered request `token`'s interim frame: it no longer waits on the terminal's reader."""
        pending = self._in_flight.get(token)
        if pending is not None:
            pending.awaiting_terminal = False

    def discard(self, token: int) -> None:
        """Finish request `token` without an answer (an accepted ApduResult)."""
        self._pending(token)  # LocalProtocolError unless it is in flight
        self._finish(token)

    def data_to_send(self, now: float) -> bytes:
        """The frames to write, each stamped with `now` (the gateway's clock, POSIX seconds) as its server_time."""
        data = b"".join(self._encode(response, now) for response in self._outgoing)
        self._outgoing.clear()
        return data

    def start_slice(self) -> None:
        """The reactor turned: read up to frames_per_slice more frames."""
        self._slice_left = self.limits.frames_per_slice

    # Timers and limits ----------------------------------------------------------------------

    def sign_in_timed_out(self) -> bool:
        """The sign-in timer fired (sign_in_timeout_s after the connection opened). Returns True if the session now
        closes: it is not signed in, however busy it kept the gateway with frames refused meanwhile."""
        return self._refuse_and_close(Trigger.SIGN_IN_TIMEOUT, pb.STATUS_CODE_SIGN_IN_TIMEOUT)

    def idle_timed_out(self) -> bool:
        """The idle timer fired. Returns True if the session now closes.

        A connection waiting for its own answers is not idle.
        """
        if self._in_flight:
            return False
        return self._refuse_and_close(Trigger.IDLE_TIMEOUT, pb.STATUS_CODE_IDLE_TIMEOUT)

    def refuse_connection(self, status: int) -> None:
        """Answer a connection the gateway cannot take (e.g. at max_connections), then close."""
        self._refuse_and_close(Trigger.CONNECTION_REFUSED, status)

    def shut_down(self) -> None:
        """The gateway is stopping: finish what is in flight, then close."""
        self._move(Trigger.SHUTDOWN, close_reason="gateway shutting down")

    def connection_lost(self) -> None:
        """The transport is gone: frames not yet taken by data_to_send have nowhere to go."""
        self._move(Trigger.CONNECTION_LOST)
        self._outgoing.clear()

    # Queries --------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def wants_close(self) -> bool:
        """Close the transport once `data_to_send(now)` has been written."""
        return self.state is State.CLOSING and not self._in_flight

    @property
    def reading_paused(self) -> bool:
        """Every slot is taken and none waits on the terminal's reader: read nothing until an answer goes out."""
        return (self.state is not State.CLOSING and len(self._in_flight) >= self.limits.max_in_flight
                and not any(p.awaiting_terminal for p in self._in_flight.values()))

    def _sign_in_failed(self, response: pb.Response) -> None:
        self.sign_in_failures += 1
        limit = self.limits.sign_in_failures_per_connection
        if self.sign_in_failures < limit:
            return
        if next_state(self.state, Trigger.SIGN_IN_FAILED_TOO_OFTEN) is not self.state:
            # This answer is the connection's last frame: it says why.
            response.message_en += f" ({limit} failed sign-ins on this connection: it is closed)"
            response.message_zh += f"（本连接签到失败{limit}次，连接已关闭）"
        self._move(Trigger.SIGN_IN_FAILED_TOO_OFTEN, close_reason=f"{limit} failed sign-ins")

    # Internals ------------------------------------------------------------------------------

    def _refuse(self, message_id: str, status: int, *, detail_en: str | None = None,
                detail_zh: str | None = None) -> None:
        self._write(make_response(message_id, status, detail_en=detail_en, detail_zh=detail_zh))

    def _refuse_and_close(self, trigger: Trigger, status: int, *, detail_en: str | None = None,
                          detail_zh: str | None = None) -> bool:
        """Say why the session closes, then close; False if it was already closing (it said so then)."""
        if next_state(self.state, trigger) is self.state:
            return False
        # An empty message_id: the frame answers no particular request.
        self._refuse("", status, detail_en=detail_en, detail_zh=detail_zh)
        self._move(trigger, close_reason=status_name(status))
        return True

    def _move(self, trigger: Trigger, *, close_reason: str | None = None) -> None:
        """The only place the state changes: by the table of gateway.protocol.states, or ImpossibleTransition."""
        before = self.state
        self.state = next_state(before, trigger)
        if self.state is State.CLOSING and before is not State.CLOSING:
            self.close_reason = close_reason

    def _finish(self, token: int) -> None:
        del self._in_flight[token]
        if not self._in_flight:
            # A dict keeps its table when emptied by `del`; clear() gives it back: an idle connection keeps none.
            self._in_flight.clear()

    def _pending(self, token: int) -> _InFlight:
        pending = self._in_flight.get(token)
        if pending is None:
            raise LocalProtocolError(f"request {token} is not in flight: answered already, or never taken")
        return pending

    def _write(self, response: pb.Response) -> None:
        if self.state is not State.CLOSED:
            self._outgoing.append(response)

    def _encode(self, response: pb.Response, now: float) -> bytes:
        response.server_time.seconds = int(now)
        response.server_time.nanos = int((now % 1) * 1e9)
        payload = response.SerializeToString()
        if len(payload) > self.limits.max_frame_bytes:
            # Never send what the terminal is entitled to refuse; tell it what happened instead.
            fallback = make_response(
                response.message_id, pb.STATUS_CODE_INTERNAL_ERROR, detail_en="answer too large",
                detail_zh="应答报文过长",
            )
            fallback.server_time.CopyFrom(response.server_time)
            payload = fallback.SerializeToString()
        return encode_frame(payload)


def _is_token(value: str, max_chars: int) -> bool:
    """1..max_chars printable ASCII characters, no spaces."""
    return 0 < len(value) <= max_chars and _TOKEN.fullmatch(value) is not None


# Printable ASCII without the space, "!" to "~": one regular expression, not a test per character in Python.
_TOKEN = re.compile(r"[!-~]+")
