"""The engine: the commands, queries and lifecycle of a set of transfer tasks.

The engine knows nothing of identifiers or handles, and of the state directory
only that no destination may be inside it: it takes requests (:mod:`.submitting`),
has them validated (:mod:`.admission`, :mod:`.upload_tasks`), runs them under
the connection limits (:mod:`.scheduler`, :mod:`.download`, :mod:`.upload`,
:mod:`.segments`) and publishes their events (:mod:`.hub`); a reopened
session's tasks come back through :mod:`.restoring`. Fronts reach it through
the task backend protocol (:mod:`.backend`): :class:`~.local.LocalBackend`
adapts it, :mod:`.startup` opens it for a session, and the daemon serves the
same engine behind a Unix socket.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from .._core.config import Configuration
from .._core.metrics import SessionMetrics, TaskMetrics
from .._core.secrets import SecretHeaders
from .._core.states import PUBLIC, Input, Signal, TaskState
from .._core.supervisor import (
    Supervisor,
    SupervisorStatistics,
)
from .._exceptions import (
    JournalError,
)
from .._io.client import descriptor_slots, make_client
from .admission import Admission, Request
from .auth import Authenticator
from .backlog import what_was_missed
from .download import Downloader
from .fetch import Fetcher
from .hub import EventHub, EventStream
from .journaling import TaskJournal
from .metering import Metering
from .record import TaskRecord
from .restore import Restorer
from .submitting import Submitting
from .terminations import Terminator
from .upload import Uploader
from .upload_tasks import Uploads

if TYPE_CHECKING:
    pass

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Engine", "Request", "TaskJournal"]

logger = logging.getLogger("bgtransfer")


class Engine(Submitting):
    """Runs download tasks under a :class:`Configuration`; use as an async context manager.

    With a ``journal`` the engine is *persistent*: it records every task there,
    and when it closes (or its host is cancelled) running tasks are journaled
    where they stand for a later process rather than cancelled. Without one it is ephemeral: closing
    cancels what has not ended.
    """

    def __init__(
        self,
        *,
        config: Configuration,
        downloads_dir: Path,
        partials_dir: Path,
        resume_key: bytes,
        state_dir: Path | None = None,
        resume_root: Path | None = None,
        journal: TaskJournal | None = None,
        next_id: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``resume_key`` signs the resume data handed out and checks what comes
        back; ``resume_root``: resume data may name a partial file of any session
        there (None: only of ``partials_dir``). ``state_dir``: no destination may
        lie inside it, but for ``downloads_dir``."""
        self.config = config
        self.clock = clock
        self._slots = descriptor_slots(config.max_concurrent_transfers)
        self._supervisor = Supervisor(
            per_host_limit=config.max_connections_per_host, total_limit=self._slots
        )
        self._hub = EventHub(  # "explicit": only the application acknowledges
            on_delivered=self.acknowledge if config.acknowledge == "auto" else None,
            durable=self.durable if journal is not None else None,
            logged=self.logged if journal is not None else None,
        )
        self._records: dict[int, TaskRecord] = {}
        self._secrets = SecretHeaders(config.secret_headers)
        self._admission = Admission(
            config=config,
            downloads_dir=downloads_dir,
            partials_dir=partials_dir,
            state_dir=state_dir,
            secrets=self._secrets,
        )
        self._claims = self._admission.claims  # destinations of live tasks (as text)
        self._restorer = Restorer(
            config=config,
            admission=self._admission,
            partials_dir=partials_dir,
            resume_key=resume_key,
            resume_root=resume_root,
            fsync=journal is not None and config.durability == "fsync",
        )
        self._next_id = next_id
        self._journal = journal
        if journal is not None:
            journal.on_rejected = self._journal_rejected
        self._task_group: anyio.abc.TaskGroup | None = None
        self._client: aiohttp.ClientSession | None = None
        self._draining = False  # going down: start nothing more
        self._invalidated = False
        self._replays_pending = 0
        self._events_delivered = anyio.Event()
        auth = Authenticator(config)  # (one for both: credentials given count for either)
        auth.give_back = self._give_back
        self._metering = metering = Metering()  # (one for both: the session's tally)
        self._download = Downloader(
            config=config,
            auth=auth,
            metering=metering,
            clock=clock,
            journal=journal,
            resume_key=resume_key,
            secrets=self._secrets,
            hub=self._hub,
            supervisor=self._supervisor,
            start=self._start,
            journal_task=self._journal_task,
            flush_for=self._flush_for,
            publish=self._publish,
            hold_origin=self._hold_origin,
        )
        self._terminator = Terminator(config=config, journal=journal)
        uploader = Uploader(
            config=config,
            auth=auth,
            metering=metering,
            clock=clock,
            secrets=self._secrets,
            fsync=journal is not None and config.durability == "fsync",
            publish=self._publish,
            hold_origin=self._hold_origin,
            journal_task=None if journal is None else self._journal_task,
            flush_for=None if journal is None else self._flush_for,
            resume_key=resume_key,
            terminator=self._terminator,
        )
        self._fetcher = Fetcher(config=config, auth=auth, secrets=self._secrets, hold=self._hold)
        self._slot_waiters = {}
        self._fetch_scopes: dict[int, anyio.CancelScope] = {}
        self._uploads = Uploads(
            config=config,
            admission=self._admission,
            partials_dir=partials_dir,
            uploader=uploader,
            secrets=self._secrets,
            resume_key=resume_key,
        )

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        self._client = make_client(self.config, self._slots)
        self._download.client = self._uploads.uploader.client = self._client
        self._terminator.client = self._client
        self._fetcher.client = self._client
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Stop every runner, wait for their cleanup, close the client.

        Persistent: running tasks are journaled where they stand (they continue in
        the next process); queued and suspended ones stay as they are. Ephemeral:
        every task that has not ended is cancelled.

        The exception leaving the ``async with`` body (if any) is not handed to the
        task group: the application's own error comes out as it went in, never
        wrapped in an exception group.
        """
        self._draining = True
        for scope in self._fetch_scopes.values():
            scope.cancel()  # their callers get SessionClosedError
        try:
            for record in list(self._records.values()):
                if self._journal is None:
                    self._cancel(record)
                elif record.running:
                    record.interrupt()
            if self._task_group is not None:
                # Runners are all stopped; this also ends the timers holding an
                # origin (Retry-After), then waits for the runners' cleanup.
                self._task_group.cancel_scope.cancel()
                await self._task_group.__aexit__(None, None, None)
        finally:
            self._task_group = None
            with anyio.CancelScope(shield=True):
                self._hub.close()
                for record in self._records.values():
                    record.set_done()  # waiters of unfinished tasks learn it is closed
                if self._client is not None:
                    await self._client.close()
        return None

    # -- queries ------------------------------------------------------------------

    def records(self) -> list[TaskRecord]:
        return list(self._records.values())

    def record(self, task_id: int) -> TaskRecord:
        """The task's record (``KeyError`` for an id this engine never had)."""
        return self._records[task_id]

    def statistics(self) -> SupervisorStatistics:
        return self._supervisor.statistics()

    def task_metrics(self, task_id: int) -> TaskMetrics:
        return self._metering.task(self._records[task_id])

    def metrics(self) -> SessionMetrics:
        return self._metering.session()

    def subscribe(
        self, task_id: int | None, *, follow: bool = True, since: int | None = None
    ) -> EventStream[Any]:
        """A stream of one task's events (or every task's, with None).

        A late subscriber first gets what it missed in condensed form: one
        progress event with the total so far, and the terminal event if the task
        has ended; so it too sees exactly one terminal event per task. The
        session's stream then says where that backlog ends (``EventsDeliveredEvent``),
        and ends there unless it should ``follow`` the live events.

        ``since`` (the session's stream of a persistent engine only): the backlog
        is instead every logged event numbered after it, then the progress of
        each task still running; or, when the log cannot answer it, an
        ``EventsGapEvent`` and the condensed backlog above.
        """
        journal = self._journal
        log = None if journal is None else journal.event_log
        backlog, replayed = what_was_missed(self._records, log, task_id, since)
        cursor = None if log is None else log.latest
        return self._hub.subscribe(
            task_id, backlog, replayed=replayed, follow=follow, cursor=cursor
        )

    def acknowledge(self, task_id: int, *, urgent: bool = False) -> None:
        """A consumer has seen the task's terminal event: it is not delivered again
        by a later process. Nothing happens for a task that has not ended.
        ``urgent`` (the application's own call; SessionClosedError once the
        session is closed): the journal forgets it with the next commit
        (``flush()`` waits for it), even when it was acknowledged before."""
        if urgent:
            self._check_alive()
        record = self._records.get(task_id)
        if record is None or record.terminal is None or (record.acked and not urgent):
            return
        if self._journal is not None:
            self._journal.forget(task_id, urgent=urgent)
        if record.acked:
            return
        record.acked = True
        if record.replayed:
            self._replays_pending -= 1
            if self._replays_pending == 0:
                self._events_delivered.set()

    async def wait_events_delivered(self) -> None:
        """Return once every terminal event replayed from the journal is acknowledged."""
        if self._replays_pending:
            await self._events_delivered.wait()
        else:
            await anyio.lowlevel.checkpoint()

    async def durable(self, task_id: int) -> None:
        """Return once the journal holds the task's end, or has failed.

        What a terminal event's delivery waits for: a cancellation point, and
        lazy (the commit that takes the end along, at the latest the one its
        deferred entry is due, ``DEFERRED_DELAY`` later). A journal that cannot
        write does not hold the event back: its error is raised by the calls
        that commit (``download()``, ``flush()``...) and logged."""
        if self._journal is None:
            return
        record = self._records.get(task_id)
        upto = None if record is None else record.end_generation
        with contextlib.suppress(JournalError):
            await self._journal.flush(lazy=True, upto=upto)

    async def logged(self, seq: int) -> None:
        """Return once the event log holds the event numbered ``seq``, or the
        journal has failed (as :meth:`durable`)."""
        if self._journal is not None:
            with contextlib.suppress(JournalError):
                await self._journal.logged(seq)

    async def journal_running(self) -> None:
        """Record where every running task stands now (the bytes on disk) and
        commit: what a process about to end does (SIGTERM). The tasks go on."""
        if self._journal is None:
            return
        for record in self._records.values():
            if record.running and record.terminal is None:
                self._journal_task(record, urgent=True, data=True)
        await self._journal.flush()

    # -- commands -----------------------------------------------------------------

    def invalidate(self) -> None:
        """Accept no new tasks from now on (the tasks already made go on)."""
        self._invalidated = True

    def cancel(self, task_id: int, *, resume_data: bool = False) -> None:
        """Ask a task to stop. It ends with a ``CancelledEvent``; with ``resume_data``
        its partial file is kept for the resume data (when resuming is safe),
        otherwise removed."""
        record = self._records[task_id]
        if record.state in (TaskState.COMPLETED, TaskState.CANCELING):
            return
        self._check_alive()
        self._cancel(record, resume_data=resume_data)

    def _cancel(self, record: TaskRecord, *, resume_data: bool = False) -> None:
        if record.state in (TaskState.COMPLETED, TaskState.CANCELING):
            return
        record.advance(Signal.CANCEL_KEEPING if resume_data else Input.CANCEL)
        self._journal_task(record, urgent=True)
        if record.running:
            record.interrupt()
            return
        # Queued or suspended: no runner to wind down; end it here.
        self._start(self._supervisor.remove(record.id, now=self.clock()))
        outcome = record.job.cancel_outcome()
        if outcome.resume_data is None and record.job.has_leftovers:
            self._spawn(self._remove_then_complete, record, outcome)
        else:
            self._complete(record, outcome)

    def suspend(self, task_id: int) -> None:
        """Pause a running task in place: its slot is freed, its partial file kept."""
        record = self._records[task_id]
        if record.state is TaskState.RUNNING:
            self._check_alive()
        if PUBLIC[record.advance(Input.SUSPEND)] is not TaskState.RUNNING:
            return  # idempotent, or too late: the table says what stays
        record.job.paused()
        self._journal_task(record, urgent=True)
        if record.running:
            record.interrupt()
        else:
            self._start(self._supervisor.remove(task_id, now=self.clock()))

    def resume(self, task_id: int) -> None:
        """Continue a suspended task from its offset (it queues for a slot first)."""
        record = self._records[task_id]
        if record.state is TaskState.SUSPENDED:
            self._check_alive()
        if PUBLIC[record.advance(Input.RESUME)] is not TaskState.SUSPENDED:
            return  # idempotent, or too late: the table says what stays
        self._journal_task(record, urgent=True)
        if not record.running:  # else its runner queues it again once wound down
            self._start(self._supervisor.enqueue(task_id, record.origin, now=self.clock()))
