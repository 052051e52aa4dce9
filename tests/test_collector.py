"""Objects set aside from the garbage collector's full passes (gateway.ops.collector): all that is alive, and, for
a while only, given back after it."""

from __future__ import annotations

import gc
import weakref

from gateway.ops.collector import live_objects_set_aside


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_a_run_sets_the_live_objects_aside_and_gives_them_back_after_it() -> None:
    assert gc.get_freeze_count() == 0, "another test left objects set aside"
    with live_objects_set_aside() as count:
        assert count > 1_000  # this process's modules and functions at least
        assert gc.get_freeze_count() > 1_000
    assert gc.get_freeze_count() == 0


def test_a_cycle_dropped_during_the_run_is_freed_after_it_not_kept_for_good() -> None:
    held = Node()
    alive = weakref.ref(held)
    with live_objects_set_aside():
        del held
        gc.collect()
        assert alive() is not None  # set aside: no pass frees it meanwhile
    gc.collect()
    assert alive() is None
