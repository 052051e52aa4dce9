"""The reader interface every backend implements (PC/SC, the terminal's own reader, virtual)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred, fail

from gateway.reader.apdu import PinEntry
from gateway.reader.errors import ReaderUnavailable

# How long a holder has to type the PIN on a pad; a script with a PIN entry waits this much longer.
PIN_ENTRY_TIMEOUT_S = 30.0


class Presence(enum.Enum):
    INSERTED = "inserted"
    REMOVED = "removed"


@dataclass(frozen=True)
class PresenceEvent:
    reader: str
    presence: Presence
    atr: bytes = b""


PresenceListener = Callable[[PresenceEvent], None]


class CardReader(Protocol):
    """One card slot. All methods are asynchronous and never block the reactor.

    `transmit` runs the command APDUs in order against the card, as one exclusive unit, and fires
    with the raw response APDUs (data + SW1 SW2). With `stop_on_error` it stops after the first
    response whose status word is neither 9000 nor 61xx, returning fewer responses than commands.
    It fails with a `gateway.reader.errors.CardProblem` (NoCard, CardRemoved, ReaderUnavailable).
    """

    @property
    def name(self) -> str: ...

    def transmit(self, commands: Sequence[bytes], *, stop_on_error: bool = False) -> Deferred[list[bytes]]: ...

    def transmit_with_pin_entry(self, commands: Sequence[bytes], entry: PinEntry) -> Deferred[list[bytes]]:
        """`transmit(commands, stop_on_error=True)`, then, unless the script stopped, the reader's PIN pad: the holder
        types the PIN, the reader sends `entry` with it written in, and the card's status word (2 bytes) is the last
        response. The PIN never leaves the reader. Fails with ReaderUnavailable where `has_pin_pad` is false."""
        ...

    def has_pin_pad(self) -> Deferred[bool]:
        """Whether `transmit_with_pin_entry` can be used (secure PIN entry on the reader's own pad)."""
        ...

    def card_present(self) -> Deferred[bool]: ...

    def subscribe(self, listener: PresenceListener) -> Callable[[], None]:
        """Call `listener` on the reactor thread for each insertion and removal; returns an unsubscribe."""
        ...


def no_pin_pad(reader: str) -> Deferred[list[bytes]]:
    return fail(ReaderUnavailable(f"reader {reader} has no PIN pad", f"读卡器{reader}没有密码键盘"))


def continues_script(response: bytes) -> bool:
    """What `stop_on_error` treats as success: 9000 and 61xx."""
    return len(response) >= 2 and (response[-2:] == b"\x90\x00" or response[-2] == 0x61)
