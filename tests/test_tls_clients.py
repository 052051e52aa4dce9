"""Clients that are not the gateway's, over TLS with the demo PKI's files: the independent client (protoc's output
and the standard library), the Python and Node examples of docs/protocol.md as printed there, and the simulator."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol

from gateway.cli.main import main
from gateway.demo.registry import DEMO_INSTITUTIONS, demo_terminal_id
from simulators.tls import TlsFiles, client_endpoint
from tests.test_end_to_end import ROOT
from tests.test_tls import TlsGateway
from tests.tls_support import TerminalPki, make_pki
from tests.wire import DEMO_TERMINAL

DEMO_TERMINALS = [demo_terminal_id(code, n) for code, *_ in DEMO_INSTITUTIONS for n in range(1, 5)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TerminalPki:
    return make_pki(tmp_path_factory.mktemp("pki"), DEMO_TERMINALS)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pki: TerminalPki) -> Iterator[TlsGateway]:
    running = TlsGateway(tmp_path_factory.mktemp("tls-clients"), pki)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding out/ (protoc's Python output), as docs/protocol.md §9.2 makes it."""
    directory = tmp_path_factory.mktemp("client")
    (directory / "out").mkdir()
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
                    f"--python_out={directory / 'out'}", str(ROOT / "proto/ningbo/gateway/v1/gateway.proto")],
                   check=True)
    return directory


def example(heading: str, language: str) -> str:
    """The first ```language block under `heading` in docs/protocol.md: the code a vendor copies."""
    text = (ROOT / "docs/protocol.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    match = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no {language} example under {heading}"
    return match.group(1)


def without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_independent_client_speaks_tls_with_a_demo_certificate(
    gateway: TlsGateway, pki: TerminalPki, generated: Path
) -> None:
    layout = pki.layout
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests/clients/independent_client.py"), "127.0.0.1", str(gateway.tls_port),
         DEMO_TERMINAL, "demo-secret", "--tls-ca", str(layout.ca_certificate),
         "--tls-cert", str(layout.terminal_certificate(DEMO_TERMINAL)),
         "--tls-key", str(layout.terminal_key(DEMO_TERMINAL))],
        cwd=generated, env={**without_pythonpath(), "PYTHONPATH": str(generated / "out")},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen.pop("tls_version") in ("TLSv1.3", "TLSv1.2")
    assert seen == {
        "sign_in": "STATUS_CODE_OK", "institution": "H33020300001",
        "sign_in_echo": "H3302030000120261124090000001",
        "heartbeat": "STATUS_CODE_OK", "heartbeat_echo": "H3302030000120261124090000002",
        "heartbeat_body": "heartbeat", "sign_out": "STATUS_CODE_OK", "closed_after_sign_out": True,
        "imported_gateway_package": False,
    }


@pytest.mark.parametrize("over_tls", [True, False], ids=["tls", "plain"])
def test_the_documented_python_client_runs_as_printed(
    gateway: TlsGateway, pki: TerminalPki, generated: Path, over_tls: bool
) -> None:
    script = generated / "terminal_demo.py"
    script.write_text(example("### 9.2 A complete Python client", "python"), encoding="utf-8")
    options = ["--tls", str(pki.layout.root), "--port", str(gateway.tls_port)] if over_tls else [
        "--port", str(gateway.port)]
    result = subprocess.run([sys.executable, str(script), *options], cwd=generated, env=without_pythonpath(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    if over_tls:
        assert re.fullmatch(r"TLS TLSv1\.[23], gateway certificate for localhost", lines.pop(0))
    assert lines[0].startswith("signed in at 宁波演示第一医院 (H33020300001), session S")
    assert lines[1].startswith("heartbeat: STATUS_CODE_OK ") and lines[2] == "sign-out: STATUS_CODE_OK"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize(
    ("certificate", "expected"),
    [
        (DEMO_TERMINAL, ["sign-in: status 1: OK", "heartbeat: status 1: OK"]),
        ("H33020300001-02", ["sign-in: status 111: The terminal id differs"]),
    ],
    ids=["own certificate", "another terminal's certificate"],
)
def test_the_documented_node_client_runs_as_printed(
    gateway: TlsGateway, pki: TerminalPki, tmp_path: Path, certificate: str, expected: list[str]
) -> None:
    script = tmp_path / "terminal_tls.js"
    script.write_text(example("### 9.3 Over TLS", "js"), encoding="utf-8")
    # The terminal DEMO_TERMINAL with `certificate`'s files: the PKI directory as that terminal would have it.
    own = tmp_path / "pki"
    (own / "terminals").mkdir(parents=True)
    shutil.copy(pki.layout.ca_certificate, own / "ca.crt")
    for suffix in ("crt", "key"):
        shutil.copy(pki.layout.terminals / f"{certificate}.{suffix}", own / "terminals" / f"{DEMO_TERMINAL}.{suffix}")
    result = subprocess.run(["node", str(script), "127.0.0.1", str(gateway.tls_port), str(own), DEMO_TERMINAL],
                            capture_output=True, text=True, timeout=60)
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"TLS TLSv1\.[23], gateway certificate for localhost", lines[0]), result
    assert [line[:len(e)] for line, e in zip(lines[1:], expected, strict=True)] == expected
    assert result.returncode == (0 if certificate == DEMO_TERMINAL else 1)


@pytest.mark.parametrize("mix", ["heartbeat", "settle"])
def test_the_simulator_speaks_tls(gateway: TlsGateway, pki: TerminalPki, mix: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "simulate", "--target", f"127.0.0.1:{gateway.tls_port}", "--terminals", "6",
         "--requests", "60", "--mix", mix, "--tls-ca", str(pki.layout.ca_certificate), "--tls-cert-dir",
         str(pki.layout.terminals), "--terminals-per-institution", "4"],  # the ids this PKI certifies
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unexpected answers: 0" in result.stdout


def test_simulate_wants_both_tls_options(pki: TerminalPki, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--target", "127.0.0.1:9543", "--terminals", "1", "--requests", "1",
                 "--tls-ca", str(pki.layout.ca_certificate)])
    assert code == 2 and "--tls-ca and --tls-cert-dir go together" in capsys.readouterr().err



def test_the_simulators_tls_transport_writes_at_once(pki: TerminalPki) -> None:
    """Its terminals write one frame per turn: Twisted's BufferingTLSTransport would add a timer per write to the
    load generator's own cost, which shares the machine with the gateway it measures."""
    built: list[object] = []

    class Endpoint:
        def connect(self, factory: Factory) -> Deferred[object]:
            built.append(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9543)))
            return Deferred()

    endpoint = client_endpoint(reactor, "127.0.0.1", 9543, DEMO_TERMINAL,
                               TlsFiles(pki.layout.ca_certificate, pki.layout.terminals))
    endpoint._endpoint = Endpoint()
    endpoint.connect(Factory.forProtocol(Protocol))
    [transport] = built
    assert type(transport) is TLSMemoryBIOProtocol and not isinstance(transport, BufferingTLSTransport)
