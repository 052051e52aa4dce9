"""Every state of a terminal session and every transition between them, in one table (after h11's `_state.py`).

`gateway.protocol.session.Session` changes its state only through `next_state`; a pair the table does not
hold is an impossible event and raises `ImpossibleTransition`, which names both. Nothing a terminal sends can
cause one: the session refuses bad frames on the wire and decodes nothing once it is closing, so an
impossible event is a bug in the code driving the session (the Twisted adapter), and that code drops the
connection rather than guess. docs/protocol.md 3.1 prints this table for vendors; tests/test_docs.py keeps
the two equal.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final


class State(enum.Enum):
    CONNECTED = "connected"  # only SignIn is taken
    SIGNED_IN = "signed_in"  # every body, from the signed-in terminal id only
    CLOSING = "closing"  # nothing new: the requests in flight are finished, then the connection closes
    CLOSED = "closed"  # the connection is gone


class Trigger(enum.Enum):
    """What moves a session. Each value is the wording docs/protocol.md 3.1 uses for it."""

    SIGN_IN_ACCEPTED = "`SignIn` answered `STATUS_CODE_OK`"
    SIGN_OUT_ACCEPTED = "`SignOut` answered `STATUS_CODE_OK`"
    FRAME_TOO_LARGE = "length prefix over `max_frame_bytes`"
    IDLE_TIMEOUT = "idle for `idle_timeout_s`, nothing in flight"
    CONNECTION_REFUSED = "connection over `max_connections`"
    SIGN_IN_TIMEOUT = "not signed in `sign_in_timeout_s` after the connection opened"
    SIGN_IN_FAILED_TOO_OFTEN = "the `sign_in_failures_per_connection`-th failed `SignIn` answered"
    SHUTDOWN = "gateway shutting down"
    PEER_CLOSED = "the terminal ends its stream (closes or half-closes)"
    CONNECTION_LOST = "the connection is gone (closed by either side, or broken)"


class LocalProtocolError(Exception):
    """The code driving a session asked it for something the protocol cannot do: our bug, never the terminal's."""


class ImpossibleTransition(LocalProtocolError):
    def __init__(self, state: State, trigger: Trigger) -> None:
        super().__init__(f"impossible event in session state {state.name}: {trigger.name} ({trigger.value})")
        self.state = state
        self.trigger = trigger


_CONNECTED, _SIGNED_IN, _CLOSING, _CLOSED = State.CONNECTED, State.SIGNED_IN, State.CLOSING, State.CLOSED

TRANSITIONS: Final[Mapping[tuple[State, Trigger], State]] = MappingProxyType({
    (_CONNECTED, Trigger.SIGN_IN_ACCEPTED): _SIGNED_IN,
    # SIGN_OUT_ACCEPTED cannot happen: a SignOut before sign-in is refused NOT_SIGNED_IN, never taken.
    (_CONNECTED, Trigger.FRAME_TOO_LARGE): _CLOSING,
    (_CONNECTED, Trigger.IDLE_TIMEOUT): _CLOSING,
    (_CONNECTED, Trigger.CONNECTION_REFUSED): _CLOSING,
    (_CONNECTED, Trigger.SIGN_IN_TIMEOUT): _CLOSING,
    (_CONNECTED, Trigger.SIGN_IN_FAILED_TOO_OFTEN): _CLOSING,
    (_CONNECTED, Trigger.SHUTDOWN): _CLOSING,
    (_CONNECTED, Trigger.PEER_CLOSED): _CLOSED,
    (_CONNECTED, Trigger.CONNECTION_LOST): _CLOSED,

    # A second SignIn of the same terminal is checked and answered again, and changes nothing.
    (_SIGNED_IN, Trigger.SIGN_IN_ACCEPTED): _SIGNED_IN,
    (_SIGNED_IN, Trigger.SIGN_OUT_ACCEPTED): _CLOSING,
    (_SIGNED_IN, Trigger.FRAME_TOO_LARGE): _CLOSING,
    (_SIGNED_IN, Trigger.IDLE_TIMEOUT): _CLOSING,
    # CONNECTION_REFUSED cannot happen: a connection is refused when it is made, before anything is read.
    # The sign-in timer of a signed-in connection changes nothing: it signed in in time.
    (_SIGNED_IN, Trigger.SIGN_IN_TIMEOUT): _SIGNED_IN,
    # A repeated SignIn of the signed-in terminal that keeps failing is guessing too.
    (_SIGNED_IN, Trigger.SIGN_IN_FAILED_TOO_OFTEN): _CLOSING,
    (_SIGNED_IN, Trigger.SHUTDOWN): _CLOSING,
    (_SIGNED_IN, Trigger.PEER_CLOSED): _CLOSED,
    (_SIGNED_IN, Trigger.CONNECTION_LOST): _CLOSED,

    # Answers to requests taken before closing began still go out; they change nothing more.
    (_CLOSING, Trigger.SIGN_IN_ACCEPTED): _CLOSING,
    (_CLOSING, Trigger.SIGN_OUT_ACCEPTED): _CLOSING,
    # FRAME_TOO_LARGE cannot happen: a closing session decodes no more frames.
    # The idle timer of a closing session announces nothing: the session already said why it closes.
    (_CLOSING, Trigger.IDLE_TIMEOUT): _CLOSING,
    (_CLOSING, Trigger.SIGN_IN_TIMEOUT): _CLOSING,
    (_CLOSING, Trigger.SIGN_IN_FAILED_TOO_OFTEN): _CLOSING,
    (_CLOSING, Trigger.SHUTDOWN): _CLOSING,
    (_CLOSING, Trigger.PEER_CLOSED): _CLOSED,
    (_CLOSING, Trigger.CONNECTION_LOST): _CLOSED,

    # What may still arrive after the connection is gone: answers (dropped), a shutdown, the loss reported again.
    # Frames, the idle or sign-in timer, a refusal or the peer's close cannot: there is no connection left to have
    # them.
    (_CLOSED, Trigger.SIGN_IN_ACCEPTED): _CLOSED,
    (_CLOSED, Trigger.SIGN_OUT_ACCEPTED): _CLOSED,
    (_CLOSED, Trigger.SIGN_IN_FAILED_TOO_OFTEN): _CLOSED,
    (_CLOSED, Trigger.SHUTDOWN): _CLOSED,
    (_CLOSED, Trigger.CONNECTION_LOST): _CLOSED,
})

# The states in which the session reads frames and answers them; in the others bytes are dropped unread.
TAKES_REQUESTS: Final = frozenset({State.CONNECTED, State.SIGNED_IN})


def next_state(state: State, trigger: Trigger) -> State:
    """The state `trigger` moves a session in `state` to; ImpossibleTransition if the table has no such move."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise ImpossibleTransition(state, trigger) from None
