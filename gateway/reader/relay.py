"""The `terminal` backend: the card reader at a counter terminal, driven over its own connection.

The gateway sends an ApduScript (an interim Response to the request being served) and the terminal
answers with an ApduResult. One script per card read, one per PIN verification; each has a deadline.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from gateway.protocol.messages import pb
from gateway.protocol.responses import make_response
from gateway.reader.apdu import PinEntry
from gateway.reader.base import PIN_ENTRY_TIMEOUT_S, Presence, PresenceEvent, PresenceListener, no_pin_pad
from gateway.reader.errors import (
    CardProblem,
    CardRemoved,
    CardUnreadable,
    GatewayShuttingDown,
    NoCard,
    ReaderUnavailable,
)

MAX_SCRIPT_COMMANDS = 32


@dataclass
class _Pending:
    token: int
    commands: int
    stop_on_error: bool
    pin_entry: bool
    result: Deferred[list[bytes]]
    timer: Any


class ApduRelay:
    """One per terminal connection: the scripts out at the terminal and their answers."""

    # One per connection, idle ones included: no instance dict (BENCHMARKS.md, "What TLS costs").
    __slots__ = ("_clock", "_ids", "_listeners", "_pending", "_send_interim", "_terminal_answered", "card_present",
                 "name", "pin_pad", "stopped", "timeout_s")

    def __init__(
        self,
        *,
        send_interim: Callable[[int, pb.Response], None],
        terminal_answered: Callable[[int], None],
        clock: Any,
        timeout_s: float,
        name: str = "terminal",
    ) -> None:
        self._send_interim = send_interim
        self._terminal_answered = terminal_answered
        self._clock = clock
        self.timeout_s = timeout_s
        self.name = name
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._listeners: list[PresenceListener] = []
        self.card_present: bool | None = None  # unknown until the terminal reports a CardEvent
        # Announced in SignIn: the terminal's reader verifies PINs typed on its own pad (ApduScript.pin_entry).
        self.pin_pad = False
        # The gateway stops: the terminal's answers are no longer read (gateway.serve.adapter), so no script waits.
        self.stopped = False

    def reader_for(self, token: int) -> RelayReader:
        return RelayReader(self, token)

    def send(self, token: int, commands: Sequence[bytes], stop_on_error: bool,
             pin_entry: PinEntry | None = None) -> Deferred[list[bytes]]:
        if not 0 < len(commands) <= MAX_SCRIPT_COMMANDS:
            raise ValueError(f"a script has 1 to {MAX_SCRIPT_COMMANDS} commands")
        if pin_entry is not None and not self.pin_pad:
            raise ValueError("a PIN entry goes only to a terminal that signed in with a PIN pad")
        if self.stopped:
            return fail(_shutting_down())
        script_id = f"A{next(self._ids)}"
        result: Deferred[list[bytes]] = Deferred()
        # The holder's typing is part of the wait: the terminal's reader is told the same deadline.
        timeout_s = self.timeout_s + (PIN_ENTRY_TIMEOUT_S if pin_entry is not None else 0.0)
        timer = self._clock.callLater(timeout_s, self._timed_out, script_id, timeout_s)
        self._pending[script_id] = _Pending(token, len(commands), stop_on_error, pin_entry is not None, result, timer)
        interim = make_response("", pb.STATUS_CODE_OK)
        script = interim.apdu_script
        script.script_id = script_id
        script.commands.extend(commands)
        script.stop_on_error = stop_on_error
        script.timeout_ms = int(timeout_s * 1000)
        if pin_entry is not None:
            entry = script.pin_entry
            entry.template = pin_entry.template
            entry.pin_offset = pin_entry.pin_offset
            entry.min_digits = entry.max_digits = pin_entry.digits
            entry.format = pb.PIN_FORMAT_BCD
            entry.entry_timeout_s = int(PIN_ENTRY_TIMEOUT_S)
        self._send_interim(token, interim)
        return result

    def deliver(self, answer: pb.ApduResult) -> bool:
        """The terminal's ApduResult. False if no such script is outstanding (late or unknown)."""
        pending = self._pending.pop(answer.script_id, None)
        if pending is None:
            return False
        pending.timer.cancel()
        self._terminal_answered(pending.token)
        problem = self._problem(answer, pending)
        if problem is not None:
            pending.result.errback(problem)
        else:
            pending.result.callback([bytes(r) for r in answer.responses])
        return True

    def _problem(self, answer: pb.ApduResult, pending: _Pending) -> CardProblem | None:
        error = answer.error
        if error == pb.READER_ERROR_NO_CARD:
            return NoCard("no card in the terminal's reader", "终端读卡器中无卡")
        if error == pb.READER_ERROR_CARD_REMOVED:
            return CardRemoved("the card left the terminal's reader", "卡片已从终端读卡器拔出")
        if error == pb.READER_ERROR_READER_FAILURE:
            return ReaderUnavailable("the terminal's reader failed", "终端读卡器故障")
        if error != pb.READER_ERROR_UNSPECIFIED:
            return ReaderUnavailable(f"the terminal reported reader error {error}", "终端读卡器异常")
        count = len(answer.responses)
        steps = pending.commands + (1 if pending.pin_entry else 0)
        if count > steps or (not pending.stop_on_error and count != steps) or count == 0:
            return CardUnreadable(f"the terminal returned {count} responses to {steps} steps",
                                  "终端返回的APDU应答数量不符")
        if any(len(r) < 2 for r in answer.responses):
            return CardUnreadable("the terminal returned a response without a status word",
                                  "终端返回的APDU应答缺少状态字")
        if pending.pin_entry and count == steps and len(answer.responses[-1]) != 2:
            return CardUnreadable("the terminal's PIN pad returned more than a status word",
                                  "终端密码键盘的应答不只是状态字")
        return None

    def _timed_out(self, script_id: str, timeout_s: float) -> None:
        pending = self._pending.pop(script_id, None)
        if pending is None:
            return
        self._terminal_answered(pending.token)
        pending.result.errback(ReaderUnavailable(
            f"the terminal's reader did not answer within {timeout_s:g} s", "终端读卡器应答超时"))

    def card_event(self, kind: int, atr: bytes) -> None:
        presence = Presence.INSERTED if kind == pb.CARD_EVENT_KIND_INSERTED else Presence.REMOVED
        self.card_present = presence is Presence.INSERTED
        event = PresenceEvent(self.name, presence, atr if self.card_present else b"")
        for listener in list(self._listeners):
            listener(event)

    def subscribe(self, listener: PresenceListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def shut_down(self) -> int:
        """The gateway stops: every script out at the terminal, and any later one, ends its request with
        GATEWAY_SHUTTING_DOWN. How many requests were waiting."""
        self.stopped = True
        pending, self._pending = self._pending, {}
        for item in pending.values():
            item.timer.cancel()
            self._terminal_answered(item.token)
            item.result.errback(_shutting_down())
        return len(pending)

    def connection_lost(self) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            item.timer.cancel()
            item.result.errback(ReaderUnavailable("the terminal disconnected", "终端已断开连接"))

    @property
    def outstanding(self) -> int:
        return len(self._pending)


def _shutting_down() -> GatewayShuttingDown:
    return GatewayShuttingDown("it stopped while waiting for the terminal's reader", "等待终端读卡器时网关停止")


class RelayReader:
    """The CardReader for one request of one terminal: scripts go out as interim frames of that request."""

    def __init__(self, relay: ApduRelay, token: int) -> None:
        self._relay = relay
        self._token = token

    @property
    def name(self) -> str:
        return self._relay.name

    def transmit(self, commands: Sequence[bytes], *, stop_on_error: bool = False) -> Deferred[list[bytes]]:
        return self._relay.send(self._token, list(commands), stop_on_error)

    def transmit_with_pin_entry(self, commands: Sequence[bytes], entry: PinEntry) -> Deferred[list[bytes]]:
        if not self._relay.pin_pad:
            return no_pin_pad(self.name)
        return self._relay.send(self._token, list(commands), True, entry)

    def has_pin_pad(self) -> Deferred[bool]:
        return succeed(self._relay.pin_pad)

    def card_present(self) -> Deferred[bool]:
        # Only the terminal's CardEvents tell; when it never sent one, assume a card and let a read say.
        return succeed(self._relay.card_present is not False)

    def subscribe(self, listener: PresenceListener) -> Callable[[], None]:
        return self._relay.subscribe(listener)
