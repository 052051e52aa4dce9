"""A terminal written from proto/ alone: it imports only protoc's output and the standard library.

Run by tests/test_end_to_end.py and tests/test_tls_clients.py in a separate process, with the generated code on
PYTHONPATH:
    python independent_client.py HOST PORT TERMINAL_ID CREDENTIAL [--tls-ca CA --tls-cert CRT --tls-key KEY]
With --tls-ca it speaks TLS (Python's ssl): it trusts CA for the gateway's certificate and presents CRT/KEY.
Prints one JSON object with what it saw.
"""

import argparse
import json
import socket
import ssl
import struct
import sys

from ningbo.gateway.v1 import gateway_pb2 as pb  # generated from proto/ by the test


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("host", "port", "terminal_id", "credential"):
        parser.add_argument(name)
    parser.add_argument("--tls-ca")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-server-name", default="localhost", help="the name the gateway's certificate has")
    args = parser.parse_args()
    terminal_id, credential = args.terminal_id, args.credential
    sock = socket.create_connection((args.host, int(args.port)), timeout=10)
    if args.tls_ca:
        context = ssl.create_default_context(cafile=args.tls_ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(args.tls_cert, args.tls_key)
        sock = context.wrap_socket(sock, server_hostname=args.tls_server_name)
    tls_version = sock.version() if args.tls_ca else None

    def call(request: pb.Request) -> pb.Response:
        payload = request.SerializeToString()
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        header = read_exactly(4)
        return pb.Response.FromString(read_exactly(struct.unpack(">I", header)[0]))

    def read_exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("gateway closed the connection")
            data += chunk
        return data

    sign_in = pb.Request(terminal_id=terminal_id, message_id="H3302030000120261124090000001")
    sign_in.send_time.GetCurrentTime()
    sign_in.sign_in.credential = credential
    sign_in.sign_in.software_version = "independent-client/1.0"
    signed = call(sign_in)
    heartbeat = pb.Request(terminal_id=terminal_id, message_id="H3302030000120261124090000002")
    heartbeat.send_time.GetCurrentTime()
    heartbeat.heartbeat.SetInParent()
    beat = call(heartbeat)
    sign_out = pb.Request(terminal_id=terminal_id, message_id="bye-1")
    sign_out.send_time.GetCurrentTime()
    sign_out.sign_out.SetInParent()
    out = call(sign_out)
    seen = {
        "sign_in": pb.StatusCode.Name(signed.status),
        "institution": signed.sign_in.institution_code,
        "sign_in_echo": signed.message_id,
        "heartbeat": pb.StatusCode.Name(beat.status),
        "heartbeat_echo": beat.message_id,
        "heartbeat_body": beat.WhichOneof("body"),
        "sign_out": pb.StatusCode.Name(out.status),
        "closed_after_sign_out": sock.recv(1) == b"",
        "imported_gateway_package": any(m == "gateway" or m.startswith("gateway.") for m in sys.modules),
    }
    if args.tls_ca:
        seen["tls_version"] = tls_version
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
