"""The cyclic garbage collector and a started gateway.

CPython's full collection walks every object the collector tracks. A started gateway holds some hundred thousand
that live as long as the process (modules, the ORM's and the policies' tables, the reactor's machinery), and the
churn of requests under load triggers a full pass every few seconds: each held the reactor 80-130 ms, every
request in flight then waiting (BENCHMARKS.md, "Settle latency at half the peak"). Objects set aside by
`gc.freeze` are skipped by every later pass; reference counting still frees them, so only a reference cycle
among them would stay (none is made by what the gateway builds before it listens)."""

from __future__ import annotations

import gc


def set_aside_startup_objects() -> int:
    """Collect once, then set every object alive aside from the collector's later passes; how many are aside."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
