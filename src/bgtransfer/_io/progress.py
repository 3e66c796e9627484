"""The loop timer behind :class:`ProgressThrottle`: held-back progress is reported
when it is due, not when the next bytes arrive.

Bytes are counted as they reach the file; the throttle reports them at most once
per ``progress_interval`` and holds back the rest. When it holds some back it
asks for one wakeup (``ProgressThrottle.wakeup``): this module arms one loop
timer for it and, when it fires, reports what is due (``tick``) or arms the next
one. So a task has at most one timer at a time, and only while progress is held
back: a body written at once is reported at once and arms none. The timer is
never cancelled: once the task's last bytes are flushed (at its terminal event,
or when its runner stops) a late tick finds nothing to report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .._core.events import ProgressEvent
from .._core.progress import ProgressThrottle

__all__ = ["arm", "count"]


def count(
    throttle: ProgressThrottle,
    nbytes: int,
    clock: Callable[[], float],
    publish: Callable[[ProgressEvent], None],
) -> None:
    """``nbytes`` more were written: report them now, or arm the timer that will."""
    now = clock()
    event = throttle.feed(nbytes, now)
    if event is not None:
        publish(event)
        return
    due = throttle.wakeup()
    if due is not None:
        arm(throttle, due - now, clock, publish)


def arm(
    throttle: ProgressThrottle,
    delay: float,
    clock: Callable[[], float],
    publish: Callable[[ProgressEvent], None],
) -> None:
    """Tick ``throttle`` in ``delay`` seconds (the clock counts seconds)."""
    asyncio.get_running_loop().call_later(max(delay, 0.0), _tick, throttle, clock, publish)


def _tick(
    throttle: ProgressThrottle,
    clock: Callable[[], float],
    publish: Callable[[ProgressEvent], None],
) -> None:
    now = clock()
    event = throttle.tick(now)
    if event is not None:
        publish(event)
        return
    due = throttle.wakeup()  # still held back: not due yet (the clock ran early)
    if due is not None:
        arm(throttle, due - now, clock, publish)
