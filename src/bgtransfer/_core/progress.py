"""Progress rate limiting and per-subscriber event buffers. Pure: time is passed in.

Two bounds keep a fast transfer and a slow consumer apart:

* :class:`ProgressThrottle` turns every chunk into at most one
  :class:`ProgressEvent` per ``interval`` (a 1 GiB download at the default 0.1 s
  produces a few hundred events, not a million). Bytes it holds back are
  reported once the interval has passed even if no more arrive: it says when
  (``wakeup``), the caller arms one timer and calls ``tick`` then;
* :class:`EventBuffer` is what each subscriber reads from. It holds at most one
  pending progress event per task: a newer one for the same task merges into it
  (totals from the newer, deltas added) as long as nothing else of that task
  follows it. Every other event is kept, so terminal events are never dropped.
  Its size is therefore bounded by a small constant per task, never by the
  number of bytes or chunks, and the producer never waits for a consumer.
"""

from __future__ import annotations

from collections import deque

import attrs

from .events import (
    EventsDeliveredEvent,
    EventsGapEvent,
    ProgressEvent,
    SessionEvent,
    merge_progress,
)

__all__ = ["BufferStatistics", "EventBuffer", "ProgressThrottle"]


class ProgressThrottle:
    """Accumulates bytes and emits a :class:`ProgressEvent` at most once per interval.

    A :meth:`feed` that returns None has held its bytes back. So that they are
    not held until more bytes come (a server may stall for a minute), the
    caller asks :meth:`wakeup` when to look again and calls :meth:`tick` at
    that time. ``wakeup`` answers once per hold, so a caller arms at most one
    timer per throttle, and none while every feed is reported at once (a small
    body written in one go is).
    """

    def __init__(
        self, task_id: int, *, interval: float, total: int = 0, expected: int | None = None
    ):
        self._task_id = task_id
        self._interval = interval
        self._total = total
        self._expected = expected
        self._pending = 0
        self._last_emit: float | None = None
        self._waking = False  # a wakeup was handed out and its tick has not come
        self._rate: float | None = None  # bytes/s, smoothed over the last reports

    @property
    def total(self) -> int:
        return self._total

    def set_expected(self, expected: int | None) -> None:
        self._expected = expected

    def restart(self, total: int) -> None:
        """Continue counting from ``total`` bytes (a resume at an offset, or 0)."""
        self._total = total
        self._pending = 0
        self._last_emit = None
        self._rate = None

    def feed(self, nbytes: int, now: float) -> ProgressEvent | None:
        """Count ``nbytes`` more; return an event if one is due at ``now``."""
        self._total += nbytes
        self._pending += nbytes
        if self._last_emit is not None and now - self._last_emit < self._interval:
            return None
        self._measure(now)
        return self._take()

    def wakeup(self) -> float | None:
        """When the bytes held back are due (a time on the ``now`` clock), if the
        caller must arrange a :meth:`tick` for then; None when nothing is held
        back or a tick is arranged already."""
        if self._waking or not self._pending or self._last_emit is None:
            return None
        self._waking = True
        return self._last_emit + self._interval

    def tick(self, now: float) -> ProgressEvent | None:
        """The time :meth:`wakeup` named has come: the event for the bytes held
        back if it is due at ``now`` (None if nothing is: they were reported
        meanwhile; or not yet: then ``wakeup`` names the new time)."""
        self._waking = False
        if not self._pending or (
            self._last_emit is not None and now - self._last_emit < self._interval
        ):
            return None
        self._measure(now)
        return self._take()

    def rate(self, now: float) -> float | None:
        """Bytes per second lately (for ``bgtransfer status``): measured between
        reports, so known from the second one on; 0 once nothing was reported for
        a while (a stalled transfer); None before anything could be measured."""
        last = self._last_emit
        if last is None or self._rate is None:
            return None
        return 0.0 if now - last > max(3 * self._interval, 2.0) else self._rate

    def _measure(self, now: float) -> None:
        """A report is due at ``now``: the rate of the bytes since the last one."""
        last = self._last_emit
        if last is not None and now > last:
            current = self._pending / (now - last)
            self._rate = current if self._rate is None else (self._rate + current) / 2
        self._last_emit = now

    def flush(self) -> ProgressEvent | None:
        """The event for bytes counted but not yet reported, if any (before a terminal event)."""
        return self._take() if self._pending else None

    def _take(self) -> ProgressEvent:
        event = ProgressEvent(
            task_id=self._task_id,
            bytes_written=self._pending,
            total_bytes_written=self._total,
            total_bytes_expected=self._expected,
        )
        self._pending = 0
        return event


@attrs.frozen(kw_only=True)
class BufferStatistics:
    """A snapshot of one subscriber's buffer."""

    buffered: int
    """Events waiting to be read now."""
    max_buffered: int
    """The most events that ever waited at once."""
    coalesced: int
    """Progress events merged into an earlier one because the reader was behind."""
    delivered: int
    """Events handed to the reader."""


class _Slot:
    __slots__ = ("event",)

    def __init__(self, event: SessionEvent) -> None:
        self.event = event


class EventBuffer:
    """One subscriber's queue with per-task progress coalescing (see module docs)."""

    def __init__(self) -> None:
        self._slots: deque[_Slot] = deque()
        self._last_of_task: dict[int, _Slot] = {}
        self._max = 0
        self._coalesced = 0
        self._delivered = 0

    def __len__(self) -> int:
        return len(self._slots)

    def push(self, event: SessionEvent) -> None:
        if isinstance(event, EventsDeliveredEvent | EventsGapEvent):  # no task: never merged
            self._slots.append(_Slot(event))
            self._max = max(self._max, len(self._slots))
            return
        # The task's newest slot still unread; merging into it keeps the order of
        # that task's events because nothing of the task follows it.
        last = self._last_of_task.get(event.task_id)
        if (
            isinstance(event, ProgressEvent)
            and last is not None
            and isinstance(last.event, ProgressEvent)
        ):
            last.event = merge_progress(last.event, event)
            self._coalesced += 1
            return
        slot = _Slot(event)
        self._slots.append(slot)
        self._last_of_task[event.task_id] = slot
        self._max = max(self._max, len(self._slots))

    def peek(self) -> SessionEvent:
        """The oldest event, left in place; raises :class:`IndexError` when empty."""
        return self._slots[0].event

    def pop(self) -> SessionEvent:
        """The oldest event; raises :class:`IndexError` when empty."""
        slot = self._slots.popleft()
        event = slot.event
        if (
            not isinstance(event, EventsDeliveredEvent | EventsGapEvent)
            and self._last_of_task.get(event.task_id) is slot
        ):
            del self._last_of_task[event.task_id]
        self._delivered += 1
        return event

    def clear(self) -> None:
        """Drop every buffered event (the subscriber stopped reading)."""
        self._slots.clear()
        self._last_of_task.clear()

    def statistics(self) -> BufferStatistics:
        return BufferStatistics(
            buffered=len(self._slots),
            max_buffered=self._max,
            coalesced=self._coalesced,
            delivered=self._delivered,
        )
