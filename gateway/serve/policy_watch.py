"""The policy calendar, watched: at start and at the start of each business day (Beijing midnight), a warning when
the loaded policies leave a day without a policy within `ledger.policy_warning_days` (gateway.settlement.policy
check_cover), so that the policy files cannot run out unnoticed.

Time comes from the clock given (the reactor; a test's Clock), never from the host's: the check's day and the
next check's moment both follow from `clock.seconds()`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twisted.logger import Logger

from gateway.settlement.calendar import business_date, next_business_day_start
from gateway.settlement.policy import PolicyBook, PolicyCover, check_cover

log = Logger(namespace="gateway.serve.policy_watch")

# After midnight, so that the new business day has begun on any clock that rounds.
_AFTER_MIDNIGHT_S = 1.0


class PolicyWatch:
    def __init__(self, policies: PolicyBook, warning_days: int, clock: Any) -> None:
        self._policies = policies
        self._warning_days = warning_days
        self._clock = clock
        self._next: Any = None

    def start(self) -> PolicyCover:
        """Check now, say how far the policies cover, and check again at each business day's start."""
        cover = self.check()
        if cover.complete:
            log.info("policy calendar: today, {today}, and the {days_remaining} days after it have a policy "
                     "({days} required)", today=cover.today.isoformat(), days=cover.days,
                     days_remaining=cover.days_remaining)
        return cover

    def check(self) -> PolicyCover:
        moment = datetime.fromtimestamp(self._clock.seconds(), UTC)
        cover = check_cover(self._policies, business_date(moment), self._warning_days)
        problem = cover.problem()
        if problem is not None:
            log.warn("policy calendar: {problem}", problem=problem, today=cover.today.isoformat(),
                     days_remaining=cover.days_remaining,
                     gaps=[[first.isoformat(), last.isoformat()] for first, last in cover.gaps])
        delay_s = (next_business_day_start(moment) - moment).total_seconds() + _AFTER_MIDNIGHT_S
        self._next = self._clock.callLater(delay_s, self.check)
        return cover

    def stop(self) -> None:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
