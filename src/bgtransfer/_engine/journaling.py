"""What the engine needs of a journal, and how its parts ask for a record to be journaled.

:class:`TaskJournal` is the port the session's journal (``_io/journal.py``)
implements; the engine and its parts never see SQLite. :class:`JournalTask` is
the engine's own "journal this record as it is now", handed to the parts
(the download, its segments) that must record progress or a move.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

from .._core.eventlog import EventLog
from .._core.events import LoggedEvent
from .._core.journal import TaskEntry
from .._core.terminations import PendingTermination
from .._exceptions import JournalError
from .record import TaskRecord

__all__ = ["FlushFor", "JournalTask", "TaskJournal"]

L = TypeVar("L", bound=LoggedEvent)


class TaskJournal(Protocol):
    """Where the engine records its tasks for a later process (the session's journal)."""

    def put(
        self,
        entry: TaskEntry,
        *,
        urgent: bool = False,
        deferred: bool = False,
        data_file: Path | None = None,
    ) -> None:
        """Record a task's newest state; ``data_file`` holds the bytes it vouches for.
        ``urgent``: committed at once; ``deferred``: with the next commit, soon."""
        ...

    def forget(self, task_id: int, *, urgent: bool = False) -> None:
        """Drop a task whose terminal event was delivered (``urgent``: with the
        next commit, which ``flush()`` waits for)."""
        ...

    @property
    def generation(self) -> int:
        """Grows with every entry recorded; ``flush(upto=...)`` takes it."""
        ...

    on_rejected: Callable[[int, JournalError], None] | None
    """Set by the engine: called with a task whose entry could not be recorded."""

    event_log: EventLog
    """The session's numbered events (every task event but progress)."""

    def put_termination(self, pending: PendingTermination) -> None:
        """Record a cancelled upload's termination to send (committed soon)."""
        ...

    def drop_termination(self, task_id: int) -> None:
        """Forget the task's termination: sent, or given up (committed soon)."""
        ...

    def log(self, event: L) -> L:
        """``event`` numbered and in the event log (committed with what is put
        next to it, soon)."""
        ...

    async def logged(self, seq: int) -> None:
        """Return once the event numbered ``seq`` is committed."""
        ...

    async def flush(
        self,
        *,
        shielded: bool = False,
        lazy: bool = False,
        upto: int | None = None,
        at_once: bool = False,
    ) -> None:
        """Return once everything recorded so far (``upto``: until ``generation``
        was that) is durable. ``shielded``: the caller runs in a shielded cancel
        scope; ``lazy``: by a commit that something else starts, or the one a
        ``deferred`` entry is due; ``at_once``: without a scheduling point
        first (the caller had one just before)."""
        ...


class JournalTask(Protocol):
    """Journal a record as it is now (the engine's ``_journal_task``): ``urgent``,
    committed at once; ``deferred``, with the next commit; ``data``, its partial
    file's bytes count."""

    def __call__(
        self,
        record: TaskRecord,
        *,
        urgent: bool = False,
        deferred: bool = False,
        data: bool = False,
    ) -> None: ...


class FlushFor(Protocol):
    """Commit what the journal holds of a record before going on (the engine's
    ``_flush_for``); a journal that cannot record it fails the task."""

    def __call__(self, record: TaskRecord, *, shielded: bool = False) -> Awaitable[None]: ...
