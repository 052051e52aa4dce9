"""The registry's facts for requests, held in the gateway's memory.

Every settlement asks the registry the same few questions (this card, its holder, this institution), and the
answers change only when the registry does: when an import, an agency command or a first use of a new card
writes one of its tables. Database triggers count those writes in `registry_version`
(migration 0006); the cache polls that number every `refresh_s` and forgets everything when it moved. The
ledger's writer, which records first uses itself, tells the cache at once, before it answers the settlement
that changed the card, whose facts it changed and the version span its own writes moved (`written_by_ledger`):
where nothing else moved the version since the cache's entries were read, only those holders' entries go, so a
card's first use does not make every other card's facts be read again.

What a stale entry could do is bounded: the writer decides every settlement again on the card status, first
use and balances it locks, so the cache only ever answers ReadCard, the PIN question and early refusals from
facts at most `refresh_s` old.

Runs on the reactor thread; reads on a miss go to the database thread pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gateway.config import RegistryConfig
from gateway.ledger.batch import RegistryChange
from gateway.ops.logs import error_line
from gateway.serve.reads import read_registry_version, read_request_registry
from gateway.settlement.facts import Institution, RegistryFacts

log = Logger(namespace="gateway.serve.registry_cache")

# The configuration's [registry] section is the cache's limits: its keys and defaults are defined there.
_DEFAULT_LIMITS = RegistryConfig()


class RegistryCache:
    def __init__(self, engine: Engine, run_blocking: Callable[..., Awaitable[Any]],
                 limits: RegistryConfig = _DEFAULT_LIMITS) -> None:
        self._engine = engine
        self._run_blocking = run_blocking
        self.limits = limits
        # By the holder's social security number, then the card's number: what the ledger changes, it changes
        # for a holder (a first use voids the holder's old IC cards).
        self._facts: dict[str, dict[str, RegistryFacts]] = {}
        self._entries = 0
        self._institutions: dict[str, Institution] = {}
        self._version: int | None = None   # the version every entry was read at; None: nothing held
        self._generation = 0               # moves whenever entries are dropped, so a read in flight is not kept
        self._poll: LoopingCall | None = None
        self.hits = self.misses = self.flushes = 0

    # Looking up --------------------------------------------------------------------------------

    async def facts(self, institution_code: str, card_number: str, ssn: str) -> tuple[RegistryFacts, Institution]:
        """What the registry says about this card, its holder and the institution. Raises
        gateway.serve.reads.NotRegistered for an unknown institution, DBAPIError when the database is gone."""
        cards = self._facts.get(ssn)
        registry = cards.get(card_number) if cards is not None else None
        institution = self._institutions.get(institution_code)
        if registry is not None and institution is not None:
            self.hits += 1
            return registry, institution
        self.misses += 1
        generation = self._generation
        registry, institution, version = await self._run_blocking(
            read_request_registry, self._engine, institution_code, card_number, ssn)
        if generation == self._generation and self._version in (None, version):
            # Kept only when nothing was dropped meanwhile and the read saw the version the others were read at.
            self._version = version
            self._remember(card_number, ssn, registry, institution_code, institution)
        return registry, institution

    def _remember(self, card_number: str, ssn: str, registry: RegistryFacts, institution_code: str,
                  institution: Institution) -> None:
        cards = self._facts.get(ssn)
        if cards is None:
            if self._entries >= self.limits.cache_entries:
                self._entries -= len(self._facts.pop(next(iter(self._facts))))  # the holder held longest
            cards = self._facts[ssn] = {}
        if card_number not in cards:
            self._entries += 1
        cards[card_number] = registry
        self._institutions[institution_code] = institution

    def forget_all(self) -> None:
        if self._facts or self._institutions:
            self.flushes += 1
        self._facts.clear()
        self._entries = 0
        self._institutions.clear()
        self._version = None
        self._generation += 1

    def written_by_ledger(self, change: RegistryChange) -> None:
        """The ledger's writer committed `change`: its holders' entries go. The others stay where the version the
        entries were read at is the one the change started from (nobody else wrote the registry between); otherwise
        everything goes, as on the version check."""
        if self._version is None:
            # Nothing held; a read in flight may have seen the facts before the change.
            self._generation += 1
            return
        if self._version != change.version_before:
            self.forget_all()
            return
        for ssn in change.holders:
            cards = self._facts.pop(ssn, None)
            if cards is not None:
                self._entries -= len(cards)
        # A read in flight at the old version is not kept (its version is not the one held from now on).
        self._version = change.version_after

    @property
    def entries(self) -> int:
        return self._entries

    # Watching the registry's version -----------------------------------------------------------

    def start(self, clock: Any) -> None:
        self._poll = LoopingCall(self._check)
        self._poll.clock = clock
        self._poll.start(self.limits.refresh_s, now=False).addErrback(
            lambda failure: log.failure("registry version check stopped", failure))

    def stop(self) -> None:
        if self._poll is not None and self._poll.running:
            self._poll.stop()

    async def _check(self) -> None:
        if self._version is None:
            return
        held = self._version
        try:
            version = await self._run_blocking(_version_now, self._engine)
        except DBAPIError as exc:
            # Facts that cannot be confirmed are not served: requests read (and meet the error) themselves.
            log.warn("registry version unreadable ({error}); registry facts dropped", error=error_line(exc))
            self.forget_all()
            return
        if version != held and self._version == held:
            self.forget_all()


def _version_now(engine: Engine) -> int:
    with engine.connect() as conn:
        return read_registry_version(conn)
