"""Settle latency at 1,000 connected terminals, half the peak, taken apart: as `make bench` runs it (the same
gateway, warm-up runs and simulator options), with the gateway's own view beside the simulator's.

    OUT=bench/half_peak .venv/bin/python bench/half_peak/run.py LABEL [--spy] [--native] [--seconds 10]

Writes OUT/LABEL.json: the simulator's figures (its Settle latencies: from intended send to answer), the gateway's
`gateway_request_duration_seconds{message="settle"}` (frame in to answer out, on the reactor), its ledger's commit
durations and batch sizes (histogram deltas over the run), the CPU seconds of gateway and simulator; with --spy a
py-spy profile of the gateway (OUT/LABEL.raw)."""
import argparse, json, os, resource, subprocess, sys, tempfile, threading, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks.system_bench import Gateway, simulate  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("label"); p.add_argument("--seconds", type=float, default=10.0)
p.add_argument("--terminals", type=int, default=1000); p.add_argument("--per", type=int, default=2510)
p.add_argument("--rate", type=float, help="scenarios/s (default: half of the 40-terminal settle run's)")
p.add_argument("--spy", action="store_true")
p.add_argument("--wall", action="store_true", help="with --spy: every thread's stack, waiting or not (py-spy --idle)")
p.add_argument("--native", action="store_true")
p.add_argument("--switch-interval-s", type=float, help="the gateway's sys.setswitchinterval (experiment)")
p.add_argument("--repeat", type=int, default=1, help="half-peak runs one after the other on the same gateway")
a = p.parse_args()
out = Path(os.environ.get("OUT", "/tmp/half_peak")); out.mkdir(parents=True, exist_ok=True)
SPY = str(Path(sys.executable).with_name("py-spy"))


def histograms(url: str) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts of the histograms we look at, keyed by name (settle requests only)."""
    text = urllib.request.urlopen(url).read().decode()
    found: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_sum"):  # kept as the bucket "sum"
                name, le = s.name[: -len("_sum")], -1.0
            elif s.name.endswith("_bucket"):
                name, le = s.name[: -len("_bucket")], float(s.labels["le"])
            else:
                continue
            if name == "gateway_request_duration_seconds" and s.labels.get("message") != "settle":
                continue
            if name in ("gateway_request_duration_seconds", "gateway_ledger_commit_duration_seconds",
                        "gateway_ledger_batch_size", "gateway_ledger_queue_wait_seconds"):
                found.setdefault(name, {})[le] = s.value
    return found


def delta(after: dict[float, float], before: dict[float, float]) -> dict[str, float]:
    return {("sum" if le < 0 else "+Inf" if le == float("inf") else f"{le:g}"): after[le] - before.get(le, 0.0)
            for le in sorted(after)}


def quantile(cumulative: dict[str, float], q: float | str) -> str:
    total = cumulative.get("+Inf", 0.0)
    if q == "mean":
        return f"{cumulative.get('sum', 0.0) / total:.5f}" if total else "-"
    for le, count in cumulative.items():
        if le == "sum":
            continue
        if total and count >= q * total:
            return f"<= {le}"
    return "-"


def settle_count(url: str) -> float:
    text = urllib.request.urlopen(url).read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) if family.name == "gateway_requests"
               for s in family.samples if s.name == "gateway_requests_total" and s.labels.get("message") == "settle")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


with tempfile.TemporaryDirectory() as tmp:
    if os.environ.get("GATEWAY_WRAPPER"):  # a script run in the gateway's place (e.g. recording GC pauses)
        import benchmarks.system_bench as system_bench
        plain = list(system_bench.GATEWAY)
        system_bench.GATEWAY[:] = [sys.executable, os.environ["GATEWAY_WRAPPER"]]
        gateway = Gateway(Path(tmp), a.per)
        system_bench.GATEWAY[:] = plain
    elif a.switch_interval_s:
        import benchmarks.system_bench as system_bench
        plain = list(system_bench.GATEWAY)
        system_bench.GATEWAY[:] = [sys.executable, "-c", f"import sys; sys.setswitchinterval({a.switch_interval_s}); "
                                   "sys.argv[0] = 'gateway'; from gateway.cli.main import main; sys.exit(main())"]
        gateway = Gateway(Path(tmp), a.per)
        system_bench.GATEWAY[:] = plain
    else:
        gateway = Gateway(Path(tmp), a.per)
    try:
        metrics_url = None
        # the gateway's health address: ask the OS which ports it listens on besides the terminal one
        ports = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        for line in ports.splitlines():
            if f"pid={gateway.process.pid}," in line:
                port = int(line.split()[3].rsplit(":", 1)[1])
                if port != gateway.port:
                    metrics_url = f"http://127.0.0.1:{port}/metrics"
        if metrics_url is None:
            raise SystemExit("no metrics address")
        settle_args = ("--terminals", "40", "--duration", str(a.seconds))
        # as make bench: heartbeat, settle, settle_only before the half-peak run
        simulate(gateway.port, a.per, *settle_args, "--mix", "heartbeat")
        settle = simulate(gateway.port, a.per, *settle_args, "--mix", "settle")
        simulate(gateway.port, a.per, *settle_args, "--mix", "settle_only")
        rate = a.rate or settle["scenarios"] / settle["seconds"] / 2
        runs = []
        for k in range(a.repeat):
            # The simulator first connects and signs in its terminals (not part of its figures): the gateway's
            # CPU and profile are taken from the first Settle on, when the scenarios have started.
            settles0 = settle_count(metrics_url)
            started: dict[str, float] = {}
            spy = []

            def watch() -> None:
                while settle_count(metrics_url) == settles0:
                    time.sleep(0.05)
                started["t"], started["cpu"] = time.monotonic(), cpu_s(gateway.process.pid)
                if a.spy:
                    raw = out / f"{a.label}{'-' + str(k) if a.repeat > 1 else ''}.raw"
                    spy.append(subprocess.Popen([SPY, "record", *(["--idle", "--threads"] if a.wall else ["--gil"]),
                                                 *(["--native"] if a.native else []), "-r",
                                                 "200", "-p", str(gateway.process.pid), "-f", "raw", "-o", str(raw),
                                                 "-d", str(int(a.seconds - 1))],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

            watcher = threading.Thread(target=watch, daemon=True)
            before = histograms(metrics_url)
            watcher.start()
            children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            half = simulate(gateway.port, a.per, "--terminals", str(a.terminals), "--duration", str(a.seconds),
                            "--mix", "settle", "--rate", f"{rate:.1f}")
            c1, t1, children1 = cpu_s(gateway.process.pid), time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
            watcher.join(5)
            for s in spy:
                s.wait(60)
            c0 = started.get("cpu", c1)
            after = histograms(metrics_url)
            gw = {name: delta(after[name], before.get(name, {})) for name in after}
            run = {"rate_scenarios_per_s": round(rate, 1), "achieved_rate_per_s": half["achieved_rate_per_s"],
                   "peak_scenarios_per_s": round(settle["scenarios"] / settle["seconds"], 1),
                   "simulator_settle_ms": half["latency_ms"].get("settle"),
                   "simulator_all_ms": half["latency_ms"],
                   "gateway_cpu_s": round(c1 - c0, 2),
                   "gateway_cpu_share_of_a_core": round((c1 - c0) / max(t1 - started.get("t", t1), 1e-9), 3),
                   "simulator_cpu_s_with_its_ramp_up": round((children1.ru_utime + children1.ru_stime)
                                                             - (children0.ru_utime + children0.ru_stime), 2),
                   "wall_s": half["seconds"],
                   "gateway_histograms": gw,
                   "gateway_quantiles": {name: {q: quantile(h, q) for q in ("mean", 0.5, 0.9, 0.99)}
                                         for name, h in gw.items()},
                   "unexpected": len(half["unexpected"]), "behind_schedule": half["behind_schedule"]}
            runs.append(run)
            print(json.dumps({k2: v for k2, v in run.items() if k2 not in ("gateway_histograms", "simulator_all_ms")},
                             indent=1), flush=True)
    finally:
        gateway.stop()
(out / f"{a.label}.json").write_text(json.dumps(runs, indent=2))
