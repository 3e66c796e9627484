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
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import anyio.lowlevel

from .._core.codec import encode_logged
from .._core.events import LoggedEvent
from .._core.journal import MIGRATIONS, TaskEntry
from .._core.secrets import DEFAULT_SECRETS, SecretHeaders
from .._core.terminations import PendingTermination
from .journal_open import open_sync as _open_sync
from .journal_writer import JournalStatistics, JournalWriter
from .threads import run_blocking

__all__ = ["JOURNAL_NAME", "Journal", "JournalStatistics"]

JOURNAL_NAME = "journal.sqlite3"

L = TypeVar("L", bound=LoggedEvent)

DEFERRED_DELAY = 0.005
"""Seconds a ``deferred`` entry may wait for another commit to take it along."""


class Journal(JournalWriter):
    """One background session's journal. Make it with :meth:`open`; enter it to run the
    writer; leave it to commit what is pending (shielded, bounded) and close."""

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
        event_log_size: int = 4096,
    ) -> Journal:
        """Open (or create) the journal at ``path``, check it, migrate it, load it.

        Raises :class:`~bgtransfer.JournalError` naming the path and the problem
        when the file is not a journal, is damaged or truncated, or was written by
        a newer schema. Never deletes or rewrites anything in that case.
        Rows holding what ``secrets`` deems secret (or a URL's password), as
        earlier versions wrote them, are rewritten without it. ``event_log_size``:
        how many events the event log keeps at least (see :attr:`event_log`).
        """
        # Waited for shielded: a connection opened is always handed over (a cancel
        # comes at the caller's next cancellation point, and its cleanup closes the journal).
        opened = await run_blocking(_open_sync, path, fsync, migrations, secrets, event_log_size)
        journal = cls(
            path,
            opened.connection,
            entries=opened.entries,
            next_id=opened.next_id,
            fsync=fsync,
            interval=interval,
            event_log=opened.event_log,
        )
        journal.terminations = opened.terminations
        return journal

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
        self.event_log.release(task_id)
        if not self._forgotten:
            self._forgotten_since = time.monotonic()
        self._forgotten.add(task_id)
        if urgent:
            self._deletions_due = True
            self._touch(urgent=True)
        elif self._task_group is None:  # not entered: the exit commits it
            self._wakeup.set()

    def put_termination(self, pending: PendingTermination) -> None:
        """Record a termination to send (replacing the task's pending one);
        committed soon, and by the next :meth:`flush`."""
        if self._failure is None:
            self._terminations[pending.task_id] = pending
            self._touch(urgent=True)

    def drop_termination(self, task_id: int) -> None:
        """Forget the task's termination (sent, or given up); committed soon."""
        if self._failure is None:
            self._terminations[task_id] = None
            self._touch(urgent=True)

    def log(self, event: L) -> L:
        """Number ``event`` and append it to the event log: committed with what is
        put next to it (a terminal event with its task's end, in one
        transaction), at the latest ``DEFERRED_DELAY`` later. A reader hands it
        out only once :meth:`logged` says the database holds it, so a number a
        reader has seen is never given again by a later process."""
        logged = self.event_log.append(event)
        if self._failure is None:
            row = (logged.seq, logged.task_id, json.dumps(encode_logged(logged)))
            self._logged.append(row)  # type: ignore[arg-type]  # (seq is set)
            self._touch(urgent=False)
            self._defer()
        return logged

    async def logged(self, seq: int) -> None:
        """Return once the event numbered ``seq`` is committed (at once when it
        is): a cancellation point when it waits, as a lazy :meth:`flush`."""
        if seq > self._committed_seq:
            await self.flush(lazy=True)

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
        self,
        *,
        shielded: bool = False,
        lazy: bool = False,
        upto: int | None = None,
        at_once: bool = False,
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

        ``at_once``: no scheduling point first; the caller had its own just
        before it put what it flushes (a new task: ``LocalBackend.submit``),
        so a small batch is committed on the loop without a turn in between.
        """
        target = self._generation if upto is None else upto
        if self._committed >= target:
            return
        if lazy:
            await self._committed_by_others(target)
            return
        if shielded:
            await asyncio.sleep(0)
        elif not at_once:
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
