"""The journal's SQLite shell: open, check, migrate, load; then batched commits.

Everything that decides lives in :mod:`bgtransfer._core.journal`; this module only
moves rows. The database is stdlib :mod:`sqlite3` in WAL mode, used by one call
at a time. Work that may wait for the disk runs in a worker thread: opening,
the writer's interval commits, commits that fsync (``durability="fsync"``), and
WAL checkpoints (SQLite's automatic ones are off). A small commit awaited by
:meth:`Journal.flush` without fsync is only a ``write`` into the page cache,
cheaper than the thread hop itself, so it runs on the loop: that is what lets
``await session.download()`` return durable thousands of times a second.

Writes are batched: the engine's :meth:`Journal.put` only records the newest
entry per task in memory. A writer task commits what has gathered in one
transaction, at once when something urgent is waiting (a new task, a state
change, a terminal event, an explicit :meth:`Journal.flush`) and otherwise at
most once per ``interval`` (progress entries). Concurrent callers of
``flush()`` share one commit (group commit). Deleting acknowledged tasks waits
for the writer's round too (:meth:`Journal.forget`), so the commits callers wait
for are mostly one ``INSERT`` statement: every statement costs the loop's time
(figures in ``docs/design.md``, "Statements per commit").

A commit that fails is never dropped silently. When one row is the problem
(it cannot be stored), the batch is committed again one entry at a time: the
good ones are kept and each entry that cannot be stored is *rejected*. When
the journal itself fails (disk full, read-only, I/O error), it stops writing
for good: every entry of that batch and every later one is rejected, and
every :meth:`Journal.flush` raises. A rejected task is reported to
:attr:`Journal.on_rejected` (the engine ends it with a named error).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import attrs

from .._core.journal import (
    COLUMNS,
    MIGRATIONS,
    CorruptEntry,
    TaskEntry,
    entry_from_row,
    entry_to_row,
    scrubbed_fields,
)
from .._core.secrets import DEFAULT_SECRETS, SecretHeaders
from .._exceptions import JournalError
from .files import PRIVATE_FILE_MODE, fsync_dir, fsync_file
from .threads import run_blocking

__all__ = ["JOURNAL_NAME", "Journal", "JournalStatistics"]

logger = logging.getLogger("bgtransfer")

JOURNAL_NAME = "journal.sqlite3"

EXIT_TIMEOUT = 10.0
"""Seconds the final commit may take when the session closes before it is abandoned."""

INLINE_ROWS = 64
"""A flush() committing at most this many rows without fsync commits on the loop."""

WAL_CHECKPOINT_COMMITS = 1000
"""Commits after which the writer copies the WAL back into the database (in a thread)."""

MULTI_ROW_MAX = 16
"""Entries up to this many are committed by one ``INSERT`` listing them all."""

DEFERRED_DELAY = 0.005
"""Seconds a ``deferred`` entry may wait for another commit to take it along."""


def _upsert(rows: int) -> str:
    row = f"({', '.join('?' for _ in COLUMNS)})"
    return (
        f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES {', '.join([row] * rows)} "
        "ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{name} = excluded.{name}" for name in COLUMNS[1:])
    )


_UPSERTS = tuple(_upsert(rows) for rows in range(1, MULTI_ROW_MAX + 1))
"""``_UPSERTS[n - 1]`` writes n entries (SQLite's statement cache keeps them parsed)."""
_UPSERT = _UPSERTS[0]
_DELETE = "DELETE FROM tasks WHERE id = ?"
_NEXT_ID = "UPDATE meta SET value = ? WHERE key = 'next_id'"
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks ORDER BY id"


@attrs.frozen(kw_only=True)
class JournalStatistics:
    """A snapshot of the journal's write batching."""

    pending: int
    """Entries (and deletions) put but not committed yet."""
    commits: int
    """Transactions committed since the journal was opened."""
    wal_checkpoints: int
    """WAL checkpoints run by the writer since the journal was opened."""


class Journal:
    """One background session's journal. Make it with :meth:`open`; enter it to run the
    writer; leave it to commit what is pending (shielded, bounded) and close."""

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        *,
        entries: list[TaskEntry],
        next_id: int,
        fsync: bool,
        interval: float,
    ) -> None:
        self.path = path
        self.entries = entries
        """The tasks found at open, in id order (read once by the session)."""
        self.next_id = next_id
        """The smallest id no task ever had."""
        self._connection = connection
        self._fsync = fsync
        self._interval = interval
        self._pending: dict[int, TaskEntry] = {}
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

    # -- opening ------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        fsync: bool = False,
        interval: float = 1.0,
        migrations: Sequence[Sequence[str]] = MIGRATIONS,
        secrets: SecretHeaders = DEFAULT_SECRETS,
    ) -> Journal:
        """Open (or create) the journal at ``path``, check it, migrate it, load it.

        Raises :class:`~bgtransfer.JournalError` naming the path and the problem
        when the file is not a journal, is damaged or truncated, or was written by
        a newer schema. Never deletes or rewrites anything in that case.
        Rows holding what ``secrets`` deems secret (or a URL's password), as
        earlier versions wrote them, are rewritten without it.
        """
        # Waited for shielded: a connection opened is always handed over (a cancel
        # comes at the caller's next cancellation point, and its cleanup closes the journal).
        connection, entries, next_id = await run_blocking(
            _open_sync, path, fsync, migrations, secrets
        )
        return cls(
            path, connection, entries=entries, next_id=next_id, fsync=fsync, interval=interval
        )

    # -- the engine's side --------------------------------------------------------

    def put(
        self,
        entry: TaskEntry,
        *,
        urgent: bool = False,
        deferred: bool = False,
        data_file: Path | None = None,
    ) -> None:
        """Record ``entry`` as the task's newest state (replacing any pending one).

        ``urgent`` commits soon (once the tasks ready now have run) rather than
        at the next interval. ``deferred`` commits with whichever commit comes
        next, at the latest ``DEFERRED_DELAY`` later: for entries that nothing
        waits on at once (a task's end, which its reader awaits with a lazy
        :meth:`flush`), so that in a busy session they ride along with commits
        that something does wait on. ``data_file`` is the partial file whose
        bytes this entry vouches for: with ``fsync`` durability it is synced
        before the entry is committed.
        """
        if self._failure is not None:  # nothing is committed any more
            self._reject(entry.id, self._failure)
            return
        self._pending[entry.id] = entry
        self.next_id = max(self.next_id, entry.id + 1)
        if self._fsync and data_file is not None:
            self._data_files[entry.id] = data_file
        self._touch(urgent)
        if deferred and not urgent:
            self._defer()

    def forget(self, task_id: int, *, urgent: bool = False) -> None:
        """Delete the task's entry.

        By default (an acknowledged terminal event) the deletion is committed by
        the writer's round, at most ``interval`` later, or at exit, not by the
        commits that ``flush()`` and urgent entries start: a process killed in
        between delivers the event again, which at-least-once delivery allows.
        ``urgent``: with the next commit, and ``flush()`` waits for it (a task no
        later process may find).
        """
        self._pending.pop(task_id, None)
        self._data_files.pop(task_id, None)
        if not self._forgotten:
            self._forgotten_since = time.monotonic()
        self._forgotten.add(task_id)
        if urgent:
            self._deletions_due = True
            self._touch(urgent=True)
        elif self._task_group is None:  # not entered: the exit commits it
            self._wakeup.set()

    def _touch(self, urgent: bool) -> None:
        self._generation += 1
        if urgent:
            self._urgent = True
            if self._task_group is None:  # not entered: the exit commits it
                self._wakeup.set()
            elif not self._soon:
                self._soon = True
                asyncio.get_running_loop().call_soon(self._commit_soon)
        # Otherwise the writer finds it on its next round (at most ``interval``).

    def _defer(self) -> None:
        """See that what is pending is committed within ``DEFERRED_DELAY``.

        One timer serves every entry put while it runs; it is not cancelled by
        the commits that take those entries along (in a busy session that would
        cost more than letting it find nothing to do)."""
        if self._deferred is not None:
            return
        if self._task_group is None:  # not entered: the exit commits it
            self._wakeup.set()
            return
        loop = asyncio.get_running_loop()
        self._deferred = loop.call_later(DEFERRED_DELAY, self._commit_deferred)

    def _commit_deferred(self) -> None:
        self._deferred = None
        if self._committed == self._generation or self._task_group is None:
            return
        self._urgent = True  # if the writer has to do it, it does it now
        self._commit_soon()

    def _commit_soon(self) -> None:
        """Commit urgent entries once the tasks ready now have run (so entries put
        together share a commit): on the loop when the batch is small and nothing
        needs an fsync, else by waking the writer (a worker thread). Waking the
        writer for every urgent entry would cost a thread hop each, since it would
        take the lock before the ``flush()`` that usually follows."""
        self._soon = False
        if self._committed == self._generation or self._failure is not None:
            return
        if self._task_group is not None and not self._lock.locked() and self._may_commit_inline():
            self._commit_inline()
        else:
            self._wakeup.set()

    @property
    def generation(self) -> int:
        """Counts the entries put (and urgent deletions): ``flush(upto=...)`` takes it."""
        return self._generation

    async def flush(
        self, *, shielded: bool = False, lazy: bool = False, upto: int | None = None
    ) -> None:
        """Return once everything put so far is committed; raise the writer's
        :class:`~bgtransfer.JournalError` if it cannot write.

        The caller first lets the other ready tasks run (a scheduling point, but
        not a cancellation point: what was put gets committed), so tasks putting
        at the same time share one commit (group commit). Then, with no commit
        running, it commits itself: on the loop when the batch is small and
        nothing needs an fsync, else in a worker thread, while later callers
        queue on the lock and find their entries committed by the one before.

        ``shielded``: the caller runs in a shielded cancel scope already, so a
        bare yield is not a cancellation point either (and costs a fraction of
        one that shields itself: this is once per file finished).

        ``lazy``: start no commit, wait for one (within ``DEFERRED_DELAY``, as
        for a ``deferred`` entry): a cancellation point, where the waiter may
        give up. What a task's reader waits on before it sees the task's end:
        in a busy session, many ends and the commits other tasks need share
        one transaction.

        ``upto``: only what was put until :attr:`generation` was that value.
        """
        target = self._generation if upto is None else upto
        if self._committed >= target:
            return
        if lazy:
            await self._committed_by_others(target)
            return
        if shielded:
            await asyncio.sleep(0)
        else:
            await anyio.lowlevel.cancel_shielded_checkpoint()
        while self._committed < target:
            self._raise_if_cannot_commit()
            if not self._lock.locked() and self._may_commit_inline():
                self._commit_inline()  # nothing else can commit meanwhile: no await
                continue
            async with self._lock:
                if self._committed < target and self._failure is None:
                    await self._commit(deletions=True)  # (in a thread: they cost nothing here)

    async def _committed_by_others(self, target: int) -> None:
        self._defer()
        while self._committed < target:
            self._raise_if_cannot_commit()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

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
            pending=len(self._pending) + len(self._forgotten),
            commits=self._commits,
            wal_checkpoints=self._wal_checkpoints,
        )

    # -- the writer ---------------------------------------------------------------

    async def __aenter__(self) -> Journal:
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
                        await run_blocking(_close_all, self._wal_checkpointer, self._connection)
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
        return not self._fsync and len(self._pending) + deletions <= INLINE_ROWS

    def _take_batch(self, *, deletions: bool) -> _Batch:
        """Everything put, and the deletions when asked (or due)."""
        forgotten: list[int] = []
        if deletions or self._deletions_due:
            forgotten = list(self._forgotten)
            self._forgotten = set()
            self._deletions_due = False
        batch = _Batch(
            entries=list(self._pending.values()),
            forgotten=forgotten,
            files=list(self._data_files.values()),
            generation=self._generation,
            next_id=None if self.next_id == self._stored_next_id else self.next_id,
        )
        self._pending, self._data_files = {}, {}
        self._urgent = False
        return batch

    def _settle(self, batch: _Batch, error: Exception | None) -> None:
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
            if batch.forgotten and batch.next_id is not None:
                self._stored_next_id = batch.next_id
            self._committed = batch.generation
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
        batch = self._take_batch(deletions=False)
        try:
            _commit_sync(self._connection, batch)
        except Exception as exc:  # the journal's failure (a row's is in batch.rejected)
            self._settle(batch, exc)
        else:
            self._settle(batch, None)

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
                    _commit_sync, self._connection, batch, abandon_on_cancel=True
                )
            else:
                await run_blocking(_commit_sync, self._connection, batch)
        except Exception as exc:  # the journal's failure (a row's is in batch.rejected)
            error = exc
        finally:
            self._busy = False
        self._settle(batch, error)


def _close_all(checkpointer: sqlite3.Connection | None, connection: sqlite3.Connection) -> None:
    if checkpointer is not None:
        checkpointer.close()
    connection.close()  # the last one out checkpoints and removes the WAL


@attrs.frozen(kw_only=True)
class _Batch:
    entries: list[TaskEntry]
    forgotten: list[int]
    files: list[Path]  # durability="fsync": partial files to sync first
    generation: int
    next_id: int | None  # None: the database has it already
    rejected: list[tuple[int, Exception]] = attrs.field(factory=list)
    """Filled by the commit: the entries that could not be stored, and why."""


def _journal_failed(exc: Exception) -> bool:
    """Whether a commit's error is the journal's (its file, its disk, its schema)
    rather than one row's (a value that cannot be bound or stored, a bug
    encoding it: ``ValueError``, ``TypeError``, ``OverflowError``, SQLite's
    ``ProgrammingError``, ``DataError`` and ``InterfaceError``)."""
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.DataError):
        return False
    return isinstance(exc, OSError | sqlite3.DatabaseError)


def _commit_sync(connection: sqlite3.Connection, batch: _Batch) -> None:
    """Commit the batch; when a row is the problem, commit it one entry at a
    time (:func:`_commit_each`). Raises when the journal itself fails."""
    try:
        _commit_all(connection, batch)
    except Exception as exc:
        if _journal_failed(exc):
            raise
        _commit_each(connection, batch)


def _commit_each(connection: sqlite3.Connection, batch: _Batch) -> None:
    """The batch after it failed for a row's sake (rolled back, nothing of it
    kept): each entry in a transaction of its own, so one that cannot be stored
    is named in ``batch.rejected`` and takes no other with it."""
    for entry in batch.entries:
        try:
            connection.execute(_UPSERT, entry_to_row(entry))
        except Exception as exc:
            if _journal_failed(exc):
                raise
            batch.rejected.append((entry.id, exc))
    if batch.forgotten:
        _commit_all(connection, attrs.evolve(batch, entries=[], files=[]))


def _commit_all(connection: sqlite3.Connection, batch: _Batch) -> None:
    """One transaction, in as few statements as the batch allows: each costs the
    loop's time in a busy process (and releases and retakes the GIL, a wait
    when the file thread holds it). A batch of a few entries and no deletions,
    the usual commit that a caller waits for, is one ``INSERT`` and so its own
    transaction. ``next_id`` is stored when rows are deleted and it changed:
    while a task's row exists it bounds the ids by itself (ids never repeat
    either way)."""
    for path in batch.files:  # durability="fsync": the bytes before the entries that count them
        fsync_file(path)
    rows = [entry_to_row(entry) for entry in batch.entries]
    ids = batch.forgotten
    if not ids and len(rows) <= MULTI_ROW_MAX:
        if rows:
            connection.execute(_UPSERTS[len(rows) - 1], [value for row in rows for value in row])
        return
    connection.execute("BEGIN")
    try:
        if rows:
            connection.executemany(_UPSERT, rows)
        if ids:
            connection.executemany(_DELETE, [(task_id,) for task_id in ids])
            if batch.next_id is not None:
                connection.execute(_NEXT_ID, (str(batch.next_id),))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


# -- opening, in the worker thread ------------------------------------------------------


def _open_sync(
    path: Path,
    fsync: bool,
    migrations: Sequence[Sequence[str]],
    secrets: SecretHeaders = DEFAULT_SECRETS,
) -> tuple[sqlite3.Connection, list[TaskEntry], int]:
    where = str(path)
    try:
        if not path.exists():
            _create(path, migrations)
        else:
            _check_size(path, where)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise JournalError(where, f"cannot open it: {exc}") from exc
    except OSError as exc:
        raise JournalError(where, f"cannot open it: {exc.strerror or exc}") from exc
    try:
        return connection, *_load(connection, where, fsync, migrations, secrets)
    except BaseException:
        connection.close()
        raise


def _check_size(path: Path, where: str) -> None:
    """An SQLite file is a whole number of pages; anything else was cut short.

    (SQLite itself reads a short last page as zeros and may not notice.)
    """
    size = path.stat().st_size
    if size == 0:
        raise JournalError(where, "the file is empty (truncated?); nothing was changed or deleted")
    with path.open("rb") as file:
        header = file.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return  # not SQLite at all: the open reports it
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size and size % page_size:
        raise JournalError(
            where,
            f"truncated: {size} bytes is not a whole number of {page_size}-byte pages; "
            "nothing was changed or deleted",
        )


def _load(
    connection: sqlite3.Connection,
    where: str,
    fsync: bool,
    migrations: Sequence[Sequence[str]],
    secrets: SecretHeaders = DEFAULT_SECRETS,
) -> tuple[list[TaskEntry], int]:
    newest = len(migrations)
    try:
        # Read-only checks first: a file that is refused is left exactly as it was
        # (switching to WAL would rewrite its header).
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > newest:
            raise JournalError(
                where,
                f"written by a newer bgtransfer (schema version {version}; this version "
                f"reads up to {newest}); upgrade bgtransfer to open it",
            )
        if version == 0:
            raise JournalError(where, "not a bgtransfer journal (no schema version)")
        problems = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise JournalError(where, f"the database is damaged: {'; '.join(problems[:3])}")
        connection.execute("PRAGMA journal_mode = WAL")
        _migrate(connection, where, version, migrations)
        connection.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
        # Checkpoints fsync: the writer runs them in its thread, never a commit on the loop.
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        rows = connection.execute(_SELECT).fetchall()
        meta = connection.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise JournalError(where, f"not a readable journal database: {exc}") from exc
    try:
        entries = [entry_from_row(row, secrets) for row in rows]
    except CorruptEntry as exc:
        raise JournalError(where, f"damaged task record: {exc}") from None
    _scrub(connection, where, rows, entries)
    if meta is None or not str(meta[0]).isdecimal():
        raise JournalError(where, "damaged: the next task id is missing")
    next_id = max(int(meta[0]), *(entry.id + 1 for entry in entries), 1)
    return entries, next_id


def _scrub(
    connection: sqlite3.Connection,
    where: str,
    rows: Sequence[Sequence[object]],
    entries: Sequence[TaskEntry],
) -> None:
    """Rewrite the rows an earlier version wrote with a secret in them (a URL's
    password, a header now deemed secret), which reading dropped; with
    ``secure_delete`` and the WAL truncated, so the old bytes leave the files."""
    stale = []
    for row, entry in zip(rows, entries, strict=True):
        fields = scrubbed_fields(row, entry)
        if fields is not None:
            stale.append((*fields, entry.id))
    if not stale:
        return
    try:
        connection.execute("PRAGMA secure_delete = ON")
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("UPDATE tasks SET url = ?, headers = ? WHERE id = ?", stale)
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        connection.execute("PRAGMA secure_delete = OFF")
    except sqlite3.Error as exc:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise JournalError(
            where, f"cannot remove secrets an earlier version stored: {exc}"
        ) from exc


def _migrate(
    connection: sqlite3.Connection, where: str, version: int, migrations: Sequence[Sequence[str]]
) -> None:
    newest = len(migrations)
    if version >= newest:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version, newest):
            for statement in migrations[step]:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {newest}")
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        connection.execute("ROLLBACK")
        raise JournalError(
            where, f"migrating from schema {version} to {newest} failed: {exc}"
        ) from exc


def _create(path: Path, migrations: Sequence[Sequence[str]]) -> None:
    """A new journal appears whole or not at all: built beside, then renamed in."""
    building = path.with_name(path.name + ".new")
    for leftover in (building, building.with_name(building.name + "-journal")):
        leftover.unlink(missing_ok=True)
    fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    os.close(fd)
    connection = sqlite3.connect(building, isolation_level=None)
    try:
        _migrate(connection, str(path), 0, migrations)
    finally:
        connection.close()
    fsync_file(building)
    os.rename(building, path)
    fsync_dir(path.parent)
