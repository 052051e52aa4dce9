"""The terminal backend: scripts out as interim frames, ApduResults back, deadlines, broken answers."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gateway.demo.card import card_from_population
from gateway.protocol.messages import pb
from gateway.reader.errors import (
    CardProblem,
    CardRemoved,
    CardUnreadable,
    GatewayShuttingDown,
    NoCard,
    ReaderUnavailable,
)
from gateway.reader.relay import ApduRelay
from tests.test_adapter import Connection, Harness
from tests.wire import request, sign_in

OK = pb.STATUS_CODE_OK


class Relay:
    def __init__(self) -> None:
        self.clock = Clock()
        self.sent: list[tuple[int, pb.Response]] = []
        self.answered: list[int] = []
        self.relay = ApduRelay(send_interim=lambda t, r: self.sent.append((t, r)),
                               terminal_answered=self.answered.append, clock=self.clock, timeout_s=5.0)

    def outcome(self, deferred: Any) -> Any:
        out: list[Any] = []
        deferred.addBoth(out.append)
        return out[0] if out else None


def test_a_script_goes_out_as_an_interim_frame_of_the_request() -> None:
    r = Relay()
    result = r.relay.send(7, [b"\x00\xa4", b"\x00\xb2"], stop_on_error=False)
    [(token, frame)] = r.sent
    assert token == 7 and frame.HasField("apdu_script")
    script = frame.apdu_script
    assert list(script.commands) == [b"\x00\xa4", b"\x00\xb2"] and script.timeout_ms == 5000
    assert r.relay.deliver(pb.ApduResult(script_id=script.script_id, responses=[b"\x90\x00", b"\x01\x90\x00"]))
    assert r.outcome(result) == [b"\x90\x00", b"\x01\x90\x00"]
    assert r.answered == [7]


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (pb.ApduResult(error=pb.READER_ERROR_NO_CARD), NoCard),
        (pb.ApduResult(error=pb.READER_ERROR_CARD_REMOVED), CardRemoved),
        (pb.ApduResult(error=pb.READER_ERROR_READER_FAILURE), ReaderUnavailable),
        (pb.ApduResult(responses=[b"\x90\x00"]), CardUnreadable),                    # too few
        (pb.ApduResult(responses=[b"\x90\x00"] * 3), CardUnreadable),                # too many
        (pb.ApduResult(responses=[b"\x90\x00", b"\x90"]), CardUnreadable),           # no status word
        (pb.ApduResult(), CardUnreadable),                                           # nothing at all
    ],
)
def test_broken_or_failed_answers_become_card_problems(result: pb.ApduResult, problem: type[CardProblem]) -> None:
    r = Relay()
    pending = r.relay.send(1, [b"a", b"b"], stop_on_error=False)
    result.script_id = r.sent[0][1].apdu_script.script_id
    assert r.relay.deliver(result)
    failure = r.outcome(pending)
    assert isinstance(failure, Failure) and isinstance(failure.value, problem)


def test_a_script_answered_too_late_times_out_and_the_late_answer_is_unknown() -> None:
    r = Relay()
    pending = r.relay.send(1, [b"a"], stop_on_error=False)
    r.clock.advance(5.01)
    failure = r.outcome(pending)
    assert isinstance(failure.value, ReaderUnavailable) and "5 s" in failure.value.detail_en
    assert not r.relay.deliver(pb.ApduResult(script_id=r.sent[0][1].apdu_script.script_id, responses=[b"\x90\x00"]))
    assert r.answered == [1]


def test_a_disconnect_fails_what_is_outstanding() -> None:
    r = Relay()
    pending = r.relay.send(1, [b"a"], stop_on_error=False)
    r.relay.connection_lost()
    assert isinstance(r.outcome(pending).value, ReaderUnavailable)
    assert r.clock.getDelayedCalls() == []


def test_a_shutdown_answers_what_is_outstanding_and_anything_later_as_shutting_down() -> None:
    r = Relay()
    first = r.relay.send(1, [b"a"], stop_on_error=False)
    second = r.relay.send(2, [b"b"], stop_on_error=False)
    assert r.relay.shut_down() == 2
    for pending in (first, second):
        problem = r.outcome(pending).value
        assert isinstance(problem, GatewayShuttingDown) and problem.status == pb.STATUS_CODE_GATEWAY_SHUTTING_DOWN
    assert r.answered == [1, 2] and r.clock.getDelayedCalls() == []  # no reader timeout left to fire
    later = r.relay.send(3, [b"c"], stop_on_error=False)
    assert isinstance(r.outcome(later).value, GatewayShuttingDown)
    assert len(r.sent) == 2  # the later script never went out: its answer would not be read
    assert r.relay.shut_down() == 0


def test_stop_on_error_allows_fewer_responses() -> None:
    r = Relay()
    pending = r.relay.send(1, [b"a", b"b"], stop_on_error=True)
    r.relay.deliver(pb.ApduResult(script_id=r.sent[0][1].apdu_script.script_id, responses=[b"\x6a\x82"]))
    assert r.outcome(pending) == [b"\x6a\x82"]


# Through the adapter: a scripted terminal that answers with a virtual card ---------------------


class ScriptedTerminal:
    """Plays the terminal: answers every ApduScript with its virtual card."""

    def __init__(self, connection: Connection, card: Any) -> None:
        self.connection = connection
        self.card = card
        self.scripts = 0
        self.finals: list[pb.Response] = []

    def run(self, req: pb.Request) -> pb.Response:
        self.connection.send(req)
        for _ in range(10):
            for response in self.connection.responses():
                if response.interim:
                    self.scripts += 1
                    script = response.apdu_script
                    answers = [self.card.transmit(c) for c in script.commands]
                    self.connection.send(request("apdu_result", f"ar-{self.scripts}", req.terminal_id,
                                                 script_id=script.script_id, responses=answers))
                else:
                    self.finals.append(response)
            if self.finals:
                return self.finals.pop(0)
        raise AssertionError("no final answer")


def test_read_card_through_the_terminals_own_reader(demo_engine: Engine) -> None:
    harness = Harness(demo_engine)
    connection = harness.connect()
    connection.call(sign_in())
    terminal = ScriptedTerminal(connection, card_from_population())
    response = terminal.run(request("read_card", "rc-1"))
    assert response.status == OK, response.message_en
    assert response.read_card.card.card_number == "N00000001"
    assert response.read_card.card.name == "张玲"
    assert terminal.scripts == 1  # one round trip for the whole card
    assert any(key.startswith("H33020300001-01/") for key in harness.service.card_cache)


def test_read_card_through_a_virtual_reader_gives_the_same_card(demo_engine: Engine) -> None:
    harness = Harness(demo_engine)
    relay_connection = harness.connect()
    relay_connection.call(sign_in())
    by_relay = ScriptedTerminal(relay_connection, card_from_population()).run(request("read_card", "rc-1"))
    virtual_connection = harness.connect()
    virtual_connection.call(sign_in(terminal_id="H33020300001-03"))
    by_virtual = virtual_connection.call(request("read_card", "rc-2", terminal_id="H33020300001-03"))
    assert by_virtual.status == OK
    assert by_virtual.read_card.card == by_relay.read_card.card


def test_a_removal_event_drops_the_cached_card(demo_engine: Engine) -> None:
    harness = Harness(demo_engine)
    connection = harness.connect()
    connection.call(sign_in())
    ScriptedTerminal(connection, card_from_population()).run(request("read_card", "rc-1"))
    assert any(key.startswith("H33020300001-01/") for key in harness.service.card_cache)
    removed = connection.call(request("card_event", "ce-1", kind=pb.CARD_EVENT_KIND_REMOVED))
    assert removed.status == OK
    assert not any(key.startswith("H33020300001-01/") for key in harness.service.card_cache)


def test_a_terminal_that_never_answers_gets_reader_unavailable(demo_engine: Engine) -> None:
    harness = Harness(demo_engine)
    connection = harness.connect()
    connection.call(sign_in())
    connection.send(request("read_card", "rc-1"))
    [interim] = connection.responses()
    assert interim.interim and interim.message_id == "rc-1"
    harness.clock.advance(harness.service.reader_config.relay_timeout_s + 0.1)
    [final] = connection.responses()
    assert (final.message_id, final.status) == ("rc-1", pb.STATUS_CODE_READER_UNAVAILABLE)
    late = connection.call(request("apdu_result", "late", script_id=interim.apdu_script.script_id,
                                   responses=[b"\x90\x00"]))
    assert late.status == pb.STATUS_CODE_BAD_REQUEST


def test_card_problems_at_the_terminal_reach_the_clerk(demo_engine: Engine) -> None:
    harness = Harness(demo_engine)
    connection = harness.connect()
    connection.call(sign_in())
    connection.send(request("read_card", "rc-1"))
    [interim] = connection.responses()
    connection.send(request("apdu_result", "ar", script_id=interim.apdu_script.script_id,
                            error=pb.READER_ERROR_NO_CARD))
    [final] = connection.responses()
    assert final.status == pb.STATUS_CODE_CARD_NOT_PRESENT
    assert "insert the social security card" in final.message_en


def test_a_virtual_reader_given_another_card_reads_that_card() -> None:
    """The registry (or the config) names another card for a terminal's virtual reader: the reader holds that
    card from the next request on, and what was read from the old one is forgotten."""
    from gateway.config import ReaderConfig
    from gateway.serve.readers import ReaderAssignments

    forgotten: list[str] = []
    readers = ReaderAssignments(ReaderConfig(), None, forgotten.append)
    first = readers.reader_for("T-03", "virtual:N00000001", None, 0)  # type: ignore[arg-type]
    assert readers.reader_for("T-03", "virtual:N00000001", None, 0) is first  # type: ignore[arg-type]
    assert forgotten == []
    second = readers.reader_for("T-03", "virtual:N00000201", None, 0)  # type: ignore[arg-type]
    assert second is not first and forgotten == ["T-03"]
    assert second.card is not None and second.card.card.card_number == "N00000201"  # type: ignore[attr-defined]
    first.remove()  # type: ignore[attr-defined]  # the old reader, still held by a request begun before
    assert forgotten == ["T-03"], "an event on the replaced reader must not forget the new reader's card"
    second.remove()  # type: ignore[attr-defined]
    assert forgotten == ["T-03", "T-03"]
