"""Read the card -> rules -> PIN on the card -> ledger -> answer, through the adapter (in-memory transports)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from gateway.demo.card import VirtualCard
from gateway.demo.population import demo_population
from gateway.ledger.check import check_ledger
from gateway.protocol.messages import pb
from tests.test_adapter import Connection, Harness
from tests.test_relay import ScriptedTerminal
from tests.wire import request, sign_in

OK = pb.STATUS_CODE_OK
HOLDERS = {card.card_number: (holder, card) for holder in demo_population() for card in holder.cards}


def card(number: str) -> VirtualCard:
    holder, demo_card = HOLDERS[number]
    return VirtualCard(holder, demo_card)


class Counter:
    """A terminal at a counter, with a card in its own reader."""

    def __init__(self, harness: Harness, terminal_id: str, card_number: str) -> None:
        self.terminal_id = terminal_id
        self.connection: Connection = harness.connect()
        assert self.connection.call(sign_in(terminal_id=terminal_id)).status == OK
        self.card = card(card_number)
        self.terminal = ScriptedTerminal(self.connection, self.card)
        self.n = 0

    def run(self, body: str, mid: str | None = None, **fields: Any) -> pb.Response:
        """Send `body` with message id `mid` (a fresh one by default) and the body's `fields`."""
        self.n += 1
        queried = fields.pop("message_id", None)  # QueryTransaction's own field of that name
        req = request(body, mid or f"{body}-{self.n}", self.terminal_id, **fields)
        if queried is not None:
            getattr(req, body).message_id = queried
        return self.terminal.run(req)

    def scripts(self) -> int:
        return self.terminal.scripts


@pytest.fixture
def harness(demo_engine: Engine) -> Harness:
    return Harness(demo_engine)


def test_pre_settle_answers_what_settle_then_does(harness: Harness, demo_engine: Engine) -> None:
    counter = Counter(harness, "H33020300001-01", "N00000001")
    read = counter.run("read_card")
    assert read.status == OK
    assert read.read_card.insured.insured_region_code.startswith("3302")
    assert not read.read_card.insured.pin_required
    assert read.read_card.card.kind == pb.CARD_KIND_SOCIAL_SECURITY
    pre = counter.run("pre_settle", medical_type=pb.MEDICAL_TYPE_ORDINARY_OUTPATIENT, total_fen=123_456)
    assert pre.status == OK and pre.pre_settle.settlement_id == ""
    settled = counter.run("settle", "s-1", medical_type=pb.MEDICAL_TYPE_ORDINARY_OUTPATIENT, total_fen=123_456)
    assert settled.status == OK, settled.message_en
    assert settled.settle.split == pre.pre_settle.split
    assert settled.settle.balances_after == pre.pre_settle.balances_after
    assert settled.settle.settlement_id.startswith("S20261124")
    assert counter.scripts() == 1  # the card was read once; later requests used what was read
    by_message = counter.run("query_transaction", message_id="s-1")
    assert by_message.query_transaction.state == pb.TRANSACTION_STATE_SETTLED
    by_id = counter.run("query_transaction", settlement_id=settled.settle.settlement_id)
    assert by_id.query_transaction.split == settled.settle.split
    assert check_ledger(demo_engine).ok


def test_a_retried_settle_gets_its_answer_without_touching_the_card(harness: Harness) -> None:
    counter = Counter(harness, "H33020300001-01", "N00000001")
    first = counter.run("settle", "s-1", medical_type=11, total_fen=5_000)
    scripts = counter.scripts()
    counter.connection.call(request("card_event", "ce", counter.terminal_id, kind=pb.CARD_EVENT_KIND_REMOVED))
    again = counter.run("settle", "s-1", medical_type=11, total_fen=5_000)
    assert again == first and counter.scripts() == scripts
    changed = counter.run("settle", "s-1", medical_type=11, total_fen=6_000)
    assert changed.status == pb.STATUS_CODE_DUPLICATE_MESSAGE_ID


def test_outside_the_city_the_pin_is_verified_on_the_card(harness: Harness) -> None:
    counter = Counter(harness, "H33020300001-01", "Z00000101")  # Wenzhou, filed for Ningbo
    assert counter.run("read_card").read_card.insured.pin_required
    assert counter.run("settle", medical_type=11, total_fen=10_000).status == pb.STATUS_CODE_PIN_REQUIRED
    wrong = counter.run("settle", medical_type=11, total_fen=10_000, pin="123456")
    assert (wrong.status, wrong.pin_tries_left) == (pb.STATUS_CODE_PIN_WRONG, 5)
    assert "123456" not in wrong.message_en + wrong.message_zh
    scripts = counter.scripts()
    right = counter.run("settle", medical_type=11, total_fen=10_000, pin="000000")
    assert right.status == OK, right.message_en
    assert counter.scripts() == scripts + 1  # one more round trip: VERIFY
    assert counter.card.state.tries_left == 6


def test_a_locked_card_is_sent_to_the_agency(harness: Harness) -> None:
    counter = Counter(harness, "H33020300001-01", "Z00001501")
    locked = counter.run("settle", medical_type=11, total_fen=10_000, pin="000000")
    assert locked.status == pb.STATUS_CODE_PIN_LOCKED
    assert "card agency" in locked.message_en and "ID" in locked.message_en


def test_six_wrong_pins_lock_the_card_through_the_gateway(harness: Harness) -> None:
    counter = Counter(harness, "H33020300001-01", "Z00000101")
    statuses = [counter.run("settle", medical_type=11, total_fen=100, pin="999999").status for _ in range(6)]
    assert statuses == [pb.STATUS_CODE_PIN_WRONG] * 5 + [pb.STATUS_CODE_PIN_LOCKED]
    assert counter.run("settle", medical_type=11, total_fen=100, pin="000000").status == pb.STATUS_CODE_PIN_LOCKED


@pytest.mark.parametrize(
    ("terminal", "card_number", "status"),
    [
        ("H33021200002-01", "Z00000101", pb.STATUS_CODE_INSTITUTION_NOT_DESIGNATED),
        ("H33020300001-01", "Z00000401", pb.STATUS_CODE_FILING_REQUIRED),
        ("H33020300001-01", "W00000701", pb.STATUS_CODE_OUTSIDE_PROVINCE),
        ("H33020300001-01", "N00001101", pb.STATUS_CODE_CARD_LOST),
        ("H33020300001-01", "N00001301", pb.STATUS_CODE_CARD_REPLACED),
        ("H33020300001-01", "N00000901", pb.STATUS_CODE_CARD_EXPIRED),
        ("P33020300004-01", "N00000001", pb.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED),
    ],
)
def test_refusals_reach_the_clerk_and_write_nothing(harness: Harness, demo_engine: Engine, terminal: str,
                                                    card_number: str, status: int) -> None:
    counter = Counter(harness, terminal, card_number)
    refused = counter.run("settle", medical_type=11, total_fen=10_000, pin="000000")
    assert refused.status == status, refused.message_en
    assert refused.message_zh and refused.message_en
    report = check_ledger(demo_engine)
    assert report.ok and report.transactions == 0


def test_special_disease_outside_the_home_city(harness: Harness) -> None:
    counter = Counter(harness, "H33020300001-01", "Z00000101")
    refused = counter.run("settle", medical_type=pb.MEDICAL_TYPE_SPECIAL_DISEASE_OUTPATIENT, total_fen=10_000,
                          pin="000000")
    assert refused.status == pb.STATUS_CODE_SPECIAL_DISEASE_NOT_SUPPORTED


def test_revoke_and_reverse_on_the_wire(harness: Harness, demo_engine: Engine) -> None:
    counter = Counter(harness, "H33020300001-01", "N00000001")
    settled = counter.run("settle", "s-1", medical_type=11, total_fen=50_000)
    revoked = counter.run("revoke", settlement_id=settled.settle.settlement_id, reason="wrong item")
    assert revoked.status == OK and revoked.revoke.refunded == settled.settle.split
    counter.run("settle", "s-2", medical_type=11, total_fen=20_000)
    reversed_ = counter.run("reverse", original_message_id="s-2")
    assert reversed_.reverse.outcome == pb.REVERSE_OUTCOME_REVERSED
    never = counter.run("reverse", original_message_id="s-3")
    assert never.reverse.outcome == pb.REVERSE_OUTCOME_NEVER_ARRIVED
    late = counter.run("settle", "s-3", medical_type=11, total_fen=20_000)
    assert late.status == pb.STATUS_CODE_MESSAGE_ID_REVERSED
    state = counter.run("query_transaction", message_id="s-1").query_transaction.state
    assert state == pb.TRANSACTION_STATE_REVOKED
    assert counter.run("query_transaction", message_id="nope").status == pb.STATUS_CODE_ORIGINAL_NOT_FOUND
    assert check_ledger(demo_engine).ok


def test_a_kiosk_balance_query_needs_the_pin(harness: Harness) -> None:
    counter = Counter(harness, "K33020300006-01", "N00000001")
    assert counter.run("query_balance").status == pb.STATUS_CODE_PIN_REQUIRED
    balance = counter.run("query_balance", pin="000000")
    assert balance.status == OK and balance.query_balance.card_number == "N00000001"
    assert balance.query_balance.balances.deductible_fen == 75_000
    at_counter = Counter(harness, "H33020300001-02", "N00000001").run("query_balance")
    assert at_counter.status == OK and at_counter.query_balance.balances == balance.query_balance.balances


def test_the_old_ic_card_works_until_the_new_card_is_first_used(harness: Harness) -> None:
    old = Counter(harness, "H33020300001-01", "M00001601")
    assert old.run("read_card").read_card.card.kind == pb.CARD_KIND_OLD_MEDICAL_IC
    assert old.run("settle", medical_type=11, total_fen=1_000).status == OK
    new = Counter(harness, "H33020300001-02", "N00001602")
    assert new.run("settle", medical_type=11, total_fen=1_000).status == OK
    # Known at once, not after the registry's next version check: the writer that recorded the first use says so.
    assert old.run("read_card").status == pb.STATUS_CODE_OLD_MEDICAL_CARD_CANCELLED
    refused = old.run("settle", medical_type=11, total_fen=1_000)
    assert refused.status == pb.STATUS_CODE_OLD_MEDICAL_CARD_CANCELLED
    assert "use the social security card" in refused.message_en


def test_two_connections_of_one_terminal_id_keep_their_own_cards(harness: Harness) -> None:
    first = Counter(harness, "H33020300001-01", "N00000001")
    second = Counter(harness, "H33020300001-01", "N00000201")
    assert first.run("read_card").read_card.card.card_number == "N00000001"
    assert second.run("read_card").read_card.card.card_number == "N00000201"
    # Message ids are unique per terminal id, whichever connection sends them.
    assert first.run("settle", "a-1", medical_type=11, total_fen=100).settle.card_number == "N00000001"
    assert second.run("settle", "b-1", medical_type=11, total_fen=100).settle.card_number == "N00000201"


def test_a_card_swapped_without_a_card_event_is_noticed_before_the_pin(harness: Harness) -> None:
    counter = Counter(harness, "H33020300001-01", "Z00000101")
    assert counter.run("read_card").status == OK
    other = card("Z00001701")  # another filed holder, same PIN
    counter.terminal.card = other
    swapped = counter.run("settle", medical_type=11, total_fen=1_000, pin="000000")
    assert swapped.status == pb.STATUS_CODE_CARD_REMOVED and "read the card again" in swapped.message_en
    again = counter.run("settle", medical_type=11, total_fen=1_000, pin="000000")
    assert again.status == OK and again.settle.card_number == "Z00001701"


# What docs/protocol.md (4.6, 4.13, 4.14) tells a vendor about scripts, connections and card reads ----------


def test_an_interim_frame_says_ok_and_only_the_final_answer_is_the_outcome(harness: Harness) -> None:
    connection = harness.connect()
    assert connection.call(sign_in()).status == OK
    connection.send(request("read_card", "r-1"))
    [interim] = connection.responses()
    assert (interim.message_id, interim.interim, interim.status) == ("r-1", True, OK)
    assert interim.HasField("apdu_script") and interim.message_en == "OK"
    outside = card("W00000701")  # insured outside Zhejiang
    answers = [outside.transmit(command) for command in interim.apdu_script.commands]
    final = connection.call(request("apdu_result", "ar-1", script_id=interim.apdu_script.script_id,
                                    responses=answers))
    assert (final.message_id, final.interim, final.status) == ("r-1", False, pb.STATUS_CODE_OUTSIDE_PROVINCE)


def test_the_script_goes_to_the_connection_that_asked_and_is_answered_there_only(harness: Harness) -> None:
    asking, other = harness.connect(), harness.connect()
    assert asking.call(sign_in()).status == OK and other.call(sign_in()).status == OK
    asking.send(request("read_card", "r-1"))
    [interim] = asking.responses()
    assert other.responses() == []
    in_city = card("N00000001")
    answers = [in_city.transmit(command) for command in interim.apdu_script.commands]
    result = request("apdu_result", "ar-1", script_id=interim.apdu_script.script_id, responses=answers)
    refused = other.call(result)
    assert refused.status == pb.STATUS_CODE_BAD_REQUEST and "no APDU script" in refused.message_en
    asking.send(request("apdu_result", "ar-2", script_id=interim.apdu_script.script_id, responses=answers))
    [final] = asking.responses()
    assert final.message_id == "r-1" and final.status == OK


def test_a_gateway_reader_s_card_read_belongs_to_the_terminal_id(harness: Harness) -> None:
    terminal = "H33020300001-03"  # virtual:N00000001
    first, second = harness.connect(), harness.connect()
    for connection in (first, second):
        assert connection.call(sign_in(terminal_id=terminal)).status == OK
    assert first.call(request("read_card", "r-1", terminal)).status == OK
    reader = harness.service.readers.virtual_reader(terminal)
    assert reader is not None and isinstance(reader.card, VirtualCard)
    commands = reader.card.commands_seen

    def settle(connection: Connection, message_id: str) -> None:
        answer = connection.call(request("settle", message_id, terminal, medical_type=11, total_fen=100))
        assert answer.status == OK, answer.message_en

    settle(second, "s-1")
    assert reader.card.commands_seen == commands  # the other connection's read served it
    second.call(request("card_event", "ce-1", terminal, kind=pb.CARD_EVENT_KIND_INSERTED))
    settle(first, "s-2")
    assert reader.card.commands_seen > commands  # a CardEvent on any connection forgot it: read again
    commands = reader.card.commands_seen
    first.close()
    settle(second, "s-3")
    assert reader.card.commands_seen == commands  # a closing connection forgets nothing of it


def test_no_card_event_is_needed_and_a_removal_does_not_stop_the_scripts(harness: Harness) -> None:
    connection = harness.connect()
    assert connection.call(sign_in()).status == OK
    assert connection.call(request("card_event", "ce-1", kind=pb.CARD_EVENT_KIND_REMOVED)).status == OK
    connection.send(request("read_card", "r-1"))
    [interim] = connection.responses()
    assert interim.interim  # the gateway asks the reader all the same
    empty = connection.call(request("apdu_result", "ar-1", script_id=interim.apdu_script.script_id,
                                    error=pb.READER_ERROR_NO_CARD))
    assert empty.message_id == "r-1" and empty.status == pb.STATUS_CODE_CARD_NOT_PRESENT
    counter = Counter(harness, "H33020300001-01", "N00000001")  # signed in, card already in, no CardEvent
    assert counter.run("read_card").status == OK
