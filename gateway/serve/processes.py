"""`gateway serve --processes N` (server.processes): N reactor processes, one gateway.

One Python process runs one reactor and holds one interpreter lock: the request path, the TLS handshakes and the
ledger's writer share one core. N workers (gateway.serve.worker, each the whole `gateway serve` of
gateway.serve.app) use N, and share everything that must be shared through the database:

- Each listening address: every worker binds a socket of its own with SO_REUSEPORT, and the kernel spreads new
  connections over their accept queues by a hash of each connection's addresses and ports. Chosen over one socket
  bound here and inherited by all: on a shared socket every worker's event loop wakes for each connection and
  the fastest takes most of them, while SO_REUSEPORT balances the load and lets a worker's queue be its own.
  This supervisor fixes the ports first (port 0 resolved to one port, held by a bound socket with SO_REUSEPORT
  until every worker listens), so that all workers listen on the same one.
- The ledger: one database (SQLite WAL, PostgreSQL). Each worker has its own writer; the request record's unique
  key books a message id once whichever worker gets it, and a writer trusts what it holds of a person only while
  SQLite's data_version says nobody else wrote (docs/ledger.md).
- The registry cache of each worker follows the registry's version in the database (registry.refresh_s).
- The operator's HTTP listener: worker K serves on metrics.listen's port + K (each its own port 0 when that is 0),
  so that every worker can be scraped and asked by `gateway status`.

The supervisor logs the line the tools that start a gateway wait for ("Gateway listening on ...") once every
worker listens; forwards SIGTERM and SIGINT to every worker and waits for their drains; and when a worker exits
without being asked to, stops the others and exits 1: a gateway with a worker missing would leave the terminals
the kernel sends to that worker's port unanswered.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from typing import IO, Any

from twisted.logger import Logger

from gateway.config import GatewayConfig, config_to_mapping
from gateway.db.engine import redact_url
from gateway.ops.logs import ANNOUNCE, start_logging
from gateway.serve.app import StartupError
from gateway.serve.listeners import reuse_port_socket, tcp_address

log = Logger(namespace="gateway.serve.processes")

# How often the supervisor looks at its workers and the signals it got.
POLL_S = 0.1
# After SIGTERM, how long beyond server.shutdown_grace_s a worker may take (its writer's last batch, the database's
# last commit) before it is killed.
STOP_MARGIN_S = 30.0
EXIT_OK = 0
EXIT_FAILED = 1


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    reports: IO[str]
    listening: dict[str, Any] | None = None
    exit_code: int | None = None


@dataclass
class Plan:
    """What the workers are given: each one's configuration, and the sockets that hold the ports meanwhile."""

    configs: list[GatewayConfig]
    holders: list[socket.socket] = field(default_factory=list)

    def release(self) -> None:
        for holder in self.holders:
            holder.close()
        self.holders.clear()


def plan(config: GatewayConfig) -> Plan:
    """Every terminal listener at one fixed port for all workers, and worker K's metrics listener at metrics.listen's
    port + K. StartupError for an endpoint that cannot be shared (not tcp:) or a port that cannot be had."""
    count = config.server.processes
    holders: list[socket.socket] = []
    try:
        listens: dict[str, tuple[str, ...]] = {}
        for key, descriptions in (("server.listen", config.server.listen), ("tls.listen", config.tls.listen)):
            resolved = []
            for description in descriptions:
                address = tcp_address(description)
                if address is None:
                    raise StartupError(f"{key}: {description!r}: several processes (server.processes = {count}) "
                                       "share tcp: and tcp6: endpoints only")
                try:
                    holder = reuse_port_socket(address)
                except OSError as exc:
                    raise StartupError(f"cannot listen on {description!r}: {exc.strerror or exc}") from exc
                holders.append(holder)
                resolved.append(address.description(holder.getsockname()[1]))
            listens[key] = tuple(resolved)
        configs = [replace(config, server=replace(config.server, listen=listens["server.listen"]),
                           tls=replace(config.tls, listen=listens["tls.listen"]),
                           metrics=replace(config.metrics, listen=metrics_listen(config.metrics.listen, index, count)))
                   for index in range(count)]
    except BaseException:
        for holder in holders:
            holder.close()
        raise
    return Plan(configs, holders)


def metrics_listen(description: str, index: int, count: int) -> str:
    """Worker `index`'s operator listener: metrics.listen's port + index (port 0: a port of its own); "" stays ""."""
    if not description:
        return ""
    address = tcp_address(description)
    if address is None:
        raise StartupError(f"metrics.listen: {description!r}: with several processes (server.processes = {count}) "
                           "each worker serves on the port + its number, which needs a tcp: or tcp6: endpoint")
    if address.port == 0:
        return description
    if address.port + count - 1 > 65_535:
        raise StartupError(f"metrics.listen: port {address.port} + {count - 1} workers is beyond 65535")
    return address.description(address.port + index)


def supervise(config: GatewayConfig) -> int:
    """Run config.server.processes workers until SIGTERM or SIGINT (then 0 once all drained) or until one exits
    unasked (then the others are stopped, and 1)."""
    start_logging(config.log.format, config.log.level)
    workers_plan = plan(config)
    stop_asked: list[int] = []

    def asked(signum: int, _frame: Any) -> None:
        stop_asked.append(signum)

    previous = {signum: signal.signal(signum, asked) for signum in (signal.SIGTERM, signal.SIGINT)}
    selector = selectors.DefaultSelector()
    workers: list[Worker] = []
    try:
        for index, worker_config in enumerate(workers_plan.configs):
            worker = _start(index, worker_config)
            workers.append(worker)
            selector.register(worker.reports, selectors.EVENT_READ, worker)
        return _watch(config, workers, workers_plan, selector, stop_asked)
    finally:
        workers_plan.release()
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
            if worker.process.stdin is not None:
                worker.process.stdin.close()
            worker.reports.close()
        selector.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start(index: int, config: GatewayConfig) -> Worker:
    read_end, write_end = os.pipe()
    try:
        # A process group of its own: a Ctrl+C at the terminal reaches the supervisor alone, which stops every
        # worker once (a worker's reactor stopped twice would log an error).
        process = subprocess.Popen([sys.executable, "-m", "gateway.serve.worker"], stdin=subprocess.PIPE,
                                   pass_fds=(write_end,), process_group=0)
    finally:
        os.close(write_end)
    reports = os.fdopen(read_end, "r", encoding="utf-8")
    spec = {"index": index, "count": config.server.processes, "report_fd": write_end,
            "config": config_to_mapping(config)}
    if process.stdin is not None:
        # The database URL may hold a password: a pipe, not the command line or the environment.
        process.stdin.write((json.dumps(spec) + "\n").encode())
        process.stdin.flush()
    return Worker(index, process, reports)


def _watch(config: GatewayConfig, workers: list[Worker], workers_plan: Plan, selector: selectors.BaseSelector,
           stop_asked: list[int]) -> int:
    announced = False
    stopping_since: float | None = None
    failed = False
    while any(worker.exit_code is None for worker in workers):
        for key, _ in selector.select(POLL_S):
            worker = key.data
            line = worker.reports.readline()
            if not line:
                selector.unregister(worker.reports)
            else:
                worker.listening = json.loads(line)
        if not announced and all(worker.listening is not None for worker in workers):
            workers_plan.release()  # every worker holds the ports now
            _announce(config, workers)
            announced = True
        if stop_asked and stopping_since is None:
            log.info("gateway stopping: {signal} forwarded to {count} workers",
                     signal=signal.Signals(stop_asked[0]).name, count=len(workers))
            stopping_since = _stop(workers)
        for worker in workers:
            if worker.exit_code is not None:
                continue
            code = worker.process.poll()
            if code is None:
                continue
            worker.exit_code = code
            if stopping_since is None:
                failed = True
                when = "" if worker.listening is not None else " before it listened"
                log.error("gateway worker {index} (pid {pid}) exited unexpectedly{when} ({how}); stopping the "
                          "other workers, then exiting with status 1", index=worker.index, pid=worker.process.pid,
                          when=when, how=_how(code))
                stopping_since = _stop(workers)
            elif code != 0:
                failed = True
                log.error("gateway worker {index} (pid {pid}) stopped badly: {how}", index=worker.index,
                          pid=worker.process.pid, how=_how(code))
        if stopping_since is not None and time.monotonic() - stopping_since > (config.server.shutdown_grace_s
                                                                               + STOP_MARGIN_S):
            for worker in workers:
                if worker.process.poll() is None:
                    log.error("gateway worker {index} (pid {pid}) did not stop in time: killed", index=worker.index,
                              pid=worker.process.pid)
                    worker.process.kill()
            failed = True
    if not failed:
        log.info("gateway stopped: every worker drained and exited")
    return EXIT_FAILED if failed else EXIT_OK


def _stop(workers: list[Worker]) -> float:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    return time.monotonic()


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _announce(config: GatewayConfig, workers: list[Worker]) -> None:
    first = workers[0].listening or {}
    addresses = ", ".join(first.get("terminals", []))
    metrics = [(worker.index, (worker.listening or {}).get("metrics")) for worker in workers]
    if any(address for _, address in metrics):
        addresses += "; metrics and health on " + ", ".join(f"http://{address}/ (worker {index})"
                                                            for index, address in metrics if address)
    # The line the tools that start a gateway wait for, as one process logs it (gateway.serve.app), and the workers.
    log.info("Gateway listening on {addresses}; database {db}; {count} processes (pids {pids}); open-files limit "
             "{limit}; policies {years}. Press Ctrl+C to stop (or send SIGTERM).", addresses=addresses,
             db=redact_url(config.database.url), count=len(workers),
             pids=", ".join(str(worker.process.pid) for worker in workers), limit=first.get("open_files"),
             years=first.get("policies"), **{ANNOUNCE: True})
