"""Tasks that come back, as the engine takes them: the journal's, when a
session reopens (each entry by its kind's :class:`~.reattacher.Reattacher`),
and resume data's (a new task adopting the partial file).

The half of :class:`~bgtransfer._engine.engine.Engine` between its scheduler
and its commands: it registers and queues what the reattachers rebuild.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import anyio.lowlevel

from .._core.config import HeaderPairs
from .._core.journal import TaskEntry
from .._core.resume_data import ResumeData
from .._core.states import TaskState
from .._core.terminations import PendingTermination
from .._exceptions import SessionClosedError
from .._io.threads import run_blocking
from .download import Downloader
from .download_job import DownloadJob, download_job
from .reattacher import Reattached, Reattacher
from .record import TaskRecord
from .restore import Restorer
from .scheduler import Scheduler
from .terminations import Terminator
from .upload_tasks import Uploads

__all__ = ["Restoring"]


class Restoring(Scheduler):
    """Reattach and resume data for an engine (its state is the engine's)."""

    _restorer: Restorer
    _uploads: Uploads
    _terminator: Terminator
    _download: Downloader
    _next_id: int
    _invalidated: bool
    _replays_pending: int

    async def restore(self, entries: Sequence[TaskEntry]) -> None:
        """Take over the tasks a previous process left in the journal.

        Running tasks queue again from the bytes on disk, suspended ones stay
        suspended, and tasks that ended (or whose move into place was under way)
        get their terminal event, to be delivered again until acknowledged. Call
        once, after entering and before any ``submit``.
        """
        assert self._journal is not None
        assert not self._records
        # Each entry is reattached by its kind's Reattacher (the journal's kind column).
        reattachers: dict[str, Reattacher] = {"download": self._restorer, "upload": self._uploads}
        leftovers: dict[str, list[TaskRecord]] = {kind: [] for kind in reattachers}
        came_back: list[Reattached] = []
        for kind, reattacher in reattachers.items():
            came_back += await reattacher.reattach([e for e in entries if e.kind == kind])
        for back in sorted(came_back, key=lambda back: back.record.id):
            record = back.record
            self._records[record.id] = self._downloading(record)
            if record.terminal is not None:
                self._replays_pending += 1
                if back.leftover:
                    leftovers[record.kind].append(record)
                if back.newly_ended:  # ended at reattach: its event goes in the log too
                    assert record.terminal is not None
                    record.terminal = self._journal.log(record.terminal)
                    self._journal_task(record, urgent=True)
                continue
            if record.claims_destination:
                self._claims[record.destination_key] = record.id
            if record.state is TaskState.RUNNING:
                self._start(self._supervisor.enqueue(record.id, record.origin, now=self.clock()))
        self._next_id = max([self._next_id, *(entry.id + 1 for entry in entries)])
        # Gone before any terminal event can be acknowledged (and the task forgotten
        # by the journal): a process killed after that would leave them to nobody.
        for kind, reattacher in reattachers.items():
            await reattacher.remove_leftovers(leftovers[kind])

    def recover_terminations(self, found: Sequence[PendingTermination]) -> None:
        """Send, in the background, the terminations of cancelled uploads that a
        previous process journalled but did not see answered (see
        :mod:`.terminations`); the session's start does not wait for them."""
        if found:
            self._spawn(self._terminator.recover, list(found))

    async def flush(self, *, at_once: bool = False) -> None:
        """Return once the journal holds everything done so far.

        A scheduling point, never a cancellation point: a caller that just made
        a task gets it back. ``at_once``: no scheduling point either, the
        caller had its own just before it made the task (``LocalBackend``'s
        ``submit``s): a commit on the loop then leaves no await between the
        new task and its handle; one in a worker thread waits as without."""
        if self._journal is not None:
            await self._journal.flush(at_once=at_once)
        elif not at_once:
            await anyio.lowlevel.cancel_shielded_checkpoint()

    async def submit_resumed(
        self,
        data: ResumeData,
        destination: str | os.PathLike[str] | None,
        *,
        headers: HeaderPairs,
    ) -> TaskRecord:
        """A new task continuing from resume data; it adopts the partial file.

        The partial file is moved into this session's partials with one rename, so
        of two tasks started from the same resume data at once exactly one gets
        it; the other raises :class:`InvalidResumeDataError`. The new task is in
        the journal, naming the file it adopts, before the rename: a process
        killed in between leaves the next one to finish the move, never bytes
        that no task owns.

        Only resume data this state directory signed is taken (its MAC checked
        first), and only a regular file in a ``partials/`` directory of it;
        anything else raises :class:`InvalidResumeDataError` before any file is
        touched.
        """
        self._check_open()
        if data.kind == "upload":
            return await self._submit_resumed_upload(data, headers=headers)
        url, origin, source = await self._restorer.locate(data)
        self._check_open()  # it may have closed meanwhile
        record = self._restorer.resumed_record(
            self._next_id, data, destination, url=url, origin=origin, headers=headers
        )
        self._next_id += 1
        self._records[record.id] = self._downloading(record)
        self._claims[record.destination_key] = record.id
        job = download_job(record)
        job.adopting = str(source)  # a crash before the rename: the next process does it
        self._journal_task(record)
        try:
            await self.flush()
            await self._restorer.adopt_partial(record, source, data.offset)
            job.adopting = None
        except BaseException:
            del self._records[record.id]
            if self._claims.get(record.destination_key) == record.id:
                del self._claims[record.destination_key]
            if self._journal is not None:
                self._journal.forget(record.id, urgent=True)  # the caller is told it failed
            raise
        job.announce_resume = True
        job.may_have_partial = True
        self._start(self._supervisor.enqueue(record.id, record.origin, now=self.clock()))
        return record

    async def _submit_resumed_upload(self, data: ResumeData, *, headers: HeaderPairs) -> TaskRecord:
        """A new task continuing a resumable upload from its resume data (the
        server holds the bytes: nothing local to adopt)."""
        record = await run_blocking(
            functools.partial(self._uploads.resumed_record, self._next_id, data, headers=headers)
        )
        self._check_open()  # it may have closed meanwhile
        if record.id != self._next_id:  # another task was made meanwhile: renumber
            return await self._submit_resumed_upload(data, headers=headers)
        self._next_id += 1
        self._records[record.id] = record
        if record.claims_destination:
            self._claims[record.destination_key] = record.id
        self._journal_task(record)
        await self.flush()
        self._start(self._supervisor.enqueue(record.id, record.origin, now=self.clock()))
        return record

    def _check_open(self) -> None:
        self._check_alive()
        if self._invalidated:
            raise SessionClosedError("the session was invalidated and accepts no new tasks")

    def _check_alive(self) -> None:
        if self._task_group is None or self._draining:
            raise SessionClosedError("the session is not open; use 'async with Session(...)'")

    def _downloading(self, record: TaskRecord) -> TaskRecord:
        """The record, its download job (if it is one) bound to the downloader."""
        if isinstance(record.job, DownloadJob):
            record.job.downloader = self._download
        return record
