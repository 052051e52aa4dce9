"""Measure heartbeat / settle_only / settle with the simulator against a gateway run from SRC (a tree), optional py-spy.
usage: run.py SRC LABEL [--log-level info] [--seconds 15] [--terminals 40] [--mixes heartbeat,settle_only,settle] [--spy]"""
import argparse, json, subprocess, sys, tempfile, time, re, os
from pathlib import Path
PY = sys.executable  # the venv's python; py-spy beside it
ROOT = Path(__file__).resolve().parents[2]
p = argparse.ArgumentParser()
p.add_argument("src"); p.add_argument("label")
p.add_argument("--log-level", default="info"); p.add_argument("--seconds", type=float, default=15)
p.add_argument("--terminals", type=int, default=40); p.add_argument("--mixes", default="heartbeat,settle_only,settle")
p.add_argument("--spy", action="store_true"); p.add_argument("--per", type=int, default=60)
a = p.parse_args()
out = Path(os.environ.get("OUT", "/tmp/request_path")); out.mkdir(exist_ok=True)
out.mkdir(parents=True, exist_ok=True); tmp = Path(tempfile.mkdtemp())
db = f"sqlite:///{tmp/'bench.db'}"
G = [PY, "-m", "gateway"]
subprocess.run([*G, "db", "upgrade", "--db", db], check=True, capture_output=True, cwd=a.src)
subprocess.run([*G, "registry", "demo", "--db", db, "--terminals-per-institution", str(a.per)], check=True, capture_output=True, cwd=a.src)
logf = open(tmp / "gateway.log", "w")
proc = subprocess.Popen([*G, "serve", "--db", db, "--listen", "tcp:0:interface=127.0.0.1:backlog=4096", "--log-level", a.log_level,
                         "--log-format", "json", "--metrics-listen", "tcp:0:interface=127.0.0.1"], cwd=a.src, stdout=logf, stderr=subprocess.STDOUT)
port = None
for _ in range(300):
    time.sleep(0.1)
    m = re.search(r"Gateway listening on \S+:(\d+).*?health on (http://[0-9.:]+/)", (tmp / "gateway.log").read_text())
    if m: port = int(m.group(1)); metrics = m.group(2) + "metrics"; break
assert port, (tmp / "gateway.log").read_text()
res = {}
for mix in a.mixes.split(","):
    spy = None
    if a.spy:
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--gil", "-r", "200", "-p", str(proc.pid), "-f", "raw",
                                "-o", str(out / f"{a.label}-{mix}.raw"), "-d", str(int(a.seconds))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    def cpu():
        f = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    c0 = cpu()
    with tempfile.NamedTemporaryFile(suffix=".json") as j:
        r = subprocess.run([*G, "simulate", "--target", f"127.0.0.1:{port}", "--terminals-per-institution", str(a.per), "--json", j.name,
                            "--terminals", str(a.terminals), "--duration", str(a.seconds), "--mix", mix], cwd=str(ROOT), capture_output=True, text=True)
        d = json.load(open(j.name))
    c1 = cpu()
    if spy: spy.wait()
    d["gateway_cpu_s"] = c1 - c0
    d["cpu_us_per_request"] = (c1 - c0) / d["requests"] * 1e6
    d["cpu_us_per_settlement"] = (c1 - c0) / d["settlements_ok"] * 1e6 if d["settlements_ok"] else None
    res[mix] = d
    keys = {k: d.get(k) for k in ("requests_per_s", "settlements_per_s", "unexpected", "cpu_us_per_request", "cpu_us_per_settlement")}
    import urllib.request
    cache = [l for l in urllib.request.urlopen(metrics).read().decode().splitlines() if l.startswith("gateway_registry_cache")]
    print(a.label, mix, json.dumps(keys), cache, flush=True)
proc.terminate(); proc.wait(60)
json.dump(res, open(out / f"{a.label}.json", "w"))
