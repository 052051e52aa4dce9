"""What the gateway logs: one JSON object per line an operator's tools can read, or readable text, for every event
of the process; nothing secret in either."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine
from twisted.logger import Logger, LogLevel, LogPublisher, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from gateway.demo.registry import DEMO_CREDENTIAL
from gateway.ops import logs
from gateway.ops.logs import ANNOUNCE, json_line, log_message, make_observer, text_line
from gateway.protocol.messages import pb
from tests.test_adapter import Harness
from tests.test_end_to_end import ROOT, RunningGateway
from tests.test_settlement_flow import HOLDERS, Counter
from tests.wire import frame, request, sign_in

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


# The audit trail, through the service over in-memory transports ----------------------------------------------


@pytest.fixture
def audit_lines() -> Iterator[list[dict[str, Any]]]:
    """The audit trail's events, as the JSON lines the gateway would write for them."""
    lines: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "gateway.serve.audit":
            lines.append(json.loads(json_line(event)))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_every_money_message_and_refusal_is_one_audit_line_and_a_retry_says_so(
    demo_engine: Engine, audit_lines: list[dict[str, Any]]
) -> None:
    harness = Harness(demo_engine)
    refusing = harness.connect()
    refusing.send(sign_in("bad-sign-in", credential="wrong-credential-123"))
    harness.clock.advance(0.5)  # a failed sign-in is answered after the throttle's first delay
    [refused_sign_in] = refusing.responses()
    counter = Counter(harness, "H33020300001-01", "N00000001")
    outside = Counter(harness, "H33020300001-02", "Z00000101")  # another city: the PIN is verified on the card
    settled = counter.run("settle", "s-1", medical_type=11, total_fen=5_000)
    settlement_id = settled.settle.settlement_id
    answers = {
        "bad-sign-in": refused_sign_in,
        "s-1": settled,
        "s-1 again": counter.run("settle", "s-1", medical_type=11, total_fen=5_000),
        "pre": counter.run("pre_settle", "pre", medical_type=11, total_fen=1_000),   # neither money nor refused
        "balance": counter.run("query_balance", "balance"),                        # neither
        "too much": counter.run("settle", "too-much", medical_type=11, total_fen=60_000_000),
        "r-1": counter.run("revoke", "r-1", settlement_id=settlement_id, reason="wrong item"),
        "r-1 again": counter.run("revoke", "r-1", settlement_id=settlement_id, reason="wrong item"),
        "r-2": counter.run("revoke", "r-2", settlement_id="S-NOT-THERE"),
        "s-2": counter.run("settle", "s-2", medical_type=11, total_fen=2_000),
        "v-1": counter.run("reverse", "v-1", original_message_id="s-2"),
        "v-1 again": counter.run("reverse", "v-1", original_message_id="s-2"),
        "pin": outside.run("settle", "pin", medical_type=11, total_fen=3_000, pin="135792"),
    }
    statuses = {name: pb.StatusCode.Name(answer.status) for name, answer in answers.items()}
    assert statuses == {
        "bad-sign-in": "STATUS_CODE_UNKNOWN_TERMINAL", "s-1": "STATUS_CODE_OK", "s-1 again": "STATUS_CODE_OK",
        "pre": "STATUS_CODE_OK", "balance": "STATUS_CODE_OK", "too much": "STATUS_CODE_AMOUNT_OUT_OF_RANGE",
        "r-1": "STATUS_CODE_OK", "r-1 again": "STATUS_CODE_OK", "r-2": "STATUS_CODE_ORIGINAL_NOT_FOUND",
        "s-2": "STATUS_CODE_OK", "v-1": "STATUS_CODE_OK", "v-1 again": "STATUS_CODE_OK",
        "pin": "STATUS_CODE_PIN_WRONG",
    }
    card = "*****0001"
    expected = [
        # message id, type, status, amount (fen), masked card, retry
        ("bad-sign-in", "sign_in", "STATUS_CODE_UNKNOWN_TERMINAL", None, None, False),
        ("s-1", "settle", "STATUS_CODE_OK", 5_000, card, False),
        ("s-1", "settle", "STATUS_CODE_OK", 5_000, card, True),
        ("too-much", "settle", "STATUS_CODE_AMOUNT_OUT_OF_RANGE", 60_000_000, card, False),
        ("r-1", "revoke", "STATUS_CODE_OK", 5_000, None, False),
        ("r-1", "revoke", "STATUS_CODE_OK", 5_000, None, True),
        ("r-2", "revoke", "STATUS_CODE_ORIGINAL_NOT_FOUND", None, None, False),
        ("s-2", "settle", "STATUS_CODE_OK", 2_000, card, False),
        ("v-1", "reverse", "STATUS_CODE_OK", 2_000, None, False),
        ("v-1", "reverse", "STATUS_CODE_OK", 2_000, None, True),
        ("pin", "settle", "STATUS_CODE_PIN_WRONG", 3_000, "*****0101", False),
    ]
    assert [(line["message_id"], line["message_type"], line["status"], line["amount_fen"], line["card"],
             line["retry"]) for line in audit_lines] == expected
    assert {line["terminal_id"] for line in audit_lines} == {"H33020300001-01", "H33020300001-02"}
    assert all(line["level"] == "info" and line["session_id"].startswith("S") for line in audit_lines)
    by_id = {(line["message_id"], line["retry"]): line for line in audit_lines}
    assert by_id[("s-1", False)]["settlement_id"] == settlement_id == by_id[("r-1", False)]["settlement_id"]
    assert by_id[("v-1", False)]["original_message_id"] == "s-2"
    assert by_id[("v-1", False)]["outcome"] == "REVERSE_OUTCOME_REVERSED"
    assert by_id[("s-1", True)]["message"].startswith("retry of settle s-1 at H33020300001-01: STATUS_CODE_OK")
    assert not by_id[("s-1", False)]["message"].startswith("retry")
    # One settlement, however often its answer was sent.
    assert [line for line in audit_lines if line["message_type"] == "settle" and line["status"] == "STATUS_CODE_OK"
            and not line["retry"] and line["message_id"] == "s-1"] == [by_id[("s-1", False)]]
    text = json.dumps(audit_lines, ensure_ascii=False)
    holders = [HOLDERS[number][0].person.social_security_number for number in ("N00000001", "Z00000101")]
    for secret in ("135792", "wrong-credential-123", DEMO_CREDENTIAL, "N00000001", "Z00000101", *holders):
        assert secret not in text


def test_nothing_is_built_for_the_audit_trail_above_info_level(
    demo_engine: Engine, audit_lines: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "_enabled_levels", frozenset({LogLevel.warn, LogLevel.error, LogLevel.critical}))
    counter = Counter(Harness(demo_engine), "H33020300001-01", "N00000001")
    assert counter.run("settle", "s-1", medical_type=11, total_fen=5_000).status == pb.STATUS_CODE_OK
    assert audit_lines == []


# A whole run of `gateway serve --log-format json`, read back line by line ---------------------------------------

PIN_TERMINAL = "H33020300001-03"
PIN_CARD = "Z00000101"           # insured in another Zhejiang city, filed for Ningbo: settles with its PIN
WRONG_PIN = "135792"             # reaches the card's VERIFY
WRONG_CREDENTIAL = "wrong-credential-123"


class PinTerminalGateway(RunningGateway):
    """`gateway serve --log-format json` at the default level, its terminal -03 reading PIN_CARD from a virtual
    reader."""

    def serve_command(self) -> list[str]:
        config = self.tmp / "pin.toml"
        config.write_text(f'[reader.terminals]\n"{PIN_TERMINAL}" = "virtual:{PIN_CARD}"\n', encoding="utf-8")
        return ["--config", str(config)]


@dataclass
class JsonRun:
    lines: list[str]
    answers: dict[str, pb.Response]


@pytest.fixture(scope="module")
def json_run(tmp_path_factory: pytest.TempPathFactory) -> JsonRun:
    """Refusals of every kind, a settlement with its retry, a revoke, a reversal, then SIGTERM."""
    running = PinTerminalGateway(tmp_path_factory.mktemp("json-run"))
    answers: dict[str, pb.Response] = {}
    try:
        refused = running.client()
        answers["wrong credential"] = refused.call(sign_in(credential=WRONG_CREDENTIAL))
        refused.send_raw(frame(b"\xff\xff not protobuf"))                # the session's own refusal
        answers["garbage"] = refused.receive()
        refused.close()
        client = running.client()
        assert client.call(sign_in(terminal_id=PIN_TERMINAL)).status == pb.STATUS_CODE_OK
        bill = {"medical_type": pb.MEDICAL_TYPE_ORDINARY_OUTPATIENT, "total_fen": 12_345}
        for name, req in [
            ("read", request("read_card", "e2e-read", PIN_TERMINAL)),
            ("no pin", request("settle", "e2e-s1", PIN_TERMINAL, **bill)),
            ("wrong pin", request("settle", "e2e-s1", PIN_TERMINAL, **bill, pin=WRONG_PIN)),
            ("settle", request("settle", "e2e-s1", PIN_TERMINAL, **bill, pin="000000")),
            ("retry", request("settle", "e2e-s1", PIN_TERMINAL, **bill, pin="000000")),
            ("second", request("settle", "e2e-s2", PIN_TERMINAL, **bill, pin="000000")),
            ("reverse", request("reverse", "e2e-v1", PIN_TERMINAL, original_message_id="e2e-s2")),
        ]:
            answers[name] = client.call(req)
        answers["revoke"] = client.call(request("revoke", "e2e-r1", PIN_TERMINAL,
                                                settlement_id=answers["settle"].settle.settlement_id))
        answers["stray apdu result"] = client.call(request("apdu_result", "e2e-apdu", PIN_TERMINAL, script_id="A9"))
    finally:
        assert running.stop() == 0
    return JsonRun(running.lines, answers)


def test_the_json_run_went_as_the_clerk_saw_it(json_run: JsonRun) -> None:
    statuses = {name: pb.StatusCode.Name(answer.status) for name, answer in json_run.answers.items()}
    assert statuses == {
        "wrong credential": "STATUS_CODE_UNKNOWN_TERMINAL", "garbage": "STATUS_CODE_BAD_REQUEST",
        "read": "STATUS_CODE_OK", "no pin": "STATUS_CODE_PIN_REQUIRED", "wrong pin": "STATUS_CODE_PIN_WRONG",
        "settle": "STATUS_CODE_OK", "retry": "STATUS_CODE_OK", "second": "STATUS_CODE_OK", "reverse": "STATUS_CODE_OK",
        "revoke": "STATUS_CODE_OK", "stray apdu result": "STATUS_CODE_BAD_REQUEST",
    }


def test_every_line_of_a_json_run_is_one_json_object(json_run: JsonRun) -> None:
    assert len(json_run.lines) > 10
    for line in json_run.lines:
        event = json.loads(line)
        assert isinstance(event, dict), line
        assert list(event)[:4] == ["time", "level", "namespace", "message"], line
        assert datetime.fromisoformat(event["time"]).utcoffset() is not None
        assert not [key for key in event if key.startswith("log_")] and "\x1e" not in line
    messages = [json.loads(line)["message"] for line in json_run.lines]
    assert any(message.startswith("Gateway listening on ") for message in messages)
    assert any(message.startswith("gateway stopping") for message in messages)


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed (make system-packages installs it)")
def test_jq_reads_every_line_of_a_json_run(json_run: JsonRun) -> None:
    text = "".join(json_run.lines)
    read = subprocess.run(["jq", "-c", "."], input=text, capture_output=True, text=True, timeout=30)
    assert read.returncode == 0, read.stderr
    assert len(read.stdout.splitlines()) == len(json_run.lines)
    levels = subprocess.run(["jq", "-r", "select(.namespace == \"gateway.serve.audit\") | .status"], input=text,
                            capture_output=True, text=True, timeout=30, check=True)
    assert "STATUS_CODE_PIN_WRONG" in levels.stdout.split()


def test_the_json_run_has_one_audit_line_per_money_message_and_refusal(json_run: JsonRun) -> None:
    audit_lines = [event for event in map(json.loads, json_run.lines) if event["namespace"] == "gateway.serve.audit"]
    summary = [(e["message_id"], e["message_type"], e["status"], e["amount_fen"], e["card"], e["retry"])
               for e in audit_lines]
    card = "*****0101"
    assert summary == [
        ("sign-in", "sign_in", "STATUS_CODE_UNKNOWN_TERMINAL", None, None, False),
        ("e2e-s1", "settle", "STATUS_CODE_PIN_REQUIRED", 12_345, card, False),
        ("e2e-s1", "settle", "STATUS_CODE_PIN_WRONG", 12_345, card, False),
        ("e2e-s1", "settle", "STATUS_CODE_OK", 12_345, card, False),
        ("e2e-s1", "settle", "STATUS_CODE_OK", 12_345, card, True),
        ("e2e-s2", "settle", "STATUS_CODE_OK", 12_345, card, False),
        ("e2e-v1", "reverse", "STATUS_CODE_OK", 12_345, None, False),
        ("e2e-r1", "revoke", "STATUS_CODE_OK", 12_345, None, False),
        ("e2e-apdu", "apdu_result", "STATUS_CODE_BAD_REQUEST", None, None, False),
    ]


def test_no_line_of_a_json_run_holds_a_pin_a_credential_or_a_full_id_number(json_run: JsonRun) -> None:
    text = "".join(json_run.lines)
    holder = HOLDERS[PIN_CARD][0].person.social_security_number
    assert json_run.answers["wrong pin"].status == pb.STATUS_CODE_PIN_WRONG  # the PIN reached the card
    for secret in (WRONG_PIN, WRONG_CREDENTIAL, DEMO_CREDENTIAL, holder, PIN_CARD):
        assert secret not in text, secret


def test_formats_twisted_allows_are_rendered_as_twisted_renders_them() -> None:
    captured = Captured()
    captured.log.info("called: {value()}", value=lambda: "yes")
    captured.log.info("{{braces}} and {count:,} fen", count=1234567)
    captured.log.info("missing {absent}")
    messages = [line["message"] for line in captured.objects()]
    assert messages[:2] == ["called: yes", "{braces} and 1,234,567 fen"]
    assert messages[2] == formatEvent(captured.events[2])  # twisted.logger's own words for a broken format


@pytest.mark.parametrize("options", [["--listen", "tcpp:9500"], ["--db", "sqlite:////nonexistent/dir/gateway.db"]])
def test_with_json_logs_a_failure_to_start_is_a_json_line_too(tmp_path: Path, options: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", "serve", "--log-format", "json", *options],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr == ""
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["level"] == "critical" and line["namespace"] == "gateway" and "Traceback" not in result.stdout


@given(st.lists(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False), min_size=1, max_size=20),
       st.sampled_from(["UTC", "Asia/Shanghai", "Europe/Berlin", "America/St_Johns", "Asia/Kolkata"]))
def test_a_lines_time_is_the_moment_in_the_hosts_zone_to_the_millisecond(moments: list[float], zone: str) -> None:
    """The time as `datetime.fromtimestamp(moment, its offset).isoformat(timespec="milliseconds")` writes it,
    whatever moments came before (the text up to the second is kept from one line to the next)."""
    import os
    import time

    before = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        # Moments on both sides of a whole second, and of a change of offset (the last Sunday of March 2026).
        for moment in [*moments, 1_774_746_000 - 0.0004, 1_774_746_000 + 0.0004, 1.9999996]:
            offset = timezone(timedelta(seconds=time.localtime(moment).tm_gmtoff))
            expected = datetime.fromtimestamp(moment, offset).isoformat(timespec="milliseconds")
            assert json.loads(json_line({"log_time": moment, "log_format": "x"}))["time"] == expected
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.parametrize(("first_zone", "then_zone", "then_text"),
                         [("Asia/Shanghai", "UTC", "1970-01-01T00:00:02.000+00:00"),
                          ("UTC", "Asia/Kolkata", "1970-01-01T05:30:02.000+05:30")])
def test_the_same_second_in_another_zone_is_written_in_that_zone(first_zone: str, then_zone: str,
                                                                   then_text: str) -> None:
    """The text kept from the last line's second is not reused once the host's zone changed (TZ set again)."""
    import os
    import time

    before = os.environ.get("TZ")
    try:
        for zone in (first_zone, then_zone):
            os.environ["TZ"] = zone
            time.tzset()
            written = json.loads(json_line({"log_time": 2.0, "log_format": "x"}))["time"]
        assert written == then_text
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_events_with_the_same_keys_each_give_their_own_fields() -> None:
    """Which keys are an event's own is remembered per set of keys: the values are always the event's."""
    captured = Captured()
    for number in range(3):
        captured.log.info("n {n}", n=number, log_extra_internal="x")
    assert [(line["n"], line["message"]) for line in captured.objects()] == [(0, "n 0"), (1, "n 1"), (2, "n 2")]
    assert all("log_extra_internal" not in line for line in captured.objects())


def test_the_request_paths_logger_makes_the_same_event_as_twisteds() -> None:
    events: list[dict[str, Any]] = []
    ours = logs.RequestLogger(namespace="gateway.test", observer=events.append)
    theirs = Logger(namespace="gateway.test", observer=events.append)
    ours.info("a {x}", x=1)
    theirs.info("a {x}", x=1)
    mine, twisteds = ({key: value for key, value in event.items() if key not in ("log_time", "log_logger")}
                      for event in events)
    assert mine == twisteds
    assert formatEvent(events[0]) == "a 1"
