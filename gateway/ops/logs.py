"""Logging through twisted.logger: readable text on a terminal, or one JSON object per line.

Both formats are written by the observer of this module, for every event the process logs: ours, Twisted's own
(its legacy `twisted.python.log` included) and Python's warnings. A JSON line holds `time` (ISO 8601 with the UTC
offset), `level`, `namespace`, `message` (the rendered text), the event's own fields (a value JSON cannot hold
as its text) and, for a failure, `exception`; none of Twisted's internals (`log_logger`, `log_format`, ...).

Nothing here ever formats a request: requests may carry a PIN. ID numbers go through `mask_id`. A traceback
carries its exception's first line only (`error_line`): a database error's later lines hold its parameters.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import IO, Any

from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
# "text": one readable line per event; "json": one JSON object per line, for log collectors.
LOG_FORMATS = ("text", "json")
# An event field: the event passes whatever the level (the line saying the gateway is up, which the tools that
# start it wait for, even at `log.level = "warn"`).
ANNOUNCE = "announce"

# Keys of twisted.python.log's legacy events, bridged into twisted.logger: internals, not the event's own fields.
_LEGACY_KEYS = frozenset({"message", "format", "isError", "system", "time", "why", "failure", "printed"})
# What a JSON line holds besides the event's own fields; an own field of one of these names is dropped.
_LINE_KEYS = ("time", "level", "namespace", "worker", "message", "exception")
_ALL_LEVELS = frozenset(LogLevel.iterconstants())
# One encoder for every line (json.dumps with options builds one per call).
_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_TEXT_LINE = re.compile(r"\S+ \[[^\]]*\] (.*)")
# The values a JSON line holds as they are, without a trial encoding (a settlement's audit line is all of these).
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})
# Distinct key sets of events (call sites, roughly) whose own keys are remembered (`_own_keys`).
_KEY_SETS_HELD = 256



class RequestLogger(Logger):
    """A twisted.logger.Logger for the lines the request path writes (the audit trail): the same events to the same
    observer. twisted.logger's own `emit` checks the level by sorting every level anew on each call (a twentieth of
    an audit line); this one looks it up in a set."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if level not in _ALL_LEVELS:
            super().emit(level, format, **kwargs)  # twisted.logger says what is wrong with it
            return
        event = kwargs
        event.update(log_logger=self, log_level=level, log_namespace=self.namespace, log_source=self.source,
                     log_format=format, log_time=time.time())
        if "log_trace" in event:
            event["log_trace"].append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(event)  # type: ignore[call-arg]  # a zope interface, which mypy reads as a class


_log = Logger(namespace="gateway")

# twisted.logger builds and filters an event for every call, emitted or not; the request path asks this
# first instead of paying that for each settlement.
_enabled_levels = frozenset({LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical})
_started_format: str | None = None
# The worker's number in a gateway of several processes (gateway.serve.processes), on every line it writes; None
# in a process of its own.
_worker: int | None = None


def enabled(level: LogLevel) -> bool:
    """Whether events at `level` are written (as `start_logging` set it)."""
    return level in _enabled_levels


def debug_enabled() -> bool:
    """Whether the gateway logs at debug level (set by `start_logging`)."""
    return enabled(LogLevel.debug)


def logging_as_json() -> bool:
    """Whether `start_logging` made this process write JSON lines: then nothing else may go to its output."""
    return _started_format == "json"


def report_fatal(message: str) -> None:
    """What stops a command, as one line: `gateway: MESSAGE` on stderr as every command says it, or a critical
    event once this process writes JSON lines (its output is then for a log collector, and JSON only)."""
    if logging_as_json():
        _log.critical("{error}", error=message)
    else:
        print(f"gateway: {message}", file=sys.stderr, flush=True)


def error_line(exc: BaseException) -> str:
    """An error's first line, at most 200 characters: a database error's later lines hold the statement's
    parameters (ID numbers), which stay out of the log."""
    lines = str(exc).splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def exception_text(failure: Failure) -> str:
    """A failure as a traceback: where it happened, frame by frame, and the exception's first line."""
    frames = "".join(f'  File "{filename}", line {line}, in {function}\n'
                     for function, filename, line, *_ in failure.frames)
    value = failure.value if failure.value is not None else RuntimeError("no exception")
    kind = type(value)
    return (f"Traceback (most recent call last):\n{frames}{kind.__module__}.{kind.__qualname__}: "
            f"{error_line(value)}")


def own_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The fields the caller gave the event, without twisted.logger's (`log_*`) and the legacy bridge's keys."""
    return {key: event[key] for key in _own_keys(tuple(event))}


def _is_own(key: str) -> bool:
    return not key.startswith("log_") and key not in _LEGACY_KEYS and key not in _LINE_KEYS


@functools.lru_cache(maxsize=_KEY_SETS_HELD)
def _own_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The own keys among an event's keys, in their order. Events of one call site come with the same keys in the
    same order: the test of each key is made once per call site, not once per line (an audit line has 15 keys)."""
    return tuple(key for key in keys if _is_own(key))


def _failure_of(event: dict[str, Any]) -> Failure | None:
    failure = event.get("log_failure", event.get("failure"))
    return failure if isinstance(failure, Failure) else None


def _time_of(event: dict[str, Any]) -> str:
    return _time_text(event.get("log_time") or 0.0)


def _time_text(moment: float) -> str:
    """`moment` in the host's own zone, to the millisecond, with its offset written out (the offset of that moment:
    a zone may change it): what `datetime.fromtimestamp(moment, zone).isoformat(timespec="milliseconds")` writes.
    The text up to the second and the offset are made once per second (a zone changes its offset on a whole
    second), not once per line; only the milliseconds are written for each."""
    second = math.floor(moment)
    # fromtimestamp's own rounding: to the microsecond, half to even, a carry into the next second.
    micros = round((moment - second) * 1e6)
    if micros >= 1_000_000:
        second += 1
        micros -= 1_000_000
    cached = _second_text
    # The host's zone as the C library holds it: a TZ set again (and time.tzset) makes the same second another text.
    host_zone = (time.timezone, time.altzone, time.tzname)
    if cached[0] != second or cached[3] != host_zone:
        zone = _zone(time.localtime(second).tm_gmtoff)
        whole = datetime.fromtimestamp(second, zone).isoformat(timespec="seconds")
        cached = _second_text[:] = [second, whole[:19], whole[19:], host_zone]
    return f"{cached[1]}.{micros // 1000:03d}{cached[2]}"


# The second last written: [POSIX second, its local date and time "YYYY-MM-DDTHH:MM:SS", its offset "+HH:MM", the
# host's zone it was written in].
_second_text: list[Any] = [None, "", "", None]


@functools.lru_cache(maxsize=8)
def _zone(offset_s: int) -> timezone:
    return timezone(timedelta(seconds=offset_s))


def _level_of(event: dict[str, Any]) -> str:
    level: Any = event.get("log_level")
    return str(level.name) if level in _ALL_LEVELS else "info"


def _json_safe(value: Any) -> Any:
    """`value` if JSON holds it as it is (finite numbers, str keys), its text otherwise."""
    try:
        _JSON.encode(value)
    except (TypeError, ValueError, RecursionError):
        return str(value)
    return value


def rendered(event: dict[str, Any]) -> str:
    """The event's message: its format with its fields. twisted.logger's own formatter (which also calls `{f()}`)
    costs a settlement's audit line most of its time; a plain format goes through `str.format_map`, the same
    text, and anything else (a legacy event, a call, a bad format) through twisted.logger's."""
    log_format = event.get("log_format")
    if isinstance(log_format, str):
        try:
            return log_format.format_map(event)
        except Exception:  # whatever the format or a field's __format__ raises: twisted.logger says what failed
            pass
    return formatEvent(event)


def json_line(event: dict[str, Any]) -> str:
    """One event as one line of JSON (no line break inside: those in the text are escaped)."""
    line: dict[str, Any] = {"time": _time_of(event), "level": _level_of(event),
                            "namespace": event.get("log_namespace", "-"), "message": rendered(event)}
    if _worker is not None:
        line["worker"] = _worker
    failure = _failure_of(event)
    if failure is not None:
        line["exception"] = exception_text(failure)
    for key in _own_keys(tuple(event)):
        value = event[key]
        # The common values need no trial encoding (a settlement's audit line is all strings and integers).
        line[key] = value if type(value) in _PLAIN_TYPES else _json_safe(value)
    return _JSON.encode(line)


def text_line(event: dict[str, Any]) -> str:
    """One event as readable text: `TIME [NAMESPACE#LEVEL] MESSAGE`, a traceback on the lines after it."""
    text = rendered(event)
    failure = _failure_of(event)
    if failure is not None:
        text = f"{text}\n{exception_text(failure)}"
    # Continuation lines are indented: every line that starts a new event starts with its time.
    text = text.replace("\n", "\n\t")
    worker = "" if _worker is None else f"worker {_worker} "
    return f"{_time_of(event)} [{worker}{event.get('log_namespace', '-')}#{_level_of(event)}] {text}"


def log_message(line: str) -> str | None:
    """The message of one line `json_line` or `text_line` wrote (None for another line): what the tools that start
    a gateway read its output with, whichever format it writes."""
    if line.startswith("{"):
        try:
            message = json.loads(line).get("message")
        except (ValueError, AttributeError):
            return None
        return message if isinstance(message, str) else None
    match = _TEXT_LINE.match(line.rstrip("\n"))
    return match.group(1) if match else None


@implementer(ILogObserver)
class LineObserver:
    """Writes each event at `levels` (and each announcement, whatever its level) as one line and flushes it: a log
    collector (or the operator) sees it at once. The level is checked here, not by a FilteringLogObserver, whose
    namespace look-up would cost every audit line a fifth again."""

    def __init__(self, render: Any, stream: IO[str], levels: frozenset[Any]) -> None:
        self._render = render
        self._stream = stream
        self._levels = levels

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_level") in self._levels or event.get(ANNOUNCE):
            self._stream.write(self._render(event) + "\n")
            self._stream.flush()


def levels_from(level: str) -> frozenset[Any]:
    """The levels written when `level` is the lowest."""
    return frozenset(known for known in _ALL_LEVELS if known >= LEVELS[level])


def make_observer(log_format: str, level: str, stream: IO[str] | None = None) -> ILogObserver:
    observer: Any = LineObserver(json_line if log_format == "json" else text_line, stream or sys.stdout,
                                 levels_from(level))
    return observer  # type: ignore[no-any-return]


def start_logging(log_format: str, level: str, stream: IO[str] | None = None, *, worker: int | None = None) -> None:
    """`worker`: this process is that worker of a gateway of several (`[worker K ...]` in a text line, "worker": K
    in a JSON one)."""
    global _enabled_levels, _started_format, _worker
    _enabled_levels = levels_from(level)
    _started_format = log_format
    _worker = worker
    globalLogBeginner.beginLoggingTo([make_observer(log_format, level, stream)], redirectStandardIO=False)

