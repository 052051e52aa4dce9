"""A retry of a recorded message id is answered from the ledger's record first (docs/protocol.md 2.6, 4.9 step 1):
before the card is read, the rules say no, or the PIN is verified — whatever the path. A recorded Settle again
with the same content gets its recorded answer, with other content STATUS_CODE_DUPLICATE_MESSAGE_ID, after a
Reverse found its id first STATUS_CODE_MESSAGE_ID_REVERSED; never STATUS_CODE_PIN_WRONG, and no VERIFY ever
reaches the card (each one a PIN could burn one of the card's six tries).

Every path: the card read kept (on the connection for the terminal's own reader, for the terminal id for a reader
of the gateway's) or not, the same connection or a new one, a holder of the city (no PIN) or of another city (PIN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session as DbSession

from gateway.demo.card import VirtualCard
from gateway.ledger.check import check_ledger
from gateway.protocol.messages import pb
from gateway.registry.models import Terminal
from tests.test_adapter import Connection, Harness
from tests.test_settlement_flow import Counter
from tests.wire import request, sign_in

OK = pb.STATUS_CODE_OK
IN_CITY, ELSEWHERE = "N00000001", "Z00000101"  # Haishu, no PIN; Wenzhou filed for Ningbo, PIN 000000
RIGHT_PIN, WRONG_PIN = "000000", "123456"
VERIFY = 0x20  # the INS byte of VERIFY


class CardSpy:
    """Every APDU any virtual card is sent, through a reader of the gateway's or the terminal's own."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[bytes] = []
        transmit = VirtualCard.transmit

        def spied(card: VirtualCard, command: bytes) -> bytes:
            self.commands.append(command)
            return transmit(card, command)

        monkeypatch.setattr(VirtualCard, "transmit", spied)

    def verifies(self) -> int:
        return sum(1 for command in self.commands if len(command) > 1 and command[1] == VERIFY)


class Till:
    """A terminal at a counter on one connection; its card in its own reader (relay) or in the gateway's."""

    def __init__(self, harness: Harness, terminal_id: str, card_number: str, relay: bool) -> None:
        self.harness, self.terminal_id, self.card_number, self.relay = harness, terminal_id, card_number, relay
        self.n = 0
        self.counter: Counter | None = None
        self.connection: Connection
        if relay:
            self.counter = Counter(harness, terminal_id, card_number)
            self.connection = self.counter.connection
        else:
            self.connection = harness.connect()
            assert self.connection.call(sign_in(terminal_id=terminal_id)).status == OK

    def run(self, body: str, mid: str | None = None, **fields: Any) -> pb.Response:
        self.n += 1
        req = request(body, mid or f"{body}-{self.n}", self.terminal_id, **fields)
        response = self.counter.terminal.run(req) if self.counter is not None else self.connection.call(req)
        response.ClearField("server_time")  # the gateway's clock when it wrote the frame
        return response

    def settle(self, mid: str, total_fen: int, pin: str | None) -> pb.Response:
        return self.run("settle", mid, medical_type=11, total_fen=total_fen, **({"pin": pin} if pin else {}))

    def card_swapped(self) -> None:
        """The card taken out and put back: what was read from it is forgotten."""
        for kind in (pb.CARD_EVENT_KIND_REMOVED, pb.CARD_EVENT_KIND_INSERTED):
            self.n += 1
            assert self.connection.call(request("card_event", f"ce-{self.n}", self.terminal_id,
                                                kind=kind)).status == OK


@dataclass(frozen=True)
class Path:
    name: str
    holder: str
    relay: bool                                  # the terminal's own reader; else a virtual reader of the gateway's
    again: Callable[[Till, Harness], Till]       # where the retry is sent from


def same_connection(till: Till, harness: Harness) -> Till:
    return till


def new_connection(till: Till, harness: Harness) -> Till:
    return Till(harness, till.terminal_id, till.card_number, till.relay)


def card_swapped(till: Till, harness: Harness) -> Till:
    till.card_swapped()
    return till


PATHS = [
    # The card read kept: by the connection (the terminal's reader) or by the terminal id (the gateway's).
    Path("elsewhere, own reader, read kept on the connection", ELSEWHERE, True, same_connection),
    Path("elsewhere, gateway's reader, read kept, new connection", ELSEWHERE, False, new_connection),
    Path("elsewhere, gateway's reader, read kept, same connection", ELSEWHERE, False, same_connection),
    Path("in the city, own reader, read kept on the connection", IN_CITY, True, same_connection),
    Path("in the city, gateway's reader, read kept, new connection", IN_CITY, False, new_connection),
    # Nothing read at the terminal yet.
    Path("elsewhere, own reader, new connection", ELSEWHERE, True, new_connection),
    Path("elsewhere, own reader, card taken out and back", ELSEWHERE, True, card_swapped),
    Path("elsewhere, gateway's reader, card taken out and back", ELSEWHERE, False, card_swapped),
    Path("in the city, own reader, new connection", IN_CITY, True, new_connection),
]
VIRTUAL_TERMINAL = "H33020300001-02"  # given a virtual reader holding the path's card
RELAY_TERMINAL = "H33020300001-01"


def harness_for(engine: Engine, path: Path) -> tuple[Harness, Till]:
    if not path.relay:
        with DbSession(engine) as db, db.begin():
            db.execute(update(Terminal).where(Terminal.terminal_id == VIRTUAL_TERMINAL)
                       .values(reader=f"virtual:{path.holder}"))
    harness = Harness(engine)
    return harness, Till(harness, RELAY_TERMINAL if path.relay else VIRTUAL_TERMINAL, path.holder, path.relay)


def pin_of(path: Path, pin: str) -> str | None:
    return pin if path.holder == ELSEWHERE else None


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
@pytest.mark.parametrize(("case", "total_fen", "pin", "status"), [
    ("the same content, a mistyped PIN", 10_000, WRONG_PIN, OK),
    ("other content, the right PIN", 10_001, RIGHT_PIN, pb.STATUS_CODE_DUPLICATE_MESSAGE_ID),
], ids=["same content", "other content"])
def test_a_recorded_settle_is_answered_from_the_record_before_the_card_or_the_pin(
    demo_engine: Engine, monkeypatch: pytest.MonkeyPatch, path: Path, case: str, total_fen: int, pin: str,
    status: int
) -> None:
    spy = CardSpy(monkeypatch)
    harness, till = harness_for(demo_engine, path)
    first = till.settle("s-1", 10_000, pin_of(path, RIGHT_PIN))
    assert first.status == OK, first.message_en
    spy.commands.clear()
    again = path.again(till, harness).settle("s-1", total_fen, pin_of(path, pin))
    assert again.status == status, again.message_en
    if status == OK:
        assert again == first
    assert spy.verifies() == 0, "no VERIFY: a wrong PIN would have cost the card a try"
    assert spy.commands == [], "the card is not even read"
    assert check_ledger(demo_engine).ok


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_a_settle_whose_id_a_reverse_found_first_is_refused_before_the_card_or_the_pin(
    demo_engine: Engine, monkeypatch: pytest.MonkeyPatch, path: Path
) -> None:
    spy = CardSpy(monkeypatch)
    harness, till = harness_for(demo_engine, path)
    assert till.settle("s-0", 1_000, pin_of(path, RIGHT_PIN)).status == OK  # the card read, and kept where it is
    reversed_ = till.run("reverse", "rv-1", original_message_id="lost-1")
    assert reversed_.reverse.outcome == pb.REVERSE_OUTCOME_NEVER_ARRIVED
    spy.commands.clear()
    late = path.again(till, harness).settle("lost-1", 1_000, pin_of(path, WRONG_PIN))
    assert late.status == pb.STATUS_CODE_MESSAGE_ID_REVERSED, late.message_en
    assert spy.commands == []


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_a_pre_settle_under_a_recorded_id_is_refused_before_the_card_or_the_pin(
    demo_engine: Engine, monkeypatch: pytest.MonkeyPatch, path: Path
) -> None:
    """A PreSettle records nothing, but under the id of a recorded request it is that id's other content."""
    spy = CardSpy(monkeypatch)
    harness, till = harness_for(demo_engine, path)
    assert till.settle("s-1", 10_000, pin_of(path, RIGHT_PIN)).status == OK
    assert till.run("reverse", "rv-1", original_message_id="lost-1").status == OK
    spy.commands.clear()
    retry = path.again(till, harness)
    pin = {"pin": WRONG_PIN} if path.holder == ELSEWHERE else {}
    duplicate = retry.run("pre_settle", "s-1", medical_type=11, total_fen=10_000, **pin)
    assert duplicate.status == pb.STATUS_CODE_DUPLICATE_MESSAGE_ID, duplicate.message_en
    tombstoned = retry.run("pre_settle", "lost-1", medical_type=11, total_fen=10_000, **pin)
    assert tombstoned.status == pb.STATUS_CODE_MESSAGE_ID_REVERSED, tombstoned.message_en
    assert spy.commands == []
    fresh = retry.run("pre_settle", "p-1", medical_type=11, total_fen=10_000,
                      **({"pin": RIGHT_PIN} if path.holder == ELSEWHERE else {}))
    assert fresh.status == OK, "an id nothing is recorded under is computed as ever"


def test_a_revoke_or_reverse_under_a_recorded_id_is_answered_from_the_record_even_when_malformed(
    demo_engine: Engine
) -> None:
    """The record first, the checks of the request's form after: other content under a recorded id is that."""
    till = Till(Harness(demo_engine), RELAY_TERMINAL, IN_CITY, relay=True)
    settled = till.settle("s-1", 5_000, None)
    revoked = till.run("revoke", "rk-1", settlement_id=settled.settle.settlement_id)
    assert revoked.status == OK
    assert till.run("revoke", "rk-1", settlement_id=settled.settle.settlement_id) == revoked
    assert till.run("revoke", "rk-1", settlement_id="").status == pb.STATUS_CODE_DUPLICATE_MESSAGE_ID
    assert till.run("reverse", "s-1", original_message_id="s-1").status == pb.STATUS_CODE_DUPLICATE_MESSAGE_ID
    assert till.run("revoke", "rk-2", settlement_id="").status == pb.STATUS_CODE_BAD_REQUEST  # nothing recorded
    assert till.run("reverse", "rv-2", original_message_id="rv-2").status == pb.STATUS_CODE_BAD_REQUEST
