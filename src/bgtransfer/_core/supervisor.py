"""Connection-slot bookkeeping: who may transfer now. Pure; the engine does the I/O.

Like httpcore's pool, this is synchronous code that *returns* what the I/O layer
must do: :meth:`Supervisor.enqueue` and :meth:`Supervisor.release` return the task
ids that may start now, and the engine spawns a coroutine for exactly those. A
queued task therefore costs a deque entry, not a coroutine, however many wait.

Rules:

* at no moment does an origin have more active tasks than ``per_host_limit``
  (each active task holds one connection), nor the session more than
  ``total_limit``;
* queued tasks start in creation order (task ids grow with creation) among those whose origin
  has a free slot: a full origin never blocks another origin's tasks;
* an origin may be *held back* until a given time (``Retry-After``); its tasks
  stay queued;
* an active task may *borrow* extra slots of its origin (a segmented download's
  further connections), but only slots no queued task of that origin is waiting
  for: extra connections never delay another task's start.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable

import attrs

__all__ = [
    "DESCRIPTORS_PER_SLOT",
    "RESERVED_DESCRIPTORS",
    "Supervisor",
    "SupervisorStatistics",
    "slots_for_descriptors",
]

DESCRIPTORS_PER_SLOT = 5
"""File descriptors one connection slot may hold at once: its socket, the partial
file its body is written to, and for a pumped body (``_io/pump.py``) a duplicate of
the socket and the pipe that wakes the pump."""

RESERVED_DESCRIPTORS = 64
"""Descriptors left for everything but the transfers: standard streams, the event
loop, the journal (database, WAL, shared memory, lock file), idle keep-alive
connections, DNS look-ups, and the application itself."""


def slots_for_descriptors(wanted: int, soft_limit: int | None) -> int:
    """How many transfers may run at once within ``soft_limit`` descriptors
    (``RLIMIT_NOFILE``; None: unlimited): at most ``wanted``, never fewer than one.

    Each slot gets ``DESCRIPTORS_PER_SLOT``, after ``RESERVED_DESCRIPTORS`` for the
    rest of the process. A segmented download's extra connections take slots of
    their own, so the same count bounds them.
    """
    if soft_limit is None or soft_limit < 0:  # RLIM_INFINITY is -1 on Linux
        return wanted
    budget = (soft_limit - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_SLOT
    return max(1, min(wanted, budget))


@attrs.frozen(kw_only=True)
class SupervisorStatistics:
    """A snapshot of the supervisor's queues."""

    active: int
    """Tasks holding a slot."""
    queued: int
    active_by_origin: dict[Hashable, int]
    """Slots in use per origin (a segmented task's borrowed slots included)."""
    queued_by_origin: dict[Hashable, int]
    borrowed: int = 0
    """Extra slots lent to active tasks (segments beyond their first connection)."""
    total_limit: int = 0
    """Slots in use at once, at most: ``max_concurrent_transfers``, or fewer when the
    process's file descriptor limit cannot serve that many (``slots_for_descriptors``)."""


class Supervisor:
    """Per-origin and global connection slots with queues ordered by task id.

    Task ids grow with creation, so ordering by id is creation order, and a task
    that is suspended and resumed goes back to its place, not to the end.
    """

    def __init__(self, *, per_host_limit: int, total_limit: int) -> None:
        if per_host_limit < 1 or total_limit < 1:
            raise ValueError("limits must be at least 1")
        self._per_host = per_host_limit
        self._total = total_limit
        # origin -> heap of queued task ids. Removal is lazy: an id that is no longer
        # in self._queued (or is queued under another origin) is dropped when it
        # reaches the top, so cancelling any of 10,000 queued tasks is O(1).
        self._heaps: dict[Hashable, list[int]] = {}
        self._queued: dict[int, Hashable] = {}
        # Kept as tasks come and go, not counted by statistics(): the daemon sends
        # the statistics with every event, and 2,000 queued tasks made each call
        # scan them all (docs/design.md, "Statistics without a scan").
        self._queued_by_origin: dict[Hashable, int] = {}
        self._active: dict[int, Hashable] = {}
        self._active_by_origin: dict[Hashable, int] = {}
        self._borrowed: dict[int, int] = {}  # task id -> extra slots it holds
        self._in_use = 0  # slots in use: active tasks plus borrowed slots
        self._held_until: dict[Hashable, float] = {}

    # -- queries --------------------------------------------------------------

    def is_active(self, task_id: int) -> bool:
        return task_id in self._active

    def is_queued(self, task_id: int) -> bool:
        return task_id in self._queued

    def origin(self, task_id: int) -> Hashable:
        """The origin of an active task (``KeyError`` for another)."""
        return self._active[task_id]

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            active=len(self._active),
            queued=len(self._queued),
            active_by_origin={k: v for k, v in self._active_by_origin.items() if v},
            queued_by_origin=dict(self._queued_by_origin),
            borrowed=sum(self._borrowed.values()),
            total_limit=self._total,
        )

    def next_hold_expiry(self) -> float | None:
        """The earliest time a held-back origin with queued tasks becomes free, if any."""
        times = [t for origin, t in self._held_until.items() if self._head(origin) is not None]
        return min(times) if times else None

    # -- commands (each returns the task ids to start now) --------------------

    def enqueue(self, task_id: int, origin: Hashable, *, now: float = 0.0) -> list[int]:
        """Queue a task in creation (id) order; return the tasks to start now."""
        if task_id in self._queued or task_id in self._active:
            raise ValueError(f"task {task_id} is already scheduled")
        heapq.heappush(self._heaps.setdefault(origin, []), task_id)
        self._queued[task_id] = origin
        self._queued_by_origin[origin] = self._queued_by_origin.get(origin, 0) + 1
        return self._schedule(now)

    def release(self, task_id: int, *, now: float = 0.0) -> list[int]:
        """Free the slot of an active task (finished, failed, cancelled or suspended),
        and any slots it borrowed."""
        origin = self._active.pop(task_id)
        freed = 1 + self._borrowed.pop(task_id, 0)
        self._active_by_origin[origin] -= freed
        self._in_use -= freed
        return self._schedule(now)

    def borrow(self, task_id: int, want: int) -> int:
        """Lend an active task up to ``want`` extra slots of its origin; return how many.

        Only free slots, within both limits, and none while the origin is held back.
        Scheduling is work-conserving, so a free slot here is one no queued task can
        take: lending it never delays another task's start.
        """
        origin = self._active[task_id]
        if want < 1 or origin in self._held_until:
            return 0
        free_here = self._per_host - self._active_by_origin.get(origin, 0)
        granted = max(0, min(want, free_here, self._total - self._in_use))
        if granted:
            self._borrowed[task_id] = self._borrowed.get(task_id, 0) + granted
            self._active_by_origin[origin] += granted
            self._in_use += granted
        return granted

    def give_back(self, task_id: int, count: int, *, now: float = 0.0) -> list[int]:
        """Return ``count`` borrowed slots (a segment ended); return tasks to start."""
        held = self._borrowed.get(task_id, 0)
        if not 0 < count <= held:
            raise ValueError(f"task {task_id} holds {held} borrowed slots, cannot return {count}")
        if count == held:
            del self._borrowed[task_id]
        else:
            self._borrowed[task_id] = held - count
        origin = self._active[task_id]
        self._active_by_origin[origin] -= count
        self._in_use -= count
        return self._schedule(now)

    def remove(self, task_id: int, *, now: float = 0.0) -> list[int]:
        """Forget a task wherever it is (queued or active); unknown ids are ignored."""
        if task_id in self._active:
            return self.release(task_id, now=now)
        origin = self._queued.pop(task_id, None)
        if origin is not None:
            self._left_queue(origin)
        return self._schedule(now)

    def hold(self, origin: Hashable, until: float) -> None:
        """Start no new task for ``origin`` before ``until`` (a Retry-After)."""
        self._held_until[origin] = max(until, self._held_until.get(origin, until))

    def poll(self, now: float) -> list[int]:
        """Re-check held-back origins at ``now``; return tasks to start."""
        return self._schedule(now)

    # -- the one place that decides ---------------------------------------------

    def _left_queue(self, origin: Hashable) -> None:
        waiting = self._queued_by_origin[origin] - 1
        if waiting:
            self._queued_by_origin[origin] = waiting
        else:
            del self._queued_by_origin[origin]

    def _head(self, origin: Hashable) -> int | None:
        heap = self._heaps.get(origin)
        while heap:
            task_id = heap[0]
            if self._queued.get(task_id) == origin:
                return task_id
            heapq.heappop(heap)  # stale: removed, or started elsewhere
        return None

    def _schedule(self, now: float) -> list[int]:
        started: list[int] = []
        for origin, until in list(self._held_until.items()):
            if until <= now:
                del self._held_until[origin]
        while self._in_use < self._total:
            best: Hashable | None = None
            best_id = 0
            for origin in self._heaps:
                if origin in self._held_until:
                    continue
                if self._active_by_origin.get(origin, 0) >= self._per_host:
                    continue
                head = self._head(origin)
                if head is not None and (best is None or head < best_id):
                    best, best_id = origin, head
            if best is None:
                break
            heapq.heappop(self._heaps[best])
            del self._queued[best_id]
            self._left_queue(best)
            self._active[best_id] = best
            self._active_by_origin[best] = self._active_by_origin.get(best, 0) + 1
            self._in_use += 1
            started.append(best_id)
        return started
