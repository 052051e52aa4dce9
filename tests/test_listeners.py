"""`gateway serve`'s listeners: one that cannot start is one line on stderr and a non-zero exit (never a traceback
and a process listening on nothing), and plain TCP stays on loopback unless the operator allows more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_end_to_end import ROOT, listening_message

GATEWAY = [sys.executable, "-m", "gateway"]
# The operator's HTTP listener on a free port: the default one (9501) may be another gateway's on this machine.
EPHEMERAL_METRICS = ["--metrics-listen", "tcp:0:interface=127.0.0.1"]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('listeners') / 'gateway.db'}"
    subprocess.run([*GATEWAY, "db", "upgrade", "--db", url], cwd=ROOT, check=True, capture_output=True)
    return url


def listening_line(process: subprocess.Popen[str]) -> str:
    """The message `gateway serve` logs once every listener listens (log lines come before it)."""
    assert process.stdout is not None
    for line in process.stdout:
        if (message := listening_message(line)) is not None:
            return message
    raise AssertionError(f"gateway serve exited with {process.wait()} before listening")


def serve(database: str, *options: str) -> subprocess.CompletedProcess[str]:
    """`gateway serve` expected to stop by itself; a hang (the old behaviour) fails the test by its timeout."""
    return subprocess.run([*GATEWAY, "serve", "--db", database, *EPHEMERAL_METRICS, *options], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("options", "status", "said"),
    [
        (["--listen", "tcpp:9500"], 1, "cannot use the endpoint 'tcpp:9500'"),
        (["--listen", "tcp:port-nine-thousand"], 1, "cannot use the endpoint"),
        (["--listen", "tcp:0:interface=127.0.0.1:backlog=many"], 1, "cannot use the endpoint"),
        (["--listen", "ssl:9501:privateKey=key.pem"], 2, "give TLS listeners as plain endpoints in tls.listen"),
        (["--listen", "tcp:0:interface=127.0.0.1", "--tls-listen", "tcp:0:interface=127.0.0.1"], 1,
         "cannot read tls.certificate var/missing-pki/server.crt"),
        (["--listen", "tcp:0:interface=203.0.113.7"], 1, "cannot listen on 'tcp:0:interface=203.0.113.7'"),
    ],
)
def test_a_listener_that_cannot_start_is_one_line_and_a_non_zero_exit(
    database: str, tmp_path: Path, options: list[str], status: int, said: str
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[tls]\ncertificate = "var/missing-pki/server.crt"\n', encoding="utf-8")
    result = serve(database, "--config", str(config), *options)
    assert result.returncode == status
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("interface", ["0.0.0.0", r"\:\:", ""])  # colons are escaped in endpoint strings
def test_plain_tcp_off_loopback_is_refused_unless_allowed(database: str, tmp_path: Path, interface: str) -> None:
    endpoint = f"tcp:0:interface={interface}" if interface else "tcp:0"
    refused = serve(database, "--listen", endpoint)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing plain TCP" in lines[0] and "allow_plaintext_on_network" in lines[0]
    assert "Gateway listening" not in refused.stdout

    config = tmp_path / "open.toml"
    config.write_text("[server]\nallow_plaintext_on_network = true\n", encoding="utf-8")
    allowed = subprocess.Popen([*GATEWAY, "serve", "--db", database, "--config", str(config), "--listen", endpoint,
                                *EPHEMERAL_METRICS],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listening_line(allowed)
    finally:
        allowed.send_signal(signal.SIGTERM)
        allowed.wait(timeout=30)


def test_loopback_plain_tcp_needs_no_permission(database: str) -> None:
    running = subprocess.Popen([*GATEWAY, "serve", "--db", database, "--listen", r"tcp:0:interface=\:\:1",
                                "--listen", "tcp:0:interface=127.0.0.1", *EPHEMERAL_METRICS],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = listening_line(running)
        assert line.startswith("Gateway listening on [::1]:") and "(plain TCP), 127.0.0.1:" in line, line
    finally:
        running.send_signal(signal.SIGTERM)
        running.wait(timeout=30)


def test_a_tls_listener_without_pyopenssl_is_one_line_and_exit_1(database: str, tmp_path: Path) -> None:
    """The crash the issue found (`ssl:` → "No module named 'OpenSSL'"): with pyOpenSSL unimportable, a TLS listener
    is one line naming the missing module and the package that brings it, never a traceback."""
    pki = tmp_path / "pki"
    for command in (["init-ca"], ["issue-server", "localhost", "127.0.0.1"]):
        subprocess.run([*GATEWAY, "pki", *command, "--dir", str(pki)], cwd=ROOT, check=True, capture_output=True)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[tls]\ncertificate = "{pki}/server.crt"\nprivate_key = "{pki}/server.key"\n'
                      f'client_ca = "{pki}/ca.crt"\n', encoding="utf-8")
    blocked = tmp_path / "blocked" / "OpenSSL"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("No module named \'OpenSSL\'")\n', encoding="utf-8")
    result = subprocess.run([*GATEWAY, "serve", "--db", database, "--config", str(config), *EPHEMERAL_METRICS,
                             "--listen", "tcp:0:interface=127.0.0.1", "--tls-listen", "tcp:0:interface=127.0.0.1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PYTHONPATH": str(blocked.parent)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs pyOpenSSL" in lines[0] and "twisted[tls]" in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "Gateway listening" not in result.stdout


@pytest.mark.parametrize("freeze", [True, False])
def test_once_listening_the_gateway_sets_its_startup_objects_aside_from_the_collector(
        database: str, tmp_path: Path, freeze: bool) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f"[server]\nfreeze_startup_objects = {str(freeze).lower()}\n", encoding="utf-8")
    running = subprocess.Popen([*GATEWAY, "serve", "--db", database, "--config", str(config), "--listen",
                                "tcp:0:interface=127.0.0.1", "--log-level", "debug", *EPHEMERAL_METRICS],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        listening_line(running)
        running.send_signal(signal.SIGTERM)
        output, _ = running.communicate(timeout=30)
    finally:
        if running.poll() is None:
            running.kill()
    said = [line for line in output.splitlines() if "set aside from the garbage collector" in line]
    if not freeze:
        assert said == [], said
        return
    assert len(said) == 1, output[-2000:]
    count = int(said[0].split("] ", 1)[1].split()[0])
    assert count > 10_000, said[0]  # modules, tables, the reactor: far more than a handful
