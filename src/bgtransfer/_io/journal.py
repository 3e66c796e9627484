"""The journal's SQLite shell: open, check, migrate, load; then batched commits off the loop.

Everything that decides lives in :mod:`bgtransfer._core.journal`; this module only
moves rows. The database is stdlib :mod:`sqlite3` in WAL mode. All database work
runs in a worker thread, one call at a time, so the event loop never waits for
the disk.

Writes are batched: the engine's :meth:`Journal.put` only records the newest
entry per task in memory. A writer task commits what has gathered in one
transaction, at once when something urgent is waiting (a new task, a state
change, a terminal event, an explicit :meth:`Journal.flush`) and otherwise at
most once per ``interval`` (progress checkpoints). Concurrent callers of
``flush()`` share one commit (group commit).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from .._core.journal import (
    COLUMNS,
    MIGRATIONS,
    CorruptEntry,
    TaskEntry,
    entry_from_row,
    entry_to_row,
)
from .._exceptions import JournalError
from .files import PRIVATE_FILE_MODE, fsync_dir, fsync_file

__all__ = ["JOURNAL_NAME", "Journal", "JournalStatistics"]

logger = logging.getLogger("bgtransfer")

JOURNAL_NAME = "journal.sqlite3"

EXIT_TIMEOUT = 10.0
"""Seconds the final commit may take when the session closes before it is abandoned."""

_UPSERT = (
    f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in COLUMNS[1:])
)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks ORDER BY id"


@attrs.frozen(kw_only=True)
class JournalStatistics:
    """A snapshot of the journal's write batching."""

    pending: int
    """Entries (and deletions) put but not committed yet."""
    commits: int
    """Transactions committed since the journal was opened."""


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
        self._generation = 0  # bumped by every put/forget
        self._committed = 0  # the generation the database holds
        self._urgent = False
        self._stopping = False
        self._busy = False  # a commit is running in the worker thread
        self._failure: JournalError | None = None
        self._wakeup = anyio.Event()
        self._lock = anyio.Lock(fast_acquire=True)  # one commit at a time
        self._task_group: anyio.abc.TaskGroup | None = None
        self._commits = 0
        self._last_commit = 0.0

    # -- opening ------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        fsync: bool = False,
        interval: float = 1.0,
        migrations: Sequence[Sequence[str]] = MIGRATIONS,
    ) -> Journal:
        """Open (or create) the journal at ``path``, check it, migrate it, load it.

        Raises :class:`~bgtransfer.JournalError` naming the path and the problem
        when the file is not a journal, is damaged or truncated, or was written by
        a newer schema. Never deletes or rewrites anything in that case.
        """
        connection, entries, next_id = await anyio.to_thread.run_sync(
            _open_sync, path, fsync, migrations
        )
        return cls(
            path, connection, entries=entries, next_id=next_id, fsync=fsync, interval=interval
        )

    # -- the engine's side --------------------------------------------------------

    def put(self, entry: TaskEntry, *, urgent: bool = False, data_file: Path | None = None) -> None:
        """Record ``entry`` as the task's newest state (replacing any pending one).

        ``urgent`` commits soon rather than at the next interval. ``data_file`` is
        the partial file whose bytes this entry vouches for: with ``fsync``
        durability it is synced before the entry is committed.
        """
        self._pending[entry.id] = entry
        self.next_id = max(self.next_id, entry.id + 1)
        if self._fsync and data_file is not None:
            self._data_files[entry.id] = data_file
        self._touch(urgent)

    def forget(self, task_id: int) -> None:
        """Delete the task's entry (its terminal event was delivered)."""
        self._pending.pop(task_id, None)
        self._data_files.pop(task_id, None)
        self._forgotten.add(task_id)
        self._touch(urgent=False)

    def _touch(self, urgent: bool) -> None:
        self._generation += 1
        if urgent:
            self._urgent = True
            self._wakeup.set()
        # Otherwise the writer finds it on its next round (at most ``interval``).

    async def flush(self) -> None:
        """Return once everything put so far is committed; raise the writer's
        :class:`~bgtransfer.JournalError` if it cannot write.

        The caller commits itself when no commit is running (one thread hop);
        concurrent callers queue on the lock and find their entries committed by
        the one before them (group commit).
        """
        target = self._generation
        while self._committed < target:
            if self._failure is not None:
                raise self._failure
            if self._task_group is None:
                raise JournalError(str(self.path), "the journal is closed")
            async with self._lock:
                if self._committed < target and self._failure is None:
                    await self._commit()

    def statistics(self) -> JournalStatistics:
        """Entries waiting to be committed, and commits made so far."""
        return JournalStatistics(
            pending=len(self._pending) + len(self._forgotten), commits=self._commits
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
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(EXIT_TIMEOUT) as deadline:
                    if self._failure is None and self._generation != self._committed:
                        await self._commit(abandon_on_cancel=True)  # the lock is free:
                        # the writer is gone and no flush() outlives the engine
                if deadline.cancelled_caught or self._busy:
                    logger.error(
                        "journal %s: the last commit did not finish within %s s; "
                        "the tasks continue from their previous checkpoint",
                        self.path,
                        EXIT_TIMEOUT,
                    )
                else:  # the worker thread may still use the connection: leave it
                    await anyio.to_thread.run_sync(self._connection.close)

    async def _writer(self) -> None:
        while True:
            dirty = self._generation != self._committed
            if not dirty and self._stopping:
                return
            waited = anyio.current_time() - self._last_commit
            if dirty and (self._urgent or self._stopping or waited >= self._interval):
                async with self._lock:
                    if self._generation != self._committed:
                        await self._commit()
                if self._failure is not None:
                    return
                continue
            self._wakeup = anyio.Event()
            with anyio.move_on_after(self._interval - waited if dirty else self._interval):
                await self._wakeup.wait()

    async def _commit(self, *, abandon_on_cancel: bool = False) -> None:
        """Commit everything pending in one transaction.

        Shielded: once the batch is taken out of ``_pending`` it must reach the
        database, or a cancellation would drop it. Only the exit's last commit may
        be abandoned (``abandon_on_cancel``), when it overruns ``EXIT_TIMEOUT``.
        """
        entries = list(self._pending.values())
        forgotten = list(self._forgotten)
        files = list(self._data_files.values())
        generation, next_id = self._generation, self.next_id
        self._pending, self._forgotten, self._data_files = {}, set(), {}
        self._urgent = False
        self._busy = True
        try:
            with anyio.CancelScope(shield=not abandon_on_cancel):
                await anyio.to_thread.run_sync(
                    self._commit_sync,
                    entries,
                    forgotten,
                    files,
                    next_id,
                    abandon_on_cancel=abandon_on_cancel,
                )
        except (sqlite3.Error, OSError) as exc:
            self._failure = JournalError(str(self.path), f"cannot write: {exc}")
            logger.error("%s", self._failure)  # noqa: TRY400 - the message says it all
        finally:
            self._busy = False
        if self._failure is None:
            self._committed = generation
            self._commits += 1
        self._last_commit = anyio.current_time()

    def _commit_sync(
        self, entries: list[TaskEntry], forgotten: list[int], files: list[Path], next_id: int
    ) -> None:
        for path in files:  # durability="fsync": the bytes before the checkpoint
            fsync_file(path)
        connection = self._connection
        connection.execute("BEGIN")
        try:
            connection.executemany(_UPSERT, [entry_to_row(entry) for entry in entries])
            connection.executemany("DELETE FROM tasks WHERE id = ?", [(i,) for i in forgotten])
            connection.execute("UPDATE meta SET value = ? WHERE key = 'next_id'", (str(next_id),))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


# -- opening, in the worker thread ------------------------------------------------------


def _open_sync(
    path: Path, fsync: bool, migrations: Sequence[Sequence[str]]
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
        return connection, *_load(connection, where, fsync, migrations)
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
    connection: sqlite3.Connection, where: str, fsync: bool, migrations: Sequence[Sequence[str]]
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
        rows = connection.execute(_SELECT).fetchall()
        meta = connection.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise JournalError(where, f"not a readable journal database: {exc}") from exc
    try:
        entries = [entry_from_row(row) for row in rows]
    except CorruptEntry as exc:
        raise JournalError(where, f"damaged task record: {exc}") from None
    if meta is None or not str(meta[0]).isdecimal():
        raise JournalError(where, "damaged: the next task id is missing")
    next_id = max(int(meta[0]), *(entry.id + 1 for entry in entries), 1)
    return entries, next_id


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
