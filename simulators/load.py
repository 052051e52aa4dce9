"""`gateway simulate`: many counter terminals against one gateway, every answer checked.

Closed loop (no --rate): each terminal runs scenarios back to back. Open loop (--rate R): scenarios are due at
R per second; one that finds no terminal idle waits for the next to finish, and every request is timed from its
intended send (the scenario's due time plus what came before it), so a backlog shows in the latencies (no
coordinated omission); the achieved rate is reported beside the target. With --processes P
the terminals, the rate and the population are split over P simulator processes (so the simulator is not
the bottleneck) and their figures merged.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectError

import gateway
from gateway.config import ServerConfig
from gateway.demo.population import DEFAULT_PERSONS, DEFAULT_SEED
from gateway.demo.registry import (
    DEFAULT_TERMINALS_PER_INSTITUTION,
    DEMO_CREDENTIAL,
    VIRTUAL_READER_TERMINAL,
    demo_terminal_id,
)
from gateway.ops.collector import live_objects_set_aside
from gateway.protocol.framing import FrameDecoder, encode_frame
from gateway.protocol.messages import pb
from gateway.protocol.status import status_name
from simulators.recorder import NOT_COUNTED, Recorder, distribution
from simulators.scenarios import PIN_PAD_PERCENT, SCENARIOS, RunContext, load_mix, resolve_unanswered
from simulators.terminal import MAX_FRAME_BYTES, SimTerminal, TerminalGone
from simulators.tls import TlsFiles, client_endpoint

SESSIONS_PER_TERMINAL_ID = ServerConfig().max_sessions_per_terminal  # what a gateway with the defaults allows
CONNECT_BATCH = 200            # connections opened at once while ramping up
PREFLIGHT_TIMEOUT_S = 10.0     # for the gateway's answer to the preflight sign-in
SOFTWARE_VERSION = "gateway-simulate/1"
SIGN_IN_RETRY_FIRST_DELAY_S = 0.05  # a sign-in refused STATUS_CODE_TOO_MANY_SESSIONS is tried again after this,
SIGN_IN_RETRY_MAX_DELAY_S = 2.0     # doubling up to this
RECONNECT_FIRST_DELAY_S = 0.1       # after a lost connection: the first wait, doubling up to the next, randomised
RECONNECT_MAX_DELAY_S = 2.0
RECONNECT_GIVE_UP_S = 60.0          # without a connection this long a terminal gives up, and the run stops
RATE_SHORTFALL_WARNING = 0.05       # open loop: an achieved rate this far below the target is a warning


@dataclass
class Options:
    host: str
    port: int
    terminals: int
    duration_s: float | None = None
    requests: int | None = None
    rate: float | None = None
    mix: str = "default"
    seed: int = DEFAULT_SEED
    persons: int = DEFAULT_PERSONS
    terminals_per_institution: int = DEFAULT_TERMINALS_PER_INSTITUTION
    outcomes: Path | None = None
    partition: tuple[int, int] = (0, 1)
    progress: bool = False
    all_terminals: int | None = None   # with several processes: the run's terminals, of which these are a share
    tls: TlsFiles | None = None        # None: plain TCP


@dataclass
class Figures:
    started: float = 0.0
    finished: float = 0.0
    wall_started: float = 0.0  # time.time(): processes' windows are merged by it
    wall_finished: float = 0.0
    scenarios: int = 0
    requests: int = 0
    # Open loop: scenarios started, how long the schedule ran, starts that waited for a free terminal and those
    # still waiting when it ended, and how late each start was (ms after its intended time).
    starts: int = 0
    # Lost connections (not counting the run's own hang-ups), reconnections, scenarios cut short by a lost
    # connection, money requests whose outcome was found out after one, and those whose outcome stayed unknown.
    connections_lost: int = 0
    reconnects: int = 0
    scenarios_interrupted: int = 0
    outcomes_resolved: int = 0
    outcomes_unknown: int = 0
    schedule_s: float = 0.0
    achieved_rate_per_s: float = 0.0
    behind_schedule: int = 0
    not_started: int = 0
    # Latencies per message type and per second, each scenario's start lag (open loop), settlements per second.
    recorder: Recorder = field(default_factory=Recorder)
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    settled_ok: int = 0
    errors: list[str] = field(default_factory=list)

    def record(self, body: str, seconds: float, status: int) -> None:
        if body not in NOT_COUNTED:  # connecting, before the measured run starts: its latency only
            self.requests += 1
        self.recorder.record(body, seconds, time.time())
        self.statuses[status_name(status)] += 1


def terminal_ids(institution: str, per_institution: int) -> list[str]:
    """Registered terminal ids whose reader is their own (the -03 ones read a virtual card in the gateway)."""
    return [demo_terminal_id(institution, n) for n in range(1, per_institution + 1) if n != VIRTUAL_READER_TERMINAL]


class Shortfall(Exception):
    """The run needs terminal ids that are not registered, or more sessions than the registered ones take."""


class Unreachable(Exception):
    """Nothing answers at the target."""


class SignInRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _per_institution_for(ids: int) -> int:
    """`--terminals-per-institution` that registers `ids` terminal ids of the simulator's kind."""
    return ids + 1 if ids >= VIRTUAL_READER_TERMINAL else ids


def plan_slots(mix: dict[str, int], terminals: int, per_institution: int) -> list[tuple[str, str]]:
    """(institution, terminal id) for each of the run's connections: the institutions of the mix's scenarios in
    turn, each institution's connections spread over its ids, none above the gateway's session limit."""
    institutions = sorted({institution for scenario, (_, institution) in SCENARIOS.items() if mix.get(scenario)})
    ids = {institution: terminal_ids(institution, per_institution) for institution in institutions}
    for position, institution in enumerate(institutions):
        share = terminals // len(institutions) + (1 if position < terminals % len(institutions) else 0)
        needed = math.ceil(share / SESSIONS_PER_TERMINAL_ID)
        if needed > len(ids[institution]):
            raise Shortfall(
                f"{terminals} terminals need {needed} terminal ids at {institution} ({SESSIONS_PER_TERMINAL_ID} "
                f"sessions each), --terminals-per-institution {per_institution} gives {len(ids[institution])}: "
                f"register more (`gateway registry demo --terminals-per-institution {_per_institution_for(needed)}`) "
                "and pass the same N here")
    slots = []
    for n in range(terminals):
        institution = institutions[n % len(institutions)]
        pool = ids[institution]
        slots.append((institution, pool[(n // len(institutions)) % len(pool)]))
    return slots


def _terminal_number(terminal_id: str) -> int:
    return int(terminal_id.rsplit("-", 1)[1])


def preflight(options: Options) -> None:
    """Before anything runs: the run's terminals fit the ids it may use, and the gateway knows the highest of
    them at each institution (so a registry with fewer ids is one clear message, not failed sign-ins)."""
    slots = plan_slots(load_mix(options.mix), options.terminals, options.terminals_per_institution)
    if options.tls is not None:
        missing = [terminal_id for terminal_id in dict.fromkeys(terminal_id for _, terminal_id in slots)
                   if not options.tls.certificate(terminal_id).exists()]
        if missing:
            raise Shortfall(f"{len(missing)} terminal id(s) of the run have no TLS certificate in "
                            f"{options.tls.cert_dir}, {missing[0]} the first: `gateway pki issue-terminal` issues "
                            "them (--demo: every demo terminal), or pass --terminals-per-institution N as certified")
    highest: dict[str, str] = {}
    for institution, terminal_id in slots:
        if _terminal_number(terminal_id) > _terminal_number(highest.get(institution, f"{institution}-0")):
            highest[institution] = terminal_id
    for terminal_id in sorted(highest.values()):
        answer = _sign_in_once(options, terminal_id)
        # A terminal id whose sessions are all taken is registered: the run's own sign-ins wait for a free one.
        if answer.status not in (pb.STATUS_CODE_OK, pb.STATUS_CODE_TOO_MANY_SESSIONS):
            raise Shortfall(
                f"{options.terminals} terminals use terminal ids up to {terminal_id}, which the gateway at "
                f"{options.host}:{options.port} refuses ({status_name(answer.status)}): register them "
                f"(`gateway registry demo --terminals-per-institution {_terminal_number(terminal_id)}`), or pass "
                "--terminals-per-institution N as registered")


def _sign_in_once(options: Options, terminal_id: str) -> pb.Response:
    """Sign in on a connection of its own (over TLS with the terminal's certificate, if the run is) and, if that
    worked, sign out again."""
    try:
        with _connection(options, terminal_id) as sock:
            sign_in = pb.Request(terminal_id=terminal_id, message_id=f"preflight-{uuid.uuid4().hex[:12]}")
            sign_in.send_time.GetCurrentTime()
            sign_in.sign_in.credential = DEMO_CREDENTIAL
            sign_in.sign_in.software_version = SOFTWARE_VERSION
            answer = _exchange(sock, sign_in)
            if answer.status == pb.STATUS_CODE_OK:
                sign_out = pb.Request(terminal_id=terminal_id, message_id=f"{sign_in.message_id}-out")
                sign_out.send_time.GetCurrentTime()
                sign_out.sign_out.SetInParent()
                _exchange(sock, sign_out)  # its answer: the gateway then frees the session as the connection ends
            return answer
    except TimeoutError as exc:
        raise Unreachable(f"no answer to a SignIn in {PREFLIGHT_TIMEOUT_S:.0f} s (is it a gateway, and does it "
                          "speak TLS: --tls-ca?)") from exc
    except OSError as exc:  # ssl.SSLError is one too
        raise Unreachable(exc.strerror or str(exc) or exc.__class__.__name__) from exc


def _connection(options: Options, terminal_id: str) -> socket.socket:
    plain = socket.create_connection((options.host, options.port), timeout=PREFLIGHT_TIMEOUT_S)
    if options.tls is None:
        return plain
    try:
        context = ssl.create_default_context(cafile=str(options.tls.ca))
        context.load_cert_chain(options.tls.certificate(terminal_id), options.tls.key(terminal_id))
        return context.wrap_socket(plain, server_hostname=options.host)
    except BaseException:
        plain.close()
        raise


def _exchange(sock: socket.socket, request: pb.Request) -> pb.Response:
    sock.sendall(encode_frame(request.SerializeToString()))
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    while True:
        payload = decoder.next_frame()
        if payload is not None:
            response = pb.Response.FromString(payload)
            if response.message_id == request.message_id and not response.interim:
                return response
            continue
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the gateway closed the connection without answering")
        decoder.feed(data)


class Simulator:
    def __init__(self, options: Options, reactor: Any) -> None:
        self.options = options
        self.reactor = reactor
        self.figures = Figures()
        self.run_id = uuid.uuid4().hex[:8]
        self.outcomes_file = options.outcomes.open("a", encoding="utf-8") if options.outcomes else None
        self.ctx = RunContext(self.run_id, random.Random(options.seed + options.partition[0]), options.partition,
                              options.persons, self.outcomes_file,
                              on_settled=lambda: self.figures.recorder.settled(time.time()))
        self.mix = load_mix(options.mix)
        self.rng = random.Random(options.seed * 7 + options.partition[0])
        self.idle: dict[str, list[SimTerminal]] = {}
        self.waiting: dict[str, deque[float]] = {}  # open loop: intended start times no terminal was free for
        self.stopping = False
        self.in_flight = 0

    # Connecting ----------------------------------------------------------------------------------

    def _slots(self) -> list[tuple[str, str]]:
        """This process's connections: with several processes, every count-th of the whole run's."""
        slots = plan_slots(self.mix, self.options.all_terminals or self.options.terminals,
                           self.options.terminals_per_institution)
        index, count = self.options.partition
        return slots[index::count]

    async def connect(self) -> list[tuple[str, SimTerminal]]:
        slots = self._slots()
        connected: list[tuple[str, SimTerminal]] = []
        index = self.options.partition[0]
        for start in range(0, len(slots), CONNECT_BATCH):
            batch = slots[start : start + CONNECT_BATCH]
            opened: list[SimTerminal] = await defer.gatherResults([
                defer.ensureDeferred(self._open(institution, terminal_id, f"{self.run_id}{index}x{start + k}"))
                for k, (institution, terminal_id) in enumerate(batch)], consumeErrors=True)
            connected.extend(zip([inst for inst, _ in batch], opened, strict=True))
        return connected

    async def _open(self, institution: str, terminal_id: str, prefix: str) -> SimTerminal:
        terminal = SimTerminal(terminal_id, DEMO_CREDENTIAL, prefix, self.figures.record,
                               pin_pad=self.rng.randrange(100) < PIN_PAD_PERCENT)
        await self._connect(terminal)
        return terminal

    async def _connect(self, terminal: SimTerminal) -> None:
        """Open the terminal's connection and sign in."""
        endpoint = client_endpoint(self.reactor, self.options.host, self.options.port, terminal.terminal_id,
                                   self.options.tls)
        await connectProtocol(endpoint, terminal)  # type: ignore[no-untyped-call]
        delay_s = SIGN_IN_RETRY_FIRST_DELAY_S
        while True:
            signed = await terminal.call("sign_in", credential=DEMO_CREDENTIAL, software_version=SOFTWARE_VERSION)
            # The preflight's session, or the connection this one replaces, may not be freed yet: it will be.
            if signed.status != pb.STATUS_CODE_TOO_MANY_SESSIONS or delay_s > SIGN_IN_RETRY_MAX_DELAY_S:
                break
            await task.deferLater(self.reactor, delay_s, lambda: None)
            delay_s *= 2
        if signed.status != pb.STATUS_CODE_OK:
            await terminal.hang_up()
            raise SignInRefused(signed.status, f"{terminal.terminal_id} could not sign in: "
                                f"{status_name(signed.status)} {signed.message_en}")

    async def _recover(self, terminal: SimTerminal) -> bool:
        """After a lost connection: connect again, with a growing, randomised delay (docs/protocol.md 3.6), and
        find out what became of the money requests left unanswered. False if it gave up: the run is over and
        there is nothing to find out, no connection for RECONNECT_GIVE_UP_S, or the gateway refuses the sign-in."""
        self.ctx.record_unanswered(terminal)
        delay_s, since = RECONNECT_FIRST_DELAY_S, time.perf_counter()
        while True:
            if terminal.closed:
                if self._done() and not terminal.unanswered:
                    return False
                if time.perf_counter() - since > RECONNECT_GIVE_UP_S:
                    self.figures.errors.append(
                        f"{terminal.terminal_id}: no connection for {RECONNECT_GIVE_UP_S:.0f} s; "
                        f"{len(terminal.unanswered)} outcome(s) left unknown")
                    self.stopping = True
                    return False
                await task.deferLater(self.reactor, delay_s * self.rng.uniform(0.5, 1.0), lambda: None)
                delay_s = min(delay_s * 2, RECONNECT_MAX_DELAY_S)
                try:
                    await self._connect(terminal)
                except SignInRefused as exc:
                    if exc.status != pb.STATUS_CODE_TOO_MANY_SESSIONS:
                        self.figures.errors.append(str(exc))
                        self.stopping = True
                        return False
                    continue
                except (ConnectError, TerminalGone):
                    continue
                self.figures.reconnects += 1
            try:
                await resolve_unanswered(self.ctx, terminal)
            except TerminalGone:
                since = time.perf_counter()
                continue
            return True

    # Running -------------------------------------------------------------------------------------

    def _pick(self, institution: str) -> str:
        names = [n for n, w in self.mix.items() if w and SCENARIOS[n][1] == institution]
        return self.rng.choices(names, weights=[self.mix[n] for n in names])[0]

    def _done(self) -> bool:
        if self.stopping:
            return True
        if self.options.requests is not None and self.figures.requests >= self.options.requests:
            return True
        return self.options.duration_s is not None and (
            time.perf_counter() - self.figures.started >= self.options.duration_s)

    async def _one(self, institution: str, terminal: SimTerminal, due: float | None = None) -> None:
        """One scenario; `due` (open loop): when it was meant to start, from which its requests are timed. A
        scenario whose connection is lost is cut short; the terminal recovers, then the run goes on."""
        self.in_flight += 1
        try:
            # A connection lost while the terminal was idle, or an outcome still unknown (INTERNAL_ERROR).
            if (terminal.closed or terminal.unanswered) and not await self._recover(terminal):
                return
            name = self._pick(institution)
            terminal.scenario = name
            if due is not None:
                terminal.lag_s = max(0.0, time.perf_counter() - due)
                self.figures.starts += 1
                self.figures.recorder.record_start_lag(terminal.lag_s)
            try:
                await SCENARIOS[name][0](self.ctx, terminal)
                self.figures.scenarios += 1
            except TerminalGone:
                self.figures.scenarios_interrupted += 1
                terminal.lag_s = 0.0
                await self._recover(terminal)
        finally:
            terminal.lag_s = 0.0
            self.in_flight -= 1

    async def _run_then_next(self, institution: str, terminal: SimTerminal, due: float) -> None:
        """Run the scenario due, then the oldest start waiting for a terminal of the institution, if any."""
        waiting = self.waiting[institution]
        try:
            while True:
                await self._one(institution, terminal, due)
                if not waiting:
                    break
                due = waiting.popleft()
        finally:
            self.idle[institution].append(terminal)

    async def closed_loop(self, terminal: SimTerminal, institution: str) -> None:
        while not self._done():
            await self._one(institution, terminal)

    async def open_loop(self, terminals: list[tuple[str, SimTerminal]], rate_per_s: float) -> None:
        """Start scenarios at `rate_per_s` whatever the answers' pace. A start that finds no terminal of its
        institution free waits for the next one to finish, and its requests are timed from its intended time:
        a gateway that cannot keep the rate shows in the latencies, not in starts quietly skipped."""
        for institution, terminal in terminals:
            self.idle.setdefault(institution, []).append(terminal)
            self.waiting.setdefault(institution, deque())
        institutions = sorted(self.idle)
        weights = [sum(self.mix[s] for s, (_, i) in SCENARIOS.items() if i == inst and self.mix.get(s))
                   for inst in institutions]
        interval = 1.0 / rate_per_s
        started = time.perf_counter()
        n = 0
        while not self._done():
            due = started + n * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await task.deferLater(self.reactor, delay, lambda: None)
                if self._done():
                    break
            n += 1
            institution = self.rng.choices(institutions, weights=weights)[0]
            pool = self.idle[institution]
            if pool:
                defer.ensureDeferred(self._run_then_next(institution, pool.pop(), due))
            else:
                self.figures.behind_schedule += 1
                self.waiting[institution].append(due)
        self.figures.schedule_s = time.perf_counter() - started
        self.figures.achieved_rate_per_s = self.figures.starts / self.figures.schedule_s
        for waiting in self.waiting.values():
            self.figures.not_started += len(waiting)
            waiting.clear()
        while self.in_flight:
            await task.deferLater(self.reactor, 0.05, lambda: None)

    def _progress(self) -> None:
        if not self.options.progress:
            return
        elapsed = time.perf_counter() - self.figures.started
        rate = self.figures.requests / elapsed if elapsed > 0 else 0.0
        goal = (f"/{self.options.duration_s:.0f}s" if self.options.duration_s is not None else
                f" {self.figures.requests}/{self.options.requests}")
        sys.stderr.write(f"\r{elapsed:6.1f}s{goal} {self.figures.requests:>9} requests {rate:>9.0f}/s "
                         f"{self.ctx.settled_ok:>8} settled {len(self.ctx.unexpected):>4} unexpected ")
        sys.stderr.flush()

    async def run(self) -> Figures:
        terminals = await self.connect()
        # What the run keeps alive (its terminals, their connections and cards) is set aside from the cyclic
        # collector while it runs: full passes over them paused the simulator tens of ms, which showed as the
        # gateway's latency (every request is timed from its intended send).
        with live_objects_set_aside():
            return await self._measured(terminals)

    async def _measured(self, terminals: list[tuple[str, SimTerminal]]) -> Figures:
        progress = task.LoopingCall(self._progress)
        self.figures.started, self.figures.wall_started = time.perf_counter(), time.time()
        progress.start(0.5, now=False)
        try:
            if self.options.rate:
                await self.open_loop(terminals, self.options.rate)
            else:
                await defer.gatherResults([defer.ensureDeferred(self.closed_loop(t, inst)) for inst, t in terminals],
                                          consumeErrors=True)
            # Outcomes still unknown: after an INTERNAL_ERROR, or of a terminal that lost its connection idle.
            await defer.gatherResults([defer.ensureDeferred(self._recover(t)) for _, t in terminals if t.unanswered],
                                      consumeErrors=True)
        finally:
            self.figures.finished, self.figures.wall_finished = time.perf_counter(), time.time()
            progress.stop()
            self._progress()
            if self.options.progress:
                sys.stderr.write("\n")
            for _, terminal in terminals:
                self.figures.connections_lost += terminal.connections_lost
                self.figures.outcomes_unknown += len(terminal.unanswered)
                self.ctx.record_unanswered(terminal)
                terminal.hang_up()
            if self.outcomes_file:
                self.outcomes_file.close()
        if self.figures.outcomes_unknown:
            self.figures.errors.append(f"{self.figures.outcomes_unknown} money request(s) whose outcome the "
                                       "terminals could not find out (NO_ANSWER in the outcomes)")
        self.figures.unexpected = self.ctx.unexpected
        self.figures.settled_ok = self.ctx.settled_ok
        self.figures.outcomes_resolved = self.ctx.outcomes_resolved
        return self.figures


# Figures ---------------------------------------------------------------------------------------------


def summarise(figures: Figures, options: Options, processes: int = 1) -> dict[str, Any]:
    seconds = max(figures.finished - figures.started, 1e-9)
    summary: dict[str, Any] = {
        "target": f"{options.host}:{options.port}", "terminals": options.terminals, "processes": processes,
        "mix": options.mix, "seconds": round(seconds, 3), "scenarios": figures.scenarios,
        "requests": figures.requests, "requests_per_s": round(figures.requests / seconds, 1),
        "settlements_ok": figures.settled_ok, "settlements_per_s": round(figures.settled_ok / seconds, 1),
        "target_rate_per_s": options.rate,
        "latency_ms": figures.recorder.latency_ms(),
        "statuses": dict(sorted(figures.statuses.items())),
        "unexpected": figures.unexpected, "errors": figures.errors,
        "connections_lost": figures.connections_lost, "reconnects": figures.reconnects,
        "scenarios_interrupted": figures.scenarios_interrupted, "outcomes_resolved": figures.outcomes_resolved,
        "outcomes_unknown": figures.outcomes_unknown,
        "run": {"duration_s": options.duration_s, "requests_goal": options.requests, "seed": options.seed,
                "persons": options.persons, "terminals_per_institution": options.terminals_per_institution,
                "tls": options.tls is not None, "mix_weights": load_mix(options.mix),
                "started_at": _iso(figures.wall_started), "finished_at": _iso(figures.wall_finished)},
    }
    if options.rate:
        summary.update({
            "achieved_rate_per_s": round(figures.achieved_rate_per_s, 1),
            "rate_shortfall": round(max(0.0, 1 - figures.achieved_rate_per_s / options.rate), 3),
            "behind_schedule": figures.behind_schedule, "not_started": figures.not_started,
            "start_lag_ms": distribution(figures.recorder.start_lag)})
    return summary


def checkout_commit(directory: Path | None = None) -> str | None:
    """The git commit `directory` (default: this package's) is checked out at, `+changes` after it when the work
    tree differs from it; None outside a git checkout (an installed package)."""
    directory = directory or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("+changes" if status.stdout.strip() else "")


def simulator_version() -> str:
    commit = checkout_commit()
    return f"{SOFTWARE_VERSION}, gateway release {gateway.__version__}" + (f", commit {commit}" if commit else "")


def _iso(wall_s: float) -> str | None:
    return datetime.fromtimestamp(wall_s, UTC).isoformat(timespec="seconds") if wall_s else None


def rate_warning(summary: dict[str, Any]) -> str | None:
    """What to say when an open-loop run started its scenarios more than RATE_SHORTFALL_WARNING below the target."""
    if not summary.get("target_rate_per_s") or summary["rate_shortfall"] <= RATE_SHORTFALL_WARNING:
        return None
    return (f"the achieved rate {summary['achieved_rate_per_s']}/s is {summary['rate_shortfall']:.1%} below the "
            f"target {summary['target_rate_per_s']:g}/s: the gateway (or this simulator: try --processes or more "
            "--terminals) could not keep up, and the latencies include the backlog")


def render(summary: dict[str, Any]) -> str:
    lines = [f"{summary['terminals']} terminals ({summary['processes']} process(es)), mix {summary['mix']}, "
             f"{summary['seconds']} s: {summary['scenarios']} scenarios, {summary['requests']} requests",
             f"  requests/s {summary['requests_per_s']}",
             f"  settlements answered OK: {summary['settlements_ok']} ({summary['settlements_per_s']}/s)"]
    rows = summary["latency_ms"]
    if summary["target_rate_per_s"]:
        lines.append(f"  open loop: scenarios started {summary['achieved_rate_per_s']}/s, target "
                     f"{summary['target_rate_per_s']:g}/s; {summary['behind_schedule']} starts waited for a free "
                     f"terminal, {summary['not_started']} never started")
        warning = rate_warning(summary)
        if warning:
            lines.append(f"  WARNING: {warning}")
        lines.append("  latencies from each request's intended send, its scenario's start lag included")
        rows = {**rows, "scenario start lag": summary["start_lag_ms"]}
    lines.append(f"  {'latency ms':<20}{'count':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}")
    for body, row in rows.items():
        lines.append(f"  {body:<20}{row['count']:>7}{row['p50']:>9.2f}{row['p90']:>9.2f}{row['p99']:>9.2f}"
                     f"{row['p99_9']:>9.2f}{row['max']:>9.2f}")
    if summary["connections_lost"] or summary["reconnects"]:
        lines.append(f"  connections lost {summary['connections_lost']}, reconnected {summary['reconnects']}; "
                     f"{summary['scenarios_interrupted']} scenarios cut short; unanswered money requests found out "
                     f"afterwards {summary['outcomes_resolved']} (QueryTransaction, Reverse or the same request "
                     f"again), still unknown {summary['outcomes_unknown']}")
    lines.append("  answers by status: " + ", ".join(f"{k} {v}" for k, v in summary["statuses"].items()))
    lines.append(f"  unexpected answers: {len(summary['unexpected'])}")
    lines.extend(f"    {line}" for line in summary["unexpected"][:50])
    lines.extend(f"  error: {line}" for line in summary["errors"][:20])
    for verdict in summary.get("thresholds", []):
        lines.append(f"  threshold {verdict['name']} {verdict['limit_text']}: measured {verdict['measured_text']}, "
                     + ("passed" if verdict["passed"] else "FAILED"))
    return "\n".join(lines)


def describe_failure(exc: BaseException) -> str:
    """One line for what stopped a run; gatherResults' FirstError (whose text is a traceback) by its cause."""
    if isinstance(exc, defer.FirstError) and exc.subFailure.value is not None:
        return describe_failure(exc.subFailure.value)
    return f"{exc.__class__.__name__}: {exc}"


def run_in_process(options: Options) -> tuple[Figures, str | None]:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    result: list[Figures] = []
    failure: list[str] = []

    async def main() -> None:
        try:
            result.append(await Simulator(options, reactor).run())
        except Exception as exc:
            failure.append(describe_failure(exc))

    def start() -> None:
        defer.ensureDeferred(main()).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    return (result[0] if result else Figures()), (failure[0] if failure else None)


def run_processes(options: Options, processes: int) -> tuple[Figures | None, str | None]:
    """Split the terminals, rate and population over `processes` simulator processes and merge their figures
    (None when a process failed to report any)."""
    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for index in range(processes):
            share = options.terminals // processes + (1 if index < options.terminals % processes else 0)
            command = [sys.executable, "-m", "simulators.load", "--worker", f"{index}/{processes}",
                       "--host", options.host, "--port", str(options.port), "--terminals", str(share),
                       "--mix", options.mix, "--seed", str(options.seed), "--persons", str(options.persons),
                       "--terminals-per-institution", str(options.terminals_per_institution),
                       "--all-terminals", str(options.terminals), "--json", f"{tmp}/{index}.json"]
            if options.duration_s is not None:
                command += ["--duration", str(options.duration_s)]
            if options.requests is not None:
                command += ["--requests", str(math.ceil(options.requests / processes))]
            if options.rate:
                command += ["--rate", str(options.rate / processes)]
            if options.outcomes:
                command += ["--outcomes", f"{tmp}/{index}.outcomes"]
            if options.tls:
                command += ["--tls-ca", str(options.tls.ca), "--tls-cert-dir", str(options.tls.cert_dir)]
            children.append(subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        codes = [child.wait() for child in children]
        parts = [json.loads(Path(f"{tmp}/{i}.json").read_text()) for i in range(processes)
                 if Path(f"{tmp}/{i}.json").exists()]
        if options.outcomes:
            with options.outcomes.open("a", encoding="utf-8") as out:
                for index in range(processes):
                    path = Path(f"{tmp}/{index}.outcomes")
                    if path.exists():
                        out.write(path.read_text(encoding="utf-8"))
    if len(parts) != processes:
        return None, f"{processes - len(parts)} simulator process(es) failed (exit codes {codes})"
    # The run lasted from the first process's start to the last one's end.
    windows = [p["wall_window"] for p in parts if p["wall_window"][0]]  # a process that never ran has none
    started, finished = min((w[0] for w in windows), default=0.0), max((w[1] for w in windows), default=0.0)
    figures = Figures(started=started, finished=finished, wall_started=started, wall_finished=finished)
    for part in parts:
        raw = part["raw"]
        figures.scenarios += part["scenarios"]
        figures.requests += part["requests"]
        figures.settled_ok += part["settlements_ok"]
        figures.statuses.update(part["statuses"])
        figures.unexpected.extend(part["unexpected"])
        figures.errors.extend(part["errors"])
        figures.recorder.merge_json(raw["recorder"])
        # Each process started its share of the rate: the run's rate is their sum.
        figures.starts += raw["starts"]
        figures.achieved_rate_per_s += raw["achieved_rate_per_s"]
        figures.behind_schedule += raw["behind_schedule"]
        figures.not_started += raw["not_started"]
        for name in ("connections_lost", "reconnects", "scenarios_interrupted", "outcomes_resolved",
                     "outcomes_unknown"):
            setattr(figures, name, getattr(figures, name) + part[name])
    return figures, None


def worker_main(argv: list[str]) -> int:
    """One simulator process of several (run by run_processes)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--terminals", type=int, required=True)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--mix", default="default")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--persons", type=int, default=DEFAULT_PERSONS)
    parser.add_argument("--terminals-per-institution", type=int, default=DEFAULT_TERMINALS_PER_INSTITUTION)
    parser.add_argument("--all-terminals", type=int, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--outcomes", type=Path)
    parser.add_argument("--tls-ca", type=Path)
    parser.add_argument("--tls-cert-dir", type=Path)
    args = parser.parse_args(argv)
    index, count = (int(x) for x in args.worker.split("/"))
    options = Options(args.host, args.port, args.terminals, args.duration, args.requests, args.rate, args.mix,
                      args.seed, args.persons, args.terminals_per_institution, args.outcomes, (index, count),
                      all_terminals=args.all_terminals,
                      tls=TlsFiles(args.tls_ca, args.tls_cert_dir) if args.tls_ca else None)
    figures, failure = run_in_process(options)
    summary = summarise(figures, options)
    summary["raw"] = {"recorder": figures.recorder.to_json(), "starts": figures.starts,
                      "achieved_rate_per_s": figures.achieved_rate_per_s, "behind_schedule": figures.behind_schedule,
                      "not_started": figures.not_started}
    summary["wall_window"] = [figures.wall_started, figures.wall_finished]
    if failure:
        summary["errors"].append(failure)
    args.json.write_text(json.dumps(summary), encoding="utf-8")
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
