"""TLS with terminal certificates, end to end: `gateway serve` in a subprocess, real handshakes with Python's `ssl`.

Every refusal is a real handshake the gateway refuses, and each leaves exactly one line in its log.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.pki.authority import revoke
from gateway.protocol.messages import pb
from tests.test_end_to_end import ROOT, RunningGateway, listening_message
from tests.tls_support import TerminalPki, issue_expired, issue_unnamed, make_pki
from tests.wire import WireClient, request, sign_in

OK = pb.STATUS_CODE_OK
SIGNER = "H33020300001-01"          # signs in with its own certificate
NEIGHBOUR = "H33020300001-02"       # its certificate is offered for SIGNER's id
REVOKED = "H33021200002-01"         # revoked while the gateway runs
EXPIRED = "H33020500003-01"
IN_CITY_CARD_TERMINAL = "H33020300001-03"  # reads the in-city card N00000001 (no PIN) from a virtual reader
TERMINALS = [SIGNER, NEIGHBOUR, REVOKED, EXPIRED, IN_CITY_CARD_TERMINAL]
TLS_ADDRESS = re.compile(r"(\S+):(\d+) \(TLS\)")


class TlsGateway(RunningGateway):
    """Plain TCP on loopback and TLS, both on ephemeral ports, with the test PKI."""

    def __init__(self, tmp: Path, pki: TerminalPki) -> None:
        self.pki = pki
        super().__init__(tmp)
        listening = next(message for line in self.lines if (message := listening_message(line)) is not None)
        match = TLS_ADDRESS.search(listening)
        assert match is not None, listening
        self.tls_port = int(match.group(2))

    def serve_command(self) -> list[str]:
        config = self.tmp / "tls.toml"
        config.write_text(self.pki.tls_config(), encoding="utf-8")
        return ["--config", str(config), "--tls-listen", "tcp:0:interface=127.0.0.1"]

    def tls_client(self, context: ssl.SSLContext) -> WireClient:
        return WireClient("127.0.0.1", self.tls_port, tls=context)

    def log_lines_with(self, *texts: str) -> list[str]:
        return [line for line in self.lines if all(text in line for text in texts)]

    def wait_for_log(self, count: int, *texts: str) -> list[str]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(self.log_lines_with(*texts)) < count:
            time.sleep(0.05)
        return self.log_lines_with(*texts)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TerminalPki:
    made = make_pki(tmp_path_factory.mktemp("pki"), TERMINALS)
    issue_expired(made, EXPIRED)
    issue_unnamed(made, "unnamed", "not a terminal id")
    return made


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pki: TerminalPki) -> Iterator[TlsGateway]:
    running = TlsGateway(tmp_path_factory.mktemp("tls-gateway"), pki)
    yield running
    running.stop()


def refused_handshake(gateway: TlsGateway, context: ssl.SSLContext) -> str:
    """Connect, send a SignIn and expect no answer: the handshake is refused (with TLS 1.3 the client learns it on
    its first read). Returns what the client saw."""
    try:
        client = gateway.tls_client(context)
        response = client.call(sign_in())
    except (ssl.SSLError, ConnectionError) as exc:
        return str(exc)
    pytest.fail(f"the gateway answered {pb.StatusCode.Name(response.status)} on a connection it should refuse")


def test_a_demo_terminal_signs_in_with_its_certificate_and_settles(gateway: TlsGateway, pki: TerminalPki) -> None:
    client = gateway.tls_client(pki.client(IN_CITY_CARD_TERMINAL))
    assert client.sock.version() in ("TLSv1.3", "TLSv1.2")
    assert client.call(sign_in(terminal_id=IN_CITY_CARD_TERMINAL)).status == OK
    settled = client.call(request("settle", "tls-settle-1", IN_CITY_CARD_TERMINAL, medical_type=11, total_fen=12345))
    assert settled.status == OK, settled
    assert settled.settle.settlement_id
    assert client.call(request("sign_out", "tls-bye", IN_CITY_CARD_TERMINAL)).status == OK
    assert client.closed_by_peer()  # the SignOut answer came before TLS's close_notify


def test_another_terminals_certificate_is_refused_even_with_the_right_credential(
    gateway: TlsGateway, pki: TerminalPki
) -> None:
    client = gateway.tls_client(pki.client(NEIGHBOUR))
    refused = client.call(sign_in(terminal_id=SIGNER))
    assert refused.status == pb.STATUS_CODE_CERTIFICATE_MISMATCH
    assert refused.message_en and refused.message_zh
    # The connection stays open and not signed in; its own terminal id signs in, with its credential only.
    assert client.call(request("heartbeat", "not-yet")).status == pb.STATUS_CODE_NOT_SIGNED_IN
    wrong = client.call(sign_in("own-id-wrong-credential", terminal_id=NEIGHBOUR, credential="not-the-secret"))
    assert wrong.status == pb.STATUS_CODE_UNKNOWN_TERMINAL  # the credential stays a second factor
    assert client.call(sign_in("own-id", terminal_id=NEIGHBOUR)).status == OK
    client.close()
    assert gateway.wait_for_log(1, "its TLS certificate names", f'"certified": "{NEIGHBOUR}"')


@pytest.mark.parametrize(
    ("case", "logged"),
    [
        ("no certificate", "presented no certificate"),
        ("unknown CA", "is not issued by the terminal CA"),
        ("expired", "has expired"),
        ("no terminal id", "names no terminal id"),
        ("server certificate", "is not meant for a terminal"),
    ],
)
def test_refused_certificates_fail_the_handshake_with_one_log_line(
    gateway: TlsGateway, pki: TerminalPki, case: str, logged: str
) -> None:
    contexts = {
        "no certificate": lambda: pki.client(None),
        "unknown CA": lambda: pki.client(SIGNER, layout=pki.stranger),
        "expired": lambda: pki.client(EXPIRED),
        "no terminal id": lambda: pki.client("unnamed"),
        "server certificate": lambda: _presenting(pki, pki.layout.server_certificate, pki.layout.server_key),
    }
    before = len(gateway.log_lines_with("TLS handshake from"))
    refused_handshake(gateway, contexts[case]())
    lines = gateway.wait_for_log(before + 1, "TLS handshake from")
    time.sleep(0.2)  # a second line, if any, would be written by now
    new = gateway.log_lines_with("TLS handshake from")[before:]
    assert len(new) == 1 and logged in new[0], new
    gateway.assert_alive_and_serving()
    assert lines


def test_a_certificate_revoked_while_the_gateway_runs_is_refused_on_the_next_connection(
    gateway: TlsGateway, pki: TerminalPki
) -> None:
    before_revocation = gateway.tls_client(pki.client(REVOKED))
    assert before_revocation.call(sign_in(terminal_id=REVOKED)).status == OK
    before_revocation.close()
    revoked = subprocess.run([sys.executable, "-m", "gateway", "pki", "revoke", REVOKED, "--dir",
                              str(pki.layout.root)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0 and f"revoked terminal {REVOKED}" in revoked.stdout, revoked.stderr
    refused_handshake(gateway, pki.client(REVOKED))
    assert len(gateway.wait_for_log(1, "TLS handshake from", "has been revoked")) == 1
    assert gateway.wait_for_log(1, f"certificate revocation list {pki.layout.crl} reloaded"), "no reload logged"
    # Every other terminal still signs in.
    other = gateway.tls_client(pki.client(SIGNER))
    assert other.call(sign_in()).status == OK
    other.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")  # offered on purpose, to be refused
@pytest.mark.parametrize(
    ("version", "ciphers", "accepted"),
    [
        (ssl.TLSVersion.TLSv1_3, None, True),
        (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", True),
        (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305", True),
        (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA", False),    # CBC: not an AEAD cipher
        (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-SHA384", False),  # CBC again
        (ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0", False),        # below TLS 1.2
    ],
)
def test_tls_1_2_at_least_with_modern_ciphers_only(
    gateway: TlsGateway, pki: TerminalPki, version: ssl.TLSVersion, ciphers: str | None, accepted: bool
) -> None:
    context = pki.client(SIGNER)
    if version is not ssl.TLSVersion.TLSv1_3:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    if accepted:
        client = gateway.tls_client(context)
        assert client.sock.version() == {ssl.TLSVersion.TLSv1_3: "TLSv1.3", ssl.TLSVersion.TLSv1_2: "TLSv1.2"}[version]
        assert client.call(sign_in()).status == OK
        client.close()
    else:
        with pytest.raises(ssl.SSLError):
            gateway.tls_client(context)


def test_plain_tcp_stays_on_loopback_beside_tls(gateway: TlsGateway) -> None:
    assert gateway.assert_alive_and_serving() is None
    # The TLS port speaks nothing but TLS: a plain frame gets no protocol answer.
    with socket.create_connection(("127.0.0.1", gateway.tls_port), timeout=10) as raw:
        raw.sendall(b"\x00\x00\x00\x04abcd")
        answer = raw.recv(4096)
        assert not answer.startswith(b"\x00\x00")  # a TLS alert, or the close, never a Response frame


def _presenting(pki: TerminalPki, certificate: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.layout.ca_certificate))
    context.load_cert_chain(certificate, key)
    return context


def test_the_crl_is_reloaded_when_it_changes_and_a_bad_one_keeps_the_last_good_list(tmp_path: Path) -> None:
    from gateway.config import TlsConfig
    from gateway.serve.tls import TerminalTls

    made = make_pki(tmp_path, [SIGNER, NEIGHBOUR])
    layout = made.layout
    policy = TerminalTls(TlsConfig(listen=("tcp:0",), certificate=str(layout.server_certificate),
                                   private_key=str(layout.server_key), client_ca=str(layout.ca_certificate),
                                   crl=str(layout.crl)))
    assert policy.revoked_count == 0
    revoke(layout, SIGNER)
    policy.serverConnectionForTLS(None)  # what every new connection does first
    assert policy.revoked_count == 1
    for bad in (b"not a CRL", made.stranger.crl.read_bytes()):  # garbage; another CA's list
        layout.crl.write_bytes(bad)
        policy.serverConnectionForTLS(None)
        assert policy.revoked_count == 1
    layout.crl.unlink()
    policy.serverConnectionForTLS(None)
    assert policy.revoked_count == 1
