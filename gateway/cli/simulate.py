"""`gateway simulate`: the load tester's tool (simulators.load) and its check against the ledger."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from gateway.cli.support import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Commands,
    add_config,
    add_db,
    cannot_write,
    with_database,
)
from gateway.config import GatewayConfig
from gateway.demo.population import DEFAULT_PERSONS, DEFAULT_SEED
from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION

CONNECT_CHECK_TIMEOUT_S = 5.0  # --target is checked before the run: a gateway answers a TCP connect at once


def add_commands(commands: Commands) -> None:
    simulate = commands.add_parser(
        "simulate", help="drive a gateway with simulated terminals, or verify a run against the ledger",
        description="Simulated counter terminals with virtual cards of the demo population run a mix of scenarios "
                    "against a gateway; every answer is checked, and an unexpected one (more than --max-unexpected) or "
                    "any other failed threshold makes the exit status 1; --report DIR writes a page of the run. "
                    "With --verify OUTCOMES --db URL, check a run's record against the ledger instead.")
    simulate.add_argument("--target", metavar="HOST:PORT", help="the gateway (e.g. 127.0.0.1:9500)")
    simulate.add_argument("--terminals", type=int, metavar="N", help="simulated terminals (connections)")
    goal = simulate.add_mutually_exclusive_group()
    goal.add_argument("--duration", type=float, metavar="S", help="run this many seconds")
    goal.add_argument("--requests", type=int, metavar="K", help="run until this many requests were answered")
    simulate.add_argument("--rate", type=float, metavar="R",
                          help="open loop: start R scenarios per second (default: closed loop, back to back); "
                               "latencies are timed from each request's intended send")
    simulate.add_argument("--require-rate", action="store_true",
                          help="with --rate: exit 1 when the achieved rate is more than 5%% below R (a warning "
                               "otherwise)")
    simulate.add_argument("--mix", default="default", metavar="NAME|FILE",
                          help="default, heartbeat, settle, settle_only, or a JSON file of scenario weights")
    simulate.add_argument("--seed", type=int, default=DEFAULT_SEED)
    simulate.add_argument("--persons", type=int, default=DEFAULT_PERSONS,
                          help=f"the demo population of the gateway's registry (default {DEFAULT_PERSONS})")
    simulate.add_argument("--terminals-per-institution", type=int, default=DEFAULT_TERMINALS_PER_INSTITUTION,
                          metavar="N", help="terminal ids per institution in the gateway's registry "
                                            f"(default {DEFAULT_TERMINALS_PER_INSTITUTION}, what `gateway registry "
                                            "demo` registers)")
    simulate.add_argument("--processes", type=int, default=1, metavar="P",
                          help="simulator processes sharing the terminals (use more when one is the bottleneck)")
    simulate.add_argument("--json", type=Path, metavar="OUT", help="write the figures as JSON")
    simulate.add_argument("--report", type=Path, metavar="DIR",
                          help="write DIR/index.html (a self-contained page: throughput and p50/p99 per second, a "
                               "latency histogram and percentile distribution per message type, the parameters, "
                               "the thresholds) with the raw data beside it (summary.json, timeline.json, an "
                               "HdrHistogram log per message type)")
    limits = simulate.add_argument_group(
        "thresholds", "the run exits 1 when one fails, naming it with the figure measured and the limit")
    limits.add_argument("--max-p99-ms", action="append", default=[], metavar="[TYPE=]MS",
                        help="p99 latency limit of every message type but SignIn, or of one (Settle=10); repeatable")
    limits.add_argument("--min-rate", type=float, metavar="N",
                        help="requests answered per second of the run, at least (every request but SignIn)")
    limits.add_argument("--min-settle-rate", type=float, metavar="N",
                        help="settlements answered OK per second of the run, at least")
    limits.add_argument("--max-unexpected", type=int, default=0, metavar="N",
                        help="unexpected answers allowed (default 0)")
    simulate.add_argument("--gateway-commit", metavar="REV",
                          help="the commit the gateway runs, recorded in the report (not known otherwise)")
    simulate.add_argument("--outcomes", type=Path, metavar="OUT", help="write one JSON line per request")
    simulate.add_argument("--verify", type=Path, metavar="OUTCOMES", help="check an outcomes file against --db")
    simulate.add_argument("--tls-ca", type=Path, metavar="FILE",
                          help="connect over TLS, trusting this CA for the gateway's certificate (e.g. var/pki/ca.crt)")
    simulate.add_argument("--tls-cert-dir", type=Path, metavar="DIR",
                          help="with --tls-ca: each terminal's DIR/TERMINAL_ID.crt and .key (e.g. var/pki/terminals)")
    add_config(simulate)
    add_db(simulate)
    simulate.set_defaults(run=_simulate)


def _simulate(args: argparse.Namespace, config: GatewayConfig) -> int:
    if args.verify is not None:
        return _verify(args, config)
    if not args.target or not args.terminals or (args.duration is None and args.requests is None):
        print("gateway: simulate needs --target HOST:PORT, --terminals N and --duration S or --requests K "
              "(or --verify OUTCOMES --db URL)", file=sys.stderr)
        return EXIT_USAGE
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit() or args.terminals < 1 or args.processes < 1 or (
            args.rate is not None and args.rate <= 0):
        print("gateway: --target is HOST:PORT; --terminals, --processes and --rate must be positive", file=sys.stderr)
        return EXIT_USAGE
    if (args.tls_ca is None) != (args.tls_cert_dir is None):
        print("gateway: --tls-ca and --tls-cert-dir go together", file=sys.stderr)
        return EXIT_USAGE
    if args.require_rate and args.rate is None:
        print("gateway: --require-rate needs --rate R", file=sys.stderr)
        return EXIT_USAGE
    from simulators.thresholds import BadThreshold, evaluate, parse

    try:
        limits = parse(args.max_p99_ms, args.min_rate, args.min_settle_rate, args.max_unexpected, args.require_rate)
    except BadThreshold as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from simulators.load import (
        Options,
        Shortfall,
        Unreachable,
        preflight,
        rate_warning,
        render,
        run_in_process,
        run_processes,
        simulator_version,
        summarise,
    )
    from simulators.scenarios import load_mix
    from simulators.tls import TlsFiles

    try:
        load_mix(args.mix)
    except (OSError, ValueError) as exc:
        print(f"gateway: --mix: {exc}", file=sys.stderr)
        return EXIT_USAGE
    unreachable = _unreachable(host, int(port))
    if unreachable is not None:
        print(f"gateway: cannot connect to {args.target}: {unreachable}", file=sys.stderr)
        return EXIT_FAILED
    if args.outcomes is not None:
        try:
            args.outcomes.open("w", encoding="utf-8").close()  # this run's record only, appended to as it runs
        except OSError as exc:
            return cannot_write(args.outcomes, exc)
    options = Options(host, int(port), args.terminals, args.duration, args.requests, args.rate, args.mix,
                      args.seed, args.persons, args.terminals_per_institution, args.outcomes,
                      progress=sys.stderr.isatty() and not os.environ.get("CI"),
                      tls=TlsFiles(args.tls_ca, args.tls_cert_dir) if args.tls_ca else None)
    try:
        preflight(options)
    except Shortfall as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"gateway: cannot connect to {args.target}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    figures, failure = run_processes(options, args.processes) if args.processes > 1 else run_in_process(options)
    if failure:
        print(f"gateway: the simulation failed: {failure}", file=sys.stderr)
    if figures is None:
        return EXIT_FAILED
    summary = summarise(figures, options, args.processes)
    summary["gateway_commit"] = args.gateway_commit
    summary["simulator_version"] = simulator_version()
    verdicts = evaluate(limits, summary)
    summary["thresholds"] = [verdict.to_json() for verdict in verdicts]
    print(render(summary))
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        except OSError as exc:
            return cannot_write(args.json, exc)
    if args.report is not None:
        from simulators import report

        try:
            page = report.write(args.report, summary, figures.recorder, (figures.wall_started, figures.wall_finished),
                                command=shlex.join(["gateway", *sys.argv[1:]]))
        except OSError as exc:
            return cannot_write(args.report, exc)
        print(f"report: {page}")
    warning = rate_warning(summary)
    if warning:
        print(f"gateway: {warning} (--require-rate)" if args.require_rate else f"gateway: warning: {warning}",
              file=sys.stderr)
    for verdict in verdicts:
        if not verdict.passed:
            print(f"gateway: threshold failed: {verdict.message()}", file=sys.stderr)
    passed = all(verdict.passed for verdict in verdicts)
    return EXIT_OK if passed and not summary["errors"] and not failure else EXIT_FAILED


def _unreachable(host: str, port: int) -> str | None:
    """Why no gateway answers at host:port, or None when a connection opens (it is closed again at once). Checked
    before anything runs, so that a wrong --target is one line, not a run of failed connections."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_CHECK_TIMEOUT_S).close()
    except OSError as exc:
        return exc.strerror or str(exc) or exc.__class__.__name__
    return None


def _verify(args: argparse.Namespace, config: GatewayConfig) -> int:
    from simulators.verify import read_outcomes, verify

    try:
        outcomes = read_outcomes(args.verify)
    except (OSError, ValueError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def command(engine: Any) -> int:
        result = verify(engine, outcomes)
        print(result.render())
        return EXIT_OK if result.ok else EXIT_FAILED

    return with_database(config, command)
