"""The ledger's one writer: group commit on a thread of its own.

Intents queue up while a batch commits and go together in the next one, so durable settlements per
second are not bounded by one fsync each. Each intent's outcome (gateway.ledger.outcomes) is released
only after its batch's commit returned: a settlement is never answered before it is durable. A batch
that fails as a whole is split up, so one bad intent never fails its batch-mates.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.db.engine import IMMEDIATE_OPTION
from gateway.ledger.accounts import AccountSpec
from gateway.ledger.batch import Batch, RefMaker, RegistryChange, new_ref
from gateway.ledger.intents import Intent
from gateway.ledger.outcomes import Outcome, Refused
from gateway.ledger.sql import data_version
from gateway.ledger.state import KnownState
from gateway.ops.logs import error_line
from gateway.ops.metrics import GatewayMetrics
from gateway.protocol.status import StatusCode
from gateway.settlement.calendar import utc_now
from gateway.settlement.policy import PolicyBook

log = Logger(namespace="gateway.ledger")

# PostgreSQL: deadlock_detected, serialization_failure — the batch is simply run again.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})

_BUSY = Refused(StatusCode.STATUS_CODE_TEMPORARILY_UNAVAILABLE, "the ledger is busy", "账务处理繁忙")
_UNAVAILABLE = Refused(StatusCode.STATUS_CODE_TEMPORARILY_UNAVAILABLE, "the ledger database cannot be reached",
                       "账务数据库暂时不可用")
_INTERNAL = Refused(StatusCode.STATUS_CODE_INTERNAL_ERROR, "the ledger could not record this", "账务记录失败")


@dataclass(frozen=True)
class WriterLimits:
    max_batch: int = 200          # intents in one transaction
    max_queue: int = 20_000       # intents waiting; beyond it requests are refused "retry"
    retry_attempts: int = 3       # a batch that met a deadlock or a serialization failure is run again
    known_accounts: int = 200_000  # account codes remembered as existing (then forgotten, and looked up again)
    known_holders: int = 20_000   # holders whose committed state is kept for the next batch (SQLite; then forgotten)
    # SQLite shared by the writers of several processes (gateway serve --processes): each waits its turn at a lock
    # file beside the database (WriteTurn) this long at most, then goes on to SQLite's own lock. None: no turn.
    write_turn_wait_ms: int | None = None


# How often a writer waiting for its turn tries again: SQLite's own busy handler sleeps 1 ms, then 2, 5, ... up to
# 100 ms between tries, so a waiting writer often wakes long after the other committed (or finds it locked again).
WRITE_TURN_POLL_S = 0.0005


class WriteTurn:
    """The turns of the ledger writers of several processes on one SQLite file: an exclusive flock on
    DATABASE-writer.lock, held from before BEGIN IMMEDIATE to after the COMMIT. It only orders the writers; SQLite's
    lock still guards the data, so a writer that waited `wait_s` without its turn goes on without it (and meets
    database.busy_timeout_ms there). The kernel drops the lock of a process that dies."""

    def __init__(self, path: Path, wait_s: float) -> None:
        self.path = path
        self._wait_s = wait_s
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.waited_s = 0.0    # in all, for the benchmark and the tests
        self.missed = 0        # turns given up after wait_s

    def take(self) -> bool:
        began = time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    if time.monotonic() - began >= self._wait_s:
                        self.missed += 1
                        return False
                    time.sleep(WRITE_TURN_POLL_S)
        finally:
            self.waited_s += time.monotonic() - began

    def give_back(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class LedgerWriter:
    def __init__(self, engine: Engine, policies: PolicyBook, call_from_thread: Callable[..., Any],
                 limits: WriterLimits = WriterLimits(), *, now: Callable[[], datetime] = utc_now,
                 make_ref: RefMaker = new_ref, metrics: GatewayMetrics | None = None) -> None:
        """`now` and `make_ref` go to every batch: the clock of what the ledger books on its own and the maker of
        transaction ids (real by default; a test's fixed time and deterministic ids). `metrics`, when given,
        records each batch's size and commit time."""
        self._engine = engine
        self._policies = policies
        self._now = now
        self._make_ref = make_ref
        self._call_from_thread = call_from_thread
        self.limits = limits
        self._queue: queue.Queue[tuple[Intent, Deferred[Outcome]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._known_accounts: set[str] = set()  # committed; touched only by the thread that writes
        # Each holder's two account specs (gateway.ledger.accounts), made from the person id alone, kept for the next
        # batches rather than made again for every one: up to `known_holders`, then forgotten. Writer thread only.
        self._holder_accounts: dict[int, tuple[AccountSpec, AccountSpec]] = {}
        # What the last commit left, for the next batch where nobody else wrote since (gateway.ledger.state); with
        # the one connection it was read on, as SQLite's data_version is per connection. Writer thread only.
        self._known: KnownState | None = None
        self._connection: Connection | None = None
        self._keeps_connection = engine.dialect.name == "sqlite"
        database = engine.url.database
        self.turn = (WriteTurn(Path(f"{database}-writer.lock"), limits.write_turn_wait_ms / 1000)
                     if limits.write_turn_wait_ms is not None and self._keeps_connection and database
                     and database != ":memory:" else None)
        # Called (on the reactor's thread, before the batch's answers) after a commit that changed registry rows
        # (a card's first use), with what it changed.
        self.on_registry_write: Callable[[RegistryChange], None] | None = None
        # Intents taken and not yet answered, and answered so far (on the reactor's thread): a shutdown waits for
        # the former and counts the latter.
        self.in_hand = 0
        self.answered = 0
        self._idle: list[Deferred[None]] = []
        self.metrics = metrics
        # What /readyz reads (gateway.serve.health), written by the writer's thread alone (time.monotonic()):
        # since when the batch in hand is being written (None while idle), and the last commit and the last
        # batch that found the database unreachable.
        self.busy_since: float | None = None
        self.last_commit: float | None = None
        self.last_unavailable: float | None = None

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish what is queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.close()
            if self.turn is not None:
                self.turn.close()
                self.turn = None

    def close(self) -> None:
        """Give back the connection the writer keeps (SQLite), forgetting what it knew on it."""
        self._known = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def submit(self, intent: Intent) -> Deferred[Outcome]:
        """The intent's outcome, fired on the reactor's thread once its batch committed."""
        answer: Deferred[Outcome] = Deferred()
        if self._queue.qsize() >= self.limits.max_queue:
            answer.callback(_BUSY)
            return answer
        self.in_hand += 1
        answer.addBoth(self._answered)
        self._queue.put((intent, answer))
        return answer

    def idle(self) -> Deferred[None]:
        """Fires once every intent taken so far is answered (at once when none is in hand)."""
        waiting: Deferred[None] = Deferred()
        if self.in_hand == 0:
            waiting.callback(None)
        else:
            self._idle.append(waiting)
        return waiting

    def _answered(self, outcome: Any) -> Any:
        self.in_hand -= 1
        self.answered += 1
        if self.in_hand == 0:
            waiting, self._idle = self._idle, []
            for idle in waiting:
                idle.callback(None)
        return outcome

    # The writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            self.busy_since = time.monotonic()
            # Sharing the ledger with other processes' writers: the turn first, and then the batch, so that what
            # arrived while the others wrote joins it (fewer, larger commits under contention).
            turn = self.turn.take() if self.turn is not None else False
            try:
                batch = [first]
                while len(batch) < self.limits.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                outcomes = self.write([intent for intent, _ in batch], turn_taken=True)
            finally:
                if turn and self.turn is not None:
                    self.turn.give_back()
            self.busy_since = None
            # One call into the reactor per batch, not per intent: each call wakes the reactor (a write to its
            # waker) and takes its queue's lock.
            self._call_from_thread(_answer_all, [(answer, outcome) for (_, answer), outcome
                                                 in zip(batch, outcomes, strict=True)])

    def write(self, intents: Sequence[Intent], *, turn_taken: bool = False) -> list[Outcome]:
        """Decide and commit `intents` in one transaction (blocking); their outcomes, in order. `turn_taken`: the
        caller waited for the writers' turn (WriteTurn) already."""
        for attempt in range(1, self.limits.retry_attempts + 1):
            turn = self.turn.take() if self.turn is not None and not turn_taken else False
            try:
                began = time.perf_counter()
                conn = self._connect()
                try:
                    with conn.begin():
                        # Taken with the write lock (BEGIN IMMEDIATE): until the commit nobody else writes, so the
                        # state known is still the database's if nobody wrote since the commit that left it.
                        version = data_version(conn)
                        known = self._known if self._known is not None and self._known.version == version else None
                        batch = Batch(conn, self._policies, self._known_accounts, now=self._now,
                                      make_ref=self._make_ref, known=known, holder_accounts=self._holder_accounts)
                        outcomes = batch.run(intents)
                finally:
                    if conn is not self._connection:
                        conn.close()
                self._committed(len(intents), time.perf_counter() - began)
                self._remember(batch, known, version)
                if batch.registry_change is not None and self.on_registry_write is not None:
                    self._call_from_thread(self.on_registry_write, batch.registry_change)
                return outcomes
            except DBAPIError as exc:
                # Only caches: should the database have lost committed rows (a failover, a restore), forget them;
                # and a connection that failed may be broken.
                self._known_accounts.clear()
                self.close()
                # A deadlock, a serialization failure, or another gateway writing the same key first: run
                # again, and the batch reads the state that won.
                again = isinstance(exc, IntegrityError) or _sqlstate(exc) in RETRYABLE_SQLSTATES
                if again and attempt < self.limits.retry_attempts:
                    time.sleep(0.005 * attempt)
                    continue
                if not again and (isinstance(exc, OperationalError) or exc.connection_invalidated):
                    log.warn("ledger database unavailable ({error}); {count} requests answered 'retry'",
                             error=error_line(exc), count=len(intents))
                    return self._unavailable(len(intents))
                failure: BaseException = exc
                break
            except Exception as exc:
                self._known = None  # the transaction rolled back: trust nothing the batch may have touched
                failure = exc
                break
            finally:
                if turn and self.turn is not None:
                    self.turn.give_back()
        else:
            return self._unavailable(len(intents))
        if len(intents) > 1:
            # Find the one that fails: alone, each intent gets its own outcome.
            log.info("ledger batch of {count} failed ({cause}); writing each alone", count=len(intents),
                     cause=error_line(failure))
            return [outcome for intent in intents for outcome in self.write([intent], turn_taken=turn_taken)]
        log.error("ledger write failed for {message_id}: {cause}", message_id=intents[0].message_id,
                  cause=error_line(failure))
        return [_INTERNAL]

    def _connect(self) -> Connection:
        """A connection for one batch: on SQLite always the same one (data_version is per connection)."""
        if self._connection is not None:
            return self._connection
        conn = self._engine.connect().execution_options(**{IMMEDIATE_OPTION: True})
        if self._keeps_connection:
            self._connection = conn
        return conn

    def _remember(self, batch: Batch, known: KnownState | None, version: int | None) -> None:
        """After the commit: the accounts known to exist, and (where the database says whether anybody else wrote,
        SQLite) the state the batch left."""
        if batch.forgot_accounts or len(self._known_accounts) > self.limits.known_accounts:
            self._known_accounts.clear()
        if len(self._holder_accounts) > self.limits.known_holders:
            self._holder_accounts.clear()
        self._known_accounts |= batch.accounts_opened()
        if version is None:
            return
        state = known if known is not None else KnownState(version)
        batch.remember(state)
        self._known = state if state.holders() <= self.limits.known_holders else None

    def _committed(self, intents: int, seconds: float) -> None:
        self.last_commit = time.monotonic()
        if self.metrics is not None:
            self.metrics.ledger_committed(intents, seconds)

    def _unavailable(self, intents: int) -> list[Outcome]:
        self.last_unavailable = time.monotonic()
        if self.metrics is not None:
            self.metrics.ledger_was_unavailable(intents)
        return [_UNAVAILABLE] * intents


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None) or getattr(getattr(exc.orig, "diag", None), "sqlstate", None)


class InlineLedgerWriter(LedgerWriter):
    """Writes each intent at once on the calling thread: for tools and in-memory tests, where no reactor
    runs. The server always uses the threaded, group-committing writer."""

    def __init__(self, engine: Engine, policies: PolicyBook, limits: WriterLimits = WriterLimits(), *,
                 now: Callable[[], datetime] = utc_now, make_ref: RefMaker = new_ref) -> None:
        super().__init__(engine, policies, lambda f, *a: f(*a), limits, now=now, make_ref=make_ref)

    def submit(self, intent: Intent) -> Deferred[Outcome]:
        answer: Deferred[Outcome] = Deferred()
        answer.callback(self.write([intent])[0])
        return answer


def _answer_all(answers: list[tuple[Deferred[Outcome], Outcome]]) -> None:
    """On the reactor's thread: a committed batch's outcomes to their requests, in the batch's order."""
    for answer, outcome in answers:
        answer.callback(outcome)
