"""The gateway's Prometheus metrics: one registry per gateway (prometheus_client's own, never its global one, so that
a test may build several gateways), the process's own figures included.

Label values come only from closed sets the callers take them from: message types (the Request body's field
names), status code names, reader kinds, the sign-in failure reasons below. Never a card number, an ID number, a
PIN or a terminal id: a label is a time series, and one per card or terminal would be unbounded.

What is counted as it happens (requests, card reads, ledger batches) is recorded by the layer where it happens;
what is a level (connections, the ledger's queue, the registry cache's counts, the policy calendar) is read when
Prometheus scrapes, through `Sampled`, and costs the request path nothing. prometheus_client is thread-safe: the
ledger's writer records from its own thread.

Every answer is counted and timed, so that recording costs what a few additions cost: prometheus_client's Counter
and Histogram take a lock per update and scan the buckets (about 3 µs an answer together, 7 % of a heartbeat's
whole work in the gateway: `python -m benchmarks.metrics_bench`). Answers are recorded on the reactor's thread
only, into plain integers (`_Answers`), which /metrics, rendered on the same thread, reads; prometheus_client
writes them out.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

# Seconds: a Heartbeat is answered in well under a millisecond, a Settle waits for a group commit's fsync
# (milliseconds), a read on the terminal's own reader may take up to reader.relay_timeout_s.
REQUEST_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Intents in one ledger transaction: 1 when idle, up to ledger.max_batch (200 by default) under load.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)



@dataclass(frozen=True)
class Sampled:
    """The levels read at each scrape, on the thread that renders /metrics (the reactor's)."""

    connections_open: Callable[[], int]
    connections_signed_in: Callable[[], int]
    ledger_queue_depth: Callable[[], int]
    # Seconds until the policies' unbroken coverage ends (gateway.serve.health.policy_remaining_s): 0 when no
    # policy covers today.
    policy_remaining_seconds: Callable[[], float]
    # The registry cache's hits, misses and flushes since start, and the cards it holds.
    registry_cache: Callable[[], tuple[int, int, int, int]]


class _SampledCollector:
    def __init__(self) -> None:
        self.sampled: Sampled | None = None

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families(self.sampled)

    @staticmethod
    def _families(sampled: Sampled | None = None) -> list[Metric]:
        connections = GaugeMetricFamily("gateway_connections", "Terminal connections: open, and signed in",
                                        labels=["state"])
        queue = GaugeMetricFamily("gateway_ledger_queue_depth", "Intents waiting for the ledger's writer")
        # In seconds, Prometheus's base unit (promtool refuses "days"): / 86400 for days.
        policy = GaugeMetricFamily(
            "gateway_policy_remaining_seconds",
            "Until the end of the last Beijing business day the loaded policies cover without a gap; 0: not today")
        cache = CounterMetricFamily("gateway_registry_cache", "Registry look-ups of requests, by whether the "
                                    "facts were held in memory", labels=["result"])
        flushes = CounterMetricFamily("gateway_registry_cache_flushes",
                                      "Times the registry cache forgot all it held (the registry changed, "
                                      "other than by this gateway's first uses)")
        entries = GaugeMetricFamily("gateway_registry_cache_entries", "Cards whose registry facts are held")
        if sampled is not None:
            connections.add_metric(["open"], sampled.connections_open())
            connections.add_metric(["signed_in"], sampled.connections_signed_in())
            queue.add_metric([], sampled.ledger_queue_depth())
            policy.add_metric([], sampled.policy_remaining_seconds())
            hits, misses, flushed, held = sampled.registry_cache()
            cache.add_metric(["hit"], hits)
            cache.add_metric(["miss"], misses)
            flushes.add_metric([], flushed)
            entries.add_metric([], held)
        return [connections, queue, policy, cache, flushes, entries]


class _Durations:
    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(REQUEST_SECONDS_BUCKETS) + 1)  # per bucket, not cumulative; the last: +Inf
        self.total = 0.0


class _Answers:
    """gateway_requests_total and gateway_request_duration_seconds, kept as plain numbers: see the module's
    docstring."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.durations: dict[str, _Durations] = {}

    def record(self, message: str, status: str, seconds: float) -> None:
        key = (message, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        durations = self.durations.get(message)
        if durations is None:
            durations = self.durations[message] = _Durations()
        # bisect_left: the first bound >= seconds, the bucket `le` it falls in.
        durations.buckets[bisect_left(REQUEST_SECONDS_BUCKETS, seconds)] += 1
        durations.total += seconds

    def describe(self) -> Iterable[Metric]:
        return self._families(False)

    def collect(self) -> Iterable[Metric]:
        return self._families(True)

    def _families(self, with_samples: bool) -> list[Metric]:
        requests = CounterMetricFamily("gateway_requests", "Requests answered, by message type and status",
                                       labels=["message", "status"])
        durations = HistogramMetricFamily("gateway_request_duration_seconds",
                                          "From a request's arrival to its answer, by message type", labels=["message"])
        if with_samples:
            for (message, status), count in sorted(self.counts.items()):
                requests.add_metric([message, status], count)
            for message, recorded in sorted(self.durations.items()):
                cumulative, buckets = 0, []
                for bound, count in zip((*map(_bound, REQUEST_SECONDS_BUCKETS), "+Inf"), recorded.buckets,
                                        strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                durations.add_metric([message], buckets, recorded.total)
        return [requests, durations]


def _bound(seconds: float) -> str:
    return repr(float(seconds))  # as prometheus_client writes its own buckets' bounds: 0.0005, 1.0, 10.0


class GatewayMetrics:
    def __init__(self) -> None:
        # No `_created` series beside each counter and histogram: they double what is stored, and Prometheus
        # reads a restart from the counters' own reset. (A process-wide switch of prometheus_client.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        registry = self.registry
        self._answers = _Answers()
        registry.register(self._answers)
        # Rare (and delayed by the throttle): prometheus_client's own counter. The reasons are the sign-in throttle's
        # (gateway.protocol.throttle.SignInFailure), handed over by the request path: this layer does not import it.
        self.sign_in_failures = Counter("gateway_sign_in_failures", "SignIns refused, and connections closed for not "
                                        "signing in in time, by reason", ["reason"], registry=registry)
        self.card_reads = Counter("gateway_card_reads", "Card reads, by reader kind and outcome (a status name)",
                                  ["reader", "outcome"], registry=registry)
        self.pin_locks = Counter("gateway_pin_locks",
                                 "Cards whose PIN a wrong VERIFY of this gateway just blocked (their last try)",
                                 registry=registry)
        self.ledger_batch_size = Histogram("gateway_ledger_batch_size", "Intents committed in one ledger transaction",
                                           buckets=BATCH_SIZE_BUCKETS, registry=registry)
        self.ledger_commit_duration = Histogram(
            "gateway_ledger_commit_duration_seconds", "A ledger batch's transaction, from BEGIN to its COMMIT's return",
            buckets=COMMIT_SECONDS_BUCKETS, registry=registry)
        self.ledger_unavailable = Counter(
            "gateway_ledger_unavailable", "Intents answered 'retry' because the ledger's database could not be "
            "reached", registry=registry)
        self._sampled = _SampledCollector()
        registry.register(self._sampled)
        # The request path's one call, bound once.
        self.request_answered: Callable[[str, str, float], None] = self._answers.record

    def sample(self, sampled: Sampled) -> None:
        """Where the levels are read from (set once the gateway's parts exist)."""
        self._sampled.sampled = sampled

    # Recording. request_answered(message, status name, seconds), above: on the reactor's thread only. The rest
    # (a card read, a batch: rarer, and the writer's on its own thread) through prometheus_client's locks.

    def expect_sign_in_failures(self, reasons: Iterable[str]) -> None:
        """Every reason's series from the start, at 0: increase() and rate() then see a reason's first failure."""
        for reason in reasons:
            self.sign_in_failures.labels(reason)

    def sign_in_failed(self, reason: str) -> None:
        self.sign_in_failures.labels(reason).inc()

    def card_read(self, reader: str, outcome: str) -> None:
        self.card_reads.labels(reader, outcome).inc()

    def pin_locked(self) -> None:
        self.pin_locks.inc()

    def ledger_committed(self, intents: int, seconds: float) -> None:
        self.ledger_batch_size.observe(intents)
        self.ledger_commit_duration.observe(seconds)

    def ledger_was_unavailable(self, intents: int) -> None:
        self.ledger_unavailable.inc(intents)

    def exported_names(self) -> set[str]:
        """Every metric family this registry exports (`_total`, `_bucket`... not included)."""
        return {metric.name for metric in self.registry.collect()}
