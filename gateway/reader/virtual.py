"""The `virtual` backend: in-process virtual cards, for development, the demo and tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from twisted.internet.defer import Deferred, fail, succeed

from gateway.reader.apdu import PinEntry
from gateway.reader.base import Presence, PresenceEvent, PresenceListener, continues_script, no_pin_pad
from gateway.reader.errors import NoCard


class SimulatedCard(Protocol):
    """What a virtual card offers (gateway.demo.card.VirtualCard)."""

    atr: bytes

    def power_on(self) -> bytes: ...

    def transmit(self, command: bytes) -> bytes: ...


class VirtualReader:
    """A reader slot holding at most one simulated card. Answers at once, on the calling thread."""

    def __init__(self, name: str, card: SimulatedCard | None = None) -> None:
        self._name = name
        self._card = card
        self._listeners: list[PresenceListener] = []
        if card is not None:
            card.power_on()

    @property
    def name(self) -> str:
        return self._name

    @property
    def card(self) -> SimulatedCard | None:
        return self._card

    def insert(self, card: SimulatedCard) -> None:
        if self._card is not None:
            self.remove()
        self._card = card
        atr = card.power_on()
        self._notify(PresenceEvent(self._name, Presence.INSERTED, atr))

    def remove(self) -> None:
        if self._card is None:
            return
        self._card = None
        self._notify(PresenceEvent(self._name, Presence.REMOVED))

    def transmit(self, commands: Sequence[bytes], *, stop_on_error: bool = False) -> Deferred[list[bytes]]:
        card = self._card
        if card is None:
            return fail(NoCard(f"no card in reader {self._name}", f"读卡器{self._name}中无卡"))
        responses = []
        for command in commands:
            response = card.transmit(command)
            responses.append(response)
            if stop_on_error and not continues_script(response):
                break
        return succeed(responses)

    def transmit_with_pin_entry(self, commands: Sequence[bytes], entry: PinEntry) -> Deferred[list[bytes]]:
        return no_pin_pad(self._name)

    def has_pin_pad(self) -> Deferred[bool]:
        # An in-process slot has no holder to type on a pad; a simulated terminal's pad is simulators.terminal.
        return succeed(False)

    def card_present(self) -> Deferred[bool]:
        return succeed(self._card is not None)

    def subscribe(self, listener: PresenceListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self, event: PresenceEvent) -> None:
        for listener in list(self._listeners):
            listener(event)
