"""`gateway serve`: wire the configuration, the database, the service and the listeners together."""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from gateway.config import GatewayConfig
from gateway.db.engine import make_engine, redact_url
from gateway.db.migrate import current_revision, head_revision
from gateway.ledger.writer import LedgerWriter
from gateway.ops.collector import set_aside_live_objects
from gateway.ops.logs import ANNOUNCE, report_fatal, start_logging
from gateway.ops.metrics import GatewayMetrics, Sampled
from gateway.registry.directory import TerminalDirectory
from gateway.serve.adapter import TerminalFactory
from gateway.serve.dispatch import GatewayService
from gateway.serve.drain import drain
from gateway.serve.health import HealthChecks, ListenerState, policy_remaining_s, terminals_by_institution
from gateway.serve.http import operator_site
from gateway.serve.listeners import Listener, ListenerError, format_address, parse_listeners, plaintext_exposure
from gateway.serve.policy_watch import PolicyWatch
from gateway.serve.registry_cache import RegistryCache
from gateway.settlement.calendar import utc_now
from gateway.settlement.policy import load_builtin_policies, load_policy_directory

log = Logger(namespace="gateway.serve.app")


class StartupError(Exception):
    """The gateway cannot start; the message says what the operator should do."""


@dataclass(frozen=True)
class WorkerRole:
    """This process is worker `index` of `count` of one gateway (gateway.serve.processes): it listens through
    sockets of its own with SO_REUSEPORT, and tells its supervisor (`report`) once it listens instead of logging
    the line the tools that start a gateway wait for, which the supervisor logs once every worker listens."""

    index: int
    count: int
    report: Callable[[dict[str, Any]], None]


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard limit: each terminal is one socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            return soft
    return soft


def serve(config: GatewayConfig, worker: WorkerRole | None = None) -> int:
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor  # zope interfaces: mypy cannot see the reactor's methods

    start_logging(config.log.format, config.log.level, worker=worker.index if worker is not None else None)
    # Every listener is made before anything starts: one that cannot be is one line and exit status 1.
    try:
        listeners = parse_listeners(reactor, config, reuse_port=worker is not None)
    except ListenerError as exc:
        raise StartupError(str(exc)) from exc
    http = _http_listener(reactor, config)
    tls = _terminal_tls(config) if config.tls.listen else None
    engine = make_engine(
        config.database.url,
        busy_timeout_ms=config.database.busy_timeout_ms,
        sqlite_synchronous=config.database.sqlite_synchronous,
        pool_size=config.database.worker_threads + 1,  # and the ledger's writer
        create=False,  # only `gateway db upgrade` creates a database
    )
    try:
        revision = current_revision(engine)
    except Exception as exc:
        raise StartupError(f"cannot open the database {redact_url(config.database.url)}: {exc}") from exc
    expected = head_revision()
    if revision != expected:
        raise StartupError(
            f"the database {redact_url(config.database.url)} is at schema revision {revision or 'none'}, "
            f"this gateway needs {expected}: run `gateway db upgrade --db URL` first"
        )
    open_files = raise_open_files_limit()
    # A PolicyError (a policy file missing or malformed) goes to the caller as it is: a file it cannot read.
    policies = (load_policy_directory(Path(config.ledger.policy_dir)) if config.ledger.policy_dir
                else load_builtin_policies())
    # Nothing is measured when nothing would show it.
    metrics = GatewayMetrics() if http is not None else None
    limits = config.ledger.writer_limits()
    if worker is not None:
        # The writers of the other workers share the ledger: on SQLite they take turns (gateway.ledger.writer).
        limits = replace(limits, write_turn_wait_ms=config.database.busy_timeout_ms)
    writer = LedgerWriter(engine, policies, reactor.callFromThread, limits, metrics=metrics)

    pool = ThreadPool(minthreads=1, maxthreads=config.database.worker_threads, name="gateway-db")
    run_blocking = partial(deferToThreadPool, reactor, pool)
    registry = RegistryCache(engine, run_blocking, config.registry)
    service = GatewayService(
        directory=TerminalDirectory(engine), run_blocking=run_blocking, server_config=config.server,
        reader_config=config.reader, reactor=reactor, engine=engine, writer=writer, policies=policies,
        registry=registry, metrics=metrics,
    )
    factory = TerminalFactory(service, config.server, reactor, metrics)
    policy_watch = PolicyWatch(policies, config.ledger.policy_warning_days, reactor)
    listener_state = ListenerState(expected=len(listeners))
    site = None
    if metrics is not None:
        metrics.sample(Sampled(
            connections_open=lambda: len(factory.connections), connections_signed_in=service.sessions.signed_in,
            ledger_queue_depth=writer.queue_depth,
            policy_remaining_seconds=lambda: policy_remaining_s(policies, utc_now(), config.ledger.policy_warning_days),
            registry_cache=lambda: (registry.hits, registry.misses, registry.flushes, registry.entries)))
        checks = HealthChecks(engine=engine, run_blocking=run_blocking, writer=writer, policies=policies,
                              listeners=listener_state, config=config, head=expected, clock=reactor)

        def status() -> dict[str, Any]:
            signed_in = [p.context.terminal for p in factory.connections if p.context and p.context.terminal]
            return {"connections": {"open": len(factory.connections), "signed_in": len(signed_in)},
                    "institutions": terminals_by_institution(signed_in)}

        site = operator_site(metrics, checks, status)
    tls_factory = tls.factory(factory) if tls is not None else None
    ports: list[Any] = []
    http_port: list[Any] = []
    exit_code = [0]

    def listen() -> None:
        pool.start()
        writer.start()
        registry.start(reactor)
        policy_watch.start()
        listening = [
            maybeDeferred(listener.endpoint.listen, tls_factory if listener.tls else factory)
            .addCallbacks(checked, refused, callbackArgs=(listener,), errbackArgs=(listener,))
            for listener in listeners
        ]
        if http is not None:
            listening.append(maybeDeferred(http.endpoint.listen, site)
                             .addCallbacks(http_listening, refused, errbackArgs=(http,)))
        gatherResults(listening, consumeErrors=True).addCallbacks(started, failed_to_listen)

    def http_listening(port: Any) -> tuple[Any, Listener]:
        # Stopped after the drain (below), so that /readyz says "stopping" meanwhile.
        http_port.append(port)
        return port, http  # type: ignore[return-value]

    def checked(port: Any, listener: Listener) -> tuple[Any, Listener]:
        # Called as soon as the port listens, before the reactor can accept on it.
        ports.append(port)
        problem = plaintext_exposure(listener, port, config)
        if problem is not None:
            raise ListenerError(problem)
        return port, listener

    def refused(failure: Failure, listener: Listener) -> Failure:
        if isinstance(failure.value, ListenerError):
            return failure
        raise ListenerError(f"cannot listen on {listener.description!r}: {failure.getErrorMessage()}")

    def started(listening: list[tuple[Any, Listener]]) -> None:
        terminals = [f"{format_address(port)} ({listener.label})" for port, listener in listening
                     if listener is not http]
        listener_state.listening = terminals
        years = ", ".join(f"{p.insurance_year} ({p.version})" for p in policies.policies)
        if worker is not None:
            metrics_address = format_address(http_port[0]) if http_port else None
            log.info("Worker {index} of {count} listening on {addresses}; metrics and health on {metrics}",
                     index=worker.index, count=worker.count, addresses=", ".join(terminals),
                     metrics=f"http://{metrics_address}/" if metrics_address else "none")
            worker.report({"terminals": terminals, "metrics": metrics_address, "open_files": open_files,
                           "policies": years})
        else:
            addresses = ", ".join(terminals)
            if http_port:
                addresses += f"; metrics and health on http://{format_address(http_port[0])}/"
            # The line the tools that start a gateway wait for: logged whatever the level.
            log.info("Gateway listening on {addresses}; database {db}; open-files limit {limit}; policies {years}. "
                     "Press Ctrl+C to stop (or send SIGTERM).", addresses=addresses,
                     db=redact_url(config.database.url), limit=open_files, years=years, **{ANNOUNCE: True})
        if tls is not None:
            log.info("TLS: terminal certificates of {ca}; revocation list {crl} ({count} revoked)",
                     ca=config.tls.client_ca, crl=config.tls.crl or "none", count=tls.revoked_count)
        if config.server.freeze_startup_objects:
            log.debug("{count} objects alive at start set aside from the garbage collector's full passes",
                      count=set_aside_live_objects())

    def failed_to_listen(failure: Failure) -> None:
        cause = getattr(failure.value, "subFailure", None) or failure
        report_fatal(cause.getErrorMessage())
        exit_code[0] = 1
        for port in ports + http_port:
            port.stopListening()
        reactor.stop()

    def shutting_down() -> Deferred[Any]:
        listener_state.stopping = True
        stopped = [maybeDeferred(p.stopListening) for p in ports]
        return DeferredList([*stopped, drain(factory, writer)])

    reactor.callWhenRunning(listen)
    reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
    reactor.addSystemEventTrigger("before", "shutdown", registry.stop)
    reactor.addSystemEventTrigger("before", "shutdown", policy_watch.stop)
    reactor.addSystemEventTrigger("during", "shutdown", lambda: [port.stopListening() for port in http_port])
    reactor.addSystemEventTrigger("after", "shutdown", pool.stop)
    reactor.addSystemEventTrigger("after", "shutdown", writer.stop)
    reactor.run()
    engine.dispose()
    return exit_code[0]


def _http_listener(reactor: Any, config: GatewayConfig) -> Listener | None:
    """metrics.listen's endpoint, or None when it is empty. Any address: what it serves is no secret, and a
    Prometheus server elsewhere must reach it (docs/operations.md); /status answers loopback clients only."""
    if not config.metrics.listen:
        return None
    try:
        endpoint = serverFromString(reactor, config.metrics.listen)  # type: ignore[no-untyped-call]
    except Exception as exc:  # an endpoint plugin may raise anything: a typo, a missing module
        raise StartupError(f"metrics.listen: cannot use the endpoint {config.metrics.listen!r}: "
                           f"{exc.__class__.__name__}: {exc}") from exc
    return Listener(config.metrics.listen, endpoint, tls=False)


def _terminal_tls(config: GatewayConfig) -> Any:
    """The TLS policy of tls.listen, its files read now: a missing or mismatched one stops the start."""
    try:
        from gateway.serve.tls import TerminalTls, TlsSetupError
    except ImportError as exc:
        raise StartupError(f"tls.listen needs pyOpenSSL (pip install 'twisted[tls]'): {exc}") from exc
    try:
        return TerminalTls(config.tls)
    except TlsSetupError as exc:
        raise StartupError(str(exc)) from exc
