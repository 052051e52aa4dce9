"""The gateway's Prometheus metrics: what each recording adds, that a gateway's registry is its own, that the ledger's
writer measures its batches, and, end to end, that a scrape after real traffic shows it with no label outside the
closed sets (never a card number, an ID number, a PIN or a terminal id)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session as DbSession

from gateway.ledger.outcomes import Refused, Settled
from gateway.ledger.writer import LedgerWriter
from gateway.ops.metrics import GatewayMetrics, Sampled
from gateway.protocol.messages import pb
from gateway.protocol.throttle import SignInFailure
from gateway.reader.spec import KINDS
from gateway.registry.models import Terminal
from gateway.settlement.policy import load_builtin_policies
from tests.ledger_support import settle
from tests.test_abuse import answered_after
from tests.test_adapter import Harness
from tests.test_cli import unused_port
from tests.test_end_to_end import DISABLED_TERMINAL, RunningGateway, listening_message
from tests.test_simulator import simulate
from tests.wire import WireClient, request, sign_in

OK = "STATUS_CODE_OK"
OTHER_TERMINAL = "H33020300001-02"  # the demo's: its id is not the one the guesses locked
STATUS_NAMES = {value.name for value in pb.StatusCode.DESCRIPTOR.values}
MESSAGES = {f.name for f in pb.Request.DESCRIPTOR.oneofs_by_name["body"].fields}
# Every label of the gateway's own metrics and the values it may take.
CLOSED_SETS: dict[str, set[str]] = {
    "message": MESSAGES,
    "status": STATUS_NAMES,
    "reason": {reason.value for reason in SignInFailure},  # the sign-in throttle's reasons
    "reader": set(KINDS),
    "outcome": STATUS_NAMES,
    "state": {"open", "signed_in"},
    "result": {"hit", "miss"},
}
# The process and Python collectors' labels: theirs, fixed by prometheus_client.
COLLECTOR_LABELS = {"generation", "implementation", "major", "minor", "patchlevel", "version"}


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


# Recording ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "status"),
    [("heartbeat", OK), ("settle", "STATUS_CODE_PIN_WRONG"), ("sign_in", OK),
     ("sign_in", "STATUS_CODE_UNKNOWN_TERMINAL")],
)
def test_an_answer_is_counted_and_timed(message: str, status: str) -> None:
    metrics = GatewayMetrics()
    for seconds in (0.0004, 0.003, 0.003):
        metrics.request_answered(message, status, seconds)
    assert value(metrics, "gateway_requests_total", message=message, status=status) == 3
    assert value(metrics, "gateway_request_duration_seconds_count", message=message) == 3
    assert value(metrics, "gateway_request_duration_seconds_bucket", message=message, le="0.0005") == 1
    assert value(metrics, "gateway_request_duration_seconds_bucket", message=message, le="0.005") == 3
    assert value(metrics, "gateway_request_duration_seconds_bucket", message=message, le="+Inf") == 3
    assert value(metrics, "gateway_request_duration_seconds_sum", message=message) == pytest.approx(0.0064)


def test_sign_in_failures_are_counted_by_the_throttles_reason(demo_engine: Engine) -> None:
    """Through the request path, on a test clock: guesses, then the lock, a disabled terminal, a connection that
    never signs in. Every reason's series is there from the start."""
    metrics = GatewayMetrics()
    harness = Harness(demo_engine, metrics=metrics)
    reasons = {reason.value for reason in SignInFailure}
    assert {r: value(metrics, "gateway_sign_in_failures_total", reason=r) for r in reasons} == dict.fromkeys(reasons,
                                                                                                             0.0)
    for n in range(5):  # ServerConfig's lock_after_failures
        answered_after(harness, harness.connect(), sign_in(f"guess-{n}", credential=f"guess-{n:04d}"))
    assert answered_after(harness, harness.connect(), sign_in("right"))[0].status == pb.STATUS_CODE_SIGN_IN_LOCKED
    with DbSession(demo_engine) as db, db.begin():
        db.execute(update(Terminal).where(Terminal.terminal_id == OTHER_TERMINAL).values(enabled=False))
    assert answered_after(harness, harness.connect(), sign_in(
        "disabled", terminal_id=OTHER_TERMINAL))[0].status == pb.STATUS_CODE_TERMINAL_DISABLED
    squatter = harness.connect()
    harness.clock.advance(harness.config.sign_in_timeout_s)
    assert squatter.transport.disconnecting
    counted = {r: value(metrics, "gateway_sign_in_failures_total", reason=r) for r in reasons}
    assert counted == {SignInFailure.UNKNOWN_OR_WRONG.value: 5, SignInFailure.LOCKED.value: 1,
                       # The squatter, and the seven refused connections, left open and never signed in.
                       SignInFailure.DISABLED.value: 1, SignInFailure.TIMEOUT.value: 8,
                       SignInFailure.CERTIFICATE_MISMATCH.value: 0}


def test_card_reads_pin_locks_and_ledger_batches_are_recorded() -> None:
    metrics = GatewayMetrics()
    metrics.card_read("virtual", OK)
    metrics.card_read("terminal", "STATUS_CODE_CARD_REMOVED")
    metrics.card_read("terminal", "STATUS_CODE_CARD_REMOVED")
    metrics.pin_locked()
    metrics.ledger_committed(150, 0.004)
    metrics.ledger_committed(1, 0.0009)
    metrics.ledger_was_unavailable(7)
    assert value(metrics, "gateway_card_reads_total", reader="virtual", outcome=OK) == 1
    assert value(metrics, "gateway_card_reads_total", reader="terminal", outcome="STATUS_CODE_CARD_REMOVED") == 2
    assert value(metrics, "gateway_pin_locks_total") == 1
    assert value(metrics, "gateway_ledger_batch_size_count") == 2
    assert value(metrics, "gateway_ledger_batch_size_bucket", le="1.0") == 1
    assert value(metrics, "gateway_ledger_batch_size_bucket", le="100.0") == 1
    assert value(metrics, "gateway_ledger_batch_size_bucket", le="200.0") == 2
    assert value(metrics, "gateway_ledger_commit_duration_seconds_bucket", le="0.001") == 1
    assert value(metrics, "gateway_ledger_unavailable_total") == 7


def test_levels_are_read_when_scraped() -> None:
    metrics = GatewayMetrics()
    assert metrics.registry.get_sample_value("gateway_ledger_queue_depth") is None  # nothing to read from yet
    queue = [3]
    metrics.sample(Sampled(connections_open=lambda: 12, connections_signed_in=lambda: 9,
                           ledger_queue_depth=lambda: queue[0], policy_remaining_seconds=lambda: 29.5 * 86400,
                           registry_cache=lambda: (100, 7, 2, 95)))
    assert value(metrics, "gateway_connections", state="open") == 12
    assert value(metrics, "gateway_connections", state="signed_in") == 9
    assert value(metrics, "gateway_ledger_queue_depth") == 3
    queue[0] = 0
    assert value(metrics, "gateway_ledger_queue_depth") == 0
    assert value(metrics, "gateway_policy_remaining_seconds") == 29.5 * 86400
    assert value(metrics, "gateway_registry_cache_total", result="hit") == 100
    assert value(metrics, "gateway_registry_cache_total", result="miss") == 7
    assert value(metrics, "gateway_registry_cache_flushes_total") == 2
    assert value(metrics, "gateway_registry_cache_entries") == 95


def test_each_gateway_has_its_own_registry_with_the_process_collector() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.request_answered("heartbeat", OK, 0.001)
    assert value(first, "gateway_requests_total", message="heartbeat", status=OK) == 1
    assert value(second, "gateway_requests_total", message="heartbeat", status=OK) == 0
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_gc_collections"} <= first.exported_names()


# The ledger's writer ---------------------------------------------------------------------------------------------


def test_the_writer_measures_each_batch_it_commits(demo_engine: Engine) -> None:
    metrics = GatewayMetrics()
    writer = LedgerWriter(demo_engine, load_builtin_policies(), lambda f, *a: f(*a), metrics=metrics)
    intents = [settle(demo_engine, "N00000001", f"batch-{n}", 1000 + n) for n in range(3)]
    assert all(isinstance(outcome, Settled) for outcome in writer.write(intents))
    assert writer.write(intents[:1]) != []  # the same key again: answered from its record, still a transaction
    assert value(metrics, "gateway_ledger_batch_size_count") == 2
    assert value(metrics, "gateway_ledger_batch_size_sum") == 4
    assert value(metrics, "gateway_ledger_commit_duration_seconds_count") == 2
    assert value(metrics, "gateway_ledger_unavailable_total") == 0
    assert writer.last_commit is not None and writer.last_unavailable is None


def test_the_writer_counts_what_it_answers_retry_when_the_database_is_gone(demo_engine: Engine) -> None:
    from gateway.db.engine import make_engine

    gone = make_engine(f"postgresql+psycopg://gateway@127.0.0.1:{unused_port()}/gateway")
    metrics = GatewayMetrics()
    writer = LedgerWriter(gone, load_builtin_policies(), lambda f, *a: f(*a), metrics=metrics)
    outcomes = writer.write([settle(demo_engine, "N00000001", f"gone-{n}", 500) for n in range(2)])
    assert [o.status for o in outcomes if isinstance(o, Refused)] == [pb.STATUS_CODE_TEMPORARILY_UNAVAILABLE] * 2
    assert value(metrics, "gateway_ledger_unavailable_total") == 2
    assert value(metrics, "gateway_ledger_batch_size_count") == 0
    assert writer.last_unavailable is not None and writer.last_commit is None
    gone.dispose()


# End to end: a real gateway, real traffic, a scrape ---------------------------------------------------------------


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return str(answer.read().decode())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


CROSS_REGION_TERMINAL = "H33020600007-03"  # its virtual card's holder is from another city: a PIN is asked
# The scrape before the fixture's own wrong PINs: the simulator's default mix may lock a card too
# (wrong_pins_to_lock), depending on which scenarios its terminals draw in the run's order of answers.
BEFORE_WRONG_PINS: dict[str, str] = {}


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    """A gateway after a simulator run, refused sign-ins, and wrong PINs until a card blocked; then a scrape."""
    gateway = RunningGateway(tmp_path_factory.mktemp("metrics"))
    try:
        run = simulate("--target", f"127.0.0.1:{gateway.port}", "--terminals", "4", "--requests", "300")
        assert run.returncode == 0, run.stdout + run.stderr
        for terminal_id, credential in (("H33020300001-01", "not-the-credential"), ("NOBODY-01", "x"),
                                        (DISABLED_TERMINAL, "demo-secret")):
            client = gateway.client()
            assert client.call(sign_in(terminal_id=terminal_id, credential=credential)).status != pb.STATUS_CODE_OK
            client.close()
        BEFORE_WRONG_PINS["text"] = scrape(gateway.metrics_port)
        client = gateway.client()
        assert client.call(sign_in(terminal_id=CROSS_REGION_TERMINAL)).status == pb.STATUS_CODE_OK
        statuses = []
        for attempt in range(10):
            answer = client.call(request("settle", f"wrong-pin-{attempt}", CROSS_REGION_TERMINAL,
                                         medical_type=pb.MEDICAL_TYPE_ORDINARY_OUTPATIENT, total_fen=100,
                                         pin="999999"))
            statuses.append(answer.status)
            if answer.status == pb.STATUS_CODE_PIN_LOCKED:
                break
        assert statuses[-1] == pb.STATUS_CODE_PIN_LOCKED and pb.STATUS_CODE_PIN_WRONG in statuses
        # Once more: the card was blocked before this VERIFY, which blocks nothing.
        again = client.call(request("settle", "wrong-pin-again", CROSS_REGION_TERMINAL,
                                    medical_type=pb.MEDICAL_TYPE_ORDINARY_OUTPATIENT, total_fen=100, pin="999999"))
        assert again.status == pb.STATUS_CODE_PIN_LOCKED
        yield gateway, scrape(gateway.metrics_port)
        client.close()
    finally:
        gateway.stop()


def test_a_scrape_after_traffic_shows_requests_card_reads_and_the_ledger(traffic: tuple[RunningGateway, str]) -> None:
    _, text = traffic
    assert sample(text, "gateway_requests_total", message="settle", status=OK) > 0
    assert sample(text, "gateway_requests_total", message="sign_in", status=OK) >= 5
    assert sample(text, "gateway_request_duration_seconds_count", message="settle") > 0
    assert sample(text, "gateway_ledger_batch_size_count") > 0
    assert sample(text, "gateway_ledger_batch_size_sum") >= sample(text, "gateway_ledger_batch_size_count")
    assert sample(text, "gateway_ledger_commit_duration_seconds_count") == sample(text,
                                                                                   "gateway_ledger_batch_size_count")
    assert sample(text, "gateway_card_reads_total", reader="terminal", outcome=OK) > 0  # the simulator's relay
    assert sample(text, "gateway_card_reads_total", reader="virtual", outcome=OK) >= 1
    assert sample(text, "gateway_sign_in_failures_total", reason="unknown_or_wrong") == 2
    assert sample(text, "gateway_sign_in_failures_total", reason="disabled") == 1
    # The fixture's wrong PINs blocked one card; the VERIFY on the blocked card blocked nothing more.
    before = BEFORE_WRONG_PINS["text"]
    assert sample(text, "gateway_pin_locks_total") == sample(before, "gateway_pin_locks_total") + 1
    locked = {"message": "settle", "status": "STATUS_CODE_PIN_LOCKED"}
    assert sample(text, "gateway_requests_total", **locked) == sample(before, "gateway_requests_total", **locked) + 2
    assert sample(text, "gateway_connections", state="signed_in") == 1  # the PIN-locking client
    assert sample(text, "gateway_connections", state="open") >= 1
    assert sample(text, "gateway_ledger_queue_depth") == 0
    assert sample(text, "gateway_registry_cache_total", result="miss") > 0
    assert sample(text, "gateway_registry_cache_total", result="hit") > 0
    assert sample(text, "gateway_policy_remaining_seconds") > 0
    assert sample(text, "process_cpu_seconds_total") > 0


def test_every_label_value_is_from_a_closed_set(traffic: tuple[RunningGateway, str]) -> None:
    _, text = traffic
    seen: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            for label, label_value in found.labels.items():
                if label == "le":
                    float(label_value)  # a histogram's bucket bound: a number
                    continue
                if family.name.startswith("gateway_"):
                    assert label in CLOSED_SETS, (family.name, label)
                    assert label_value in CLOSED_SETS[label], (family.name, label, label_value)
                    seen.setdefault(label, set()).add(label_value)
                else:
                    assert label in COLLECTOR_LABELS, (family.name, label)
    assert set(seen) == set(CLOSED_SETS)  # the traffic reached every labelled metric
    # And, in so many words: nothing in the whole page looks like a card number, an ID number or a terminal id.
    numbers = r"(?<![0-9.])[1-9][0-9]{16}[0-9X](?![0-9.])"  # an ID number, never the digits of a float
    assert not re.search(rf"\b[A-Z][0-9]{{8}}\b|{numbers}|[A-Z][0-9]{{11}}-[0-9]{{2}}|NOBODY", text)


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is missing: Debian's `prometheus` package (`make setup` installs it as root)")
def test_promtool_accepts_the_page(traffic: tuple[RunningGateway, str]) -> None:
    _, text = traffic
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # not even a lint warning


def test_the_page_is_openmetrics_when_asked(traffic: tuple[RunningGateway, str]) -> None:
    gateway, _ = traffic
    asked = urllib.request.Request(f"http://127.0.0.1:{gateway.metrics_port}/metrics",
                                   headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(asked, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        assert answer.read().decode().endswith("# EOF\n")


def test_heartbeats_move_the_counter_scrape_to_scrape(traffic: tuple[RunningGateway, str]) -> None:
    gateway, _ = traffic
    before = sample(scrape(gateway.metrics_port), "gateway_requests_total", message="heartbeat", status=OK)
    client: WireClient = gateway.signed_in_client()
    for n in range(25):
        assert client.call(request("heartbeat", f"beat-{n}")).status == pb.STATUS_CODE_OK
    client.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = sample(scrape(gateway.metrics_port), "gateway_requests_total", message="heartbeat", status=OK)
        if after == before + 25:
            break
        time.sleep(0.05)
    assert after == before + 25


class WithoutMetrics(RunningGateway):
    def serve_command(self) -> list[str]:
        return ["--metrics-listen", ""]  # after RunningGateway's own: it overrides that


def test_an_empty_metrics_listen_serves_terminals_and_no_http(tmp_path: Path) -> None:
    gateway = WithoutMetrics(tmp_path)
    try:
        message = next(m for line in gateway.lines if (m := listening_message(line)) is not None)
        assert re.match(r"Gateway listening on 127\.0\.0\.1:[0-9]+ \(plain TCP\); database ", message), message
        assert gateway.metrics_port == 0
        gateway.assert_alive_and_serving()
    finally:
        gateway.stop()
