"""What the gateway logs: one JSON object per line an operator's tools can read, or readable text, for every event
of the process; nothing secret in either."""

from __future__ import annotations

import io
import json
import warnings
from datetime import datetime
from typing import Any

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure

from gateway.ops.logs import ANNOUNCE, json_line, log_message, make_observer, text_line

SECRET_PARAMETERS = "[parameters: ('330203199001011236', 'N00000001')]"


class Captured:
    """Events as a Logger of ours makes them, published to an observer of this module's."""

    def __init__(self, log_format: str = "json", level: str = "info") -> None:
        self.stream = io.StringIO()
        self.events: list[dict[str, Any]] = []
        publisher = LogPublisher(self.events.append, make_observer(log_format, level, self.stream))
        self.log = Logger(namespace="gateway.test", observer=publisher)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


def test_a_json_line_holds_the_time_level_namespace_message_and_the_events_own_fields() -> None:
    captured = Captured()
    captured.log.info("settle {message_id} at {terminal_id}: {status}", message_id="M1", terminal_id="T1",
                      status="OK", amount_fen=12_345, retry=False)
    [line] = captured.objects()
    assert line == {"time": line["time"], "level": "info", "namespace": "gateway.test",
                    "message": "settle M1 at T1: OK", "message_id": "M1", "terminal_id": "T1", "status": "OK",
                    "amount_fen": 12_345, "retry": False}
    moment = datetime.fromisoformat(line["time"])
    assert moment.utcoffset() is not None
    assert abs(moment.timestamp() - captured.events[0]["log_time"]) < 0.001


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (object, str(object)),
        ({"a", "b"} - {"b"}, "{'a'}"),
        ({(1, 2): "tuple key"}, "{(1, 2): 'tuple key'}"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (b"\x01\x02", "b'\\x01\\x02'"),
        ([1, "two", None], [1, "two", None]),
        ({"nested": {"ok": 1.5}}, {"nested": {"ok": 1.5}}),
        ("中文", "中文"),
    ],
)
def test_a_value_json_cannot_hold_is_written_as_its_text(value: Any, written: Any) -> None:
    captured = Captured()
    captured.log.info("a value", value=value)
    [line] = captured.lines()
    assert json.loads(line)["value"] == written


def test_twisteds_internals_never_reach_a_json_line() -> None:
    captured = Captured()
    captured.log.warn("from {source_name}", source_name="here")
    [line] = captured.objects()
    assert line["level"] == "warn"
    assert not [key for key in line if key.startswith("log_")]
    assert "{source_name}" not in json.dumps(line) and "\x1e" not in captured.stream.getvalue()


def test_an_own_field_named_like_a_line_key_does_not_replace_it() -> None:
    captured = Captured()
    captured.log.info("the real message", message="a field", namespace="a field", time="a field")
    [line] = captured.objects()
    assert line["message"] == "the real message" and line["namespace"] == "gateway.test" and line["time"] != "a field"


def database_error() -> Failure:
    try:
        raise RuntimeError(f"(psycopg.errors.UniqueViolation) duplicate key\n{SECRET_PARAMETERS}")
    except RuntimeError:
        return Failure()


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_failure_is_its_traceback_with_the_exceptions_first_line_only(log_format: str) -> None:
    captured = Captured(log_format)
    captured.log.failure("could not answer {message_id}", database_error(), message_id="M7")
    text = captured.stream.getvalue()
    assert "330203199001011236" not in text and "parameters" not in text
    if log_format == "json":
        [line] = captured.objects()
        assert line["level"] == "critical" and line["message"] == "could not answer M7"
        exception = line["exception"]
    else:
        exception = text
    assert "Traceback (most recent call last):" in exception and "in database_error" in exception
    assert exception.rstrip().endswith("builtins.RuntimeError: (psycopg.errors.UniqueViolation) duplicate key")


def test_a_text_line_per_event_with_continuations_indented() -> None:
    captured = Captured("text")
    captured.log.info("first line\nsecond line")
    captured.log.failure("failed", database_error())
    starts = [line for line in captured.lines() if not line.startswith("\t")]
    assert len(starts) == 2
    assert starts[0].endswith(" [gateway.test#info] first line")
    assert datetime.fromisoformat(starts[0].split(" ", 1)[0]).utcoffset() is not None


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_message_of_a_line_is_read_back_in_either_format(log_format: str) -> None:
    captured = Captured(log_format)
    captured.log.info("Gateway listening on {address}.", address="127.0.0.1:9500")
    [line] = captured.lines()
    assert log_message(line) == "Gateway listening on 127.0.0.1:9500."
    assert log_message("something else entirely") is None and log_message("{not json") is None


def test_an_announcement_passes_whatever_the_level() -> None:
    captured = Captured(level="warn")
    captured.log.info("not written")
    captured.log.info("listening", **{ANNOUNCE: True})
    captured.log.warn("written")
    assert [line["message"] for line in captured.objects()] == ["listening", "written"]


def test_legacy_and_warning_events_are_lines_like_any_other() -> None:
    """twisted.python.log's events, as its bridge hands them to twisted.logger, and Python's warnings, as
    twisted.logger's LogBeginner turns them into events: their internals stay out."""
    legacy = {"log_namespace": "log_legacy", "log_level": LogLevel.info, "log_time": 1.0, "log_system": "-",
              "log_format": "{log_text}", "log_text": "hello world", "message": ("hello", "world"), "system": "-",
              "time": 1.0, "isError": 0}
    with warnings.catch_warnings(record=True):
        warning = {"log_namespace": "py.warnings", "log_level": LogLevel.warn, "log_time": 1.0,
                   "log_format": "{filename}:{lineno}: {category}: {warning}", "warning": UserWarning("careful"),
                   "category": "builtins.UserWarning", "filename": "x.py", "lineno": 3}
    assert json.loads(json_line(legacy)) == {"time": json.loads(json_line(legacy))["time"], "level": "info",
                                             "namespace": "log_legacy", "message": "hello world"}
    line = json.loads(json_line(warning))
    assert line["message"] == "x.py:3: builtins.UserWarning: careful" and line["warning"] == "careful"
    assert text_line(legacy).endswith("[log_legacy#info] hello world")
