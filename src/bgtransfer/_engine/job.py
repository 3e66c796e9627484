"""What the scheduler needs of a task's work: the job protocol.

A task is a record the scheduler owns (its id, request, state, progress,
terminal event, runner) and a *job* that does the work: the download today,
plain and resumable uploads next. The scheduler queues a task under the
supervisor's limits, runs ``job.run()`` in a cancel scope, and ends it with
exactly one terminal event; everything it must ask about the work (what to
journal, what a stopped run ends with, which files to clear away) goes
through this protocol. It never sees HTTP verbs, ranges, segments or partial
files. What a kind of job does when a session reopens is :mod:`.reattacher`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .._core.events import CancelledEvent, ErrorEvent, FinishedEvent
from .._core.journal import TaskEntry
from .._exceptions import TransferError

__all__ = ["Job"]


class Job(Protocol):
    """The work of one task (one instance per task, holding that task's state)."""

    async def run(self) -> FinishedEvent:
        """Attempts (with retries) until the work is done; raises the task's
        :class:`~bgtransfer.TransferError` when it fails. Run in the runner's
        cancel scope: cancelled when the task is suspended, cancelled or the
        session closes; called again for a task resumed after a suspend."""
        ...

    def entry(self) -> TaskEntry:
        """The task as the journal is to store it now (called when it is put)."""
        ...

    @property
    def data_file(self) -> Path | None:
        """The file whose bytes the entry vouches for (synced before the entry
        when the session is durable), if any."""
        ...

    def paused(self) -> None:
        """The task was suspended: its next run continues it."""
        ...

    def done_anyway(self) -> FinishedEvent | None:
        """The work is complete, whatever stopped the run (a download's file is
        at its destination): its finish outcome, else None."""
        ...

    def cancel_outcome(self) -> CancelledEvent:
        """What the task ends with when cancelled (with resume data if the task
        was cancelled asking for it and the job can give it)."""
        ...

    def error_outcome(self, error: TransferError) -> ErrorEvent:
        """What the task ends with when ``error`` failed it (resume data when the
        job keeps what it did for a later task)."""
        ...

    @property
    def has_leftovers(self) -> bool:
        """Whether the job may have left files behind (a task that never ran
        and came from nothing on disk has none): ``discard()`` is worth a call."""
        ...

    async def discard(self) -> None:
        """Remove what the job left behind (a task ending without resume data)."""
        ...
