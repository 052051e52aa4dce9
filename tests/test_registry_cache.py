"""The registry's facts held in memory: served without the database until the registry's version moves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from twisted.internet.defer import Deferred, maybeDeferred

from gateway.config import RegistryConfig
from gateway.ledger.batch import RegistryChange
from gateway.ledger.writer import InlineLedgerWriter
from gateway.protocol.messages import pb
from gateway.serve.reads import NotRegistered, read_registry_version
from gateway.serve.registry_cache import RegistryCache
from gateway.settlement.facts import CardStatus
from tests.ledger_support import CARDS, INSTITUTION, POLICIES, settle, write
from tests.test_adapter import run_now
from tests.test_card_driver import result_of as result_of_deferred

CARD = "N00000001"
OK = pb.STATUS_CODE_OK
SSN = CARDS[CARD][0].person.social_security_number


def result_of(coroutine: Any) -> Any:
    """The result of a coroutine that finishes at once (its database work runs inline: run_now)."""
    return result_of_deferred(Deferred.fromCoroutine(coroutine))


def version(engine: Engine) -> int:
    with engine.connect() as conn:
        return read_registry_version(conn)


def execute(engine: Engine, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql))


def held_in(pending: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]]) -> Callable[..., Deferred[Any]]:
    """A way to run the cache's reads that holds each one in `pending`, unanswered, until the test answers it."""
    def later(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        waiting: Deferred[Any] = Deferred()
        pending.append((waiting, function, args))
        return waiting

    return later


REGISTRY_WRITES = [
    ("institutions", "UPDATE institutions SET name = name || ' ' WHERE code = 'H33020300001'"),
    ("terminals", "DELETE FROM terminals WHERE terminal_id = 'H33020300001-02'"),
    ("persons", f"UPDATE persons SET name = name WHERE social_security_number = '{SSN}'"),
    ("cards", f"UPDATE cards SET status = 'lost_reported' WHERE card_number = '{CARD}'"),
    ("filings", f"INSERT INTO filings (social_security_number, kind, region_code, valid_from) "
                f"VALUES ('{SSN}', 'residence', '330100', '2026-01-01')"),
    ("lookup_problems", "INSERT INTO lookup_problems (id_number, problem) VALUES ('110101199001011237', "
                        "'not_covered')"),
]


@pytest.mark.parametrize(("table", "sql"), REGISTRY_WRITES, ids=[t for t, _ in REGISTRY_WRITES])
def test_every_write_to_a_registry_table_moves_the_version(demo_engine_on_both: Engine, table: str, sql: str) -> None:
    before = version(demo_engine_on_both)
    execute(demo_engine_on_both, sql)
    assert version(demo_engine_on_both) > before, f"a write to {table} left the registry's version where it was"


def test_ledger_writes_leave_the_version_alone(demo_engine_on_both: Engine) -> None:
    before = version(demo_engine_on_both)
    execute(demo_engine_on_both, "INSERT INTO ledger_accounts (code, kind, owner, must_not_go_negative, balance_fen) "
                             "VALUES ('test:cache', 'opening', 'test', FALSE, 0)")
    assert version(demo_engine_on_both) == before


def test_facts_come_from_memory_until_the_registry_changes(demo_engine_on_both: Engine) -> None:
    cache = RegistryCache(demo_engine_on_both, run_now)
    registry, institution = result_of(cache.facts(INSTITUTION, CARD, SSN))
    assert registry.card is not None and registry.card.status is CardStatus.ACTIVE
    assert institution.code == INSTITUTION
    again, _ = result_of(cache.facts(INSTITUTION, CARD, SSN))
    assert again is registry and (cache.hits, cache.misses) == (1, 1)

    # The card agency reports it lost:
    execute(demo_engine_on_both, f"UPDATE cards SET status = 'lost_reported' WHERE card_number = '{CARD}'")
    stale, _ = result_of(cache.facts(INSTITUTION, CARD, SSN))
    assert stale.card is not None and stale.card.status is CardStatus.ACTIVE  # until the next version check
    result_of(cache._check())
    fresh, _ = result_of(cache.facts(INSTITUTION, CARD, SSN))
    assert fresh.card is not None and fresh.card.status is CardStatus.LOST_REPORTED
    assert cache.flushes == 1


def test_an_unchanged_registry_keeps_its_facts(demo_engine_on_both: Engine) -> None:
    cache = RegistryCache(demo_engine_on_both, run_now)
    result_of(cache.facts(INSTITUTION, CARD, SSN))
    result_of(cache._check())
    result_of(cache.facts(INSTITUTION, CARD, SSN))
    assert (cache.hits, cache.misses, cache.flushes) == (1, 1, 0)


def test_an_unknown_institution_is_not_registered(demo_engine_on_both: Engine) -> None:
    cache = RegistryCache(demo_engine_on_both, run_now)
    with pytest.raises(NotRegistered):
        result_of(cache.facts("H99999999999", CARD, SSN))
    assert cache.entries == 0


def test_a_read_in_flight_when_facts_are_dropped_is_answered_but_not_kept(demo_engine_on_both: Engine) -> None:
    pending: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []
    cache = RegistryCache(demo_engine_on_both, held_in(pending))
    answers: list[Any] = []
    Deferred.fromCoroutine(cache.facts(INSTITUTION, CARD, SSN)).addCallback(answers.append)
    cache.forget_all()  # e.g. the writer recorded a first use meanwhile
    waiting, function, args = pending.pop()
    waiting.callback(function(*args))
    assert answers and answers[0][0].card.card_number == CARD
    assert cache.entries == 0


def test_beyond_max_entries_the_oldest_card_goes(demo_engine_on_both: Engine) -> None:
    cache = RegistryCache(demo_engine_on_both, run_now, RegistryConfig(cache_entries=2))
    cards = sorted(CARDS)[:3]
    for number in cards:
        result_of(cache.facts(INSTITUTION, number, CARDS[number][0].person.social_security_number))
    assert cache.entries == 2
    result_of(cache.facts(INSTITUTION, cards[0], CARDS[cards[0]][0].person.social_security_number))
    assert cache.misses == 4  # the first one had gone


def test_an_unreadable_version_drops_every_fact(demo_engine_on_both: Engine) -> None:
    broken = [False]

    def run(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if broken[0]:
            return maybeDeferred(_raise_operational)
        return run_now(function, *args)

    cache = RegistryCache(demo_engine_on_both, run)
    result_of(cache.facts(INSTITUTION, CARD, SSN))
    broken[0] = True
    result_of(cache._check())
    assert cache.entries == 0 and cache.flushes == 1


def _raise_operational() -> None:
    raise OperationalError("SELECT version FROM registry_version", {}, Exception("the database is gone"))


# The ledger's own registry writes (a card's first use) --------------------------------------------------------

OTHER_CARD = "N00001602"   # another holder's new social security card, not used yet
OTHER_SSN = CARDS[OTHER_CARD][0].person.social_security_number


def first_use(engine: Engine, *cards: str) -> list[RegistryChange]:
    """The cards' first settlements, in one batch of the ledger's writer; what it reported to the cache."""
    writer = InlineLedgerWriter(engine, POLICIES)
    changes: list[RegistryChange] = []
    writer.on_registry_write = changes.append
    answers = write(writer, [settle(engine, card, f"first-{card}", 1_000) for card in cards])
    assert [a.status for a in answers] == [OK] * len(cards)
    return changes


def test_a_first_use_reports_its_holders_and_the_version_span_of_its_own_writes(demo_engine_on_both: Engine) -> None:
    before = version(demo_engine_on_both)
    # Two holders in one batch: on PostgreSQL the trigger counts the first-use statement once per card.
    [change] = first_use(demo_engine_on_both, CARD, OTHER_CARD)
    assert change.holders == {SSN, OTHER_SSN}
    assert (change.version_before, change.version_after) == (before, version(demo_engine_on_both))
    assert change.version_after > change.version_before
    assert first_use(demo_engine_on_both, CARD) == []  # used already: the registry is not written again


def test_a_first_use_forgets_only_its_holders_facts(demo_engine_on_both: Engine) -> None:
    cache = RegistryCache(demo_engine_on_both, run_now)
    result_of(cache.facts(INSTITUTION, CARD, SSN))
    other, _ = result_of(cache.facts(INSTITUTION, OTHER_CARD, OTHER_SSN))
    assert other.card is not None and other.card.first_used_on is None
    [change] = first_use(demo_engine_on_both, OTHER_CARD)
    cache.written_by_ledger(change)
    assert cache.entries == 1 and cache.flushes == 0
    result_of(cache._check())  # the version moved by the ledger's write alone: nothing more goes
    result_of(cache.facts(INSTITUTION, CARD, SSN))
    used, _ = result_of(cache.facts(INSTITUTION, OTHER_CARD, OTHER_SSN))
    assert used.card is not None and used.card.first_used_on is not None
    assert used.person is not None and used.person.social_security_card_used
    assert (cache.hits, cache.misses, cache.flushes) == (1, 3, 0)


def test_a_first_use_after_another_registry_write_forgets_everything(demo_engine_on_both: Engine) -> None:
    cache = RegistryCache(demo_engine_on_both, run_now)
    result_of(cache.facts(INSTITUTION, CARD, SSN))
    execute(demo_engine_on_both, f"UPDATE cards SET status = 'lost_reported' WHERE card_number = '{CARD}'")
    [change] = first_use(demo_engine_on_both, OTHER_CARD)
    cache.written_by_ledger(change)
    assert cache.entries == 0 and cache.flushes == 1
    lost, _ = result_of(cache.facts(INSTITUTION, CARD, SSN))
    assert lost.card is not None and lost.card.status is CardStatus.LOST_REPORTED


def test_a_read_in_flight_across_a_first_use_is_not_kept(demo_engine_on_both: Engine) -> None:
    pending: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []
    cache = RegistryCache(demo_engine_on_both, held_in(pending))
    Deferred.fromCoroutine(cache.facts(INSTITUTION, CARD, SSN))
    waiting, function, args = pending.pop()
    waiting.callback(function(*args))          # held at the version before the first use
    Deferred.fromCoroutine(cache.facts(INSTITUTION, OTHER_CARD, OTHER_SSN))
    waiting, function, args = pending.pop()
    read_before = function(*args)              # read before the first use, answered after it
    [change] = first_use(demo_engine_on_both, OTHER_CARD)
    cache.written_by_ledger(change)
    waiting.callback(read_before)
    assert cache.entries == 1  # CARD's facts stay; OTHER_CARD's stale ones were not kept
