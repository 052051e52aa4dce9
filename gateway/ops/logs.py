"""Logging through twisted.logger: readable text on a terminal, or one JSON object per line.

Nothing here ever formats a request: requests may carry a PIN. ID numbers go through `mask_id`.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEventAsClassicLogText,
    globalLogBeginner,
    jsonFileLogObserver,
    textFileLogObserver,
)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
# "text": one readable line per event; "json": one JSON object per line, for log collectors.
LOG_FORMATS = ("text", "json")

# twisted.logger builds and filters an event for every call, emitted or not; the request path asks this
# first instead of paying that for each settlement.
_debug_enabled = False


def debug_enabled() -> bool:
    """Whether the gateway logs at debug level (set by `start_logging`)."""
    return _debug_enabled


def error_line(exc: BaseException) -> str:
    """An error's first line, at most 200 characters: a database error's later lines hold the statement's
    parameters (ID numbers), which stay out of the log."""
    lines = str(exc).splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def make_observer(log_format: str, level: str, stream: IO[str] | None = None) -> ILogObserver:
    stream = stream or sys.stdout
    observer: Any
    if log_format == "json":
        observer = jsonFileLogObserver(stream)
    else:
        observer = textFileLogObserver(stream, timeFormat="%Y-%m-%dT%H:%M:%S%z")
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    filtered: Any = FilteringLogObserver(observer, [predicate])  # type: ignore[list-item]
    return filtered  # type: ignore[no-any-return]


def start_logging(log_format: str, level: str, stream: IO[str] | None = None) -> None:
    global _debug_enabled
    _debug_enabled = LEVELS[level] <= LogLevel.debug
    globalLogBeginner.beginLoggingTo([make_observer(log_format, level, stream)], redirectStandardIO=False)


__all__ = ["LEVELS", "LOG_FORMATS", "debug_enabled", "error_line", "formatEventAsClassicLogText", "make_observer",
           "start_logging"]
