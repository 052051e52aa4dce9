"""Hold N signed-in, idle terminal connections open until terminated (for the memory-per-connection figure).

    python -m benchmarks.idle_terminals PORT N TERMINALS_PER_INSTITUTION

Prints the number signed in, then waits.
"""

from __future__ import annotations

import resource
import socket
import struct
import sys
import time

from gateway.demo.registry import DEMO_CREDENTIAL
from gateway.protocol.messages import pb
from simulators.load import SESSIONS_PER_TERMINAL_ID, terminal_ids


def main(argv: list[str]) -> int:
    port, count, per_institution = int(argv[0]), int(argv[1]), int(argv[2])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ids = terminal_ids("H33020300001", per_institution) + terminal_ids("P33020300004", per_institution)
    sockets = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        request = pb.Request(terminal_id=ids[n // SESSIONS_PER_TERMINAL_ID], message_id=f"idle-{n}")
        request.send_time.GetCurrentTime()
        request.sign_in.credential = DEMO_CREDENTIAL
        payload = request.SerializeToString()
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        sockets.append(sock)
    signed = 0
    for sock in sockets:
        (length,) = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))
        if pb.Response.FromString(sock.recv(length, socket.MSG_WAITALL)).status == pb.STATUS_CODE_OK:
            signed += 1
    print(signed, flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
