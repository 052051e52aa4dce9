"""Failed sign-ins, limited per terminal id and per peer address: a growing delay, then a temporary lock.

Sans-IO like the session: the time is an argument (seconds on whatever clock the caller keeps using), nothing
is read or written here. The request path asks `locked` before it verifies a credential, reports each outcome
(`failed`, `succeeded`) and sends a refusal only after the delay `failed` returns.

What the limits stop: a guesser gets at most `lock_after_failures` verified guesses per terminal id, and an
address at most `peer_lock_after_failures`, in any `lock_s` seconds (tests/test_throttle.py checks it for any
sequence of attempts), each answered after a delay that doubles from `delay_base_s` up to `delay_max_s`. A key's
failures are forgotten `lock_s` after its last one, which is also when a lock ends; memory is bounded by
`tracked_keys`, the key failed longest ago going first.

An unknown terminal id is a key like any other: locking does not tell a guesser which ids exist.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass


class SignInFailure(enum.Enum):
    """Why a SignIn failed: the few reasons the log, and a counter of them, name."""

    UNKNOWN_OR_WRONG = "unknown_or_wrong"  # an unknown terminal id and a wrong credential are one reason, one answer
    DISABLED = "disabled"  # the terminal or its institution is disabled (the credential was right)
    CERTIFICATE_MISMATCH = "certificate_mismatch"  # over TLS, another terminal's id than the certificate's
    LOCKED = "locked"  # refused unverified: the id or the address is locked
    TIMEOUT = "timeout"  # the connection did not sign in within sign_in_timeout_s


class Key(enum.Enum):
    """What a failure is counted against."""

    TERMINAL_ID = "terminal id"
    PEER = "address"


# Which failures are guesses, and what they are counted against. A certificate mismatch counts against the address
# alone: over TLS anyone with a certificate could otherwise lock another terminal's id. A refusal while locked counts
# nothing (it would only prolong the lock of the terminal being guessed).
COUNTED_AGAINST: dict[SignInFailure, tuple[Key, ...]] = {
    SignInFailure.UNKNOWN_OR_WRONG: (Key.TERMINAL_ID, Key.PEER),
    SignInFailure.CERTIFICATE_MISMATCH: (Key.PEER,),
}


@dataclass(frozen=True)
class ThrottleLimits:
    # Failed sign-ins for one terminal id, then it is locked for lock_s.
    lock_after_failures: int = 5
    # Failed sign-ins from one address (whatever the terminal ids), then it is locked for lock_s. Higher than the
    # id's: several terminals may share an address behind NAT.
    peer_lock_after_failures: int = 20
    # How long a lock lasts, and how long a key's failures are remembered after its last one.
    lock_s: float = 900.0
    # The first failure is answered after delay_base_s, each further one after twice the one before, at most
    # delay_max_s (a refusal while locked: delay_max_s).
    delay_base_s: float = 0.5
    delay_max_s: float = 8.0
    # Terminal ids and addresses whose failures are remembered at once.
    tracked_keys: int = 50_000


@dataclass(frozen=True)
class Locked:
    key: Key
    retry_after_s: float  # until the lock ends


@dataclass(frozen=True)
class Penalty:
    """What a failure costs: answer after `delay_s`; `now_locked` the keys this failure locked."""

    delay_s: float
    terminal_failures: int
    peer_failures: int
    now_locked: tuple[Key, ...] = ()


@dataclass
class _Entry:
    failures: int
    last_s: float
    locked: bool = False


class SignInThrottle:
    def __init__(self, limits: ThrottleLimits | None = None) -> None:
        self.limits = limits or ThrottleLimits()
        # Ordered by the last failure, oldest first: the order in which entries expire, and are evicted.
        self._entries: OrderedDict[tuple[Key, str], _Entry] = OrderedDict()

    def locked(self, terminal_id: str, peer: str, now: float) -> Locked | None:
        """The lock that refuses a SignIn for `terminal_id` from `peer` now, unverified; None: verify it."""
        for key, value in ((Key.TERMINAL_ID, terminal_id), (Key.PEER, peer)):
            entry = self._live((key, value), now)
            if entry is not None and entry.locked:
                return Locked(key, entry.last_s + self.limits.lock_s - now)
        return None

    def failed(self, terminal_id: str, peer: str, reason: SignInFailure, now: float) -> Penalty:
        """Count a failed SignIn; the refusal goes out after the penalty's delay."""
        self._expire(now)
        counted = COUNTED_AGAINST.get(reason, ())
        thresholds = {Key.TERMINAL_ID: self.limits.lock_after_failures, Key.PEER: self.limits.peer_lock_after_failures}
        now_locked = []
        for key in counted:
            value = terminal_id if key is Key.TERMINAL_ID else peer
            entry = self._live((key, value), now)
            if entry is None:
                entry = self._track((key, value), now)
            elif entry.locked:
                continue  # a guess verified while the lock began: the lock stands as it is, not prolonged
            else:
                entry.failures += 1
                entry.last_s = now
                self._entries.move_to_end((key, value))
            if entry.failures >= thresholds[key]:
                entry.locked = True
                now_locked.append(key)
        terminal = self._failures((Key.TERMINAL_ID, terminal_id), now)
        address = self._failures((Key.PEER, peer), now)
        delay = self.limits.delay_max_s if reason is SignInFailure.LOCKED else self.delay_for(max(terminal, address))
        return Penalty(delay, terminal, address, tuple(now_locked))

    def succeeded(self, terminal_id: str) -> None:
        """The terminal signed in: its id's failures are forgotten (the address's are not: a guesser with one valid
        credential would clear its own count)."""
        self._entries.pop((Key.TERMINAL_ID, terminal_id), None)

    def delay_for(self, failures: int) -> float:
        """The delay before the refusal of the `failures`-th failure in a row."""
        if failures <= 0:
            return 0.0
        # The exponent is capped first: 2**failures of a huge count is a needless big integer.
        doublings = min(failures - 1, 64)
        return float(min(self.limits.delay_base_s * 2 ** doublings, self.limits.delay_max_s))

    @property
    def tracked(self) -> int:
        return len(self._entries)

    def _failures(self, key: tuple[Key, str], now: float) -> int:
        entry = self._live(key, now)
        return entry.failures if entry is not None else 0

    def _live(self, key: tuple[Key, str], now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last_s >= self.limits.lock_s:
            del self._entries[key]
            return None
        return entry

    def _track(self, key: tuple[Key, str], now: float) -> _Entry:
        while len(self._entries) >= self.limits.tracked_keys:
            self._entries.popitem(last=False)
        entry = self._entries[key] = _Entry(failures=1, last_s=now)
        return entry

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.last_s < self.limits.lock_s:
                return
            del self._entries[key]
