"""The journal's writer: the state of its batching, the commits (on the loop or in
a worker thread), what a failed commit means, the writer's rounds, WAL
checkpoints and the final commit at exit. :class:`~.journal.Journal` adds the
engine's side (``put``, ``forget``, ``flush``) on top.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from .._core.eventlog import EventLog
from .._core.journal import TaskEntry
from .._core.terminations import PendingTermination
from .._exceptions import JournalError
from .journal_commit import Batch, close_all, commit_sync, upsert_one
from .threads import run_blocking

__all__ = ["INLINE_ROWS", "WAL_CHECKPOINT_COMMITS", "JournalStatistics", "JournalWriter"]

logger = logging.getLogger("bgtransfer")

EXIT_TIMEOUT = 10.0
"""Seconds the final commit may take when the session closes before it is abandoned."""

INLINE_ROWS = 64
"""A flush() committing at most this many rows without fsync commits on the loop."""

WAL_CHECKPOINT_COMMITS = 1000
"""Commits after which the writer copies the WAL back into the database (in a thread)."""


@attrs.frozen(kw_only=True)
class JournalStatistics:
    """A snapshot of the journal's write batching."""

    pending: int
    """Entries (and deletions) put but not committed yet."""
    commits: int
    """Transactions committed since the journal was opened."""
    wal_checkpoints: int
    """WAL checkpoints run by the writer since the journal was opened."""


class JournalWriter:
    """The writer half of a :class:`~.journal.Journal` (which see)."""

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        *,
        entries: list[TaskEntry],
        next_id: int,
        fsync: bool,
        interval: float,
        event_log: EventLog | None = None,
    ) -> None:
        self.path = path
        self.entries = entries
        """The tasks found at open, in id order (read once by the session)."""
        self.next_id = next_id
        """The smallest id no task ever had."""
        self.terminations: list[PendingTermination] = []
        """The terminations found at open, not sent yet (read once by the engine)."""
        self._terminations: dict[int, PendingTermination | None] = {}  # None: delete
        self._connection = connection
        self._fsync = fsync
        self._interval = interval
        self._pending: dict[int, TaskEntry] = {}
        self.event_log = EventLog() if event_log is None else event_log
        """The session's numbered events (every task event but progress), as kept."""
        self._logged: list[tuple[int, int, str]] = []  # (seq, task id, event) to insert
        self._committed_seq = self.event_log.latest or 0  # the newest event the database holds
        self._forgotten: set[int] = set()
        self._data_files: dict[int, Path] = {}
        self._stored_next_id: int | None = None  # the database's, once this journal wrote it
        self._generation = 0  # bumped by every put (and urgent forget)
        self._committed = 0  # the generation the database holds
        self._forgotten_since = 0.0  # when the oldest deletion not committed was asked
        self._deletions_due = False  # an urgent forget: the next commit deletes
        self._urgent = False
        self._soon = False  # a _commit_soon is scheduled
        self._deferred: asyncio.TimerHandle | None = None  # commits deferred entries
        self._waiters: list[asyncio.Future[None]] = []  # lazy flush()es, woken by commits
        self._stopping = False
        self._busy = False  # a commit is running in the worker thread
        self._failure: JournalError | None = None
        self._wakeup = anyio.Event()
        self._lock = anyio.Lock(fast_acquire=True)  # one commit at a time
        self._task_group: anyio.abc.TaskGroup | None = None
        self._commits = 0
        self._last_commit = time.monotonic()
        self._uncheckpointed = 0  # commits since the last WAL checkpoint
        self._wal_checkpoints = 0
        self._wal_checkpointer: sqlite3.Connection | None = None  # opened by the first checkpoint
        self.on_rejected: Callable[[int, JournalError], None] | None = None
        """Called (on the loop) with a task whose entry the journal could not
        record, and why: the entry could not be stored, or the journal cannot write."""

    def _raise_if_cannot_commit(self) -> None:
        """What a flush() still waiting learns: the writer failed, or the journal closed."""
        if self._failure is not None:
            raise self._failure
        if self._task_group is None:
            raise JournalError(str(self.path), "the journal is closed")

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():  # (cancelled with the task waiting on it)
                waiter.set_result(None)

    def statistics(self) -> JournalStatistics:
        """Entries waiting to be committed, and commits made so far."""
        return JournalStatistics(
            pending=len(self._pending)
            + len(self._forgotten)
            + len(self._logged)
            + len(self._terminations),
            commits=self._commits,
            wal_checkpoints=self._wal_checkpoints,
        )

    # -- the writer ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._writer, name="bgtransfer-journal")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit what is pending and close; shielded from cancellation, bounded in time."""
        self._stopping = True
        task_group, self._task_group = self._task_group, None
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()  # a commit in flight still completes
                self._wakeup.set()
                await task_group.__aexit__(None, None, None)
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(EXIT_TIMEOUT) as deadline:
                        if self._failure is None and self._dirty():
                            # The lock is free: the writer is gone and no flush() outlives
                            # the engine.
                            await self._commit(deletions=True, abandon_on_cancel=True)
                    if deadline.cancelled_caught or self._busy:
                        logger.error(
                            "journal %s: the last commit did not finish within %s s; "
                            "the tasks continue from what was last committed",
                            self.path,
                            EXIT_TIMEOUT,
                        )
                    else:  # the worker thread may still use the connection: leave it
                        await run_blocking(close_all, self._wal_checkpointer, self._connection)
            finally:
                if self._deferred is not None:
                    self._deferred.cancel()
                    self._deferred = None
                self._wake_waiters()  # a lazy flush() still waiting: it is told it is closed

    async def _writer(self) -> None:
        while True:
            wait = self._writer_wait()
            if wait is None and self._stopping:
                return
            if wait is not None and (self._urgent or self._stopping or wait <= 0):
                async with self._lock:
                    if self._dirty():
                        await self._commit(deletions=True)
                if self._failure is not None:
                    return
                continue
            if self._uncheckpointed >= WAL_CHECKPOINT_COMMITS:
                await self._checkpoint_wal()  # its own connection: commits go on meanwhile
                continue
            self._wakeup = anyio.Event()
            with anyio.move_on_after(self._interval if wait is None else wait):
                await self._wakeup.wait()

    def _dirty(self) -> bool:
        return self._generation != self._committed or bool(self._forgotten)

    def _writer_wait(self) -> float | None:
        """Seconds the writer's round may still wait (<= 0: due now); None: nothing to do.

        Entries put are due ``interval`` after the last commit, deletions
        ``interval`` after the oldest of them was asked (the commits of urgent
        entries do not take them, and may come too often to leave a gap).
        """
        now = time.monotonic()
        waits = []
        if self._generation != self._committed:
            waits.append(self._last_commit + self._interval - now)
        if self._forgotten:
            waits.append(self._forgotten_since + self._interval - now)
        return min(waits) if waits else None

    async def _checkpoint_wal(self) -> None:
        """Copy the WAL back into the database and empty it, in a thread (it fsyncs).

        First a passive pass without the lock, on a connection of its own (a
        connection serves one call at a time, and in WAL mode a checkpoint and
        commits proceed side by side): it copies nearly everything while commits
        go on. Then, under the lock, a truncating pass copies the frames committed
        meanwhile and empties the WAL (after a pass that overlapped commits, SQLite
        does not always start the WAL over by itself).
        """
        self._uncheckpointed = 0
        try:
            await run_blocking(self._checkpoint_wal_sync, "PASSIVE")
            async with self._lock:
                await run_blocking(self._checkpoint_wal_sync, "TRUNCATE")
        except sqlite3.Error as exc:  # the WAL keeps the data; the next one may succeed
            logger.warning("journal %s: WAL checkpoint failed: %s", self.path, exc)
        else:
            self._wal_checkpoints += 1

    def _checkpoint_wal_sync(self, mode: str) -> None:
        if self._wal_checkpointer is None:
            self._wal_checkpointer = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
        # fetchall: a statement left unfinished would hold a read lock on the WAL.
        self._wal_checkpointer.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()

    def _may_commit_inline(self) -> bool:
        deletions = len(self._forgotten) if self._deletions_due else 0
        rows = len(self._pending) + len(self._logged) + len(self._terminations) + deletions
        return not self._fsync and rows <= INLINE_ROWS

    def _take_batch(self, *, deletions: bool) -> Batch:
        """Everything put, and the deletions when asked (or due)."""
        forgotten: list[int] = []
        trimmed: list[int] = []
        if deletions or self._deletions_due:
            forgotten = list(self._forgotten)
            self._forgotten = set()
            self._deletions_due = False
            trimmed = self.event_log.trim()  # (with the acknowledged tasks' rows)
        batch = Batch(
            entries=list(self._pending.values()),
            forgotten=forgotten,
            files=list(self._data_files.values()),
            generation=self._generation,
            next_id=None if self.next_id == self._stored_next_id else self.next_id,
            logged=self._logged,
            trimmed=trimmed,
            earliest=self.event_log.earliest,
            terminations=list(self._terminations.items()),
        )
        self._pending, self._data_files, self._logged = {}, {}, []
        self._terminations = {}
        self._urgent = False
        return batch

    def _settle(self, batch: Batch, error: Exception | None) -> None:
        if error is not None:
            self._failure = JournalError(str(self.path), f"cannot write: {error}")
            self._failure.__cause__ = error
            logger.error("%s", self._failure)
            for entry in batch.entries:
                self._reject(entry.id, self._failure)
        for task_id, cause in batch.rejected:
            problem = JournalError(str(self.path), f"cannot record task {task_id}: {cause!r}")
            problem.__cause__ = cause
            self._reject(task_id, problem)
        if self._failure is None:
            if batch.logged:
                self._committed_seq = batch.logged[-1][0]
            if batch.forgotten and batch.next_id is not None:
                self._stored_next_id = batch.next_id
            self._committed_to(batch.generation)
        else:
            self._last_commit = time.monotonic()
            self._wake_waiters()

    def _committed_to(self, generation: int) -> None:
        """A commit of what was put until :attr:`generation` was ``generation`` succeeded."""
        self._committed = generation
        self._commits += 1
        self._uncheckpointed += 1
        if self._uncheckpointed >= WAL_CHECKPOINT_COMMITS:
            self._wakeup.set()  # the writer checkpoints, in its thread
        self._last_commit = time.monotonic()
        self._wake_waiters()

    def _reject(self, task_id: int, problem: JournalError) -> None:
        """The task's entry was not recorded and never will be: say so."""
        if self.on_rejected is not None:
            self.on_rejected(task_id, problem)
        else:
            logger.error("%s", problem)

    def _commit_inline(self) -> None:
        """A small commit without fsync, on the loop: a write into the page cache."""
        if len(self._pending) == 1 and self._commit_one():
            return
        batch = self._take_batch(deletions=False)
        try:
            commit_sync(self._connection, batch)
        except Exception as exc:  # the journal's failure (a row's is in batch.rejected)
            self._settle(batch, exc)
        else:
            self._settle(batch, None)

    def _commit_one(self) -> bool:
        """The usual commit a caller waits for (a new task's): its one entry and
        nothing else, without a :class:`Batch`. Whether it did: anything else
        pending, or an error (the entry stays pending: the batch's commit then
        tells a row's problem from the journal's), leaves it to the batch."""
        if self._logged or self._terminations or self._deletions_due or self._data_files:
            return False
        (entry,) = self._pending.values()
        try:
            upsert_one(self._connection, entry)
        except Exception:
            return False
        self._pending = {}
        self._urgent = False
        self._committed_to(self._generation)
        return True

    async def _commit(self, *, deletions: bool = False, abandon_on_cancel: bool = False) -> None:
        """Commit everything pending in one transaction, in a worker thread.

        Shielded: once the batch is taken out of ``_pending`` it must reach the
        database, or a cancellation would drop it. Only the exit's last commit may
        be abandoned (``abandon_on_cancel``), when it overruns ``EXIT_TIMEOUT``.
        """
        batch = self._take_batch(deletions=deletions)
        error: Exception | None = None
        self._busy = True
        try:
            if abandon_on_cancel:
                await anyio.to_thread.run_sync(
                    commit_sync, self._connection, batch, abandon_on_cancel=True
                )
            else:
                await run_blocking(commit_sync, self._connection, batch)
        except Exception as exc:  # the journal's failure (a row's is in batch.rejected)
            error = exc
        finally:
            self._busy = False
        self._settle(batch, error)
