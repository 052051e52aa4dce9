"""The cyclic garbage collector and a long-running process: objects that live as long as it are set aside.

CPython's full collection walks every object the collector tracks. A started gateway holds some hundred thousand
that live as long as the process (modules, the ORM's and the policies' tables, the reactor's machinery), and the
churn of requests under load triggers a full pass every few seconds: each held the reactor 80-170 ms, every
request in flight then waiting (BENCHMARKS.md, "Settle latency at half the peak"). Objects set aside by
`gc.freeze` are skipped by every later pass; reference counting still frees them, so only a reference cycle
among them would stay while they are set aside."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def set_aside_live_objects() -> int:
    """Collect once, then set every object alive aside from the collector's later passes; how many are aside."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextmanager
def live_objects_set_aside() -> Iterator[int]:
    """`set_aside_live_objects` for a while (e.g. one measured run), then every object set aside is the
    collector's again, so that what the run dropped is not kept for the rest of the process."""
    try:
        yield set_aside_live_objects()
    finally:
        gc.unfreeze()
