"""Memory per idle signed-in connection, plain TCP and TLS side by side, at several connection counts (issue 15).

    .venv/bin/python -m benchmarks.idle_memory [--connections 1000 10000] [--transports plain tls] [--json OUT]

Each (transport, count) gets a fresh gateway of its own, built as `benchmarks.system_bench` builds its gateways
(a fresh SQLite ledger, the demo registry, a PKI with a certificate per terminal id), warmed by
IDLE_TLS_WARM_UP_S seconds of heartbeats over the same transport, then `benchmarks.idle_terminals` holds the
connections open while the gateway's RSS is read before and after (system_bench.idle_memory). A fresh gateway
per point keeps the memory freed by an earlier point from being reused by a later one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.system_bench import IDLE_TLS_WARM_UP_S, Gateway, idle_memory, simulate
from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION
from simulators.load import SESSIONS_PER_TERMINAL_ID

# Terminals of the warm-up run (each with a certificate of its own over TLS).
WARM_UP_TERMINALS = 20


def measure(tmp: Path, transport: str, connections: int) -> dict[str, Any]:
    """One point: a fresh gateway, warmed over `transport`, then `connections` idle signed-in terminals."""
    per_institution = max(DEFAULT_TERMINALS_PER_INSTITUTION, connections // SESSIONS_PER_TERMINAL_ID + 10)
    tls = transport == "tls"
    gateway = Gateway(tmp, per_institution, f"idle_{transport}_{connections}.db", tls_terminals=WARM_UP_TERMINALS + 1)
    try:
        port = gateway.tls_port if tls else gateway.port
        if port is None:
            raise RuntimeError("the gateway printed no TLS address")
        simulate(port, per_institution, "--terminals", str(WARM_UP_TERMINALS), "--duration", str(IDLE_TLS_WARM_UP_S),
                 "--mix", "heartbeat", *(gateway.tls_options() if tls else ()))
        return idle_memory(gateway, per_institution, connections, tls=tls)
    finally:
        gateway.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, nargs="+", default=[1_000, 10_000], metavar="N")
    parser.add_argument("--transports", nargs="+", choices=("plain", "tls"), default=["plain", "tls"])
    parser.add_argument("--json", type=Path, help="also write the figures there")
    args = parser.parse_args(argv)
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for connections in args.connections:
            for transport in args.transports:
                point = measure(Path(tmp), transport, connections)
                print(f"{transport:5s} {connections:>6,} connections: {point['kb_per_connection']:6.2f} KB each "
                      f"({point['rss_before_kb'] / 1024:.0f} MB -> {point['rss_after_kb'] / 1024:.0f} MB, "
                      f"{point['signed_in']:,} signed in)", flush=True)
                points.append(point)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(points, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
