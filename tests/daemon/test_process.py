"""The daemon process's start (``_daemon/process.py``): its start-up heap is
frozen, out of the collector's passes, once its own garbage is collected."""

from __future__ import annotations

import gc
import weakref

from bgtransfer._daemon.process import _freeze_start_up


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_the_start_up_heap_is_frozen_after_its_garbage_is_collected() -> None:
    kept = _Node()
    cycle = _Node()
    cycle.other = _Node()
    cycle.other.other = cycle  # garbage only the collector finds
    gone = weakref.ref(cycle)
    del cycle
    frozen = gc.get_freeze_count()
    try:
        _freeze_start_up()
        assert gone() is None  # collected, not frozen with the rest
        assert gc.get_freeze_count() > frozen
        assert not any(o is kept for o in gc.get_objects())  # out of every generation
    finally:
        gc.unfreeze()  # the test process's heap as it was
    assert any(o is kept for o in gc.get_objects())
