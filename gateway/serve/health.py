"""What the operator's HTTP listener answers about the gateway itself: is it ready to serve, and who is connected.

/readyz runs every check each time it is asked, each saying what it found: the database answers, its schema is
the revision this gateway was built for, the ledger's writer is alive and not stuck on a batch, a policy covers
today's business day (degraded, still serving, when fewer than `ledger.policy_warning_days` are covered ahead),
and every terminal listener listens. One failed check makes the gateway not ready (HTTP 503).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from twisted.internet.defer import Deferred, TimeoutError
from twisted.python.failure import Failure

from gateway.config import GatewayConfig
from gateway.db.migrate import current_revision
from gateway.ledger.writer import LedgerWriter
from gateway.ops.logs import error_line
from gateway.registry.directory import TerminalRecord
from gateway.settlement.calendar import BEIJING, beijing_today, business_date
from gateway.settlement.policy import PolicyBook, check_cover

# A check's status, and the gateway's: every check "ok" is ready; a "degraded" one still serves.
OK, DEGRADED, FAILED = "ok", "degraded", "failed"
READY, NOT_READY = "ready", "not ready"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class Readiness:
    checks: tuple[Check, ...]

    @property
    def status(self) -> str:
        statuses = {check.status for check in self.checks}
        if FAILED in statuses:
            return NOT_READY
        return DEGRADED if DEGRADED in statuses else READY

    @property
    def serving(self) -> bool:
        """Ready, or degraded: /readyz answers 200."""
        return self.status != NOT_READY

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status,
                "failed": [check.name for check in self.checks if check.status == FAILED],
                "checks": {check.name: check.as_json() for check in self.checks}}


@dataclass
class ListenerState:
    """The terminal listeners as the start-up left them (gateway.serve.app keeps it up to date)."""

    expected: int
    listening: list[str] = field(default_factory=list)
    stopping: bool = False


def check_listeners(state: ListenerState) -> Check:
    if state.stopping:
        return Check("listeners", FAILED, "the gateway is stopping: no new connections")
    if len(state.listening) < state.expected:
        return Check("listeners", FAILED, f"{len(state.listening)} of {state.expected} listening")
    return Check("listeners", OK, ", ".join(state.listening))


def check_policies(policies: PolicyBook, today: date, warning_days: int) -> Check:
    """check_cover's verdict, as the startup and daily warning and `gateway policy check` give it: no policy today
    fails; a day without one within `warning_days` (ledger.policy_warning_days) degrades."""
    cover = check_cover(policies, today, warning_days)
    problem = cover.problem()
    if not cover.covers_today:
        return Check("policy", FAILED, problem or f"no policy covers today, {today.isoformat()}")
    if problem is not None:
        return Check("policy", DEGRADED, problem)
    through = (today + timedelta(days=cover.days_remaining)).isoformat()
    return Check("policy", OK, f"covered through {through} ({cover.days_remaining} more days)")


def policy_remaining_s(policies: PolicyBook, moment: datetime, warning_days: int) -> float:
    """Seconds from `moment` to the end (Beijing midnight) of the last day the policies cover without a gap from
    today's business day on (check_cover's days_remaining); 0 when no policy covers today."""
    today = business_date(moment)
    days = check_cover(policies, today, warning_days).days_remaining
    if days < 0:
        return 0.0
    end = datetime.combine(today + timedelta(days=days + 1), datetime.min.time(), BEIJING)
    return (end - moment).total_seconds()


def check_writer(writer: LedgerWriter, now: float, stale_s: float) -> Check:
    if not writer.is_alive():
        return Check("ledger_writer", FAILED, "the ledger's writer thread is not running")
    busy_since = writer.busy_since
    if busy_since is not None and now - busy_since > stale_s:
        return Check("ledger_writer", FAILED, f"one batch has been in hand for {now - busy_since:.1f} s "
                                              f"(more than {stale_s:g} s)")
    unavailable, committed = writer.last_unavailable, writer.last_commit
    if unavailable is not None and (committed is None or unavailable > committed):
        return Check("ledger_writer", FAILED, "its last batch could not reach the database")
    if committed is None:
        return Check("ledger_writer", OK, "running; nothing committed yet")
    return Check("ledger_writer", OK, f"running; last commit {now - committed:.1f} s ago")


def check_schema(revision: str | None, head: str) -> Check:
    if revision == head:
        return Check("schema", OK, f"at revision {head}")
    return Check("schema", FAILED, f"at revision {revision or 'none'}, this gateway needs {head}: "
                                   "`gateway db upgrade`")


class HealthChecks:
    def __init__(self, *, engine: Engine, run_blocking: Callable[..., Deferred[Any]], writer: LedgerWriter,
                 policies: PolicyBook, listeners: ListenerState, config: GatewayConfig, head: str, clock: Any,
                 today: Callable[[], date] = beijing_today, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._run_blocking = run_blocking
        self._writer = writer
        self._policies = policies
        self._listeners = listeners
        self._config = config
        self._head = head
        self._clock = clock
        self._today = today
        self._monotonic = monotonic

    def readiness(self) -> Deferred[Readiness]:
        """Every check, the database's in the thread pool (at most metrics.check_timeout_s)."""
        timeout_s = self._config.metrics.check_timeout_s
        began = self._monotonic()
        read: Deferred[Any] = self._run_blocking(current_revision, self._engine)
        read.addTimeout(timeout_s, self._clock)

        def answered(revision: str | None) -> Iterable[Check]:
            elapsed_ms = (self._monotonic() - began) * 1000
            return (Check("database", OK, f"answered in {elapsed_ms:.0f} ms"), check_schema(revision, self._head))

        def unreachable(failure: Failure) -> Iterable[Check]:
            if failure.check(TimeoutError):  # type: ignore[no-untyped-call]
                why = f"did not answer within {timeout_s:g} s"
            else:
                why = f"cannot be reached: {error_line(failure.value or Exception('unknown'))}"
            return (Check("database", FAILED, why), Check("schema", FAILED, "unknown: the database " + why))

        read.addCallbacks(answered, unreachable)
        return read.addCallback(self._with_the_others)

    def _with_the_others(self, database: Iterable[Check]) -> Readiness:
        return Readiness((
            *database,
            check_writer(self._writer, self._monotonic(), self._config.metrics.writer_stale_s),
            check_policies(self._policies, self._today(), self._config.ledger.policy_warning_days),
            check_listeners(self._listeners),
        ))


def terminals_by_institution(terminals: Iterable[TerminalRecord]) -> list[dict[str, Any]]:
    """The signed-in connections, by institution and terminal id (a terminal may hold several)."""
    institutions: dict[str, dict[str, Any]] = {}
    for terminal in terminals:
        entry = institutions.setdefault(terminal.institution_code, {
            "code": terminal.institution_code, "name": terminal.institution_name, "sessions": 0, "terminals": {}})
        entry["sessions"] += 1
        entry["terminals"][terminal.terminal_id] = entry["terminals"].get(terminal.terminal_id, 0) + 1
    return [{**entry, "terminals": [{"terminal_id": terminal_id, "sessions": sessions}
                                    for terminal_id, sessions in sorted(entry["terminals"].items())]}
            for _, entry in sorted(institutions.items())]
