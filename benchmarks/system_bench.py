"""The whole gateway under `gateway simulate`, measured in one run on a fresh SQLite ledger.

    .venv/bin/python -m benchmarks.system_bench [--seconds S] [--terminals N] [--idle N] [--idle-tls N]
        [--prefill N] [--json OUT]

1. heartbeat requests/s (the floor cost of server and simulator), the same over TLS with terminal certificates, and
   settlements/s with the same simulator;
2. latency at many connected terminals at half the settlement peak (open loop);
3. the gateway's resident memory per idle signed-in connection, over plain TCP (on the gateway of the runs above)
   and over TLS (on a fresh gateway of its own, with a certificate per terminal id the connections sign in as);
4. settlements/s on a ledger pre-filled with --prefill settlements (benchmarks.prefill) vs the empty one.
Writes bench/results.json, the table in BENCHMARKS.md (benchmarks.report) and, for each simulator run of a figure,
its page (`gateway simulate --report`: throughput and latency per second, latency distributions per message type)
in bench/reports/RUN/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.idle_terminals import connection_terminal_ids
from benchmarks.prefill import LARGE_LEDGER_SETTLEMENTS, persons_for, prefill
from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION
from gateway.ops.logs import log_message
from simulators.load import SESSIONS_PER_TERMINAL_ID, checkout_commit

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = [sys.executable, "-m", "gateway"]
TLS_ADDRESS = re.compile(r":(\d+) \(TLS\)")
# The simulator runs whose page (`gateway simulate --report`) `make bench` keeps, under --reports.
REPORTED_RUNS = ("heartbeat", "heartbeat_tls", "settle", "settle_only", "half_peak", "large_ledger")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Gateway:
    """`gateway serve` on a fresh ledger: plain TCP, and TLS with a PKI of its own (certificates for the first
    `tls_terminals` terminals of each demo institution)."""

    def __init__(self, tmp: Path, per_institution: int, name: str = "bench.db", prefill_settlements: int = 0,
                 tls_terminals: int = 0) -> None:
        self.db = f"sqlite:///{tmp / name}"
        self.pki = tmp / f"{name}.pki"
        tls_options: list[str] = []
        if tls_terminals:
            for command in (["init-ca"], ["issue-server", "localhost", "127.0.0.1"],
                            ["issue-terminal", "--demo", "--terminals-per-institution", str(tls_terminals)]):
                subprocess.run([*GATEWAY, "pki", *command, "--dir", str(self.pki)], check=True, capture_output=True,
                               cwd=ROOT)
            config = tmp / f"{name}.toml"
            config.write_text(f'[tls]\ncertificate = "{self.pki}/server.crt"\n'
                              f'private_key = "{self.pki}/server.key"\nclient_ca = "{self.pki}/ca.crt"\n'
                              f'crl = "{self.pki}/crl.pem"\n', encoding="utf-8")
            tls_options = ["--config", str(config), "--tls-listen", "tcp:0:interface=127.0.0.1:backlog=4096"]
        subprocess.run([*GATEWAY, "db", "upgrade", "--db", self.db], check=True, capture_output=True, cwd=ROOT)
        subprocess.run([*GATEWAY, "registry", "demo", "--db", self.db, "--terminals-per-institution",
                        str(per_institution)], check=True, capture_output=True, cwd=ROOT)
        self.prefill: dict[str, Any] = {}
        if prefill_settlements:
            self.prefill = prefill(tmp / name, prefill_settlements, persons=persons_for(prefill_settlements))
        self.process = subprocess.Popen([*GATEWAY, "serve", "--db", self.db, "--listen",
                                         "tcp:0:interface=127.0.0.1:backlog=4096", "--log-level", "warn",
                                         "--metrics-listen", "tcp:0:interface=127.0.0.1",
                                         *tls_options],
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = log_message(line) or ""
            if message.startswith("Gateway listening on "):
                self.port = int(message.split()[3].rstrip(".").rsplit(":", 1)[1])
                tls = TLS_ADDRESS.search(message)
                self.tls_port = int(tls.group(1)) if tls else None
                break
        else:
            raise RuntimeError("the gateway did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)

    def issue_terminal_certificates(self, terminal_ids: list[str]) -> None:
        """Certificates for `terminal_ids` besides those issued at the start (which are left as they are)."""
        subprocess.run([*GATEWAY, "pki", "issue-terminal", "--skip-existing", "--dir", str(self.pki),
                        *dict.fromkeys(terminal_ids)], check=True, capture_output=True, cwd=ROOT)

    def tls_options(self) -> tuple[str, ...]:
        """`gateway simulate`'s options for this gateway's TLS listener."""
        return ("--tls-ca", str(self.pki / "ca.crt"), "--tls-cert-dir", str(self.pki / "terminals"))


def simulate(port: int, per_institution: int, *args: str, report: Path | None = None) -> dict[str, Any]:
    """One `gateway simulate` run's figures; with `report`, its page written there (what was there removed)."""
    reporting: list[str] = []
    if report is not None:
        shutil.rmtree(report, ignore_errors=True)
        commit = checkout_commit(ROOT)  # the gateway runs from this checkout too
        reporting = ["--report", str(report), *(["--gateway-commit", commit] if commit else [])]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        result = subprocess.run([*GATEWAY, "simulate", "--target", f"127.0.0.1:{port}",
                                 "--terminals-per-institution", str(per_institution), "--json", out.name, *args,
                                 *reporting], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "CI": "1"})
        if result.returncode not in (0, 1):
            raise RuntimeError(result.stderr[-2000:])
        figures: dict[str, Any] = json.loads(Path(out.name).read_text())
        return figures


def idle_memory(gateway: Gateway, per_institution: int, connections: int, tls: bool = False) -> dict[str, Any]:
    """Open `connections` signed-in terminals that then stay idle (over TLS: on the gateway's TLS listener, with
    certificates for the terminal ids they sign in as); the gateway's RSS before and after."""
    port = gateway.port
    tls_options: list[str] = []
    if tls:
        if gateway.tls_port is None:
            raise RuntimeError("the gateway printed no TLS address")
        port = gateway.tls_port
        gateway.issue_terminal_certificates(connection_terminal_ids(connections, per_institution))
        tls_options = ["--tls-ca", str(gateway.pki / "ca.crt"), "--tls-cert-dir", str(gateway.pki / "terminals")]
    before = rss_kb(gateway.process.pid)
    holder = subprocess.Popen([sys.executable, "-m", "benchmarks.idle_terminals", str(port),
                               str(connections), str(per_institution), *tls_options],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    ready = holder.stdout.readline().strip()
    time.sleep(2)
    after = rss_kb(gateway.process.pid)
    holder.terminate()
    holder.wait(timeout=60)
    return {"connections": connections, "tls": tls, "signed_in": int(ready or 0), "rss_before_kb": before,
            "rss_after_kb": after, "kb_per_connection": round((after - before) / max(int(ready or 0), 1), 2)}


# The fresh gateway of the TLS idle figure first serves heartbeats over TLS this long (what it loads and caches
# once is then not counted per connection, as on the gateway of the runs, which served them before).
IDLE_TLS_WARM_UP_S = 2.0


def idle_memory_tls(tmp: Path, per_institution: int, connections: int, warm_up_terminals: int) -> dict[str, Any]:
    """`idle_memory` over TLS on a fresh gateway of its own: after the plain TCP connections of the gateway of the
    runs, the memory they freed would be reused and the TLS figure understated."""
    gateway = Gateway(tmp, per_institution, "idle_tls.db", tls_terminals=warm_up_terminals + 1)
    try:
        if gateway.tls_port is None:
            raise RuntimeError("the gateway printed no TLS address")
        simulate(gateway.tls_port, per_institution, "--terminals", str(warm_up_terminals), "--duration",
                 str(IDLE_TLS_WARM_UP_S), "--mix", "heartbeat", *gateway.tls_options())
        return idle_memory(gateway, per_institution, connections, tls=True)
    finally:
        gateway.stop()


def large_ledger(tmp: Path, empty: Gateway, per_institution: int, args: argparse.Namespace,
                 reports: dict[str, Path]) -> dict[str, Any]:
    """Settlements/s on a ledger pre-filled with `args.prefill` settlements, between two runs on the (nearly)
    empty one, each with the same simulator and settings."""
    settle = ("--terminals", str(args.terminals), "--duration", str(args.seconds), "--mix", "settle")
    large = Gateway(tmp, per_institution, "large.db", args.prefill)
    try:
        # Like the empty ledger's gateway, which ran before: first uses recorded, accounts opened, facts read.
        simulate(large.port, per_institution, *settle)
        before = simulate(empty.port, per_institution, *settle)
        on_large = simulate(large.port, per_institution, *settle, report=reports["large_ledger"])
        after = simulate(empty.port, per_institution, *settle)
    finally:
        large.stop()
    empty_per_s = (before["settlements_per_s"] + after["settlements_per_s"]) / 2
    return {"prefill": large.prefill, "empty_settlements_per_s": [before["settlements_per_s"],
                                                                   after["settlements_per_s"]],
            "large_settlements_per_s": on_large["settlements_per_s"],
            "large_to_empty_ratio": round(on_large["settlements_per_s"] / empty_per_s, 3),
            "large_settle_latency_ms": on_large["latency_ms"].get("settle"),
            "unexpected": len(before["unexpected"]) + len(on_large["unexpected"]) + len(after["unexpected"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.system_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--terminals", type=int, default=40, help="terminals for the peak runs")
    parser.add_argument("--latency-terminals", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections for the memory figure")
    parser.add_argument("--idle-tls", type=int, metavar="N",
                        help="idle connections over TLS for the memory figure (default: as --idle; 0: skip)")
    parser.add_argument("--prefill", type=int, default=LARGE_LEDGER_SETTLEMENTS, metavar="N",
                        help="settlements in the large ledger compared with the empty one (0: skip)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md",
                        help="where the table of figures is written (between its markers)")
    parser.add_argument("--reports", type=Path, default=ROOT / "bench/reports",
                        help="where each simulator run's page goes (DIR/RUN/index.html)")
    args = parser.parse_args(argv)
    idle_tls = args.idle if args.idle_tls is None else args.idle_tls
    reports = {name: args.reports / name for name in REPORTED_RUNS}
    # Enough terminal ids per institution for the most connections a run opens, each id taking its sessions (the
    # demo registry's default takes the 1,000 latency terminals; the idle connections need more).
    per_institution = max(DEFAULT_TERMINALS_PER_INSTITUTION, max(args.idle, idle_tls) // SESSIONS_PER_TERMINAL_ID + 10,
                          args.latency_terminals // SESSIONS_PER_TERMINAL_ID + 10)
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                               "python": platform.python_version(),
                               # The command line that reproduces these figures (as `make bench` runs it).
                               "command": shlex.join(["python", "-m", "benchmarks.system_bench",
                                                      *(sys.argv[1:] if argv is None else argv)])}
    with tempfile.TemporaryDirectory() as tmp:
        # Every terminal of a run may be a different id: certificates for as many of each institution.
        gateway = Gateway(Path(tmp), per_institution, tls_terminals=args.terminals + 1)
        try:
            heartbeat = simulate(gateway.port, per_institution, "--terminals", str(args.terminals), "--duration",
                                 str(args.seconds), "--mix", "heartbeat", report=reports["heartbeat"])
            if gateway.tls_port is None:
                raise RuntimeError("the gateway printed no TLS address")
            heartbeat_tls = simulate(gateway.tls_port, per_institution, "--terminals", str(args.terminals),
                                     "--duration", str(args.seconds), "--mix", "heartbeat", *gateway.tls_options(),
                                     report=reports["heartbeat_tls"])
            settle = simulate(gateway.port, per_institution, "--terminals", str(args.terminals), "--duration",
                              str(args.seconds), "--mix", "settle", report=reports["settle"])
            settle_only = simulate(gateway.port, per_institution, "--terminals", str(args.terminals), "--duration",
                                   str(args.seconds), "--mix", "settle_only", report=reports["settle_only"])
            peak_scenarios = settle["scenarios"] / settle["seconds"]
            half = simulate(gateway.port, per_institution, "--terminals", str(args.latency_terminals), "--duration",
                            str(args.seconds), "--mix", "settle", "--rate", f"{peak_scenarios / 2:.1f}",
                            report=reports["half_peak"])
            memory = idle_memory(gateway, per_institution, args.idle)
            large = large_ledger(Path(tmp), gateway, per_institution, args, reports) if args.prefill else None
        finally:
            gateway.stop()
        memory_tls = (idle_memory_tls(Path(tmp), per_institution, idle_tls, args.terminals) if idle_tls
                      else None)
    results["heartbeat_requests_per_s"] = heartbeat["requests_per_s"]
    results["heartbeat_tls"] = {
        "requests_per_s": heartbeat_tls["requests_per_s"],
        "to_plain_tcp_ratio": round(heartbeat_tls["requests_per_s"] / heartbeat["requests_per_s"], 4),
        "heartbeat_latency_ms": heartbeat_tls["latency_ms"].get("heartbeat"),
        "sign_in_latency_ms": heartbeat_tls["latency_ms"].get("sign_in")}
    results["settlements_per_s"] = settle["settlements_per_s"]
    results["settlement_to_heartbeat_ratio"] = round(settle["settlements_per_s"] / heartbeat["requests_per_s"], 4)
    # The settlement exchange alone (card left in the reader): what the whole counter flow costs beyond it is
    # the card's insertion, its read by APDU relay and its removal — four more exchanges.
    results["settle_exchange_only"] = {
        "settlements_per_s": settle_only["settlements_per_s"],
        "to_heartbeat_ratio": round(settle_only["settlements_per_s"] / heartbeat["requests_per_s"], 4),
        "settle_latency_ms": settle_only["latency_ms"].get("settle")}
    results["half_peak"] = {"terminals": args.latency_terminals, "rate_scenarios_per_s": round(peak_scenarios / 2, 1),
                            "achieved_rate_per_s": half["achieved_rate_per_s"],
                            "settle_latency_ms": half["latency_ms"].get("settle"),
                            "behind_schedule": half["behind_schedule"], "unexpected": len(half["unexpected"])}
    results["idle_memory"] = memory
    results["idle_memory_tls"] = memory_tls
    results["large_ledger"] = large
    # Each run's page, as BENCHMARKS.md links it (relative to the markdown file).
    results["reports"] = {name: os.path.relpath(path / "index.html", args.markdown.resolve().parent)
                          for name, path in reports.items() if (path / "index.html").exists()}
    results["runs"] = {"heartbeat": heartbeat, "heartbeat_tls": heartbeat_tls, "settle": settle,
                       "settle_only": settle_only, "half_peak": half}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    report.write_into(args.markdown, report.render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
