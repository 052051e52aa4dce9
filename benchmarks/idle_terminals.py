"""Hold N signed-in, idle terminal connections open until terminated (for the memory-per-connection figure).

    python -m benchmarks.idle_terminals PORT N TERMINALS_PER_INSTITUTION [--tls-ca CA --tls-cert-dir DIR]

Connection n signs in as `connection_terminal_ids(N, ...)[n]`: each terminal id takes as many sessions as a
gateway with the defaults allows, so N connections need N / SESSIONS_PER_TERMINAL_ID ids (and over TLS as many
certificates, DIR/<TERMINAL_ID>.crt and .key as `gateway pki issue-terminal` writes them, shared by the sessions
of one id). Prints the number signed in, then waits.
"""

from __future__ import annotations

import argparse
import resource
import socket
import ssl
import struct
import sys
import time
from pathlib import Path

from gateway.demo.registry import DEMO_CREDENTIAL
from gateway.protocol.messages import pb
from simulators.load import SESSIONS_PER_TERMINAL_ID, terminal_ids

# The institutions whose terminal ids the connections use, in order (the first one's ids first).
INSTITUTIONS = ("H33020300001", "P33020300004")
CONNECT_TIMEOUT_S = 30.0


def connection_terminal_ids(count: int, per_institution: int) -> list[str]:
    """The terminal id each of `count` connections signs in as."""
    ids = [terminal_id for institution in INSTITUTIONS for terminal_id in terminal_ids(institution, per_institution)]
    needed = -(-count // SESSIONS_PER_TERMINAL_ID)
    if needed > len(ids):
        raise ValueError(f"{count} connections need {needed} terminal ids ({SESSIONS_PER_TERMINAL_ID} sessions "
                         f"each), --terminals-per-institution {per_institution} gives {len(ids)}")
    return [ids[n // SESSIONS_PER_TERMINAL_ID] for n in range(count)]


class TlsContexts:
    """One client context per terminal id (its certificate), trusting the operator's CA for the gateway's."""

    def __init__(self, ca: Path, cert_dir: Path) -> None:
        self.ca = ca
        self.cert_dir = cert_dir
        self._contexts: dict[str, ssl.SSLContext] = {}

    def wrap(self, sock: socket.socket, terminal_id: str) -> ssl.SSLSocket:
        context = self._contexts.get(terminal_id)
        if context is None:
            context = ssl.create_default_context(cafile=str(self.ca))
            context.load_cert_chain(self.cert_dir / f"{terminal_id}.crt", self.cert_dir / f"{terminal_id}.key")
            self._contexts[terminal_id] = context
        return context.wrap_socket(sock, server_hostname="127.0.0.1")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle_terminals", description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("per_institution", type=int)
    parser.add_argument("--tls-ca", type=Path, help="over TLS: the CA of the gateway's certificate")
    parser.add_argument("--tls-cert-dir", type=Path, help="over TLS: <TERMINAL_ID>.crt and .key of each id")
    args = parser.parse_args(argv)
    if (args.tls_ca is None) != (args.tls_cert_dir is None):
        parser.error("--tls-ca and --tls-cert-dir go together")
    tls = TlsContexts(args.tls_ca, args.tls_cert_dir) if args.tls_ca else None
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sockets: list[socket.socket] = []
    for n, terminal_id in enumerate(connection_terminal_ids(args.count, args.per_institution)):
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=CONNECT_TIMEOUT_S)
        if tls is not None:
            sock = tls.wrap(sock, terminal_id)  # the handshake, before the sign-in
        request = pb.Request(terminal_id=terminal_id, message_id=f"idle-{n}")
        request.send_time.GetCurrentTime()
        request.sign_in.credential = DEMO_CREDENTIAL
        payload = request.SerializeToString()
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        sockets.append(sock)
    signed = 0
    for sock in sockets:
        (length,) = struct.unpack(">I", _read_exactly(sock, 4))
        if pb.Response.FromString(_read_exactly(sock, length)).status == pb.STATUS_CODE_OK:
            signed += 1
    print(signed, flush=True)
    while True:
        time.sleep(60)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    """`size` bytes (an SSL socket takes no MSG_WAITALL)."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the gateway closed the connection before answering the sign-in")
        data += chunk
    return data


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
