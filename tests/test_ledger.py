"""The ledger on SQLite and PostgreSQL: balanced entries, one outcome per key, undoing, batches, checks."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.demo.registry import write_demo_registry
from gateway.ledger import batch as batch_module
from gateway.ledger.batch import Batch
from gateway.ledger.check import check_ledger
from gateway.ledger.errors import LedgerInvariantBroken
from gateway.ledger.export import export_rows
from gateway.ledger.models import LedgerAccount, LedgerEntry, LedgerTransaction, RequestRecord, YearTotal
from gateway.ledger.outcomes import Outcome, Settled
from gateway.ledger.rollover import RolloverRefused, rollover
from gateway.ledger.sql import hot_sql, record_row, settlement_row, transaction_row
from gateway.ledger.transactions import AMOUNT_COLUMNS, negated_columns, split_columns, split_of
from gateway.ledger.writer import InlineLedgerWriter
from gateway.protocol.messages import pb
from gateway.registry.models import Card
from gateway.settlement.facts import Balances, YearToDate
from gateway.settlement.policy import load_builtin_policies
from gateway.settlement.rules import Decision, decide
from gateway.settlement.split import FundSplit
from tests.ledger_support import (
    CARDS,
    NOW,
    TODAY,
    balances_of,
    mark_closed,
    person_id_of,
    reverse,
    revoke,
    settle,
    write,
)

OK = pb.STATUS_CODE_OK
TERMINAL_ID = "H33020300001-01"
POLICIES = load_builtin_policies()
IN_CITY = "N00000001"          # Haishu, employee, PIN 000000
REPLACED_HOLDER_NEW = "N00001302"
OLD_IC, NEW_OF_OLD_IC = "M00001601", "N00001602"


@pytest.fixture
def ledger_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    write_demo_registry(engine, persons=40)
    yield engine
    engine.dispose()


@pytest.fixture
def writer(ledger_engine: Engine) -> InlineLedgerWriter:
    return InlineLedgerWriter(ledger_engine, POLICIES)


def one(writer: InlineLedgerWriter, intent: Any) -> pb.Response:
    [response] = write(writer, [intent])
    return response


def assert_consistent(engine: Engine) -> None:
    report = check_ledger(engine)
    assert report.ok, report.render()


def test_a_settlement_is_balanced_entries_that_move_the_persons_money(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    before = balances_of(ledger_engine, IN_CITY)
    response = one(writer, settle(ledger_engine, IN_CITY, "m-1", 300_000))
    assert response.status == OK, response.message_en
    split = response.settle.split
    assert split.total_fen == 300_000
    assert (split.pooled_fund_fen + split.current_year_account_fen + split.prior_years_account_fen
            + split.cash_fen) == 300_000
    after = balances_of(ledger_engine, IN_CITY)
    assert after[0] == before[0] - split.current_year_account_fen
    assert after[1] == before[1] - split.prior_years_account_fen
    assert after[2:] == (split.deductible_counted_fen, split.pooled_fund_fen)
    assert response.settle.balances_after.current_year_account_fen == after[0]
    with Session(ledger_engine) as db:
        total = db.scalar(select(func.sum(LedgerEntry.amount_fen)).where(
            LedgerEntry.transaction_ref == response.settle.settlement_id))
        assert total == 0
    assert_consistent(ledger_engine)


def test_a_retry_gets_the_original_answer_and_different_content_is_refused(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    first = one(writer, settle(ledger_engine, IN_CITY, "m-1", 12_345))
    again = one(writer, settle(ledger_engine, IN_CITY, "m-1", 12_345))
    assert again == first
    other = one(writer, settle(ledger_engine, IN_CITY, "m-1", 99_999))
    assert other.status == pb.STATUS_CODE_DUPLICATE_MESSAGE_ID
    with Session(ledger_engine) as db:
        assert db.scalar(select(func.count()).select_from(LedgerTransaction).where(
            LedgerTransaction.kind == "settlement")) == 1
    assert_consistent(ledger_engine)


def test_a_retry_among_new_settlements_in_one_batch_gets_its_record_and_the_rest_are_booked(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    """A batch of Settles where one key is recorded already and one other reuses it with other content: the retry
    gets its first answer, the reuse is refused, and the new settlements of several holders are booked on the
    balances as locked (on PostgreSQL such a batch reads its state in one pipeline, and a recorded key among its
    keys makes it read as any batch does)."""
    first = one(writer, settle(ledger_engine, IN_CITY, "m-1", 12_345))
    before = {card: balances_of(ledger_engine, card) for card in ("N00000201", "N00000601")}
    responses = write(writer, [settle(ledger_engine, "N00000201", "m-2", 2_000),
                               settle(ledger_engine, IN_CITY, "m-1", 12_345),
                               settle(ledger_engine, "N00000601", "m-3", 3_000),
                               settle(ledger_engine, IN_CITY, "m-1", 54_321)])
    assert responses[1] == first
    assert responses[3].status == pb.STATUS_CODE_DUPLICATE_MESSAGE_ID
    for response, card in ((responses[0], "N00000201"), (responses[2], "N00000601")):
        assert response.status == OK, response.message_en
        split = response.settle.split
        after = balances_of(ledger_engine, card)
        assert after[0] == before[card][0] - split.current_year_account_fen
        assert after[1] == before[card][1] - split.prior_years_account_fen
        assert response.settle.balances_after.current_year_account_fen == after[0]
    assert_consistent(ledger_engine)


def test_a_batch_of_settlements_for_new_and_known_holders_reads_each_state_once(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    """Two batches of Settles in a row, the second for holders of the first and one new holder: each settlement
    is split on the balances and year-to-date totals the one before it left (in the batch and across batches)."""
    cards = ["N00000001", "N00000201", "N00000601", "N00001401"]
    write(writer, [settle(ledger_engine, card, f"a-{card}", 1_000) for card in cards[:3]])
    before = {card: balances_of(ledger_engine, card) for card in cards}
    responses = write(writer, [settle(ledger_engine, card, f"b-{card}-{n}", 700 + n, medical_type=11)
                               for n in range(3) for card in cards])
    assert all(r.status == OK for r in responses), [r.message_en for r in responses]
    for card in cards:
        mine = [r.settle for r in responses if r.settle.card_number == card]
        paid_current = sum(s.split.current_year_account_fen for s in mine)
        paid_prior = sum(s.split.prior_years_account_fen for s in mine)
        after = balances_of(ledger_engine, card)
        assert after[:2] == (before[card][0] - paid_current, before[card][1] - paid_prior)
        assert mine[-1].balances_after.current_year_account_fen == after[0]
        assert mine[-1].balances_after.deductible_counted_ytd_fen == after[2]
    assert_consistent(ledger_engine)


def counting_refs() -> Callable[[str, date], str]:
    """Transaction ids numbered in the order the ledger makes them."""
    numbers = itertools.count(1)
    return lambda kind, day: f"{kind}{day:%Y%m%d}{next(numbers):012d}"


def test_the_writer_books_by_the_clock_and_the_ids_it_is_given(ledger_engine: Engine) -> None:
    """A person's opening balances are booked at the writer's time; every transaction gets the next id from the
    writer's maker of ids. (The requests carry the time they were received: NOW.)"""
    clock = datetime(2026, 11, 23, 20, 30, tzinfo=UTC)  # 04:30 on 24 November in Beijing
    writer = InlineLedgerWriter(ledger_engine, POLICIES, now=lambda: clock, make_ref=counting_refs())
    settled = one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000))
    revoked = one(writer, revoke(settled.settle.settlement_id, "rk-1"))
    one(writer, settle(ledger_engine, IN_CITY, "m-2", 2_000))
    reversed_ = one(writer, reverse("m-2", "rv-1"))
    assert (settled.settle.settlement_id, revoked.revoke.revoke_id) == ("S20261124000000000002",
                                                                        "R20261124000000000003")
    assert reversed_.reverse.outcome == pb.REVERSE_OUTCOME_REVERSED
    with Session(ledger_engine) as db:
        booked = db.execute(select(LedgerTransaction.ref, LedgerTransaction.kind, LedgerTransaction.recorded_at)
                            .order_by(LedgerTransaction.id)).all()
    assert [(ref, kind) for ref, kind, _ in booked] == [
        ("O20261124000000000001", "opening"), ("S20261124000000000002", "settlement"),
        ("R20261124000000000003", "revoke"), ("S20261124000000000004", "settlement"),
        ("V20261124000000000005", "reversal")]
    assert [moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC) for _, _, moment in booked] == [
        clock, NOW, NOW, NOW, NOW]
    assert_consistent(ledger_engine)


def test_the_same_message_id_at_two_terminals_is_two_settlements(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    assert one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000)).status == OK
    assert one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000, terminal="H33020300001-02")).status == OK
    assert_consistent(ledger_engine)


def test_reversing_a_committed_settlement_restores_everything(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    before = balances_of(ledger_engine, IN_CITY)
    settled = one(writer, settle(ledger_engine, IN_CITY, "m-1", 250_000))
    reversed_ = one(writer, reverse("m-1", "rv-1"))
    assert reversed_.status == OK
    assert reversed_.reverse.outcome == pb.REVERSE_OUTCOME_REVERSED
    assert reversed_.reverse.reversed == settled.settle.split
    assert balances_of(ledger_engine, IN_CITY) == before
    twice = one(writer, reverse("m-1", "rv-2"))
    assert (twice.status, twice.reverse.outcome) == (OK, pb.REVERSE_OUTCOME_ALREADY_REVERSED)
    assert one(writer, reverse("m-1", "rv-1")) == reversed_  # the reversal's own retry
    assert balances_of(ledger_engine, IN_CITY) == before
    assert_consistent(ledger_engine)


def test_reversing_what_never_arrived_refuses_it_when_it_arrives_late(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    tombstone = one(writer, reverse("lost-1", "rv-1"))
    assert (tombstone.status, tombstone.reverse.outcome) == (OK, pb.REVERSE_OUTCOME_NEVER_ARRIVED)
    late = one(writer, settle(ledger_engine, IN_CITY, "lost-1", 5_000))
    assert late.status == pb.STATUS_CODE_MESSAGE_ID_REVERSED
    again = one(writer, reverse("lost-1", "rv-2"))
    assert again.reverse.outcome == pb.REVERSE_OUTCOME_ALREADY_REVERSED
    with Session(ledger_engine) as db:
        assert db.scalar(select(func.count()).select_from(LedgerTransaction).where(
            LedgerTransaction.kind == "settlement")) == 0
    assert_consistent(ledger_engine)


def test_revoke_by_settlement_id_at_the_same_institution_within_the_window(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    before = balances_of(ledger_engine, IN_CITY)
    settled = one(writer, settle(ledger_engine, IN_CITY, "m-1", 80_000))
    ref = settled.settle.settlement_id
    elsewhere = one(writer, revoke(ref, "rk-0", terminal="P33020300004-01", institution="P33020300004"))
    assert elsewhere.status == pb.STATUS_CODE_REVOKE_NOT_ALLOWED
    too_late = one(writer, revoke(ref, "rk-1", at=NOW + timedelta(days=8)))
    assert too_late.status == pb.STATUS_CODE_REVOKE_NOT_ALLOWED and "7 days" in too_late.message_en
    revoked = one(writer, revoke(ref, "rk-2", at=NOW + timedelta(days=7)))
    assert revoked.status == OK and revoked.revoke.settlement_id == ref
    assert revoked.revoke.refunded == settled.settle.split
    assert balances_of(ledger_engine, IN_CITY) == before
    assert one(writer, revoke(ref, "rk-3")).status == pb.STATUS_CODE_ALREADY_REVOKED
    assert one(writer, reverse("m-1", "rv-1")).status == pb.STATUS_CODE_ALREADY_REVOKED
    assert one(writer, revoke("S20261124NOSUCHTHING", "rk-4")).status == pb.STATUS_CODE_ORIGINAL_NOT_FOUND
    assert_consistent(ledger_engine)


def test_the_first_settlement_with_the_new_card_cancels_the_old_ic_card(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    assert one(writer, settle(ledger_engine, OLD_IC, "old-1", 1_000)).status == OK  # before: still valid
    assert one(writer, settle(ledger_engine, NEW_OF_OLD_IC, "new-1", 1_000)).status == OK
    with Session(ledger_engine) as db:
        old, new = db.get(Card, OLD_IC), db.get(Card, NEW_OF_OLD_IC)
        assert old is not None and new is not None
        assert old.status == "cancelled" and new.first_used_on == TODAY
    refused = one(writer, settle(ledger_engine, OLD_IC, "old-2", 1_000))
    assert refused.status == pb.STATUS_CODE_OLD_MEDICAL_CARD_CANCELLED
    assert_consistent(ledger_engine)


def test_an_admission_on_a_card_state_that_changed_is_decided_again(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    """The request path admitted the old IC card before its holder's new card was first used; the new card's first
    settlement, earlier in the same batch, voids it: the writer decides again and refuses it."""
    new_card = settle(ledger_engine, NEW_OF_OLD_IC, "new-1", 1_000, admitted=True)
    old_card = settle(ledger_engine, OLD_IC, "old-1", 1_000, admitted=True)
    assert old_card.admitted is not None and new_card.admitted is not None and new_card.admitted.first_use_of_card
    settled, refused = write(writer, [new_card, old_card])
    assert settled.status == OK and refused.status == pb.STATUS_CODE_OLD_MEDICAL_CARD_CANCELLED
    # Admitted again on registry facts from before the first use: the card was used meanwhile, so its first use is
    # not booked again.
    again = replace(settle(ledger_engine, NEW_OF_OLD_IC, "new-2", 1_000), facts=new_card.facts,
                    admitted=new_card.admitted)
    assert one(writer, again).status == OK
    with Session(ledger_engine) as db:
        used = db.get(Card, NEW_OF_OLD_IC)
        assert used is not None and used.first_used_on == TODAY
    assert_consistent(ledger_engine)


_some_fen = st.integers(0, 2_500_000)


def test_what_the_request_path_admitted_the_writer_splits_as_the_rules_decide(ledger_engine: Engine) -> None:
    """Decided once: with the request path's admission the writer computes only the split, on the balances and
    year-to-date totals it locked, and its outcome is the one it gives deciding everything itself — the rules'
    decision on the state it locked. (Hypothesis inside the test: pytest-twisted runs no @given test with
    parametrized fixtures.)"""
    person = person_id_of(ledger_engine, CARDS[IN_CITY][0].person.social_security_number)

    @settings(max_examples=30, deadline=None)
    @given(total=st.integers(1, 2_500_000), medical_type=st.sampled_from([11, 14, 21]), current=_some_fen,
           prior=_some_fen, deductible_so_far=st.integers(0, 100_000), pooled_so_far=_some_fen)
    def decided_once(total: int, medical_type: int, current: int, prior: int, deductible_so_far: int,
                     pooled_so_far: int) -> None:
        admitted = settle(ledger_engine, IN_CITY, "m-1", total, medical_type=medical_type, admitted=True)
        outcomes = []
        for intent in (admitted, replace(admitted, admitted=None)):
            with ledger_engine.connect() as conn:
                transaction = conn.begin()
                batch_module.open_persons(conn, [person])
                for code, balance in ((f"person:{person}:current_year", current),
                                      (f"person:{person}:prior_years", prior)):
                    conn.execute(update(LedgerAccount).where(LedgerAccount.code == code).values(balance_fen=balance))
                conn.execute(delete(YearTotal).where(YearTotal.person_id == person))
                conn.execute(insert(YearTotal).values(person_id=person, insurance_year=2026,
                                                      deductible_counted_fen=deductible_so_far,
                                                      pooled_fund_paid_fen=pooled_so_far))
                [outcome] = Batch(conn, POLICIES, make_ref=lambda kind, day: f"{kind}{day:%Y%m%d}1").run([intent])
                transaction.rollback()
            outcomes.append(outcome)
        assert outcomes[0] == outcomes[1]
        locked = replace(admitted.facts, balances=Balances(current, prior),
                         year_to_date=YearToDate(deductible_so_far, pooled_so_far))
        rules = decide(locked, POLICIES)
        assert isinstance(rules, Decision) and isinstance(outcomes[0], Settled) and outcomes[0].split == rules.split

    decided_once()


def test_the_hot_writes_store_each_value_as_sqlalchemy_core_does(migrated_engine: Engine) -> None:
    """The writer binds plain values through the DBAPI (gateway.ledger.sql.HotSql); what the database holds
    must be what Core would have stored for the same row — dates and times in the dialect's own form."""
    moment = datetime(2026, 11, 24, 2, 3, 4, 567_890, tzinfo=UTC)
    values = {"kind": "settlement", "terminal_id": TERMINAL_ID, "institution_code": "H33020300001",
              "person_id": 4_812_093_556_120_477_301, "card_number": "N00000001", "medical_type": 11,
              "insurance_year": 2026, "business_date": date(2026, 11, 24), "recorded_at": moment,
              "policy_version": "NB-2026", "total_fen": 500, "current_year_fen": 500}
    amounts = tuple(values.get(column, 0) for column in AMOUNT_COLUMNS)
    names = ("ref", "kind", "terminal_id", "message_id", "institution_code", "person_id",
             "card_number", "medical_type", "insurance_year", "business_date", "recorded_at", "policy_version")
    record = {"terminal_id": TERMINAL_ID, "body": "settle", "content_hash": "h", "outcome": "committed",
              "transaction_ref": None, "recorded_outcome": "{}", "recorded_at": moment}
    with migrated_engine.begin() as conn:
        hot = hot_sql(conn)
        conn.execute(insert(LedgerTransaction), [{**values, "ref": "CORE", "message_id": "core"}])
        conn.exec_driver_sql(hot.insert_transactions, [transaction_row(
            hot, **{name: value for name, value in {**values, "ref": "HOT", "message_id": "hot"}.items()
                    if name in names}, amounts=amounts)])
        # The settlements' own row builder, as the writer calls it (day and time converted once, by HotSql).
        conn.exec_driver_sql(hot.insert_transactions, [settlement_row(
            "SETTLED", TERMINAL_ID, "settled", "H33020300001", values["person_id"], "N00000001", 11, 2026,
            hot.day(date(2026, 11, 24)), hot.moment(moment), "NB-2026",
            FundSplit(500, current_year_account_fen=500))])
        conn.execute(insert(RequestRecord), [{**record, "message_id": "core"}])
        conn.exec_driver_sql(hot.insert_records, [record_row(
            TERMINAL_ID, "hot", "settle", "h", "committed", None, "{}", hot.moment(moment))])
    with migrated_engine.connect() as conn:
        for table, keys in (("ledger_transactions", ("hot", "settled")), ("request_records", ("hot",))):
            core = conn.exec_driver_sql(f"SELECT * FROM {table} WHERE message_id = 'core'").mappings().one()
            for key in keys:
                written = conn.exec_driver_sql(f"SELECT * FROM {table} WHERE message_id = '{key}'").mappings().one()
                differing = {name for name in core if core[name] != written[name]}
                assert differing <= {"id", "ref", "message_id"}, (table, key,
                                                                   {n: (core[n], written[n]) for n in differing})


def test_settlements_in_one_batch_see_each_other(ledger_engine: Engine, writer: InlineLedgerWriter) -> None:
    current, prior, _, _ = balances_of(ledger_engine, IN_CITY)
    everything = current + prior
    responses = write(writer, [settle(ledger_engine, IN_CITY, f"m-{i}", 41_000, medical_type=11)
                               for i in range(12)])
    assert all(r.status == OK for r in responses)
    paid = sum(r.settle.split.current_year_account_fen + r.settle.split.prior_years_account_fen for r in responses)
    assert paid <= everything
    after = balances_of(ledger_engine, IN_CITY)
    assert after[0] >= 0 and after[1] >= 0 and after[0] + after[1] == everything - paid
    assert_consistent(ledger_engine)


def test_one_failing_intent_never_fails_its_batch_mates(
    ledger_engine: Engine, writer: InlineLedgerWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Batch._settle

    def sometimes_broken(self: Batch, intent: Any) -> Outcome:
        if intent.message_id == "bad":
            raise RuntimeError("a bug in one request")
        return original(self, intent)

    monkeypatch.setattr(Batch, "_settle", sometimes_broken)
    responses = write(writer, [settle(ledger_engine, IN_CITY, "good-1", 1_000),
                               settle(ledger_engine, IN_CITY, "bad", 1_000),
                               settle(ledger_engine, IN_CITY, "good-2", 1_000)])
    assert [r.status for r in responses] == [OK, pb.STATUS_CODE_INTERNAL_ERROR, OK]
    assert_consistent(ledger_engine)


def persons_accounts_fen(engine: Engine, card_number: str) -> int | None:
    """What the holder's ledger accounts hold together (None: the ledger has no account of theirs)."""
    with Session(engine) as db:
        total: int | None = db.scalar(select(func.sum(LedgerAccount.balance_fen)).where(
            LedgerAccount.owner == str(person_id_of(engine, CARDS[card_number][0].person.social_security_number))))
    return total


def _statements_of(engine: Engine) -> list[str]:
    from sqlalchemy import event

    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_the_writer_looks_for_a_persons_accounts_only_until_they_are_committed(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    before = balances_of(ledger_engine, IN_CITY)  # the opening balances, read the way requests read them
    statements = _statements_of(ledger_engine)
    assert one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000)).status == OK
    assert any("INSERT INTO ledger_accounts" in s for s in statements)
    statements.clear()
    assert one(writer, settle(ledger_engine, IN_CITY, "m-2", 1_000)).status == OK
    assert not any("INSERT INTO ledger_accounts" in s or "ledger_accounts.owner" in s for s in statements), statements
    assert sum(balances_of(ledger_engine, IN_CITY)[:2]) < sum(before[:2])
    assert_consistent(ledger_engine)


def _reads_of_state(statements: list[str]) -> list[str]:
    """The statements that read holders' balances, year-to-date totals or cards."""
    return [sql for sql in statements if sql.lstrip().upper().startswith(("SELECT", "WITH"))
            and any(table in sql for table in ("ledger_accounts", "year_totals", "FROM cards"))]


def test_on_sqlite_the_writer_reads_no_state_it_committed_itself(sqlite_url: str) -> None:
    """Nobody else wrote (SQLite's data_version says so, under the write lock): the second batch for the same
    holders reads neither their balances nor their year-to-date totals nor their cards — only the request records
    of its keys — and books exactly what reading them would."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    write_demo_registry(engine, persons=40)
    writer = InlineLedgerWriter(engine, POLICIES)
    assert one(writer, settle(engine, IN_CITY, "m-0", 1_000)).status == OK  # the card's first use: read again
    assert one(writer, settle(engine, IN_CITY, "m-1", 1_000)).status == OK
    intents: list[Any] = [settle(engine, IN_CITY, f"m-{n}", 41_000, admitted=True) for n in (2, 3)]
    seen = _statements_of(engine)
    settled = write(writer, intents)
    assert [r.status for r in settled] == [OK, OK]
    assert _reads_of_state(seen) == []
    assert any("request_records" in sql for sql in seen)
    current, prior, deductible, pooled = balances_of(engine, IN_CITY)
    after = settled[-1].settle.balances_after
    assert (after.current_year_account_fen, after.prior_years_account_fen, after.deductible_counted_ytd_fen,
            after.pooled_fund_paid_ytd_fen) == (current, prior, deductible, pooled)
    assert_consistent(engine)
    writer.close()
    engine.dispose()


def test_on_sqlite_a_write_by_anyone_else_makes_the_writer_read_the_state_again(sqlite_url: str) -> None:
    """Another connection — another gateway process, `gateway ledger rollover`, an operator — committed: the writer
    knows nothing any more and reads what it books on, so it never books on a balance that is no longer there."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    write_demo_registry(engine, persons=40)
    writer = InlineLedgerWriter(engine, POLICIES)
    assert one(writer, settle(engine, IN_CITY, "m-1", 1_000)).status == OK
    other = make_engine(sqlite_url)
    other_writer = InlineLedgerWriter(other, POLICIES)
    assert one(other_writer, settle(other, IN_CITY, "other-1", 50_000)).status == OK
    intent = settle(engine, IN_CITY, "m-2", 1_000, admitted=True)
    seen = _statements_of(engine)
    mine = one(writer, intent)
    assert mine.status == OK and _reads_of_state(seen) != []
    current, prior, _, _ = balances_of(engine, IN_CITY)
    assert (mine.settle.balances_after.current_year_account_fen,
            mine.settle.balances_after.prior_years_account_fen) == (current, prior)
    assert_consistent(engine)
    for each in (writer, other_writer):
        each.close()
    other.dispose()
    engine.dispose()


def test_two_writers_on_one_sqlite_ledger_book_as_one_would(tmp_path: Any) -> None:
    """Two writers (two gateway processes on one ledger, `gateway serve --processes 2`) taking turns on one holder
    until the accounts are empty: each sees what the other booked, so every split is the one a single writer gives
    and the ledger checks."""

    def run(url: str, writers_count: int) -> list[Any]:
        engines = [make_engine(url) for _ in range(writers_count)]
        upgrade(engines[0])
        write_demo_registry(engines[0], persons=40)
        writers = [InlineLedgerWriter(each, POLICIES) for each in engines]
        splits = []
        for n in range(30):
            response = one(writers[n % writers_count],
                           settle(engines[0], IN_CITY, f"m-{n}", 30_000 + 7 * n, admitted=True))
            assert response.status == OK, response.message_en
            splits.append(response.settle.split)
        assert_consistent(engines[0])
        for each in writers:
            each.close()
        for each in engines:
            each.dispose()
        return splits

    alone = run(f"sqlite:///{tmp_path / 'alone.db'}", 1)
    assert alone[-1].current_year_account_fen == 0  # the current-year account ran dry on the way
    assert run(f"sqlite:///{tmp_path / 'shared.db'}", 2) == alone


def test_a_failed_batch_leaves_the_writer_knowing_nothing(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    write_demo_registry(engine, persons=40)
    writer = InlineLedgerWriter(engine, POLICIES)
    assert one(writer, settle(engine, IN_CITY, "m-1", 1_000)).status == OK
    original = Batch._write

    def fails_after_deciding(self: Batch) -> None:
        original(self)
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(Batch, "_write", fails_after_deciding)
    assert one(writer, settle(engine, IN_CITY, "m-2", 1_000)).status == pb.STATUS_CODE_INTERNAL_ERROR
    monkeypatch.setattr(Batch, "_write", original)
    intent = settle(engine, IN_CITY, "m-3", 1_000)
    seen = _statements_of(engine)
    assert one(writer, intent).status == OK
    assert _reads_of_state(seen) != []
    assert_consistent(engine)
    writer.close()
    engine.dispose()


def test_a_batch_that_failed_leaves_no_account_remembered(
    ledger_engine: Engine, writer: InlineLedgerWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch for a person opens their accounts and posts the opening balance, then fails: rolled back,
    so the next batch must open them again (else the person would settle with no opening balance)."""
    opening = balances_of(ledger_engine, IN_CITY)
    original = Batch._write
    failures = iter([RuntimeError("the disk filled up")])

    def failing_once(self: Batch) -> None:
        original(self)
        for failure in failures:
            raise failure

    monkeypatch.setattr(Batch, "_write", failing_once)
    assert one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000)).status == pb.STATUS_CODE_INTERNAL_ERROR
    settled = one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000))
    assert settled.status == OK
    paid = settled.settle.split.current_year_account_fen + settled.settle.split.prior_years_account_fen
    assert paid == 1_000, "the personal account pays an in-city outpatient bill it can cover"
    in_ledger = persons_accounts_fen(ledger_engine, IN_CITY)
    assert in_ledger == sum(opening[:2]) - paid
    assert_consistent(ledger_engine)


def test_a_writer_whose_database_lost_committed_rows_forgets_what_it_remembered(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    """A restore from backup (or a failover to a replica that lagged) while the gateway runs: the accounts the
    writer remembers are gone. The first write that fails makes it forget them, and the retry opens them again."""
    opening = balances_of(ledger_engine, IN_CITY)
    assert one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000)).status == OK
    with ledger_engine.begin() as conn:  # the ledger as it was before that settlement
        for table in ("ledger_entries", "request_records", "year_totals", "ledger_transactions", "ledger_accounts"):
            conn.execute(text(f"DELETE FROM {table}"))
    settled = one(writer, settle(ledger_engine, IN_CITY, "m-2", 1_000))
    assert settled.status == OK, settled.message_en
    in_ledger = persons_accounts_fen(ledger_engine, IN_CITY)
    assert in_ledger == sum(opening[:2]) - 1_000
    assert_consistent(ledger_engine)


def test_a_write_refused_for_a_lost_account_makes_the_writer_forget_and_open_it_again(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    """The institution's accounts lost (the person's kept): the entries' foreign keys refuse the batch, the
    writer forgets what it remembered and the retry opens them again."""
    assert one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000)).status == OK
    with ledger_engine.begin() as conn:
        for table in ("ledger_entries", "request_records", "year_totals", "ledger_transactions"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DELETE FROM ledger_accounts WHERE code NOT LIKE 'person:%'"))
    settled = one(writer, settle(ledger_engine, IN_CITY, "m-2", 1_000))
    assert settled.status == OK, settled.message_en
    with Session(ledger_engine) as db:
        assert db.get(LedgerAccount, "institution:H33020300001:receivable") is not None


def test_a_writer_that_forgets_its_accounts_looks_them_up_again(ledger_engine: Engine) -> None:
    from gateway.ledger.writer import WriterLimits

    small = InlineLedgerWriter(ledger_engine, POLICIES, WriterLimits(known_accounts=3))
    cards = ["N00000001", "N00000201", "N00000601", "N00001401"]
    for round_ in range(3):
        for card in cards:
            assert one(small, settle(ledger_engine, card, f"m-{round_}-{card}", 500)).status == OK
    assert_consistent(ledger_engine)


def test_a_refused_settlement_writes_nothing(ledger_engine: Engine, writer: InlineLedgerWriter) -> None:
    refused = one(writer, settle(ledger_engine, IN_CITY, "m-1", 0))
    assert refused.status == pb.STATUS_CODE_AMOUNT_OUT_OF_RANGE
    with Session(ledger_engine) as db:
        assert db.scalar(select(func.count()).select_from(RequestRecord)) == 0
    # the same message id may be used again: nothing was recorded under it
    assert one(writer, settle(ledger_engine, IN_CITY, "m-1", 100)).status == OK


def test_rollover_moves_current_year_balances_once(ledger_engine: Engine, writer: InlineLedgerWriter) -> None:
    one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000))
    current, prior, _, _ = balances_of(ledger_engine, IN_CITY)
    mark_closed(ledger_engine, date(2026, 12, 31))
    first = rollover(ledger_engine, 2026, today=date(2027, 1, 1))
    assert first.persons >= 1 and first.moved_fen >= current
    assert balances_of(ledger_engine, IN_CITY)[:2] == (0, current + prior)
    second = rollover(ledger_engine, 2026, today=date(2027, 1, 2))
    assert (second.persons, second.moved_fen) == (0, 0) and second.already_done == first.persons
    assert_consistent(ledger_engine)


def test_a_late_revoke_after_the_rollover_gives_the_current_year_share_back_to_the_prior_years_account(
        ledger_engine: Engine, writer: InlineLedgerWriter) -> None:
    # Settled on 2026-12-30 (Beijing) from the current-year account; the year is rolled over on 2027-01-02;
    # the revoke comes on 2027-01-02, inside the revoke window. The 2026 current-year money now lives in the
    # prior-years account, so that is where the refund goes: the 2027 current-year account gets nothing of 2026.
    late_december = datetime(2026, 12, 30, 2, 0, tzinfo=UTC)
    current_before, prior_before, _, _ = balances_of(ledger_engine, IN_CITY)
    settled = one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000, at=late_december))
    assert settled.status == OK and settled.settle.split.current_year_account_fen == 1_000
    mark_closed(ledger_engine, date(2026, 12, 31))
    rollover(ledger_engine, 2026, today=date(2027, 1, 2))
    assert balances_of(ledger_engine, IN_CITY)[:2] == (0, current_before + prior_before - 1_000)
    revoked = one(writer, revoke(settled.settle.settlement_id, "rk-1", at=datetime(2027, 1, 2, 2, 0, tzinfo=UTC)))
    assert revoked.status == OK
    refunded = revoked.revoke.refunded
    assert (refunded.current_year_account_fen, refunded.prior_years_account_fen) == (0, 1_000)
    assert balances_of(ledger_engine, IN_CITY)[:2] == (0, current_before + prior_before)
    assert_consistent(ledger_engine)


def test_a_late_revoke_before_the_rollover_gives_back_to_the_current_year_account_which_then_rolls_over(
        ledger_engine: Engine, writer: InlineLedgerWriter) -> None:
    current_before, prior_before, _, _ = balances_of(ledger_engine, IN_CITY)
    settled = one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000, at=datetime(2026, 12, 30, 2, 0, tzinfo=UTC)))
    revoked = one(writer, revoke(settled.settle.settlement_id, "rk-1", at=datetime(2027, 1, 2, 2, 0, tzinfo=UTC)))
    assert revoked.revoke.refunded.current_year_account_fen == 1_000
    assert balances_of(ledger_engine, IN_CITY)[:2] == (current_before, prior_before)
    mark_closed(ledger_engine, date(2026, 12, 31))
    rollover(ledger_engine, 2026, today=date(2027, 1, 3))
    assert balances_of(ledger_engine, IN_CITY)[:2] == (0, current_before + prior_before)
    assert_consistent(ledger_engine)


@pytest.mark.parametrize(("today", "close_last_day", "why"), [
    (date(2026, 12, 3), True, "insurance year 2026 is not over: today is 2026-12-03 in Beijing"),
    (date(2026, 12, 31), True, "insurance year 2026 is not over: today is 2026-12-31"),
    (date(2027, 1, 1), False, "2026-12-31, the last day of 2026, is not closed"),
])
def test_rollover_refuses_a_year_that_is_not_over_or_not_closed(
        ledger_engine: Engine, writer: InlineLedgerWriter, today: date, close_last_day: bool, why: str) -> None:
    one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000))
    before = balances_of(ledger_engine, IN_CITY)
    if close_last_day:
        mark_closed(ledger_engine, date(2026, 12, 31))
    with pytest.raises(RolloverRefused, match=why):
        rollover(ledger_engine, 2026, today=today)
    assert balances_of(ledger_engine, IN_CITY) == before
    assert_consistent(ledger_engine)


def test_check_finds_every_kind_of_damage(ledger_engine: Engine, writer: InlineLedgerWriter) -> None:
    settled = one(writer, settle(ledger_engine, IN_CITY, "m-1", 100_000))
    ref = settled.settle.settlement_id
    with ledger_engine.begin() as conn:
        conn.execute(update(LedgerAccount).where(LedgerAccount.code == "persons:cash")
                     .values(balance_fen=LedgerAccount.balance_fen + 1))
        conn.execute(update(LedgerTransaction).where(LedgerTransaction.ref == ref)
                     .values(pooled_fund_fen=LedgerTransaction.pooled_fund_fen + 5))
        conn.execute(text("UPDATE ledger_entries SET amount_fen = amount_fen + 7 WHERE id = "
                          "(SELECT MIN(id) FROM ledger_entries WHERE transaction_ref = :ref)"), {"ref": ref})
    report = check_ledger(ledger_engine)
    assert not report.ok
    rendered = report.render()
    assert "FAIL every transaction sums to zero" in rendered
    assert "FAIL cached balances equal the sum of their entries" in rendered
    assert "FAIL every settlement's entries equal its recorded split" in rendered
    assert "THE LEDGER IS INCONSISTENT" in rendered


def test_export_has_a_row_per_settlement_revoke_and_reversal(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    a = one(writer, settle(ledger_engine, IN_CITY, "m-1", 10_000))
    one(writer, settle(ledger_engine, IN_CITY, "m-2", 20_000))
    one(writer, revoke(a.settle.settlement_id, "rk-1"))
    one(writer, reverse("m-2", "rv-1"))
    rows = list(export_rows(ledger_engine, TODAY))
    assert [(r["kind"], r["status"]) for r in rows] == [
        ("settlement", "revoked"), ("settlement", "reversed"), ("revoke", "revoke"), ("reversal", "reversal")]
    assert rows[2]["total_fen"] == -10_000 and rows[2]["original_settlement_id"] == a.settle.settlement_id
    assert rows[0]["terminal_id"] == "H33020300001-01" and rows[0]["total_yuan"] == "100.00"
    assert list(export_rows(ledger_engine, TODAY + timedelta(days=1))) == []


def test_the_ledger_commands(ledger_engine: Engine, writer: InlineLedgerWriter, tmp_path: Any,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli.main import main

    url = ledger_engine.url.render_as_string(hide_password=False)
    one(writer, settle(ledger_engine, IN_CITY, "m-1", 10_000))
    assert main(["ledger", "check", "--db", url]) == 0
    assert "all invariants hold" in capsys.readouterr().out
    out = tmp_path / "day.csv"
    assert main(["ledger", "export", "--db", url, "--date", "2026-11-24", "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("business_date,recorded_at,kind,status,settlement_id")
    assert len(lines) == 2 and ",settled," in lines[1]
    # The year must be over in Beijing time (any run of this suite is after 2025) and its last day closed.
    assert main(["ledger", "rollover", "--db", url, "--year", "2025"]) == 1
    assert "2025-12-31, the last day of 2025, is not closed" in capsys.readouterr().err
    mark_closed(ledger_engine, date(2025, 12, 31))
    assert main(["ledger", "rollover", "--db", url, "--year", "2025"]) == 0
    assert main(["ledger", "rollover", "--db", url, "--year", "2025"]) == 0
    assert "0 persons, 0.00 yuan moved" in capsys.readouterr().out
    with ledger_engine.begin() as conn:
        conn.execute(update(LedgerAccount).where(LedgerAccount.code == "institution:H33020300001:receivable")
                     .values(balance_fen=LedgerAccount.balance_fen + 1))
    assert main(["ledger", "check", "--db", url]) == 1
    assert "FAIL cached balances equal the sum of their entries" in capsys.readouterr().out


_fen = st.integers(min_value=0, max_value=10**13)
_splits = st.builds(lambda parts, deductible: FundSplit(sum(parts), *parts, deductible),
                    st.tuples(_fen, _fen, _fen, _fen), _fen)


@given(_splits)
def test_a_split_is_recorded_in_its_columns_and_read_back_from_a_settlement_and_its_undoing(split: FundSplit) -> None:
    settlement = split_columns(split)
    undoing = split_columns(split, sign=-1)
    assert split_of(settlement) == split_of(undoing) == split
    assert negated_columns(settlement) == undoing and negated_columns(undoing) == settlement
    assert settlement["current_year_fen"] == split.current_year_account_fen
    assert settlement["prior_years_fen"] == split.prior_years_account_fen


def test_revoking_what_is_no_settlement_is_refused_not_an_internal_error(
    ledger_engine: Engine, writer: InlineLedgerWriter
) -> None:
    """A rollover records only its total (so does a subsidy payout): no split to read, and nothing a terminal may
    revoke."""
    one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000))
    mark_closed(ledger_engine, date(2026, 12, 31))
    rollover(ledger_engine, 2026, today=date(2027, 1, 1))
    with Session(ledger_engine) as db:
        rolled = db.scalars(select(LedgerTransaction.ref).where(LedgerTransaction.kind == "rollover")).first()
    assert rolled is not None
    assert one(writer, revoke(rolled, "rk-1")).status == pb.STATUS_CODE_ORIGINAL_NOT_FOUND
    assert_consistent(ledger_engine)


def test_a_settlement_the_rules_left_without_a_split_is_never_booked(
    ledger_engine: Engine, writer: InlineLedgerWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit check, not an assert (`python -O` strips those): the batch raises LedgerInvariantBroken
    before anything is written, and the writer answers that intent INTERNAL_ERROR."""
    decide = batch_module.decide

    def without_a_split(facts: Any, policies: Any) -> Any:
        decision = decide(facts, policies)
        return replace(decision, split=None) if isinstance(decision, Decision) else decision

    monkeypatch.setattr(batch_module, "decide", without_a_split)
    with ledger_engine.connect() as conn, conn.begin(), pytest.raises(LedgerInvariantBroken, match="without a split"):
        Batch(conn, POLICIES).run([settle(ledger_engine, IN_CITY, "m-1", 1_000)])
    assert one(writer, settle(ledger_engine, IN_CITY, "m-1", 1_000)).status == pb.STATUS_CODE_INTERNAL_ERROR
    with Session(ledger_engine) as db:
        assert db.scalar(select(func.count()).select_from(RequestRecord)) == 0
