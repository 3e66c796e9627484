"""The daemon client's copy of its session: every task's snapshot, kept current
from the attachment's lines, and what it takes in after a re-attachment.

The sync queries (``task``, ``tasks``, ``statistics``) and ``wait`` read it and
never touch the socket. After the daemon came back (``client.py`` re-attaches),
:meth:`Snapshots.merge` takes the new attachment's task lines in and says which
events the client's streams missed meanwhile; :meth:`Snapshots.claim` finds the
tasks that submissions whose answer was lost made before the daemon died.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from .._core.events import (
    TERMINAL_EVENTS,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    SessionEvent,
    TaskEvent,
    TerminalEvent,
)
from .._core.supervisor import SupervisorStatistics
from .._core.wire import decode_event, snapshot_fields
from .._core.wire_stats import decode_statistics
from .._engine.backend import TaskSnapshot

__all__ = ["Snapshots", "SubmissionKey", "task_of"]

SubmissionKey = tuple[str, str | None, str | None]
"""What identifies a submitted task: its URL, description and destination
(None: the daemon chose it)."""


def task_of(line: dict[str, Any], ended: TerminalEvent | None = None) -> TaskSnapshot:
    """The snapshot a line (or an answer) carries as ``task`` (``ended``: the
    terminal event the line carries, the snapshot's own end)."""
    return TaskSnapshot(**snapshot_fields(line["task"], ended=ended))


class Snapshots:
    """The session as the client last heard of it."""

    def __init__(self) -> None:
        self.tasks: dict[int, TaskSnapshot] = {}
        self.progress: dict[int, ProgressEvent] = {}
        self.replayed: set[int] = set()  # ended before this daemon opened the session
        self.statistics = SupervisorStatistics(
            active=0, queued=0, active_by_origin={}, queued_by_origin={}
        )
        self.cursor: int | None = None  # the newest logged event's number seen
        self._changes: dict[int, asyncio.Event] = {}  # per waited task: set when it changes
        self._owned: set[int] = set()  # tasks a submission was answered with, or claimed

    # -- the attachment's lines -----------------------------------------------------

    def task_line(self, line: dict[str, Any]) -> tuple[TaskSnapshot, ProgressEvent | None]:
        """An attachment's ``task`` line: the snapshot and its progress."""
        snapshot = task_of(line)
        progress = line.get("progress")
        event = None
        if progress is not None:
            event = ProgressEvent(
                task_id=snapshot.id,
                bytes_written=progress[0],
                total_bytes_written=progress[0],
                total_bytes_expected=progress[1],
            )
        if line.get("replayed"):
            self.replayed.add(snapshot.id)
        return snapshot, event

    def take(self, snapshot: TaskSnapshot, progress: ProgressEvent | None) -> None:
        """A task of the first attachment's backlog."""
        self.tasks[snapshot.id] = snapshot
        if progress is not None:
            self.progress[snapshot.id] = progress

    def apply(self, line: dict[str, Any]) -> SessionEvent:
        """An event line of the daemon: the snapshots, statistics and cursor
        it carries are taken in; the event is returned."""
        event = decode_event(line["event"])
        if "task" in line:
            ended = event if isinstance(event, TERMINAL_EVENTS) else None  # decoded once
            self.update(task_of(line, ended), vouched=ended is not None)
        if "statistics" in line:
            self.statistics = decode_statistics(line["statistics"])
        seq = getattr(event, "seq", None)
        if seq is not None and (self.cursor is None or seq > self.cursor):
            self.cursor = seq
        if isinstance(event, ProgressEvent):
            self.progress[event.task_id] = event
            current = self.tasks.get(event.task_id)
            if current is not None and current.terminal is None:
                self.tasks[event.task_id] = attrs.evolve(
                    current,
                    bytes_received=event.total_bytes_written,
                    bytes_expected=event.total_bytes_expected,
                )
        return event

    def update(self, snapshot: TaskSnapshot, *, vouched: bool = True) -> TaskSnapshot:
        """Take a newer snapshot in. Not ``vouched``: it rode with something else
        than the task's end (another event, a suspend's answer); an end it shows
        may not be journaled yet, so it waits for the terminal event's line."""
        current = self.tasks.get(snapshot.id)
        if current is not None and current.terminal is not None and snapshot.terminal is None:
            return current  # an older answer than the stream's: the end stays
        unvouched_end = not vouched and snapshot.terminal is not None
        if unvouched_end and current is not None and current.terminal is None:
            snapshot = attrs.evolve(snapshot, state=current.state, terminal=None)
        self.tasks[snapshot.id] = snapshot
        self.changed(snapshot.id)
        return snapshot

    # -- waiting --------------------------------------------------------------------

    def changed(self, task_id: int) -> None:
        change = self._changes.pop(task_id, None)
        if change is not None:
            change.set()

    async def wait_changed(self, task_id: int) -> None:
        """Return once the task's snapshot changes (or :meth:`wake_all`)."""
        change = self._changes.get(task_id)
        if change is None:
            change = self._changes[task_id] = asyncio.Event()
        await change.wait()

    def wake_all(self) -> None:
        """Every waiter looks again (the session closed)."""
        for change in self._changes.values():
            change.set()
        self._changes.clear()

    # -- after a re-attachment ------------------------------------------------------

    def merge(
        self, backlog: Iterable[tuple[TaskSnapshot, ProgressEvent | None]]
    ) -> list[TaskEvent]:
        """The task lines of a new attachment, after the connection was lost:
        taken in, and the events the client's streams missed meanwhile returned,
        in order: per task whose bytes moved, a progress event with the bytes
        since the last it heard of (or a :class:`ResumedEvent` at the new
        offset, when the new daemon went on from fewer bytes than the old had
        written); then each end the client had not heard of, by its number in
        the log. An end the client holds stays (the task may since have been
        acknowledged and forgotten)."""
        moved: list[TaskEvent] = []
        ends: list[TerminalEvent] = []
        for snapshot, progress in backlog:
            old = self.tasks.get(snapshot.id)
            if old is not None and old.terminal is not None:
                continue
            if progress is not None:
                self.progress[snapshot.id] = progress
            was = 0 if old is None else old.bytes_received
            now = _bytes(snapshot, progress)
            if snapshot.terminal is not None and not isinstance(snapshot.terminal, FinishedEvent):
                pass  # an error or a cancellation says nothing of the bytes
            elif now > was:
                moved.append(
                    ProgressEvent(
                        task_id=snapshot.id,
                        bytes_written=now - was,
                        total_bytes_written=now,
                        total_bytes_expected=snapshot.bytes_expected,
                    )
                )
            elif now < was:
                moved.append(
                    ResumedEvent(
                        task_id=snapshot.id, offset=now, expected_total=snapshot.bytes_expected
                    )
                )
            if snapshot.terminal is None:
                self.tasks[snapshot.id] = attrs.evolve(snapshot, bytes_received=now)
            else:
                self.tasks[snapshot.id] = snapshot
                ends.append(snapshot.terminal)
            self.changed(snapshot.id)
        ends.sort(key=lambda event: (event.seq is None, event.seq or 0, event.task_id))
        return moved + ends

    def mark(self) -> int:
        """Where the tasks learned from now on start (a submission's reference
        for :meth:`claim`): new tasks are appended to :attr:`tasks`."""
        return len(self.tasks)

    def own(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        """A submission was answered with this task: never claimed by another."""
        self._owned.add(snapshot.id)
        return snapshot

    def claim(self, keys: Sequence[SubmissionKey], mark: int) -> list[TaskSnapshot | None]:
        """The tasks that submissions (``keys``, in the order they were sent)
        whose answer was lost made before the daemon died, each or None: tasks
        learned after the submission was sent (``mark``), that no other
        submission was answered with or claimed, matched in order (a batch is
        journaled in order)."""
        new = sorted(
            tid for tid in itertools.islice(self.tasks, mark, None) if tid not in self._owned
        )
        found: list[TaskSnapshot | None] = []
        after = -1
        for url, description, destination in keys:
            match = None
            for tid in new:
                snapshot = self.tasks[tid]
                if (
                    tid > after
                    and tid not in self._owned
                    and snapshot.url == url
                    and snapshot.description == description
                    and (destination is None or str(snapshot.destination) == destination)
                ):
                    match = snapshot
                    break
            if match is not None:
                self._owned.add(match.id)
                after = match.id
            found.append(match)
        return found


def _bytes(snapshot: TaskSnapshot, progress: ProgressEvent | None) -> int:
    if isinstance(snapshot.terminal, FinishedEvent):
        return snapshot.terminal.total_bytes
    if progress is not None:
        return max(progress.total_bytes_written, snapshot.bytes_received)
    return snapshot.bytes_received
