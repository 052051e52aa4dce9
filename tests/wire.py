"""Test helpers for speaking the wire protocol over a blocking socket."""

from __future__ import annotations

import socket
import ssl
import struct

from gateway.demo.registry import DEMO_CREDENTIAL
from gateway.protocol.messages import pb

DEMO_TERMINAL = "H33020300001-01"


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def request(body: str, message_id: str = "m1", terminal_id: str = DEMO_TERMINAL, **fields: object) -> pb.Request:
    req = pb.Request(terminal_id=terminal_id, message_id=message_id)
    getattr(req, body).SetInParent()
    for name, value in fields.items():
        target = getattr(req, body)
        if isinstance(value, list):
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)
    return req


def sign_in(message_id: str = "sign-in", terminal_id: str = DEMO_TERMINAL,
            credential: str = DEMO_CREDENTIAL) -> pb.Request:
    return request("sign_in", message_id, terminal_id, credential=credential)


class WireClient:
    def __init__(self, host: str, port: int, timeout_s: float = 10.0, *, tls: ssl.SSLContext | None = None,
                 server_hostname: str = "localhost") -> None:
        sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock = tls.wrap_socket(sock, server_hostname=server_hostname) if tls is not None else sock

    def send(self, req: pb.Request) -> None:
        if not req.HasField("send_time"):
            req.send_time.GetCurrentTime()  # as a terminal does; a retry of the same object keeps the first one
        self.sock.sendall(frame(req.SerializeToString()))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError(f"closed after {len(data)} of {count} bytes")
            data += chunk
        return data

    def receive(self) -> pb.Response:
        (length,) = struct.unpack(">I", self._read_exactly(4))
        return pb.Response.FromString(self._read_exactly(length))

    def call(self, req: pb.Request) -> pb.Response:
        self.send(req)
        return self.receive()

    def closed_by_peer(self) -> bool:
        """True once the gateway has closed the connection (reads EOF)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
