"""`gateway simulate`'s measurements and what it makes of them: HdrHistogram percentiles per message type and per
second, the thresholds that turn a run into pass/fail, and the self-contained report page. (The runs against a
real gateway are in tests/test_simulator.py.)"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from simulators import report
from simulators.recorder import HIGHEST_US, Recorder, distribution, new_histogram, to_us
from simulators.thresholds import BadThreshold, Limit, evaluate, max_p99, parse

T0 = 1_800_000_000.0  # a whole second of the wall clock

# HdrHistogram's contract at 3 significant digits: a value read back is within 0.1 % of the one recorded.
PRECISION = 1e-3

# (what was recorded, in ms; the distribution expected, in ms). A percentile is the value whose rank is
# p × count rounded (HdrHistogram's rule), at least the first.
DISTRIBUTIONS: list[tuple[str, list[float], dict[str, float]]] = [
    ("1 to 100 ms, one each", [float(n) for n in range(1, 101)],
     {"count": 100, "min": 1, "p50": 50, "p90": 90, "p99": 99, "p99_9": 100, "max": 100, "mean": 50.5}),
    ("one answer", [12.5], {"count": 1, "min": 12.5, "p50": 12.5, "p90": 12.5, "p99": 12.5, "p99_9": 12.5,
                            "max": 12.5, "mean": 12.5}),
    ("990 fast, 10 slow: the slow ones show above p99", [1.0] * 990 + [100.0] * 10,
     {"count": 1000, "min": 1, "p50": 1, "p90": 1, "p99": 1, "p99_9": 100, "max": 100, "mean": 1.99}),
    ("microseconds to a minute", [0.001, 0.5, 1_000.0, 60_000.0],
     {"count": 4, "min": 0.001, "p50": 0.5, "p90": 60_000, "p99": 60_000, "p99_9": 60_000, "max": 60_000,
      "mean": 15_250.125}),
    ("10,000 answers, 1 µs apart from 1 µs", [n / 1000 for n in range(1, 10_001)],
     {"count": 10_000, "min": 0.001, "p50": 5, "p90": 9, "p99": 9.9, "p99_9": 9.99, "max": 10, "mean": 5.0005}),
]


@pytest.mark.parametrize("values_ms, expected", [case[1:] for case in DISTRIBUTIONS],
                         ids=[case[0] for case in DISTRIBUTIONS])
def test_percentiles_are_hdrhistogram_s_within_its_precision(values_ms: list[float],
                                                             expected: dict[str, float]) -> None:
    recorder = Recorder()
    for n, value in enumerate(values_ms):
        recorder.record("settle", value / 1000, T0 + n / len(values_ms))  # spread over one second
    row = recorder.latency_ms()["settle"]
    assert row["count"] == expected["count"]
    for key, value in expected.items():
        # Rounded to the µs in the summary; at 1 µs the µs itself is the precision.
        assert row[key] == pytest.approx(value, rel=PRECISION, abs=0.001), key


def test_an_empty_distribution_is_zeros_and_a_latency_beyond_an_hour_counts_as_an_hour() -> None:
    assert distribution(new_histogram()) == {"count": 0, "min": 0.0, "mean": 0.0, "p50": 0.0, "p90": 0.0,
                                             "p99": 0.0, "p99_9": 0.0, "max": 0.0}
    assert to_us(2 * 3600) == HIGHEST_US and to_us(0) == 1
    recorder = Recorder()
    recorder.record("settle", 7200.0, T0)
    assert recorder.latency_ms()["settle"]["max"] == pytest.approx(3_600_000, rel=PRECISION)


def test_each_second_of_the_wall_clock_has_its_own_interval_and_processes_merge_second_by_second() -> None:
    first, second = Recorder(), Recorder()
    for n in range(100):
        first.record("settle", 0.010, T0 + n / 100)        # second 0: 100 answers at 10 ms
        first.record("heartbeat", 0.001, T0 + 1 + n / 100)  # second 1: 100 heartbeats at 1 ms
        second.record("settle", 0.030, T0 + n / 100)       # second 0, another process: 100 answers at 30 ms
    first.record("sign_in", 0.005, T0 - 0.5)  # connecting, before the run
    for n in range(40):
        second.settled(T0 + n / 40)
    merged = Recorder()
    merged.merge_json(json.loads(json.dumps(first.to_json())))  # as the worker processes hand them over
    merged.merge_json(json.loads(json.dumps(second.to_json())))
    assert merged.latency_ms()["settle"]["count"] == 200
    assert merged.latency_ms()["settle"]["p50"] == pytest.approx(10, rel=PRECISION)
    assert merged.latency_ms()["settle"]["p99"] == pytest.approx(30, rel=PRECISION)

    rows = {row["second"]: row for row in merged.timeline((T0, T0 + 1.5))["seconds"]}
    before, zero, one = rows[int(T0) - 1], rows[int(T0)], rows[int(T0) + 1]
    assert before["covered_s"] == 0 and before["requests_per_s"] is None  # SignIn only: not a request counted
    assert before["latency_ms"]["sign_in"]["count"] == 1
    assert zero["requests"] == 200 and zero["requests_per_s"] == 200 and zero["settlements_per_s"] == 40
    assert zero["latency_ms"]["settle"]["p99"] == pytest.approx(30, rel=PRECISION)
    # The run covers half of second 1: its 100 heartbeats are 200 per second of the run.
    assert one["covered_s"] == 0.5 and one["requests_per_s"] == 200


def test_the_hdrhistogram_log_of_each_type_reads_back_interval_by_interval(tmp_path: Path) -> None:
    recorder = Recorder()
    for n in range(300):
        recorder.record("settle", (1 + n % 50) / 1000, T0 + n / 100)  # 3 seconds
    recorder.record("sign_in", 0.002, T0 - 2)
    logs = recorder.write_logs(tmp_path)
    assert sorted(logs) == ["settle", "sign_in"]
    reader = HistogramLogReader(str(logs["settle"]), HdrHistogram(1, HIGHEST_US, 3))
    counts = []
    while (interval := reader.get_next_interval_histogram()) is not None:
        counts.append(interval.get_total_count())
    assert counts == [100, 100, 100]
    assert "#[StartTime: " in logs["settle"].read_text()


# Thresholds -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind_body_value", [
    ("10", (None, 10.0)), ("Settle=10", ("settle", 10.0)), ("settle=2.5", ("settle", 2.5)),
    ("ReadCard=5", ("read_card", 5.0)), ("QueryTransaction=0", ("query_transaction", 0.0)),
])
def test_a_p99_limit_is_of_every_type_or_of_one_named_as_in_the_protocol(
    text: str, kind_body_value: tuple[str | None, float]
) -> None:
    limit = max_p99(text)
    assert (limit.body, limit.value) == kind_body_value and limit.option == f"--max-p99-ms {text}"


@pytest.mark.parametrize("text, complaint", [
    ("Setle=10", "is no message type"), ("settle=fast", "is not a number"), ("-1", "-1 is not a number ≥ 0"),
    ("nan", "nan is not a number ≥ 0"),
])
def test_a_threshold_that_names_nothing_measurable_is_refused(text: str, complaint: str) -> None:
    with pytest.raises(BadThreshold, match=complaint):
        max_p99(text)


SUMMARY: dict[str, Any] = {
    "latency_ms": {"sign_in": {"count": 4, "p99": 80.0}, "heartbeat": {"count": 900, "p99": 2.0},
                   "settle": {"count": 100, "p99": 12.7}},
    "requests_per_s": 1_000.0, "settlements_per_s": 100.0, "unexpected": ["one"], "target_rate_per_s": 50.0,
    "achieved_rate_per_s": 40.0, "rate_shortfall": 0.2,
}

# (the options, {threshold name: passed}).
VERDICTS: list[tuple[dict[str, Any], dict[str, bool]]] = [
    # Every type but SignIn (80 ms, connecting) against the bare limit.
    ({"max_p99_ms": ["10"]}, {"heartbeat p99": True, "settle p99": False, "unexpected answers": False}),
    # A named type takes the bare limit's place for that type.
    ({"max_p99_ms": ["10", "Settle=13"]}, {"heartbeat p99": True, "settle p99": True, "unexpected answers": False}),
    ({"max_p99_ms": ["sign_in=50"]}, {"sign_in p99": False, "unexpected answers": False}),
    ({"max_p99_ms": ["Revoke=100"], "max_unexpected": 1}, {"revoke p99": False, "unexpected answers": True}),
    ({"min_rate": 1_000.0, "min_settle_rate": 100.5}, {"requests/s": True, "settlements/s": False,
                                                        "unexpected answers": False}),
    ({"min_rate": 1e9, "max_unexpected": 5}, {"requests/s": False, "unexpected answers": True}),
    ({"require_rate": True, "max_unexpected": 1}, {"unexpected answers": True, "achieved rate": False}),
]


@pytest.mark.parametrize("options, expected", VERDICTS)
def test_each_threshold_passes_or_fails_on_its_figure(options: dict[str, Any], expected: dict[str, bool]) -> None:
    limits = parse(options.get("max_p99_ms", []), options.get("min_rate"), options.get("min_settle_rate"),
                   options.get("max_unexpected", 0), options.get("require_rate", False))
    verdicts = evaluate(limits, SUMMARY)
    assert {v.name: v.passed for v in verdicts} == expected


def test_a_failed_threshold_says_what_was_measured_against_which_limit() -> None:
    [verdict] = evaluate([Limit("max_p99_ms", 10.0, "--max-p99-ms Settle=10", "settle")], SUMMARY)
    assert verdict.message() == "settle p99 12.7 ms, limit ≤ 10 ms (--max-p99-ms Settle=10)"
    [missing] = evaluate([Limit("max_p99_ms", 10.0, "--max-p99-ms revoke=10", "revoke")], SUMMARY)
    assert not missing.passed and missing.measured is None and missing.measured_text == "no revoke answer measured"


# The page -----------------------------------------------------------------------------------------------


class Page(HTMLParser):
    """What a browser would fetch to show the page, the ids of its sections, and whether its tags nest."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.misnested: list[str] = []
        self.fetched: list[tuple[str, str]] = []  # (tag, src/href/data) a browser would load to show the page
        self.links: list[str] = []
        self.sections: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "section" and values.get("id"):
            self.sections.append(str(values["id"]))
        for name in ("src", "data", "srcset"):
            if values.get(name):
                self.fetched.append((tag, str(values[name])))
        if tag == "link" and values.get("href"):
            self.fetched.append((tag, str(values["href"])))
        if tag == "a" and values.get("href"):
            self.links.append(str(values["href"]))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.misnested.append(f"</{tag}> closes <{self.open[-1] if self.open else 'nothing'}>")
            return
        self.open.pop()


def _page(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def _recorded_run() -> tuple[dict[str, Any], Recorder]:
    recorder = Recorder()
    for n in range(2_000):
        recorder.record("heartbeat", 0.0005 + (n % 7) / 10_000, T0 + n / 500)
        if n % 4 == 0:
            recorder.record("settle", 0.004 + (n % 13) / 1000, T0 + n / 500)
            recorder.settled(T0 + n / 500)
    recorder.record("sign_in", 0.003, T0 - 0.2)
    summary: dict[str, Any] = {
        "target": "127.0.0.1:9500", "terminals": 8, "processes": 1, "mix": "<script>alert(1)</script>",
        "seconds": 4.0, "scenarios": 500, "requests": 2_500, "requests_per_s": 625.0, "settlements_ok": 500,
        "settlements_per_s": 125.0, "target_rate_per_s": None, "latency_ms": recorder.latency_ms(),
        "statuses": {"STATUS_CODE_OK": 2_501}, "unexpected": [], "errors": [], "connections_lost": 0,
        "reconnects": 0, "outcomes_resolved": 0, "outcomes_unknown": 0, "gateway_commit": "abc123",
        "simulator_version": "gateway-simulate/1", "run": {
            "duration_s": 4.0, "requests_goal": None, "seed": 1, "persons": 200, "terminals_per_institution": 8,
            "tls": False, "mix_weights": {"heartbeat": 1}, "started_at": "2027-01-15T08:00:00+00:00",
            "finished_at": "2027-01-15T08:00:04+00:00"}}
    summary["thresholds"] = [v.to_json() for v in evaluate(parse(["Settle=10"], 1e9, None, 0, False), summary)]
    return summary, recorder


def test_the_report_is_one_self_contained_page_with_a_section_per_message_type(tmp_path: Path) -> None:
    summary, recorder = _recorded_run()
    page_path = report.write(tmp_path / "report", summary, recorder, (T0, T0 + 4.0), command="gateway simulate …")
    html = page_path.read_text(encoding="utf-8")
    page = _page(html)
    assert page.misnested == [] and page.open == []
    assert page.scripts == 0  # the mix's name is text, escaped, not a script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Everything shown is inside the page: each figure a PNG inlined, nothing fetched from anywhere.
    assert page.fetched and all(src.startswith("data:image/png;base64,") for _, src in page.fetched)
    assert "http://" not in html and "https://" not in html
    assert page.sections[:3] == ["type-heartbeat", "type-settle", "type-sign_in"]
    # One figure of the whole run, one per message type.
    assert len(page.fetched) == 1 + 3
    assert "FAIL: 2 of 3 threshold(s) not met" in html and "requests/s" in html and "--min-rate 1e+09" in html
    for linked in ("summary.json", "timeline.json", "heartbeat.hlog", "settle.hlog", "sign_in.hlog"):
        assert linked in page.links and (tmp_path / "report" / linked).exists()
    assert json.loads((tmp_path / "report/summary.json").read_text())["gateway_commit"] == "abc123"
    timeline = json.loads((tmp_path / "report/timeline.json").read_text())
    assert [row["requests"] for row in timeline["seconds"] if row["covered_s"] == 1] == [625, 625, 625, 625]
