"""What an idle TLS connection keeps (issue 15, BENCHMARKS.md "What TLS costs"): the gateway's TLS transport, in
process, against a pyOpenSSL client over memory — real handshakes with the test PKI, no sockets needed.

Once the handshake is over, the memory its flights needed in the two memory BIOs is given back; the connection
works on as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
from pathlib import Path

import pytest
from OpenSSL import SSL
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from gateway.config import TlsConfig
from gateway.serve.tls import TerminalTls, TerminalTlsTransport
from tests.tls_support import TerminalPki, make_pki

TERMINAL = "H33020300001-01"


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TerminalPki:
    return make_pki(tmp_path_factory.mktemp("pki"), [TERMINAL])


@pytest.fixture(scope="module")
def tls(pki: TerminalPki) -> TerminalTls:
    layout = pki.layout
    return TerminalTls(TlsConfig(certificate=str(layout.server_certificate), private_key=str(layout.server_key),
                                 client_ca=str(layout.ca_certificate), crl=str(layout.crl)))


@pytest.fixture(scope="module")
def client_context(pki: TerminalPki) -> SSL.Context:
    layout = pki.layout
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.use_certificate_file(str(layout.terminal_certificate(TERMINAL)))
    context.use_privatekey_file(str(layout.terminal_key(TERMINAL)))
    context.load_verify_locations(str(layout.ca_certificate))
    context.set_verify(SSL.VERIFY_PEER, lambda *_: True)
    return context


class Pair:
    """The gateway's TLS transport (over a StringTransport) and a terminal's pyOpenSSL connection, moved by hand."""

    def __init__(self, tls: TerminalTls, client_context: SSL.Context) -> None:
        factory = tls.factory(Factory.forProtocol(Echo))
        self.server: TerminalTlsTransport = factory.buildProtocol(None)
        self.wire = StringTransport()
        self.server.makeConnection(self.wire)
        self.client = SSL.Connection(client_context, None)
        self.client.set_connect_state()

    def move(self) -> None:
        """Bytes both ways until neither side has any to send."""
        for _ in range(20):
            with contextlib.suppress(SSL.WantReadError):
                self.client.do_handshake()
            sent = b""
            with contextlib.suppress(SSL.WantReadError):
                sent = self.client.bio_read(65536)
            if sent:
                self.server.dataReceived(sent)
            answered = self.wire.value()
            self.wire.clear()
            if answered:
                self.client.bio_write(answered)
            if not sent and not answered:
                return

    def exchange(self, data: bytes) -> bytes:
        self.client.sendall(data)
        self.move()
        return self.client.recv(65536)


def test_the_handshakes_bios_are_swapped_for_empty_ones_and_the_connection_works_on(
    tls: TerminalTls, client_context: SSL.Context
) -> None:
    pair = Pair(tls, client_context)
    connection = pair.server.getHandle()
    bios_during_handshake = (connection._into_ssl, connection._from_ssl)
    pair.move()
    assert pair.server.handshake_finished
    assert pair.server.handshake_memory_released
    assert (connection._into_ssl, connection._from_ssl) != bios_during_handshake
    for n in range(3):
        assert pair.exchange(b"heartbeat %d" % n) == b"heartbeat %d" % n
    assert pair.exchange(b"x" * 40_000)[:16_000] == b"x" * 16_000  # a record of the most TLS carries, and more


def test_a_refused_handshake_swaps_nothing(tls: TerminalTls, tmp_path: Path) -> None:
    stranger = make_pki(tmp_path, [TERMINAL]).stranger  # the same terminal id, from a CA the gateway does not know
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.use_certificate_file(str(stranger.terminal_certificate(TERMINAL)))
    context.use_privatekey_file(str(stranger.terminal_key(TERMINAL)))
    context.set_verify(SSL.VERIFY_NONE, lambda *_: True)
    pair = Pair(tls, context)
    pair.move()
    assert not pair.server.handshake_finished
    assert not pair.server.handshake_memory_released
    assert pair.server.refusal_logged


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_in_use() -> int:
    """Bytes the C allocator has handed out and not got back (glibc's mallinfo2: OpenSSL's allocations are there)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        pytest.skip("no glibc mallinfo2 here")
    mallinfo2.restype = _MallInfo2
    gc.collect()
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def test_an_idle_connection_keeps_no_handshake_flights(
    tls: TerminalTls, client_context: SSL.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    connections = 100

    def held_per_connection() -> float:
        pairs = [Pair(tls, client_context) for _ in range(3)]  # what the first connections load once
        before = _malloc_in_use()
        for _ in range(connections):
            pair = Pair(tls, client_context)
            pair.move()
            pair.exchange(b"heartbeat")
            pair.client = None  # type: ignore[assignment]  # the terminal's side is not the gateway's memory
            pairs.append(pair)
        return (_malloc_in_use() - before) / connections

    released = held_per_connection()
    monkeypatch.setattr(TerminalTlsTransport, "_release_handshake_memory", lambda self: None)
    kept = held_per_connection()
    # Both BIOs held a flight with a certificate (about 5.5 KB together with OpenSSL 3 and 4).
    assert kept - released > 3_000, (kept, released)
