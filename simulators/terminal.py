"""A simulated counter terminal: one TCP connection at a time, requests correlated by message id, and a card
reader that answers the gateway's ApduScripts with whatever virtual card is inserted.

It keeps the money requests (Settle, Revoke, Reverse) it sent and has no answer to: after a lost connection it
connects again (the same object; message ids go on from where they were) and their outcomes are found out
(simulators.scenarios.resolve_unanswered)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from gateway.protocol.framing import FrameDecoder, encode_frame
from gateway.protocol.messages import pb
from gateway.reader.apdu import PinEntry

MAX_FRAME_BYTES = 1 << 20

# Called with (message type, seconds from the intended send to the answer, status).
LatencyRecorder = Callable[[str, float, int], None]


# Requests that may change the ledger: without their answer, their outcome is unknown (docs/protocol.md 2.6).
MONEY_BODIES = frozenset({"settle", "revoke", "reverse"})


class TerminalGone(Exception):
    """The connection closed before the answer came."""


@dataclass
class Unanswered:
    """A money request sent whose outcome this terminal does not know."""

    body: str
    fields: dict[str, Any]
    scenario: str
    recorded: bool = False  # written to the outcomes as NO_ANSWER


class SimTerminal(Protocol):
    transport: Any  # zope interfaces: typed loosely on purpose

    def __init__(self, terminal_id: str, credential: str, prefix: str, record: LatencyRecorder, *,
                 pin_pad: bool = False) -> None:
        self.terminal_id = terminal_id
        # A PIN pad at the reader (announced in SignIn): the holder types `typed_pin` there at each PIN entry.
        self.pin_pad = pin_pad
        self.typed_pin = ""
        self.credential = credential
        self.prefix = prefix  # makes this connection's message ids unique among all runs and connections
        self.record = record
        self.card: Any = None  # what is in this terminal's reader (gateway.demo.card.VirtualCard)
        self._decoder = FrameDecoder(MAX_FRAME_BYTES)
        self._pending: dict[str, tuple[Deferred[pb.Response], str, float]] = {}
        self._sequence = itertools.count(1)
        self.closed = False
        self.scripts_answered = 0
        self.unanswered: dict[str, Unanswered] = {}  # by message id
        self.scenario = ""  # the scenario running: named in what is recorded of its unanswered requests
        self.connections_lost = 0  # not counting the ones this terminal closed itself
        self._hanging_up = False
        self._on_closed: list[Deferred[None]] = []
        # How late the current scenario started after its intended time (open loop): each request is timed from
        # when it would have been sent on schedule, its actual send less this (as wrk2 does).
        self.lag_s = 0.0

    def next_message_id(self) -> str:
        return f"{self.prefix}-{next(self._sequence)}"

    # Protocol --------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        # Also a reconnection: a new session, which knows no card read before (the clerk inserts it again).
        self._decoder = FrameDecoder(MAX_FRAME_BYTES)
        self.closed = False
        self._hanging_up = False
        self.card = None

    def dataReceived(self, data: bytes) -> None:
        self._decoder.feed(data)
        while (payload := self._decoder.next_frame()) is not None:
            self._received(pb.Response.FromString(payload))

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]
        self.closed = True
        if not self._hanging_up:
            self.connections_lost += 1
        pending, self._pending = self._pending, {}
        for answer, _, _ in pending.values():
            answer.errback(TerminalGone(str(reason.value) if reason is not None else "closed"))
        waiting, self._on_closed = self._on_closed, []
        for closed in waiting:
            closed.callback(None)

    # Requests --------------------------------------------------------------------------------

    def call(self, body: str, message_id: str | None = None, /, **fields: Any) -> Deferred[pb.Response]:
        request = self.build(body, message_id, **fields)
        answer: Deferred[pb.Response] = Deferred()
        if self.closed:
            answer.errback(TerminalGone("not connected"))
            return answer
        self._pending[request.message_id] = (answer, body, time.perf_counter() - self.lag_s)  # its intended send
        self._sent(body, request.message_id, fields)
        self.transport.write(encode_frame(request.SerializeToString()))
        return answer

    def send_and_forget(self, body: str, message_id: str, /, **fields: Any) -> None:
        """Send a request and stop waiting for it: a terminal whose timeout fired."""
        if self.closed:
            raise TerminalGone("not connected")
        request = self.build(body, message_id, **fields)
        self._sent(body, message_id, fields)
        self.transport.write(encode_frame(request.SerializeToString()))

    def _sent(self, body: str, message_id: str, fields: dict[str, Any]) -> None:
        if body in MONEY_BODIES:
            # A retry of an unanswered request keeps what was known of the first sending. Not the PIN: a Settle
            # is looked up afterwards, never sent again, and a PIN is kept nowhere.
            kept = {name: value for name, value in fields.items() if name != "pin"}
            self.unanswered.setdefault(message_id, Unanswered(body, kept, self.scenario))

    def hang_up(self) -> Deferred[None]:
        """Close the connection (this terminal's choice, not a lost connection); fires once it is closed."""
        closed: Deferred[None] = Deferred()
        if self.closed or self.transport is None:
            closed.callback(None)
            return closed
        self._hanging_up = True
        self._on_closed.append(closed)
        self.transport.loseConnection()
        return closed

    def build(self, body: str, message_id: str | None, /, **fields: Any) -> pb.Request:
        request = pb.Request(terminal_id=self.terminal_id, message_id=message_id or self.next_message_id())
        request.send_time.GetCurrentTime()
        target = getattr(request, body)
        target.SetInParent()
        if body == "sign_in" and self.pin_pad:
            request.sign_in.pin_pad = True
        for name, value in fields.items():
            if isinstance(value, list):
                getattr(target, name).extend(value)
            else:
                setattr(target, name, value)
        return request

    def _received(self, response: pb.Response) -> None:
        if response.interim and response.HasField("apdu_script"):
            self._run_script(response.apdu_script)
            return
        entry = self._pending.pop(response.message_id, None)
        if entry is None:
            return  # the answer to a request this terminal gave up on
        answer, body, intended = entry
        # After STATUS_CODE_INTERNAL_ERROR the outcome is still unknown (docs/protocol.md 2.6, rule 4).
        if body in MONEY_BODIES and response.status != pb.STATUS_CODE_INTERNAL_ERROR:
            self.unanswered.pop(response.message_id, None)
            if body == "reverse" and response.status == pb.STATUS_CODE_OK:
                self.unanswered.pop(response.reverse.original_message_id, None)  # it does not take effect
        self.record(body, time.perf_counter() - intended, response.status)
        answer.callback(response)

    def _run_script(self, script: pb.ApduScript) -> None:
        """The terminal's own card reader runs the gateway's APDUs on the inserted card."""
        result = pb.ApduResult(script_id=script.script_id)
        if self.card is None:
            result.error = pb.READER_ERROR_NO_CARD
        else:
            stopped = False
            for command in script.commands:
                response = self.card.transmit(command)
                result.responses.append(response)
                if script.stop_on_error and not (response[-2:] == b"\x90\x00" or response[-2] == 0x61):
                    stopped = True
                    break
            if script.HasField("pin_entry") and not stopped:
                # The pad types the holder's PIN into this terminal's own card: only the status word goes back.
                entry = PinEntry(script.pin_entry.template, script.pin_entry.pin_offset, script.pin_entry.max_digits)
                result.responses.append(self.card.verify_on_pad(entry, self.typed_pin))
        self.scripts_answered += 1
        request = pb.Request(terminal_id=self.terminal_id, message_id=self.next_message_id(), apdu_result=result)
        request.send_time.GetCurrentTime()
        self.transport.write(encode_frame(request.SerializeToString()))

    # The card reader ---------------------------------------------------------------------------

    def insert(self, card: Any) -> Deferred[pb.Response]:
        self.card = card
        card.power_on()
        return self.call("card_event", kind=pb.CARD_EVENT_KIND_INSERTED, atr=card.atr)

    def remove(self) -> Deferred[pb.Response]:
        self.card = None
        return self.call("card_event", kind=pb.CARD_EVENT_KIND_REMOVED)
