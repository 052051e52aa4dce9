"""What recording the metrics costs a request: heartbeats through the gateway's own adapter, session and service
with the metrics on and off, in one run.

    .venv/bin/python -m benchmarks.metrics_bench [--heartbeats N] [--rounds R] [--json OUT]

Each heartbeat is one frame given to the Twisted protocol (`dataReceived`), decoded, dispatched, answered and
written to an in-memory transport: the gateway's whole work for it but the kernel's, so the ratio is an upper bound
of what the metrics add to a heartbeat over a socket (which also pays the system calls). The two gateways take
turns, round after round, and the figure is the ratio of their median rounds: these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gateway.config import ServerConfig
from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.demo.registry import DEMO_CREDENTIAL, demo_terminal_id, write_demo_registry
from gateway.ops.metrics import GatewayMetrics
from gateway.protocol.framing import encode_frame
from gateway.protocol.messages import pb
from gateway.registry.directory import TerminalDirectory
from gateway.serve.adapter import TerminalFactory, TerminalProtocol
from gateway.serve.dispatch import GatewayService

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = demo_terminal_id("H33020300001", 1)


def run_now(function: Any, *args: Any) -> Deferred[Any]:
    return maybeDeferred(function, *args)


def frame(body: str, message_id: str, **fields: Any) -> bytes:
    request = pb.Request(terminal_id=TERMINAL, message_id=message_id)
    getattr(request, body).SetInParent()
    for name, value in fields.items():
        setattr(getattr(request, body), name, value)
    return encode_frame(request.SerializeToString())


class SignedIn:
    """One signed-in connection of a gateway built in this process, over an in-memory transport."""

    def __init__(self, directory: TerminalDirectory, metrics: GatewayMetrics | None) -> None:
        config = ServerConfig()
        clock = Clock()
        service = GatewayService(directory=directory, run_blocking=run_now, server_config=config, clock=clock,
                                 metrics=metrics)
        self.clock = clock
        self.factory = TerminalFactory(service, config, clock, metrics)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))  # type: ignore[no-untyped-call]
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))  # type: ignore[arg-type]
        if not isinstance(protocol, TerminalProtocol):
            raise TypeError(f"the factory built a {type(protocol).__name__}")
        self.protocol: TerminalProtocol = protocol
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(frame("sign_in", "sign-in", credential=DEMO_CREDENTIAL))
        answer = pb.Response.FromString(self.transport.value()[4:])  # type: ignore[no-untyped-call]
        if answer.status != pb.STATUS_CODE_OK:
            raise RuntimeError(f"the benchmark's sign-in was refused: {answer.message_en}")
        self.transport.clear()  # type: ignore[no-untyped-call]
        self.heartbeat: bytes = frame("heartbeat", "beat")

    def round(self, heartbeats: int) -> float:
        """Seconds per heartbeat over `heartbeats` of them, one frame at a time."""
        protocol, transport, heartbeat, clock = self.protocol, self.transport, self.heartbeat, self.clock
        began = time.thread_time()  # this thread's CPU: not the time other processes of a busy machine took
        for _ in range(heartbeats):
            protocol.dataReceived(heartbeat)
            clock.advance(0)  # the reactor's next turn: the session reads a burst a slice per turn
            transport.clear()  # type: ignore[no-untyped-call]
        return (time.thread_time() - began) / heartbeats


def recording_alone(calls: int) -> float:
    """Seconds per answer that the adapter spends on metrics: the clock read at arrival and at the answer, the
    status's name, and the recording."""
    from gateway.protocol.status import status_name

    metrics = GatewayMetrics()
    began = time.thread_time()
    for _ in range(calls):
        received = time.perf_counter()
        metrics.request_answered("heartbeat", status_name(pb.STATUS_CODE_OK), time.perf_counter() - received)
    return (time.thread_time() - began) / calls


def measure(heartbeats: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        write_demo_registry(engine)
        directory = TerminalDirectory(engine)
        off, on = SignedIn(directory, None), SignedIn(directory, GatewayMetrics())
        for gateway in (off, on):
            gateway.round(heartbeats)  # warm up: the labelled children made, the caches filled
        times: dict[str, list[float]] = {"off": [], "on": []}
        for number in range(rounds):
            order = (("off", off), ("on", on)) if number % 2 == 0 else (("on", on), ("off", off))
            for name, gateway in order:
                times[name].append(gateway.round(heartbeats))
        engine.dispose()
    # Each round's two figures were taken a few milliseconds apart, under the same load of the machine: the ratio
    # of each pair, and the median of those.
    ratios = [on_s / off_s for on_s, off_s in zip(times["on"], times["off"], strict=True)]
    recorded = on.factory.metrics.registry.get_sample_value(  # type: ignore[union-attr]
        "gateway_requests_total", {"message": "heartbeat", "status": "STATUS_CODE_OK"})
    if recorded != heartbeats * (rounds + 1):
        raise RuntimeError(f"the gateway with metrics counted {recorded} heartbeats of {heartbeats * (rounds + 1)}")
    off_s, on_s = statistics.median(times["off"]), statistics.median(times["on"])
    quartiles = statistics.quantiles(ratios, n=4)
    alone_s = min(recording_alone(heartbeats) for _ in range(25))
    return {"heartbeats_per_round": heartbeats, "rounds": rounds, "clock": "CPU time of the benchmark's thread",
            "heartbeat_us_metrics_off": round(off_s * 1e6, 2), "heartbeat_us_metrics_on": round(on_s * 1e6, 2),
            "on_to_off_ratio": round(statistics.median(ratios), 4),
            "on_to_off_ratio_quartiles": [round(quartiles[0], 4), round(quartiles[2], 4)],
            "recording_alone_us": round(alone_s * 1e6, 3),
            "recording_alone_share_of_heartbeat": round(alone_s / off_s, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_bench", description=__doc__)
    parser.add_argument("--heartbeats", type=int, default=2_000, help="heartbeats per round (each gateway)")
    parser.add_argument("--rounds", type=int, default=301)
    parser.add_argument("--json", type=Path, default=ROOT / "bench/metrics.json")
    args = parser.parse_args(argv)
    results = measure(args.heartbeats, args.rounds)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
