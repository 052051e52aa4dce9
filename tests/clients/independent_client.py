"""A terminal written from proto/ alone: it imports only protoc's output and the standard library.

Run by tests/test_end_to_end.py in a separate process, with the generated code on PYTHONPATH:
    python independent_client.py HOST PORT TERMINAL_ID CREDENTIAL
Prints one JSON object with what it saw.
"""

import json
import socket
import struct
import sys

from ningbo.gateway.v1 import gateway_pb2 as pb  # generated from proto/ by the test


def main() -> None:
    host, port, terminal_id, credential = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    sock = socket.create_connection((host, port), timeout=10)

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
    heartbeat.heartbeat.SetInParent()
    beat = call(heartbeat)
    sign_out = pb.Request(terminal_id=terminal_id, message_id="bye-1")
    sign_out.sign_out.SetInParent()
    out = call(sign_out)
    print(json.dumps({
        "sign_in": pb.StatusCode.Name(signed.status),
        "institution": signed.sign_in.institution_code,
        "sign_in_echo": signed.message_id,
        "heartbeat": pb.StatusCode.Name(beat.status),
        "heartbeat_echo": beat.message_id,
        "heartbeat_body": beat.WhichOneof("body"),
        "sign_out": pb.StatusCode.Name(out.status),
        "closed_after_sign_out": sock.recv(1) == b"",
        "imported_gateway_package": any(m == "gateway" or m.startswith("gateway.") for m in sys.modules),
    }))


if __name__ == "__main__":
    main()
