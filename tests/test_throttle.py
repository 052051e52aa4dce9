"""Failed sign-ins per terminal id and per address: the growing delay, the lock, forgetting, bounded memory.

The throttle is pure (gateway.protocol.throttle): these tests drive it with a clock of their own.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol.throttle import (
    Key,
    Locked,
    SignInFailure,
    SignInThrottle,
    ThrottleLimits,
)

WRONG = SignInFailure.UNKNOWN_OR_WRONG
LIMITS = ThrottleLimits(lock_after_failures=5, peer_lock_after_failures=20, lock_s=900.0, delay_base_s=0.5,
                        delay_max_s=8.0, tracked_keys=1000)


def throttle(**limits: float) -> SignInThrottle:
    return SignInThrottle(ThrottleLimits(**{**LIMITS.__dict__, **limits}))  # type: ignore[arg-type]


@pytest.mark.parametrize(("failures", "delay_s"), [
    (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (50, 8.0), (10**6, 8.0),
])
def test_the_delay_doubles_from_the_base_up_to_the_cap(failures: int, delay_s: float) -> None:
    assert SignInThrottle(LIMITS).delay_for(failures) == delay_s


def test_wrong_credentials_are_answered_ever_later_then_the_terminal_id_locks() -> None:
    machine = SignInThrottle(LIMITS)
    seen = []
    for n in range(5):
        assert machine.locked("T1", "10.0.0.1", now=n) is None
        penalty = machine.failed("T1", "10.0.0.1", WRONG, now=n)
        seen.append((penalty.delay_s, penalty.terminal_failures, penalty.now_locked))
    assert seen == [(0.5, 1, ()), (1.0, 2, ()), (2.0, 3, ()), (4.0, 4, ()), (8.0, 5, (Key.TERMINAL_ID,))]
    # Locked from any address, the right credential or not: the lock is asked before anything is verified.
    assert machine.locked("T1", "10.0.0.9", now=10) == Locked(Key.TERMINAL_ID, 894.0)
    # Another terminal id from the same address is not locked (the address has 5 of its 20).
    assert machine.locked("T2", "10.0.0.1", now=10) is None


def test_the_lock_ends_lock_s_after_the_failure_that_set_it_and_the_count_starts_again() -> None:
    machine = SignInThrottle(LIMITS)
    for n in range(5):
        machine.failed("T1", "10.0.0.1", WRONG, now=n)
    assert machine.locked("T1", "10.0.0.1", now=903.9) is not None
    assert machine.locked("T1", "10.0.0.1", now=904.0) is None
    assert machine.failed("T1", "10.0.0.1", WRONG, now=904.0).delay_s == 0.5


def test_a_refusal_while_locked_counts_nothing_and_does_not_prolong_the_lock() -> None:
    machine = SignInThrottle(LIMITS)
    for n in range(5):
        machine.failed("T1", "10.0.0.1", WRONG, now=n)
    # A guess whose verification began before the lock, and refusals of the lock itself.
    assert machine.failed("T1", "10.0.0.1", WRONG, now=500).now_locked == ()
    assert machine.failed("T1", "10.0.0.1", SignInFailure.LOCKED, now=600).delay_s == 8.0
    assert machine.locked("T1", "10.0.0.1", now=904.0) is None


def test_failures_are_forgotten_lock_s_after_the_last_one() -> None:
    machine = SignInThrottle(LIMITS)
    for n in range(4):
        machine.failed("T1", "10.0.0.1", WRONG, now=n * 800.0)  # each within lock_s of the one before: counted on
    assert machine.failed("T1", "10.0.0.1", WRONG, now=3200.0).now_locked == (Key.TERMINAL_ID,)
    other = SignInThrottle(LIMITS)
    other.failed("T1", "10.0.0.1", WRONG, now=0.0)
    assert other.failed("T1", "10.0.0.1", WRONG, now=900.0).terminal_failures == 1  # forgotten: a first failure


def test_a_success_forgets_the_terminal_ids_failures_but_not_the_addresss() -> None:
    machine = SignInThrottle(LIMITS)
    for n in range(4):
        machine.failed("T1", "10.0.0.1", WRONG, now=n)
    machine.succeeded("T1")
    penalty = machine.failed("T1", "10.0.0.1", WRONG, now=5)
    assert (penalty.terminal_failures, penalty.peer_failures) == (1, 5)
    # The delay follows the worse of the two counts: a guesser that signs in with a credential of its own between
    # guesses gains nothing.
    assert penalty.delay_s == 8.0


def test_an_address_guessing_many_terminal_ids_is_locked_at_its_own_limit() -> None:
    machine = SignInThrottle(LIMITS)
    for n in range(19):
        assert machine.failed(f"T{n}", "10.0.0.1", WRONG, now=n).now_locked == ()
    assert machine.failed("T19", "10.0.0.1", WRONG, now=19).now_locked == (Key.PEER,)
    assert machine.locked("T-never-tried", "10.0.0.1", now=20) == Locked(Key.PEER, 899.0)
    assert machine.locked("T-never-tried", "10.0.0.2", now=20) is None


FAILURES = [
    # reason, counted against the terminal id, counted against the address
    (SignInFailure.UNKNOWN_OR_WRONG, 1, 1),
    (SignInFailure.CERTIFICATE_MISMATCH, 0, 1),  # anyone with a certificate could otherwise lock another's id
    (SignInFailure.LOCKED, 0, 0),
    (SignInFailure.DISABLED, 0, 0),  # the credential was right: not a guess
    (SignInFailure.TIMEOUT, 0, 0),
]


@pytest.mark.parametrize(("reason", "terminal", "address"), FAILURES, ids=[r[0].value for r in FAILURES])
def test_what_each_failure_counts_against(reason: SignInFailure, terminal: int, address: int) -> None:
    penalty = SignInThrottle(LIMITS).failed("T1", "10.0.0.1", reason, now=0)
    assert (penalty.terminal_failures, penalty.peer_failures) == (terminal, address)


def test_memory_is_bounded_and_the_key_failed_longest_ago_goes_first() -> None:
    machine = throttle(tracked_keys=10)
    for n in range(100):
        machine.failed(f"T{n}", f"10.0.{n}.1", WRONG, now=n)
        assert machine.tracked <= 10
    assert machine.failed("T99", "10.0.99.1", WRONG, now=100).terminal_failures == 2  # still tracked
    assert machine.failed("T0", "10.0.0.1", WRONG, now=101).terminal_failures == 1  # evicted long ago


def test_a_key_that_failed_again_is_kept_over_one_that_failed_longer_ago() -> None:
    machine = throttle(tracked_keys=4, peer_lock_after_failures=100)
    for n, terminal_id in enumerate(["T0", "T1", "T2", "T0", "T3"]):  # keys: the address, T0, T1, T2; then T3
        machine.failed(terminal_id, "10.0.0.1", WRONG, now=n)
    assert machine.failed("T0", "10.0.0.1", WRONG, now=10).terminal_failures == 3
    assert machine.failed("T1", "10.0.0.1", WRONG, now=11).terminal_failures == 1  # T1 went first


def test_expired_keys_leave_memory_without_being_asked_about() -> None:
    machine = SignInThrottle(LIMITS)
    for n in range(100):
        machine.failed(f"T{n}", f"10.0.{n}.1", WRONG, now=n)
    machine.failed("T-late", "10.9.9.9", WRONG, now=2000)
    assert machine.tracked == 2


# Invariants, for any sequence of attempts -----------------------------------------------------------------------

attempts = st.lists(st.tuples(
    st.floats(min_value=0, max_value=400, allow_nan=False),  # time since the attempt before
    st.sampled_from(["T1", "T2", "T3"]),
    st.sampled_from(["10.0.0.1", "10.0.0.2"]),
    st.booleans(),  # the right credential
), max_size=120)


@settings(max_examples=300, deadline=None)
@given(attempts)
def test_no_window_of_lock_s_holds_more_verified_guesses_than_the_limits(
        sequence: list[tuple[float, str, str, bool]]) -> None:
    """Whatever the order and timing of attempts: per terminal id at most lock_after_failures failed verifications,
    per address at most peer_lock_after_failures, in any half-open window of lock_s seconds."""
    limits = ThrottleLimits(lock_after_failures=3, peer_lock_after_failures=5, lock_s=900.0)
    machine = SignInThrottle(limits)
    now = 0.0
    verified_failures: list[tuple[float, str, str]] = []
    # Per terminal id, its verified failures between two successes (a success forgets the id's count).
    runs: dict[str, list[list[float]]] = {}
    for gap, terminal_id, peer, right in sequence:
        now += gap
        if machine.locked(terminal_id, peer, now) is not None:
            machine.failed(terminal_id, peer, SignInFailure.LOCKED, now)
        elif right:
            machine.succeeded(terminal_id)
            runs.setdefault(terminal_id, [[]]).append([])
        else:
            verified_failures.append((now, terminal_id, peer))
            runs.setdefault(terminal_id, [[]])[-1].append(now)
            penalty = machine.failed(terminal_id, peer, WRONG, now)
            assert 0 < penalty.delay_s <= limits.delay_max_s
    for start, _, _ in verified_failures:
        window = [p for t, _, p in verified_failures if start <= t < start + limits.lock_s]
        assert max(window.count(peer) for peer in window) <= limits.peer_lock_after_failures
    for run in (run for id_runs in runs.values() for run in id_runs):
        for start in run:
            assert sum(1 for t in run if start <= t < start + limits.lock_s) <= limits.lock_after_failures


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=60))
def test_the_delay_never_shrinks_as_failures_grow_and_never_passes_the_cap(counts: list[int]) -> None:
    machine = SignInThrottle(LIMITS)
    for a, b in zip(sorted(counts), sorted(counts)[1:], strict=False):
        assert machine.delay_for(a) <= machine.delay_for(b) <= LIMITS.delay_max_s
