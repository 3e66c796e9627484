"""A background session's event log, without the database: numbering, replay
from a cursor, and what retention may drop. Pure: the journal
(``_io/journal.py``) stores what this decides.

Every task event but progress is numbered (``seq``) when it happens, from one
counter that only grows. A reopened log continues above its newest entry and
above ``earliest`` (the highest number trimmed, stored with the trimming), so a
number a reader has seen is never given again, even after the entries holding
it were trimmed (readers only see committed numbers: the hub waits for them).

Retention keeps the newest ``keep`` entries, and beyond them every entry of a
task the journal still holds (its terminal event is not acknowledged yet, or it
has not ended): those are dropped only once acknowledged. ``earliest`` is the
highest number ever dropped: a cursor at or above it is answered from the log;
an older one (or one newer than the newest event) is a *gap*, never a silent
loss. See docs/design.md, "The event log".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import attrs

from .events import LoggedEvent

__all__ = ["EventLog"]

L = TypeVar("L", bound=LoggedEvent)


class EventLog:
    """The numbered events a session's journal holds, in memory (they are few:
    at most ``keep`` plus those of tasks not acknowledged)."""

    def __init__(
        self,
        entries: Iterable[LoggedEvent] = (),
        *,
        next_seq: int = 1,
        earliest: int = 0,
        keep: int = 4096,
        held: Iterable[int] = (),
    ) -> None:
        """``entries`` in number order; ``next_seq``: the smallest number never
        given; ``earliest``: the highest number dropped so far (0: none);
        ``held``: the tasks whose entries must stay (the journal still has them)."""
        self._entries: dict[int, LoggedEvent] = {}
        for event in entries:
            assert event.seq is not None
            self._entries[event.seq] = event
        newest = max(self._entries, default=0)
        self._next = max(next_seq, newest + 1, earliest + 1)
        self._earliest = earliest
        self._keep = keep
        self._held = set(held)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def latest(self) -> int | None:
        """The newest number given (None: none yet)."""
        return self._next - 1 if self._next > 1 else None

    @property
    def earliest(self) -> int:
        """The oldest cursor answered without a gap (every number up to it may be gone)."""
        return self._earliest

    def append(self, event: L) -> L:
        """``event`` with the next number, kept until trimmed."""
        numbered = attrs.evolve(event, seq=self._next)
        self._next += 1
        self._entries[self._next - 1] = numbered
        self._held.add(event.task_id)
        return numbered

    def release(self, task_id: int) -> None:
        """The task's terminal event was acknowledged: its entries may be trimmed."""
        self._held.discard(task_id)

    def replay(self, since: int) -> list[LoggedEvent] | None:
        """The events numbered after ``since``, oldest first; None for a gap (the
        log may have dropped some of them, or ``since`` is newer than its newest)."""
        if since < self._earliest or since >= self._next:
            return None
        return [event for seq, event in self._entries.items() if seq > since]

    def trim(self) -> list[int]:
        """Drop the oldest entries of released tasks while more than ``keep``
        are kept; return their numbers (for the database)."""
        excess = len(self._entries) - self._keep
        if excess <= 0:
            return []
        dropped: list[int] = []
        for seq, event in self._entries.items():
            if event.task_id not in self._held:
                dropped.append(seq)
                if len(dropped) == excess:
                    break
        for seq in dropped:
            del self._entries[seq]
        if dropped:
            self._earliest = max(self._earliest, dropped[-1])
        return dropped
