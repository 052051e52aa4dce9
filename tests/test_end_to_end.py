"""`gateway serve` as a subprocess on an ephemeral loopback port, spoken to over real sockets."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.demo.registry import DEMO_CREDENTIAL, DEMO_INSTITUTIONS, demo_reader
from gateway.ops.logs import log_message
from gateway.protocol.messages import pb
from gateway.regions import NINGBO_CITY_PREFIX, city_prefix
from tests.wire import DEMO_TERMINAL, WireClient, frame, request, sign_in

ROOT = Path(__file__).resolve().parent.parent
OK = pb.STATUS_CODE_OK
DISABLED_TERMINAL = "H33020300001-9999"  # beyond the demo registry's ids, which the simulator signs in with
METRICS_ADDRESS = re.compile(r"metrics and health on http://\S+:(\d+)/")


def prepare_database(db: str, tmp: Path, persons: int = 200) -> None:
    run = [sys.executable, "-m", "gateway"]
    subprocess.run([*run, "db", "upgrade", "--db", db], check=True, capture_output=True, cwd=ROOT)
    subprocess.run([*run, "registry", "demo", "--db", db, "--persons", str(persons)], check=True,
                   capture_output=True, cwd=ROOT)
    extra = tmp / "terminals.csv"
    extra.write_text(f"terminal_id,institution_code,credential,enabled\n"
                     f"{DISABLED_TERMINAL},H33020300001,demo-secret,false\n", encoding="utf-8")
    subprocess.run([*run, "registry", "import", str(extra), "--db", db], check=True, capture_output=True, cwd=ROOT)


def listening_message(line: str) -> str | None:
    """The message of `gateway serve`'s line saying it listens (in either log format), or None for another line."""
    message = log_message(line)
    return message if message is not None and message.startswith("Gateway listening on ") else None


class RunningGateway:
    """`gateway serve` in a subprocess; prepares its database unless told it is prepared already."""

    def __init__(self, tmp: Path, db: str | None = None, *, prepare: bool = True, port: int = 0,
                 persons: int = 200) -> None:
        self.tmp = tmp
        self.db = db or f"sqlite:///{tmp / 'e2e.db'}"
        if prepare:
            prepare_database(self.db, tmp, persons)
        self.listen_port = port
        self.metrics_port = 0
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--listen",
             f"tcp:{self.listen_port}:interface=127.0.0.1:backlog=1024", "--db", self.db,
             "--metrics-listen", f"tcp:{self.metrics_port}:interface=127.0.0.1",
             "--log-format", "json", *self.serve_command()],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.port = self._wait_until_listening()
        self.listen_port = self.port  # a restart listens where terminals know to find it
        self.metrics_port = self.listen_metrics_port  # and where Prometheus scrapes
        self._drain = threading.Thread(target=self._read_output, daemon=True)
        self._drain.start()

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, nothing."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._drain.join(timeout=5)

    def serve_command(self) -> list[str]:
        """Extra options for `gateway serve` (subclasses add a config file)."""
        return []

    def _wait_until_listening(self) -> int:
        deadline = time.monotonic() + 30
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("gateway exited before listening:\n" + "".join(self.lines))
            self.lines.append(line)
            if (message := listening_message(line)) is not None:
                address = message.split()[3].rstrip(".;")
                metrics = METRICS_ADDRESS.search(message)
                self.listen_metrics_port = int(metrics.group(1)) if metrics else 0  # 0: none (metrics.listen "")
                return int(address.rsplit(":", 1)[1])
        raise RuntimeError("gateway did not start listening in 30 s")

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def client(self) -> WireClient:
        return WireClient("127.0.0.1", self.port)

    def signed_in_client(self) -> WireClient:
        client = self.client()
        assert client.call(sign_in()).status == OK
        return client

    def assert_alive_and_serving(self) -> None:
        assert self.process.poll() is None, "gateway died:\n" + "".join(self.lines[-30:])
        client = self.signed_in_client()
        assert client.call(request("heartbeat", "alive")).status == OK
        client.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._drain.join(timeout=5)
        return code


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    running = RunningGateway(tmp_path_factory.mktemp("gateway"))
    yield running
    running.stop()


def test_a_client_generated_from_proto_alone_signs_in_and_heartbeats(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    out = tmp_path / "generated"
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}",
         str(ROOT / "proto/ningbo/gateway/v1/gateway.proto")],
        check=True,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(out)
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/clients/independent_client.py"), "127.0.0.1", str(gateway.port),
         DEMO_TERMINAL, "demo-secret"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {
        "sign_in": "STATUS_CODE_OK", "institution": "H33020300001",
        "sign_in_echo": "H3302030000120261124090000001",
        "heartbeat": "STATUS_CODE_OK", "heartbeat_echo": "H3302030000120261124090000002",
        "heartbeat_body": "heartbeat", "sign_out": "STATUS_CODE_OK", "closed_after_sign_out": True,
        "imported_gateway_package": False,
    }


def test_random_bytes_get_answers_or_a_close_and_nothing_else(gateway: RunningGateway) -> None:
    rng = random.Random(20261124)
    for _ in range(20):
        client = gateway.client()
        client.send_raw(rng.randbytes(rng.randint(1, 70_000)))
        with contextlib.suppress(OSError):  # the gateway may already have closed
            client.sock.shutdown(socket.SHUT_WR)
        # Whatever comes back must be well-formed frames, then the close.
        data = b""
        try:
            while chunk := client.sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pytest.fail("the gateway reset the connection instead of closing it after its answer")
        while data:
            (length,) = struct.unpack(">I", data[:4])
            response = pb.Response.FromString(data[4 : 4 + length])
            assert response.status != OK
            data = data[4 + length :]
        client.close()
    gateway.assert_alive_and_serving()


def test_a_truncated_frame_then_close_harms_nothing(gateway: RunningGateway) -> None:
    client = gateway.client()
    client.send_raw(frame(sign_in().SerializeToString())[:9])
    client.close()
    gateway.assert_alive_and_serving()


def test_a_zero_length_frame_is_a_bad_request_and_the_connection_stays_usable(gateway: RunningGateway) -> None:
    client = gateway.client()
    client.send_raw(b"\x00\x00\x00\x00")
    assert client.receive().status == pb.STATUS_CODE_BAD_REQUEST
    assert client.call(sign_in()).status == OK
    client.close()


@pytest.mark.parametrize("declared", [2**31 - 1, 2**32 - 1, 65_537])
def test_an_oversized_length_is_answered_then_closed(gateway: RunningGateway, declared: int) -> None:
    client = gateway.signed_in_client()
    client.send_raw(struct.pack(">I", declared) + b"x" * 100)
    response = client.receive()
    assert response.status == pb.STATUS_CODE_FRAME_TOO_LARGE
    assert str(declared) in response.message_en
    assert client.closed_by_peer()
    gateway.assert_alive_and_serving()


def test_garbage_protobuf_is_a_bad_request_and_the_connection_stays_usable(gateway: RunningGateway) -> None:
    client = gateway.signed_in_client()
    client.send_raw(frame(b"\x0a\xff\xff\xff\xff\x0f"))
    assert client.receive().status == pb.STATUS_CODE_BAD_REQUEST
    assert client.call(request("heartbeat", "after-garbage")).status == OK
    client.close()


def test_missing_and_unknown_bodies_are_unsupported_messages(gateway: RunningGateway) -> None:
    client = gateway.signed_in_client()
    missing = pb.Request(terminal_id=DEMO_TERMINAL, message_id="no-body")
    assert client.call(missing).status == pb.STATUS_CODE_UNSUPPORTED_MESSAGE
    unknown = missing.SerializeToString() + b"\xfa\x3e\x00"  # field 1000, a body from the future
    client.send_raw(frame(unknown))
    response = client.receive()
    assert (response.message_id, response.status) == ("no-body", pb.STATUS_CODE_UNSUPPORTED_MESSAGE)
    assert client.call(request("heartbeat", "still-here")).status == OK
    client.close()


def test_requests_before_sign_in_are_refused(gateway: RunningGateway) -> None:
    client = gateway.client()
    for body in ("heartbeat", "settle", "read_card"):
        response = client.call(request(body, f"early-{body}"))
        assert (response.message_id, response.status) == (f"early-{body}", pb.STATUS_CODE_NOT_SIGNED_IN)
    client.close()


@pytest.mark.parametrize(
    ("terminal_id", "credential", "status"),
    [
        ("H00000000000-01", "demo-secret", pb.STATUS_CODE_UNKNOWN_TERMINAL),
        (DEMO_TERMINAL, "wrong-secret", pb.STATUS_CODE_UNKNOWN_TERMINAL),
        (DISABLED_TERMINAL, "demo-secret", pb.STATUS_CODE_TERMINAL_DISABLED),
    ],
)
def test_unknown_and_disabled_terminals_cannot_sign_in(
    gateway: RunningGateway, terminal_id: str, credential: str, status: int
) -> None:
    client = gateway.client()
    response = client.call(sign_in(terminal_id=terminal_id, credential=credential))
    assert response.status == status
    assert response.message_en and response.message_zh
    client.close()


def test_a_thousand_connections_opened_and_dropped_at_once(gateway: RunningGateway) -> None:
    steady = gateway.signed_in_client()
    failures: list[str] = []
    stop = threading.Event()

    def keep_heartbeating() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                response = steady.call(request("heartbeat", f"steady-{n}"))
                if response.status != OK:
                    failures.append(pb.StatusCode.Name(response.status))
            except OSError as exc:
                failures.append(repr(exc))
                return
            time.sleep(0.01)

    beating = threading.Thread(target=keep_heartbeating)
    beating.start()
    sockets = []
    try:
        for _ in range(1000):
            sockets.append(socket.create_connection(("127.0.0.1", gateway.port), timeout=10))
        for index, sock in enumerate(sockets):
            if index % 2:  # half reset, half closed politely
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    finally:
        for sock in sockets:
            sock.close()
        time.sleep(0.5)
        stop.set()
        beating.join(timeout=10)
    assert failures == []
    gateway.assert_alive_and_serving()
    steady.close()


# The demo's -03 terminals, each reading a virtual card in the gateway, as the README's "try it" lists them ------

CROSS_REGION_TERMINAL = "H33020600007-03"   # designated for cross-region settlement
CROSS_REGION_CARD = "Z00002001"             # insured in Lishui, filed for care in Ningbo
HOSPITAL_VISIT = pb.MEDICAL_TYPE_ORDINARY_OUTPATIENT
PHARMACY_PURCHASE = pb.MEDICAL_TYPE_PHARMACY_PURCHASE


def test_a_filed_holder_from_another_zhejiang_city_settles_with_the_pin_at_the_designated_demo_hospital(
    gateway: RunningGateway,
) -> None:
    client = gateway.client()
    assert client.call(sign_in(terminal_id=CROSS_REGION_TERMINAL)).status == OK
    read = client.call(request("read_card", "x-read", CROSS_REGION_TERMINAL))
    assert read.status == OK and read.read_card.card.card_number == CROSS_REGION_CARD
    insured = read.read_card.insured
    assert insured.insured_region_code[:2] == "33" and city_prefix(insured.insured_region_code) != NINGBO_CITY_PREFIX
    assert insured.pin_required and insured.filed_for_care_elsewhere
    bill = {"medical_type": HOSPITAL_VISIT, "total_fen": 12345}
    asked = client.call(request("settle", "x-settle", CROSS_REGION_TERMINAL, **bill))
    assert asked.status == pb.STATUS_CODE_PIN_REQUIRED
    settled = client.call(request("settle", "x-settle", CROSS_REGION_TERMINAL, **bill, pin="000000"))
    assert settled.status == OK, settled.message_en
    result = settled.settle
    assert result.settlement_id and result.card_number == CROSS_REGION_CARD and result.split.total_fen == 12345
    query = request("query_transaction", "x-query", CROSS_REGION_TERMINAL)
    query.query_transaction.message_id = "x-settle"
    found = client.call(query)
    assert found.status == OK and found.query_transaction.state == pb.TRANSACTION_STATE_SETTLED
    assert found.query_transaction.settlement_id == result.settlement_id
    client.close()


@pytest.mark.parametrize(
    ("terminal_id", "card_number", "medical_type", "without_pin", "with_pin"),
    [
        ("H33020300001-03", "N00000001", HOSPITAL_VISIT, OK, OK),
        ("H33021200002-03", "Z00000101", HOSPITAL_VISIT, pb.STATUS_CODE_INSTITUTION_NOT_DESIGNATED,
         pb.STATUS_CODE_INSTITUTION_NOT_DESIGNATED),
        ("H33020500003-03", "N00000301", HOSPITAL_VISIT, OK, OK),
        ("P33020300004-03", "Z00000401", PHARMACY_PURCHASE, pb.STATUS_CODE_FILING_REQUIRED,
         pb.STATUS_CODE_FILING_REQUIRED),
        ("P33028200005-03", "W00000701", PHARMACY_PURCHASE, pb.STATUS_CODE_OUTSIDE_PROVINCE,
         pb.STATUS_CODE_OUTSIDE_PROVINCE),
        ("K33020300006-03", "N00001101", HOSPITAL_VISIT, pb.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED,
         pb.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED),
        (CROSS_REGION_TERMINAL, CROSS_REGION_CARD, HOSPITAL_VISIT, pb.STATUS_CODE_PIN_REQUIRED, OK),
    ],
)
def test_each_demo_virtual_card_terminal_answers_as_the_readme_says(
    gateway: RunningGateway, terminal_id: str, card_number: str, medical_type: int, without_pin: int, with_pin: int,
) -> None:
    assert demo_reader_of(terminal_id) == f"virtual:{card_number}"
    client = gateway.client()
    assert client.call(sign_in(terminal_id=terminal_id)).status == OK
    for pin, expected in (("", without_pin), ("000000", with_pin)):
        answer = client.call(request("settle", f"readme-{pin or 'none'}", terminal_id, medical_type=medical_type,
                                     total_fen=1000, pin=pin))
        assert answer.status == expected, (pin, answer.message_en)
    client.close()


def demo_reader_of(terminal_id: str) -> str:
    code, number = terminal_id.rsplit("-", 1)
    index = [institution for institution, *_ in DEMO_INSTITUTIONS].index(code)
    return demo_reader(index, int(number))


class DebugLoggingGateway(RunningGateway):
    """Logging at debug level, terminal -03 of the first hospital reading the filed holder from another
    Zhejiang city (a PIN is asked) from an in-process virtual card."""

    TERMINAL = "H33020300001-03"

    def serve_command(self) -> list[str]:
        config = self.tmp / "debug.toml"
        config.write_text(f'[log]\nlevel = "debug"\n[reader.terminals]\n"{self.TERMINAL}" = "virtual:Z00000101"\n')
        return ["--config", str(config)]


def test_logs_are_json_and_mask_nothing_secret(tmp_path: Path) -> None:
    """At the most talkative log level, a PIN that reached the card's VERIFY and a wrong credential appear
    nowhere in the log."""
    running = DebugLoggingGateway(tmp_path)
    terminal = DebugLoggingGateway.TERMINAL
    try:
        client = running.client()
        assert client.call(sign_in(credential="wrong-credential-123")).status != OK
        client.close()
        client = running.client()
        assert client.call(sign_in(terminal_id=terminal)).status == OK
        assert client.call(request("read_card", "read", terminal)).status == OK
        answer = client.call(request("settle", "pin-carrier", terminal, pin="135792", medical_type=11,
                                     total_fen=1_000))
        assert answer.status == pb.STATUS_CODE_PIN_WRONG, answer
        client.close()
        time.sleep(0.3)
    finally:
        running.stop()
    text = "".join(running.lines)
    assert f"read at {terminal}" in text, "the visit was not logged at debug level: nothing was checked"
    assert "135792" not in text and "wrong-credential-123" not in text and DEMO_CREDENTIAL not in text
    for line in running.lines:
        if line.startswith("{"):
            json.loads(line)


def test_sigterm_stops_the_gateway_cleanly(tmp_path: Path) -> None:
    running = RunningGateway(tmp_path)
    client = running.signed_in_client()
    assert running.stop() == 0
    assert client.closed_by_peer()
    assert any("gateway stopping" in line for line in running.lines)


def test_serve_refuses_an_unmigrated_database_with_advice(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--db", f"sqlite:///{tmp_path / 'empty.db'}",
         "--listen", "tcp:0:interface=127.0.0.1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "gateway db upgrade" in result.stderr


def test_serve_reports_a_port_in_use(gateway: RunningGateway, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'second.db'}"
    subprocess.run([sys.executable, "-m", "gateway", "db", "upgrade", "--db", db], cwd=ROOT, check=True,
                   capture_output=True)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--db", db, "--listen",
         f"tcp:{gateway.port}:interface=127.0.0.1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
