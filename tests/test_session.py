"""The session state machine, driven with bytes and answers only: no sockets, no reactor."""

from __future__ import annotations

import struct

import pytest

from gateway.protocol.framing import FrameDecoder
from gateway.protocol.messages import pb
from gateway.protocol.session import (
    ConnectionClosed,
    NeedData,
    Paused,
    RequestReceived,
    Session,
    SessionLimits,
    SliceEnded,
    State,
)
from gateway.protocol.states import TRANSITIONS, ImpossibleTransition, LocalProtocolError, Trigger, next_state
from gateway.protocol.status import STATUS_TEXTS
from tests.wire import DEMO_TERMINAL, frame, request, sign_in

OK = pb.STATUS_CODE_OK
NOW_S = 1_700_000_000.25  # the gateway's clock, as the adapter passes it in


def responses(session: Session, now: float = NOW_S) -> list[pb.Response]:
    decoder = FrameDecoder(max_frame_bytes=1 << 20)
    decoder.feed(session.data_to_send(now))
    out = []
    while (payload := decoder.next_frame()) is not None:
        out.append(pb.Response.FromString(payload))
    return out


def feed(session: Session, *requests: pb.Request) -> None:
    session.receive_data(b"".join(frame(r.SerializeToString()) for r in requests))


def answer_ok(session: Session, event: RequestReceived) -> None:
    session.send_response(event.token, pb.Response(status=OK))


def signed_in_session(**limits: object) -> Session:
    session = Session(SessionLimits(**limits))  # type: ignore[arg-type]
    feed(session, sign_in())
    event = session.next_event()
    assert isinstance(event, RequestReceived)
    answer_ok(session, event)
    session.data_to_send(NOW_S)
    assert session.state is State.SIGNED_IN
    return session


def test_a_new_session_waits_for_data() -> None:
    session = Session()
    assert session.state is State.CONNECTED
    assert session.next_event() == NeedData()


def test_sign_in_answered_ok_signs_the_session_in_for_that_terminal() -> None:
    session = Session()
    feed(session, sign_in())
    event = session.next_event()
    assert isinstance(event, RequestReceived) and event.body == "sign_in"
    assert session.state is State.CONNECTED  # not before the answer
    answer_ok(session, event)
    assert session.state is State.SIGNED_IN
    assert session.terminal_id == DEMO_TERMINAL
    [response] = responses(session)
    assert response.message_id == "sign-in" and response.status == OK


def test_a_refused_sign_in_leaves_the_session_connected() -> None:
    session = Session()
    feed(session, sign_in())
    event = session.next_event()
    assert isinstance(event, RequestReceived)
    session.send_response(event.token, pb.Response(status=pb.STATUS_CODE_UNKNOWN_TERMINAL))
    assert session.state is State.CONNECTED
    assert session.terminal_id is None


# What the session itself answers, without the application: one row per refusal.
REFUSALS = [
    ("garbage protobuf", b"\xff\xff\xff\xff", "", pb.STATUS_CODE_BAD_REQUEST),
    ("empty frame: no message id", b"", "", pb.STATUS_CODE_BAD_REQUEST),
    ("no message id", pb.Request(terminal_id="T1", heartbeat=pb.Heartbeat()).SerializeToString(),
     "", pb.STATUS_CODE_BAD_REQUEST),
    ("message id with a space", pb.Request(terminal_id="T1", message_id="a b", heartbeat=pb.Heartbeat())
     .SerializeToString(), "a b", pb.STATUS_CODE_BAD_REQUEST),
    ("message id of 65 characters", pb.Request(terminal_id="T1", message_id="x" * 65, heartbeat=pb.Heartbeat())
     .SerializeToString(), "x" * 65, pb.STATUS_CODE_BAD_REQUEST),
    ("no body", pb.Request(terminal_id="T1", message_id="m").SerializeToString(), "m",
     pb.STATUS_CODE_UNSUPPORTED_MESSAGE),
    ("unknown body field 99", pb.Request(terminal_id="T1", message_id="m").SerializeToString()
     + b"\x9a\x06\x00", "m", pb.STATUS_CODE_UNSUPPORTED_MESSAGE),
    ("no terminal id", pb.Request(message_id="m", heartbeat=pb.Heartbeat()).SerializeToString(), "m",
     pb.STATUS_CODE_BAD_REQUEST),
    ("heartbeat before sign-in", request("heartbeat").SerializeToString(), "m1", pb.STATUS_CODE_NOT_SIGNED_IN),
    ("settle before sign-in", request("settle").SerializeToString(), "m1", pb.STATUS_CODE_NOT_SIGNED_IN),
]


@pytest.mark.parametrize(("case", "payload", "message_id", "status"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_the_session_refuses_bad_requests_and_stays_open(
    case: str, payload: bytes, message_id: str, status: int
) -> None:
    session = Session()
    session.receive_data(frame(payload))
    assert session.next_event() == NeedData()
    [response] = responses(session)
    assert (response.message_id, response.status) == (message_id, status)
    assert response.message_en and response.message_zh
    assert session.state is State.CONNECTED
    # And the connection is still usable.
    feed(session, sign_in())
    assert isinstance(session.next_event(), RequestReceived)


def test_every_refusal_text_exists_for_every_status() -> None:
    for code in pb.StatusCode.values():
        if code != pb.STATUS_CODE_UNSPECIFIED:
            assert STATUS_TEXTS[code].en and STATUS_TEXTS[code].zh


def test_a_terminal_id_other_than_the_signed_in_one_is_refused() -> None:
    session = signed_in_session()
    feed(session, request("heartbeat", "m2", terminal_id="H33020300001-02"))
    assert session.next_event() == NeedData()
    [response] = responses(session)
    assert response.status == pb.STATUS_CODE_TERMINAL_MISMATCH


def test_an_oversized_length_is_answered_then_the_session_closes() -> None:
    session = signed_in_session(max_frame_bytes=1024)
    session.receive_data(struct.pack(">I", 2**31 - 1))
    assert session.next_event() == Paused()
    [response] = responses(session)
    assert response.status == pb.STATUS_CODE_FRAME_TOO_LARGE
    assert "2147483647" in response.message_en
    assert session.state is State.CLOSING and session.wants_close


def test_requests_before_an_oversized_frame_are_still_answered_before_closing() -> None:
    session = signed_in_session(max_frame_bytes=1024)
    feed(session, request("heartbeat", "m2"))
    session.receive_data(struct.pack(">I", 5000))
    event = session.next_event()
    assert isinstance(event, RequestReceived)
    assert session.next_event() == Paused()
    assert not session.wants_close  # m2 is still in flight
    answer_ok(session, event)
    assert session.wants_close
    assert [r.status for r in responses(session)] == [pb.STATUS_CODE_FRAME_TOO_LARGE, OK]


def test_reading_pauses_at_the_in_flight_limit_and_resumes_below_it() -> None:
    session = signed_in_session(max_in_flight=2)
    feed(session, *(request("heartbeat", f"h{i}") for i in range(3)))
    first, second = session.next_event(), session.next_event()
    assert isinstance(first, RequestReceived) and isinstance(second, RequestReceived)
    assert session.next_event() == Paused()
    assert session.reading_paused
    answer_ok(session, second)  # answers may come in any order
    third = session.next_event()
    assert isinstance(third, RequestReceived) and third.request.message_id == "h2"
    assert session.in_flight == 2


def test_answers_echo_the_message_id_of_their_request() -> None:
    session = signed_in_session()
    feed(session, request("heartbeat", "a"), request("heartbeat", "b"))
    a, b = session.next_event(), session.next_event()
    assert isinstance(a, RequestReceived) and isinstance(b, RequestReceived)
    session.send_response(b.token, pb.Response(status=OK))
    session.send_response(a.token, pb.Response(status=OK))
    assert [r.message_id for r in responses(session)] == ["b", "a"]


def test_sign_out_closes_after_the_answer() -> None:
    session = signed_in_session()
    feed(session, request("sign_out", "bye"))
    event = session.next_event()
    assert isinstance(event, RequestReceived)
    answer_ok(session, event)
    assert session.state is State.CLOSING and session.wants_close
    assert session.next_event() == Paused()  # reads nothing more


def test_idle_timeout_answers_and_closes_an_idle_session() -> None:
    session = signed_in_session()
    assert session.idle_timed_out()
    [response] = responses(session)
    assert response.status == pb.STATUS_CODE_IDLE_TIMEOUT
    assert session.wants_close


def test_a_session_waiting_for_its_answers_is_not_idle() -> None:
    session = signed_in_session()
    feed(session, request("heartbeat", "slow"))
    assert isinstance(session.next_event(), RequestReceived)
    assert not session.idle_timed_out()
    assert session.state is State.SIGNED_IN


def test_peer_close_mid_frame_is_reported_as_truncated() -> None:
    session = Session()
    session.receive_data(frame(sign_in().SerializeToString())[:7])
    session.receive_data(b"")
    assert session.next_event() == ConnectionClosed(truncated=True)
    assert session.state is State.CLOSED


def test_peer_close_between_frames_is_clean() -> None:
    session = Session()
    session.receive_data(b"")
    assert session.next_event() == ConnectionClosed(truncated=False)


def test_refused_connection_answers_then_closes() -> None:
    session = Session()
    session.refuse_connection(pb.STATUS_CODE_TOO_MANY_CONNECTIONS)
    [response] = responses(session)
    assert response.status == pb.STATUS_CODE_TOO_MANY_CONNECTIONS
    assert session.wants_close


def test_an_interim_frame_does_not_finish_the_request() -> None:
    session = signed_in_session()
    feed(session, request("read_card", "rc"))
    event = session.next_event()
    assert isinstance(event, RequestReceived)
    session.send_interim(event.token, pb.Response(status=OK, apdu_script=pb.ApduScript(script_id="s1")))
    assert session.in_flight == 1
    answer_ok(session, event)
    interim, final = responses(session)
    assert (interim.message_id, interim.interim, final.message_id, final.interim) == ("rc", True, "rc", False)


def test_every_frame_carries_the_server_time() -> None:
    session = Session()
    session.receive_data(frame(b"\xff"))
    session.next_event()
    [response] = responses(session, now=1_700_000_000.5)
    assert (response.server_time.seconds, response.server_time.nanos) == (1_700_000_000, 500_000_000)


def test_shut_down_finishes_in_flight_requests_first() -> None:
    session = signed_in_session()
    feed(session, request("heartbeat", "last"))
    event = session.next_event()
    assert isinstance(event, RequestReceived)
    session.shut_down()
    assert not session.wants_close
    answer_ok(session, event)
    assert session.wants_close


def test_only_one_sign_in_at_a_time_before_the_session_is_signed_in() -> None:
    session = Session()
    feed(session, sign_in("first"), sign_in("second", terminal_id="H33020300001-02"))
    first = session.next_event()
    assert isinstance(first, RequestReceived)
    assert session.next_event() == NeedData()
    [refusal] = responses(session)
    assert (refusal.message_id, refusal.status) == ("second", pb.STATUS_CODE_BAD_REQUEST)
    answer_ok(session, first)
    assert session.terminal_id == DEMO_TERMINAL


def test_a_request_waiting_for_the_terminals_reader_does_not_block_its_apdu_result() -> None:
    session = signed_in_session(max_in_flight=1)
    feed(session, request("read_card", "rc"), request("apdu_result", "ar", script_id="s1"))
    read_card = session.next_event()
    assert isinstance(read_card, RequestReceived)
    assert session.next_event() == Paused()
    session.send_interim(read_card.token, pb.Response(status=OK, apdu_script=pb.ApduScript(script_id="s1")))
    assert not session.reading_paused
    result = session.next_event()
    assert isinstance(result, RequestReceived) and result.body == "apdu_result"
    session.discard(result.token)
    session.terminal_answered(read_card.token)
    answer_ok(session, read_card)
    assert session.in_flight == 0


# The transition table (gateway.protocol.states), driven through the session's own calls ------------------------

ANSWERED_BODY = {Trigger.SIGN_IN_ACCEPTED: "sign_in", Trigger.SIGN_OUT_ACCEPTED: "sign_out",
                 Trigger.SIGN_IN_FAILED_TOO_OFTEN: "sign_in"}
# The sessions of the table's rows close at their first failed SignIn, so that one answer is the event.
TABLE_LIMITS = SessionLimits(sign_in_failures_per_connection=1)


def session_in(state: State, pending_body: str | None = None) -> tuple[Session, int | None]:
    """A session brought to `state` by the calls that lead there, with a `pending_body` request in flight if
    given (taken while the session could still take it)."""
    session = Session(TABLE_LIMITS)
    # A SignIn in flight when closing begins is taken on a connection that never signed in.
    signs_in_first = state is State.SIGNED_IN or pending_body == "sign_out" or (
        state is not State.CONNECTED and pending_body is None)
    if signs_in_first:
        feed(session, sign_in())
        event = session.next_event()
        assert isinstance(event, RequestReceived)
        answer_ok(session, event)
    token = None
    if pending_body is not None:
        feed(session, request(pending_body, "pending"))
        event = session.next_event()
        assert isinstance(event, RequestReceived) and event.body == pending_body
        token = event.token
    if state is State.CLOSING:
        session.shut_down()
    elif state is State.CLOSED:
        session.connection_lost()
    session.data_to_send(NOW_S)
    assert session.state is state
    return session, token


def fire(session: Session, trigger: Trigger, token: int | None) -> None:
    """Make `trigger` happen the way the adapter and the terminal make it happen."""
    if trigger is Trigger.SIGN_IN_FAILED_TOO_OFTEN:
        assert token is not None
        session.send_response(token, pb.Response(status=pb.STATUS_CODE_UNKNOWN_TERMINAL))
    elif trigger in ANSWERED_BODY:
        assert token is not None
        answer_ok(session, RequestReceived(token=token, request=pb.Request(), body=ANSWERED_BODY[trigger]))
    elif trigger is Trigger.FRAME_TOO_LARGE:
        session.receive_data(struct.pack(">I", session.limits.max_frame_bytes + 1))
        session.next_event()
    elif trigger is Trigger.IDLE_TIMEOUT:
        session.idle_timed_out()
    elif trigger is Trigger.SIGN_IN_TIMEOUT:
        session.sign_in_timed_out()
    elif trigger is Trigger.CONNECTION_REFUSED:
        session.refuse_connection(pb.STATUS_CODE_TOO_MANY_CONNECTIONS)
    elif trigger is Trigger.SHUTDOWN:
        session.shut_down()
    elif trigger is Trigger.PEER_CLOSED:
        session.receive_data(b"")
        session.next_event()
    else:
        assert trigger is Trigger.CONNECTION_LOST
        session.connection_lost()


ROWS = sorted(TRANSITIONS.items(), key=lambda row: (list(State).index(row[0][0]), list(Trigger).index(row[0][1])))


@pytest.mark.parametrize(("before", "trigger", "after"), [(s, t, n) for (s, t), n in ROWS],
                         ids=[f"{s.name}-{t.name}" for (s, t), _ in ROWS])
def test_every_row_of_the_table_is_what_the_session_does(before: State, trigger: Trigger, after: State) -> None:
    session, token = session_in(before, ANSWERED_BODY.get(trigger))
    fire(session, trigger, token)
    assert session.state is after


# Every pair the table lacks, and what the session's calls do about it: either they cannot even produce the
# event in that state (the session has refused or dropped its cause first), or the session raises.
IMPOSSIBLE = [
    (State.CONNECTED, Trigger.SIGN_OUT_ACCEPTED, "cannot occur"),  # the SignOut is refused NOT_SIGNED_IN
    (State.SIGNED_IN, Trigger.CONNECTION_REFUSED, "raises"),
    (State.CLOSING, Trigger.FRAME_TOO_LARGE, "cannot occur"),  # a closing session drops what arrives
    (State.CLOSING, Trigger.CONNECTION_REFUSED, "raises"),
    (State.CLOSED, Trigger.FRAME_TOO_LARGE, "cannot occur"),
    (State.CLOSED, Trigger.IDLE_TIMEOUT, "raises"),
    (State.CLOSED, Trigger.SIGN_IN_TIMEOUT, "raises"),  # the adapter cancels the timer with the connection
    (State.CLOSED, Trigger.CONNECTION_REFUSED, "raises"),
    (State.CLOSED, Trigger.PEER_CLOSED, "cannot occur"),
]


def test_the_impossible_pairs_are_exactly_those_the_table_lacks() -> None:
    every_pair = {(s, t) for s in State for t in Trigger}
    assert {(s, t) for s, t, _ in IMPOSSIBLE} == every_pair - set(TRANSITIONS)


IMPOSSIBLE_IDS = [f"{s.name}-{t.name}" for s, t, _ in IMPOSSIBLE]


@pytest.mark.parametrize(("state", "trigger", "_outcome"), IMPOSSIBLE, ids=IMPOSSIBLE_IDS)
def test_an_impossible_pair_raises_naming_the_state_and_the_event(state: State, trigger: Trigger,
                                                                  _outcome: str) -> None:
    with pytest.raises(ImpossibleTransition) as raised:
        next_state(state, trigger)
    assert (raised.value.state, raised.value.trigger) == (state, trigger)
    assert state.name in str(raised.value) and trigger.name in str(raised.value)
    assert isinstance(raised.value, LocalProtocolError)


@pytest.mark.parametrize(("state", "trigger", "outcome"), IMPOSSIBLE, ids=IMPOSSIBLE_IDS)
def test_an_impossible_event_changes_nothing_and_writes_nothing(state: State, trigger: Trigger,
                                                                outcome: str) -> None:
    if trigger in ANSWERED_BODY:
        # The request whose answer would be the event is refused before it is ever in flight.
        session, _ = session_in(state)
        feed(session, request(ANSWERED_BODY[trigger], "too-early"))
        assert session.next_event() == NeedData()
        assert [r.status for r in responses(session)] == [pb.STATUS_CODE_NOT_SIGNED_IN]
        assert session.in_flight == 0
        return
    session, token = session_in(state)
    if outcome == "raises":
        with pytest.raises(ImpossibleTransition) as raised:
            fire(session, trigger, token)
        assert (raised.value.state, raised.value.trigger) == (state, trigger)
    else:
        fire(session, trigger, token)
    assert session.state is state
    assert session.data_to_send(NOW_S) == b""


def test_a_sign_in_answered_after_closing_began_signs_nothing_in() -> None:
    session, token = session_in(State.CLOSING, "sign_in")
    assert token is not None
    session.send_response(token, pb.Response(status=OK))
    assert (session.state, session.terminal_id, session.close_reason) == (State.CLOSING, None, "gateway shutting down")
    assert session.wants_close


def test_an_answer_to_no_request_in_flight_is_refused_and_changes_nothing() -> None:
    session = signed_in_session()
    feed(session, request("sign_out", "bye"))
    event = session.next_event()
    assert isinstance(event, RequestReceived)
    answer_ok(session, event)
    for call in (lambda: answer_ok(session, event), lambda: session.discard(event.token),
                 lambda: session.send_interim(event.token, pb.Response(status=OK))):
        with pytest.raises(LocalProtocolError, match=f"request {event.token} is not in flight"):
            call()
    assert [r.message_id for r in responses(session)] == ["bye"]
    assert session.state is State.CLOSING


# The clock is passed in ------------------------------------------------------------------------------------------


def test_a_frame_carries_the_time_it_is_written_at_not_the_time_it_was_answered() -> None:
    session = signed_in_session()
    feed(session, request("heartbeat", "early"))
    event = session.next_event()
    assert isinstance(event, RequestReceived)
    answer_ok(session, event)
    [response] = responses(session, now=1_700_000_042.125)
    assert (response.server_time.seconds, response.server_time.nanos) == (1_700_000_042, 125_000_000)


def test_the_answer_too_large_frame_carries_the_server_time_too() -> None:
    session = signed_in_session(max_frame_bytes=256)
    feed(session, request("heartbeat", "big"))
    event = session.next_event()
    assert isinstance(event, RequestReceived)
    session.send_response(event.token, pb.Response(status=OK, message_en="x" * 300))
    [response] = responses(session, now=1_700_000_007.5)
    assert (response.message_id, response.status) == ("big", pb.STATUS_CODE_INTERNAL_ERROR)
    assert (response.server_time.seconds, response.server_time.nanos) == (1_700_000_007, 500_000_000)


def test_the_sans_io_layer_reads_no_clock() -> None:
    """gateway.protocol imports neither `time` nor `datetime`: whoever drives the session says what time it is."""
    import ast
    from pathlib import Path

    import gateway.protocol

    package = Path(gateway.protocol.__file__).parent
    clocks = {"time", "datetime"}
    readers = []
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            readers += [f"{module.name}: {name}" for name in names if name.split(".")[0] in clocks]
    assert readers == []


# Limits against peers that do not sign in, guess, flood or pile up work -----------------------------------------


def test_a_session_not_signed_in_by_the_sign_in_timeout_closes_however_much_it_sent() -> None:
    session = Session()
    feed(session, *(request("heartbeat", f"h{n}") for n in range(5)))  # each refused, each restarting the idle timer
    assert session.next_event() == NeedData()
    assert session.sign_in_timed_out()
    statuses = [r.status for r in responses(session)]
    assert statuses == [pb.STATUS_CODE_NOT_SIGNED_IN] * 5 + [pb.STATUS_CODE_SIGN_IN_TIMEOUT]
    assert session.wants_close and session.close_reason == "STATUS_CODE_SIGN_IN_TIMEOUT"


def test_the_sign_in_timer_of_a_signed_in_session_changes_nothing() -> None:
    session = signed_in_session()
    assert not session.sign_in_timed_out()
    assert session.state is State.SIGNED_IN and responses(session) == []


SIGN_IN_ANSWERS = [
    # the answers to three SignIns on one connection, whether the third closes it
    ([pb.STATUS_CODE_UNKNOWN_TERMINAL] * 3, True),
    ([pb.STATUS_CODE_UNKNOWN_TERMINAL, pb.STATUS_CODE_SIGN_IN_LOCKED, pb.STATUS_CODE_CERTIFICATE_MISMATCH], True),
    ([pb.STATUS_CODE_UNKNOWN_TERMINAL, pb.STATUS_CODE_TERMINAL_DISABLED, pb.STATUS_CODE_UNKNOWN_TERMINAL], False),
    ([pb.STATUS_CODE_TOO_MANY_SESSIONS, pb.STATUS_CODE_INSTITUTION_DISABLED, pb.STATUS_CODE_UNKNOWN_TERMINAL], False),
]


@pytest.mark.parametrize(("answers", "closes"), SIGN_IN_ANSWERS)
def test_the_third_failed_sign_in_closes_the_connection_and_says_so(answers: list[int], closes: bool) -> None:
    session = Session(SessionLimits(sign_in_failures_per_connection=3))
    for n, status in enumerate(answers):
        feed(session, sign_in(f"s{n}"))
        event = session.next_event()
        assert isinstance(event, RequestReceived)
        session.send_response(event.token, pb.Response(status=status, message_en="refused", message_zh="拒绝"))
    last = responses(session)[-1]
    assert session.wants_close is closes
    assert ("3 failed sign-ins on this connection: it is closed" in last.message_en) is closes
    if closes:
        assert session.close_reason == "3 failed sign-ins"
        feed(session, sign_in("after"))
        assert session.next_event() == Paused() and responses(session) == []  # nothing more is read


def test_requests_waiting_on_the_terminals_reader_take_their_slots() -> None:
    """3,000 ReadCards once waited at once on one connection: now at most max_in_flight requests are in flight,
    waiting or not, and the terminal's ApduResults still get in."""
    session = signed_in_session(max_in_flight=2, frames_per_slice=1000)
    feed(session, *(request("read_card", f"rc{n}") for n in range(100)))
    waiting = []
    for _ in range(2):
        event = session.next_event()
        assert isinstance(event, RequestReceived)
        script = pb.ApduScript(script_id=event.request.message_id)
        session.send_interim(event.token, pb.Response(status=OK, apdu_script=script))
        waiting.append(event)
    assert session.next_event() == NeedData()  # the other 98 refused, none taken
    assert session.in_flight == 2
    refusals = [r for r in responses(session) if not r.interim]
    assert len(refusals) == 98 and {r.status for r in refusals} == {pb.STATUS_CODE_TEMPORARILY_UNAVAILABLE}
    assert "send it again once they are answered" in refusals[0].message_en
    feed(session, request("apdu_result", "ar0", script_id="rc0"), request("card_event", "ce0"))
    result, card_event = session.next_event(), session.next_event()
    assert isinstance(result, RequestReceived) and result.body == "apdu_result"
    assert isinstance(card_event, RequestReceived) and card_event.body == "card_event"
    session.discard(result.token)
    answer_ok(session, card_event)
    session.terminal_answered(waiting[0].token)
    answer_ok(session, waiting[0])
    feed(session, request("read_card", "rc-later"))
    later = session.next_event()
    assert isinstance(later, RequestReceived) and later.request.message_id == "rc-later"


def test_every_slot_taken_and_none_waiting_on_the_reader_stops_reading() -> None:
    session = signed_in_session(max_in_flight=2)
    feed(session, *(request("read_card", f"rc{n}") for n in range(3)))
    first, second = session.next_event(), session.next_event()
    assert isinstance(first, RequestReceived) and isinstance(second, RequestReceived)
    assert session.next_event() == Paused() and session.reading_paused
    session.send_interim(first.token, pb.Response(status=OK, apdu_script=pb.ApduScript(script_id="s1")))
    assert not session.reading_paused  # reading on, for the ApduResult
    session.terminal_answered(first.token)
    assert session.reading_paused


def test_a_burst_is_read_a_slice_at_a_time() -> None:
    session = Session(SessionLimits(frames_per_slice=64))
    session.receive_data(frame(b"") * 200)  # 200 empty frames, each refused BAD_REQUEST
    slices = []
    for _ in range(4):
        event = session.next_event()
        slices.append((event, len(responses(session))))
        session.start_slice()
    assert slices == [(SliceEnded(), 64), (SliceEnded(), 64), (SliceEnded(), 64), (NeedData(), 8)]
