"""The engine: task records, the supervisor's decisions carried out, one runner per transfer.

The engine knows nothing of identifiers or handles, and of the state directory
only that no destination may be inside it: it takes validated requests, runs
them under the connection limits and publishes their events.
:class:`~bgtransfer.Session` is one front for it; the daemon will put the same
engine behind a Unix socket.

Concurrency shape: one anyio task group for the engine's life; a runner task is
spawned only when the supervisor grants a slot, so queued tasks cost a record,
not a coroutine. Every runner ends in ``finally`` by publishing exactly one
terminal event and releasing its slot, whatever happened to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import inspect
import logging
import os
import random
import stat
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import aiohttp
import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from .._core.config import Configuration, HeaderPairs, normalize_headers
from .._core.events import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
    TaskEvent,
    TerminalEvent,
)
from .._core.journal import Action, OneStepMove, Phase, TaskEntry, plan_reattach
from .._core.naming import Origin, filename_from_url, origin_of, parse_url, unique_name
from .._core.ranges import EndVerdict, ResumePlan, judge_unframed_end, plan_resume
from .._core.redirects import RedirectRule
from .._core.resume_data import InvalidResumeDataError, ResumeData, sign, verify
from .._core.retry import backoff, kept_progress, parse_retry_after
from .._core.secrets import SecretHeaders
from .._core.segments import MAX_SEGMENTS, Segment
from .._core.states import Input, TaskState, transition
from .._core.supervisor import (
    DESCRIPTORS_PER_SLOT,
    RESERVED_DESCRIPTORS,
    Supervisor,
    SupervisorStatistics,
    slots_for_descriptors,
)
from .._exceptions import (
    HTTPStatusError,
    IncompleteBodyError,
    InvalidDestinationError,
    JournalError,
    LocalFileError,
    ProtocolError,
    ResourceTimeoutError,
    SessionClosedError,
    TransferError,
)
from .._io.errors import file_error, journal_write_error
from .._io.files import (
    OUT_OF_SPACE,
    file_identity,
    move_into_place,
    not_regular_error,
    private_opener,
    remove_quietly,
    reserve_blocks,
)
from .._io.resume_key import locate_partial
from .._io.threads import run_blocking
from .._io.transfer import fetch_to_file
from .hub import EventHub, EventStream, snapshot_progress
from .record import AttemptSink, RestartFromZero, SegmentSink, TaskRecord

__all__ = ["Checkpointer", "Engine"]

logger = logging.getLogger("bgtransfer")

READ_BUFSIZE = 1024 * 1024  # aiohttp's per-connection read buffer (it buffers up to twice this)
_FORCED_HEADERS = {"Accept-Encoding": "identity"}  # offsets on disk = offsets of the representation

Request = tuple[object, "str | os.PathLike[str] | None", "str | None", HeaderPairs, "int | None"]
"""One :meth:`Engine.submit_many` request: url, destination, description, headers, segments."""


class Checkpointer(Protocol):
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

    async def flush(
        self, *, shielded: bool = False, lazy: bool = False, upto: int | None = None
    ) -> None:
        """Return once everything recorded so far (``upto``: until ``generation``
        was that) is durable. ``shielded``: the caller runs in a shielded cancel
        scope; ``lazy``: by a commit that something else starts, or the one a
        ``deferred`` entry is due."""
        ...


class Engine:
    """Runs download tasks under a :class:`Configuration`; use as an async context manager.

    With a ``journal`` the engine is *persistent*: it records every task there,
    and when it closes (or its host is cancelled) running tasks are checkpointed
    for a later process rather than cancelled. Without one it is ephemeral: closing
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
        journal: Checkpointer | None = None,
        next_id: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``resume_key`` signs the resume data handed out and checks what comes
        back; ``resume_root``: resume data may name a partial file of any session
        there (None: only of ``partials_dir``). ``state_dir``: no destination may
        lie inside it, but for ``downloads_dir``."""
        self.config = config
        self.clock = clock
        self._downloads_dir = downloads_dir
        self._partials_dir = partials_dir
        # No destination inside the state directory (journals, locks, partial
        # files), except in this session's downloads/: resolved once, then each
        # new destination directory is compared as text.
        self._state_dir = None if state_dir is None else str(state_dir.resolve())
        self._allowed_dir = str(downloads_dir.resolve())
        self._slots = _descriptor_slots(config.max_concurrent_transfers)
        self._resume_key = resume_key
        self._resume_root = resume_root
        self._supervisor = Supervisor(
            per_host_limit=config.max_connections_per_host, total_limit=self._slots
        )
        self._hub = EventHub(  # "explicit": only the application acknowledges
            on_delivered=self.acknowledge if config.acknowledge == "auto" else None,
            durable=self.durable if journal is not None else None,
        )
        self._records: dict[int, TaskRecord] = {}
        self._claims: dict[str, int] = {}  # destinations of live tasks (as text)
        self._resolved_dirs: dict[Path, Path] = {}
        self._origins: dict[str, Origin] = {}  # by scheme and authority (parse_url's cache)
        self._next_id = next_id
        self._journal = journal
        if journal is not None:
            journal.on_rejected = self._journal_rejected
        self._fsync = journal is not None and config.durability == "fsync"
        self._task_group: anyio.abc.TaskGroup | None = None
        self._client: aiohttp.ClientSession | None = None
        self._draining = False  # going down: start nothing more
        self._invalidated = False
        self._replays_pending = 0
        self._events_delivered = anyio.Event()
        self._rng = random.Random()
        self._secrets = SecretHeaders(config.secret_headers)
        self._redirects = RedirectRule(
            allow_insecure=config.allow_insecure_redirects, secrets=self._secrets
        )

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        connector = aiohttp.TCPConnector(
            limit=self._slots,
            # Defence in depth: the supervisor already keeps each origin within the
            # limit; this also bounds the hosts a redirect leads to.
            limit_per_host=self.config.max_connections_per_host,
        )
        self._client = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            # aiohttp's 64 KiB default pauses and resumes the socket every few reads
            # at loopback speeds; past 2 x this, reading waits for the writer.
            read_bufsize=READ_BUFSIZE,
            timeout=aiohttp.ClientTimeout(total=None),
        )
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

        Persistent: running tasks are checkpointed where they are (they continue in
        the next process); queued and suspended ones stay as they are. Ephemeral:
        every task that has not ended is cancelled.

        The exception leaving the ``async with`` body (if any) is not handed to the
        task group: the application's own error comes out as it went in, never
        wrapped in an exception group.
        """
        self._draining = True
        try:
            for record in list(self._records.values()):
                if self._journal is None:
                    self._cancel(record)
                elif record.running:
                    self._interrupt(record)
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

    async def restore(self, entries: Sequence[TaskEntry]) -> None:
        """Take over the tasks a previous process left in the journal.

        Running tasks queue again from the bytes on disk, suspended ones stay
        suspended, and tasks that ended (or whose move into place was under way)
        get their terminal event, to be delivered again until acknowledged. Call
        once, after entering and before any ``submit``.
        """
        assert self._journal is not None
        assert not self._records
        partials = [self._partials_dir / f"{entry.id}.part" for entry in entries]
        facts = await anyio.to_thread.run_sync(_inspect, entries, partials)
        leftovers: list[Path] = []  # partial files of tasks that ended
        for entry, partial, (size, destination_id) in zip(entries, partials, facts, strict=True):
            plan = plan_reattach(
                entry,
                partial=str(partial),
                partial_size=size,
                destination_exists=destination_id is not None,
                destination_id=destination_id,
            )
            record = self._new_record(
                task_id=entry.id,
                url=entry.url,  # validated when the journal was read
                origin=origin_of(entry.url, self._origins),
                partial=partial,
                destination=Path(entry.destination),
                description=entry.description,
                headers=entry.headers,
                offset=plan.offset,
                validator=plan.validator,
                total=entry.total,
                encoding=entry.encoding,
            )
            if plan.segments is not None:
                record.segments = [Segment(start=a, end=b, done=d) for a, b, d in plan.segments]
            record.segments_wanted = self.config.segments
            record.journaled_offset = entry.offset
            record.may_have_partial = True  # whatever the journal says, look when it ends
            record.announce_resume = plan.offset > 0 or plan.restarted
            self._records[record.id] = record
            outcome = self._signed(plan.outcome)  # the journal's are not handed out as stored
            if plan.action is Action.MOVE:
                outcome = await self._finish_restored(record, plan.offset)
            if outcome is not None:
                if isinstance(outcome, FinishedEvent):  # counts its bytes like a live one
                    total = outcome.total_bytes
                    record.bytes_received = record.bytes_expected = total
                    record.last_progress = ProgressEvent(
                        task_id=record.id,
                        bytes_written=total,
                        total_bytes_written=total,
                        total_bytes_expected=total,
                    )
                record.state = TaskState.COMPLETED
                record.terminal = outcome
                record.replayed = True
                record.set_done()
                self._replays_pending += 1
                if plan.remove_partial:
                    leftovers.append(record.partial)
                if entry.outcome is None:
                    self._checkpoint(record, urgent=True)
                continue
            record.state = plan.state
            self._claims[record.destination_key] = record.id
            if record.state is TaskState.RUNNING:
                self._start(self._supervisor.enqueue(record.id, record.origin, now=self.clock()))
        self._next_id = max([self._next_id, *(entry.id + 1 for entry in entries)])
        # Gone before any terminal event can be acknowledged (and the task forgotten
        # by the journal): a process killed after that would leave them to nobody.
        await remove_quietly(*leftovers)

    async def _finish_restored(self, record: TaskRecord, size: int) -> TerminalEvent:
        """The body was whole when the last process died: move it into place now."""
        try:
            await move_into_place(
                record.partial, record.destination, durable=self._fsync, recovering=True
            )
        except OSError as exc:
            error = file_error(
                exc, url=record.url, action="move the file to", path=record.destination
            )
            return ErrorEvent(task_id=record.id, error=error)
        return FinishedEvent(
            task_id=record.id,
            location=record.destination,
            total_bytes=size,
            length_verified=record.bytes_expected is not None,
        )

    # -- queries ------------------------------------------------------------------

    def records(self) -> list[TaskRecord]:
        return list(self._records.values())

    def statistics(self) -> SupervisorStatistics:
        return self._supervisor.statistics()

    def subscribe(self, task_id: int | None, *, follow: bool = True) -> EventStream[Any]:
        """A stream of one task's events (or every task's, with None).

        A late subscriber first gets what it missed in condensed form: one
        progress event with the total so far, and the terminal event if the task
        has ended; so it too sees exactly one terminal event per task. The
        session's stream then says where that backlog ends (``EventsDeliveredEvent``),
        and ends there unless it should ``follow`` the live events.
        """
        records = [self._records[task_id]] if task_id is not None else self._records.values()
        backlog: list[TaskEvent] = []
        replayed = 0
        for record in records:
            backlog.extend(snapshot_progress(record.last_progress))
            if record.terminal is not None:
                backlog.append(record.terminal)
                replayed += record.replayed
        return self._hub.subscribe(task_id, backlog, replayed=replayed, follow=follow)

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

    async def flush(self) -> None:
        """Return once the journal holds everything done so far.

        Always a scheduling point, never a cancellation point: a caller that just
        made a task gets it back (a loop of ``download()`` calls lets the other
        tasks run)."""
        if self._journal is not None:
            await self._journal.flush()
        else:
            await anyio.lowlevel.cancel_shielded_checkpoint()

    async def checkpoint_running(self) -> None:
        """Record where every running task stands now (the bytes on disk) and
        commit: what a process about to end does (SIGTERM). The tasks go on."""
        if self._journal is None:
            return
        for record in self._records.values():
            if record.running and record.terminal is None:
                self._checkpoint(record, urgent=True, data=True)
        await self._journal.flush()

    def _journal_rejected(self, task_id: int, problem: JournalError) -> None:
        """The journal could not record the task, and never will: it ends with
        a :class:`~bgtransfer.JournalWriteError` (a task whose state no later
        process can learn must not look as if all were well). Called on the
        loop, possibly from inside an engine method: a task without a runner is
        ended from a callback of its own."""
        record = self._records.get(task_id)
        if record is None or record.terminal is not None:
            logger.error("task %d: its end was not recorded: %s", task_id, problem)
            return
        if record.journal_error is not None:
            return
        error = journal_write_error(problem, url=record.url)
        error.__cause__ = problem
        record.journal_error = error
        logger.error("task %d: %s; the task fails", task_id, error)
        if record.running:
            self._interrupt(record)  # its runner ends it (_stopped_outcome)
        else:
            asyncio.get_running_loop().call_soon(self._fail_unrecorded, record)

    def _fail_unrecorded(self, record: TaskRecord) -> None:
        """End a task the journal could not record that has no runner."""
        if record.terminal is not None or record.state is TaskState.CANCELING:
            return  # ended, or ending, meanwhile
        if record.running:
            self._interrupt(record)
            return
        if self._task_group is None or self._draining:
            return  # closing: the journal keeps what it last recorded (and it was logged)
        assert record.journal_error is not None
        self._start(self._supervisor.remove(record.id, now=self.clock()))
        outcome = ErrorEvent(task_id=record.id, error=record.journal_error)
        if record.may_have_partial:
            self._spawn(self._remove_then_complete, record, outcome)
        else:
            self._complete(record, outcome)

    async def _flush_for(self, record: TaskRecord, *, shielded: bool = False) -> None:
        """Commit what the journal holds of ``record`` before going on; a journal
        that cannot record it fails the task (:class:`~bgtransfer.JournalWriteError`)."""
        assert self._journal is not None
        try:
            await self._journal.flush(shielded=shielded)
        except JournalError as exc:
            raise journal_write_error(exc, url=record.url) from exc
        if record.journal_error is not None:
            raise record.journal_error

    # -- commands -----------------------------------------------------------------

    def invalidate(self) -> None:
        """Accept no new tasks from now on (the tasks already made go on)."""
        self._invalidated = True

    def submit(
        self,
        url: object,
        destination: str | os.PathLike[str] | None,
        *,
        description: str | None,
        headers: HeaderPairs,
        segments: int | None = None,
    ) -> TaskRecord:
        """Validate a download request, queue it, and start it if a slot is free."""
        self._check_open()
        request = (url, destination, description, headers, segments)
        record = self._prepare(self._next_id, request, checked_dirs={})
        self._next_id += 1
        return self._admit(record)

    def submit_many(self, requests: Sequence[Request]) -> list[TaskRecord]:
        """:meth:`submit` for each request, all or none: every request is validated
        (destinations against each other too) before the first task is queued.
        An error gets a note naming the request."""
        self._check_open()
        records: list[TaskRecord] = []
        checked_dirs: dict[Path, Path] = {}  # one check per directory for the batch
        try:
            for index, request in enumerate(requests):
                try:
                    record = self._prepare(
                        self._next_id + index, request, checked_dirs=checked_dirs
                    )
                except Exception as exc:
                    exc.add_note(f"request {index} of {len(requests)}; no task was made")
                    raise
                self._claims[record.destination_key] = record.id  # the next ones see it
                records.append(record)
        finally:
            if len(records) != len(requests):  # failed: nothing stays claimed
                for record in records:
                    del self._claims[record.destination_key]
        self._next_id += len(records)
        return [self._admit(record) for record in records]

    def _prepare(
        self, task_id: int, request: Request, *, checked_dirs: dict[Path, Path]
    ) -> TaskRecord:
        """A record for ``request``, validated; not claimed or queued yet."""
        url, destination, description, headers, segments = request
        wanted = self.config.segments if segments is None else _check_segments(segments)
        url, origin = parse_url(url, self._origins)
        record = self._new_record(
            task_id=task_id,
            url=url,
            origin=origin,
            destination=self._resolve_destination(url, destination, checked_dirs),
            description=description,
            headers=headers,
        )
        record.segments_wanted = wanted
        return record

    async def submit_resumed(
        self,
        data: ResumeData,
        destination: str | os.PathLike[str] | None,
        *,
        headers: HeaderPairs,
    ) -> TaskRecord:
        """A new task continuing from resume data; it takes the partial file over.

        The partial file is moved into this session's partials with one rename, so
        of two tasks started from the same resume data at once exactly one gets
        it; the other raises :class:`InvalidResumeDataError`. The new task is in
        the journal, naming the file it takes over, before the rename: a process
        killed in between leaves the next one to finish the takeover, never bytes
        that no task owns.

        Only resume data this state directory signed is taken (its MAC checked
        first), and only a regular file in a ``partials/`` directory of it;
        anything else raises :class:`InvalidResumeDataError` before any file is
        touched.
        """
        self._check_open()
        verify(data, self._resume_key)
        url, origin = parse_url(data.url, self._origins)
        source = await run_blocking(
            functools.partial(
                locate_partial,
                data.partial,
                url=url,
                offset=data.offset,
                partials_dir=self._partials_dir,
                state_dir=self._resume_root,
            )
        )
        self._check_open()  # it may have closed meanwhile
        given = destination if destination is not None else data.destination
        record = self._new_record(
            task_id=self._next_id,
            url=url,
            origin=origin,
            destination=self._resolve_destination(url, given, {}),
            description=data.description,
            headers=(*data.headers, *headers),
            offset=data.offset,
            validator=data.validator,
            total=data.total,
            encoding=data.encoding,
        )
        self._next_id += 1
        self._records[record.id] = record
        self._claims[record.destination_key] = record.id
        record.takeover = str(source)  # a crash before the rename: the next process does it
        self._checkpoint(record)
        try:
            await self.flush()
            await anyio.to_thread.run_sync(_take_over, source, record.partial, data.offset, url)
            record.takeover = None
        except BaseException:
            del self._records[record.id]
            if self._claims.get(record.destination_key) == record.id:
                del self._claims[record.destination_key]
            if self._journal is not None:
                self._journal.forget(record.id, urgent=True)  # the caller is told it failed
            raise
        record.announce_resume = True
        record.may_have_partial = True
        self._start(self._supervisor.enqueue(record.id, record.origin, now=self.clock()))
        return record

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
        record.state = transition(record.state, Input.CANCEL)
        record.want_resume_data = resume_data
        self._checkpoint(record, urgent=True)
        if record.running:
            self._interrupt(record)
            return
        # Queued or suspended: no runner to wind down; end it here.
        self._start(self._supervisor.remove(record.id, now=self.clock()))
        outcome = self._cancel_outcome(record)
        if outcome.resume_data is None and record.may_have_partial:
            self._spawn(self._remove_then_complete, record, outcome)
        else:
            self._complete(record, outcome)

    async def _remove_then_complete(self, record: TaskRecord, outcome: TerminalEvent) -> None:
        """End a cancelled task that has no runner once its partial file is gone,
        as a runner does: before the ``CancelledEvent``, so nobody can acknowledge
        it (and the journal forget the task) while the file is still there."""
        try:
            await remove_quietly(record.partial)
        finally:
            self._complete(record, outcome)

    def suspend(self, task_id: int) -> None:
        """Pause a running task in place: its slot is freed, its partial file kept."""
        record = self._records[task_id]
        previous = record.state
        if previous is TaskState.RUNNING:
            self._check_alive()
        record.state = transition(previous, Input.SUSPEND)
        if previous is not TaskState.RUNNING:
            return  # idempotent, or too late: the table says what stays
        record.announce_resume = True
        self._checkpoint(record, urgent=True)
        if record.running:
            self._interrupt(record)
        else:
            self._start(self._supervisor.remove(task_id, now=self.clock()))

    def resume(self, task_id: int) -> None:
        """Continue a suspended task from its offset (it queues for a slot first)."""
        record = self._records[task_id]
        previous = record.state
        if previous is TaskState.SUSPENDED:
            self._check_alive()
        record.state = transition(previous, Input.RESUME)
        if previous is not TaskState.SUSPENDED:
            return  # idempotent, or too late: the table says what stays
        self._checkpoint(record, urgent=True)
        if record.running:
            record.requeue = True  # its runner queues it again once wound down
        else:
            self._start(self._supervisor.enqueue(task_id, record.origin, now=self.clock()))

    # -- internals ----------------------------------------------------------------

    @staticmethod
    def _interrupt(record: TaskRecord) -> None:
        """Stop a running task's runner; its ``finally`` reads the new state."""
        if record.scope is not None:
            record.scope.cancel()
        # else: spawned but not in its scope yet; it checks the state on entry.

    def _check_open(self) -> None:
        self._check_alive()
        if self._invalidated:
            raise SessionClosedError("the session was invalidated and accepts no new tasks")

    def _check_alive(self) -> None:
        if self._task_group is None or self._draining:
            raise SessionClosedError("the session is not open; use 'async with Session(...)'")

    def _new_record(
        self,
        *,
        task_id: int,
        url: str,
        origin: Origin,
        destination: Path,
        description: str | None,
        headers: HeaderPairs,
        offset: int = 0,
        validator: str | None = None,
        total: int | None = None,
        encoding: str = "identity",
        partial: Path | None = None,
    ) -> TaskRecord:
        return TaskRecord(
            task_id=task_id,
            url=url,
            origin=origin,
            destination=destination,
            partial=self._partials_dir / f"{task_id}.part" if partial is None else partial,
            description=description,
            headers=_merge_headers(self.config.headers, headers),
            request_headers=headers,
            progress_interval=self.config.progress_interval,
            secrets=self._secrets,
            offset=offset,
            validator=validator,
            total=total,
            encoding=encoding,
        )

    def _admit(self, record: TaskRecord) -> TaskRecord:
        self._records[record.id] = record
        self._claims[record.destination_key] = record.id
        self._checkpoint(record)  # made durable by the caller's flush()
        self._start(self._supervisor.enqueue(record.id, record.origin, now=self.clock()))
        return record

    def _checkpoint(
        self,
        record: TaskRecord,
        *,
        urgent: bool = False,
        deferred: bool = False,
        data: bool = False,
    ) -> None:
        """Journal the record as it is now (``data``: its partial file's bytes count)."""
        if self._journal is None:
            return
        entry = record.entry()
        self._journal.put(
            entry, urgent=urgent, deferred=deferred, data_file=record.partial if data else None
        )
        record.journaled_offset = entry.offset
        record.next_checkpoint = self.clock() + self.config.checkpoint_interval

    async def _before_write(self, record: TaskRecord) -> None:
        """Bytes are about to be written below what the journal vouches for (a
        restart): record the lower offset durably first (the journal's invariant)."""
        if self._journal is not None and record.journaled_offset > record.bytes_received:
            self._checkpoint(record, urgent=True)
            await self._flush_for(record)

    def _resolve_destination(
        self,
        url: str,
        destination: str | os.PathLike[str] | None,
        checked_dirs: dict[Path, Path],
    ) -> Path:
        """The absolute target path; raises at the call when it cannot work.

        No destination, or an existing directory: a name from the URL, made unique
        against existing files and other live tasks (``name (1).ext``). A file path:
        its directory must exist and no other live task may target it; an existing
        regular file there is replaced when the download finishes, anything else
        (a device, a FIFO, a socket, a symbolic link) is refused. Nothing may go
        inside the state directory but into this session's ``downloads/``.
        ``checked_dirs``: the directories this call found (and resolved) already;
        a batch checks each once.
        """
        if destination is None:
            return self._unique_in(self._downloads_dir, filename_from_url(url))
        if not isinstance(destination, str | os.PathLike):
            raise TypeError(
                f"destination must be a str or os.PathLike, not {type(destination).__name__}"
            )
        path = destination if isinstance(destination, Path) else Path(destination)
        self._check_text(url, destination if isinstance(destination, str) else str(path))
        if str(path).startswith("~"):
            path = path.expanduser()
        try:
            mode: int | None = os.lstat(path).st_mode
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise InvalidDestinationError(
                    f"{url}: destination {str(path)!r}: the name is too long for a file path"
                ) from None
            mode = None  # nothing there (or nothing reachable): the directory decides
        if mode is not None and not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode) or (stat.S_ISLNK(mode) and os.path.isdir(path)):
                return self._unique_in(self._resolved_dir(url, path), filename_from_url(url))
            raise InvalidDestinationError(
                f"{url}: destination {str(path)!r}: {_strerror(path, mode)}"
            )
        parent = path.parent
        directory = checked_dirs.get(parent)
        if directory is None:
            if not os.path.isdir(parent):
                raise InvalidDestinationError(
                    f"{url}: destination directory {str(parent)!r} does not exist"
                )
            directory = checked_dirs[parent] = self._resolved_dir(url, parent)
        target = directory / path.name
        owner = self._claims.get(str(target))
        if owner is not None:
            raise InvalidDestinationError(
                f"{url}: destination {str(target)!r} is already claimed by task {owner}"
            )
        return target

    def _check_text(self, url: str, text: str) -> None:
        """Refuse a destination no file path can be: empty, a NUL byte, characters
        the file system's encoding cannot hold (a lone surrogate that is not an
        undecodable byte, as ``os.fsdecode`` makes them)."""
        problem = None
        if not text:
            problem = "is empty (use None for the session's downloads/ folder, '.' for here)"
        elif "\0" in text:
            problem = "contains a NUL byte"
        else:
            try:
                # The journal stores any str losslessly; the file system needs bytes.
                os.fsencode(text)
            except UnicodeEncodeError as exc:
                problem = f"cannot be encoded as a file name ({exc.reason})"
        if problem is not None:
            raise InvalidDestinationError(f"{url}: destination {text!r} {problem}")

    def _resolved_dir(self, url: str, directory: Path) -> Path:
        """``directory.resolve()``, remembered (many tasks share a few directories),
        once checked to be outside the state directory (but for ``downloads/``)."""
        resolved = self._resolved_dirs.get(directory)
        if resolved is None:
            resolved = directory.resolve()
            self._check_outside_state_dir(url, directory, str(resolved))
            if len(self._resolved_dirs) >= 1024:
                self._resolved_dirs.clear()
            self._resolved_dirs[directory] = resolved
        return resolved

    def _check_outside_state_dir(self, url: str, given: Path, resolved: str) -> None:
        state_dir, allowed = self._state_dir, self._allowed_dir
        if state_dir is None or not _within(resolved, state_dir) or _within(resolved, allowed):
            return
        raise InvalidDestinationError(
            f"{url}: destination {str(given)!r} is inside the session's state directory "
            f"{state_dir!r}, where its journal, lock and partial files live; choose a path "
            f"outside it (or the session's downloads folder, {allowed!r})"
        )

    def _unique_in(self, directory: Path, name: str) -> Path:
        def taken(candidate: str) -> bool:
            path = directory / candidate
            return str(path) in self._claims or os.path.lexists(path)

        return directory / unique_name(name, taken)

    def _spawn(self, func: Callable[..., Coroutine[Any, Any, object]], *args: object) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(func, *args)

    def _start(self, task_ids: list[int], *, ending: TaskRecord | None = None) -> None:
        """Start the granted tasks. ``ending``: the task whose runner released the
        slot; the first granted task is handed to that runner (``successor``)."""
        if not task_ids or self._draining:
            return  # going down: granted tasks stay queued (and journaled as running)
        assert self._task_group is not None, "the supervisor started a task after close"
        for task_id in task_ids:
            record = self._records[task_id]
            record.running = True
            record.may_have_partial = True
            if ending is not None and ending.successor is None:
                ending.successor = record
            else:
                self._spawn_runner(record)

    def _cancel_outcome(self, record: TaskRecord) -> CancelledEvent:
        data = record.resume_data() if record.want_resume_data else None
        if data is not None:
            data = sign(data, self._resume_key)
        return CancelledEvent(task_id=record.id, resume_data=data)

    def _error_outcome(self, record: TaskRecord, error: TransferError) -> ErrorEvent:
        """The task failed. Out of space with bytes that can be resumed: the
        partial file is kept and the event carries (signed) resume data for them,
        to continue once space is freed."""
        data = None
        if isinstance(error, LocalFileError) and error.errno in OUT_OF_SPACE:
            data = record.resume_data()
            try:  # never vouch for more than the file holds (one stat, failures only)
                size = os.stat(record.partial).st_size
            except OSError:
                size = 0
            if data is not None and data.offset <= size:
                data = sign(data, self._resume_key)
            else:
                data = None
        return ErrorEvent(task_id=record.id, error=error, resume_data=data)

    def _signed(self, outcome: TerminalEvent | None) -> TerminalEvent | None:
        """``outcome`` with its resume data (if any) signed with this state's key."""
        if isinstance(outcome, CancelledEvent | ErrorEvent) and outcome.resume_data is not None:
            return attrs.evolve(outcome, resume_data=sign(outcome.resume_data, self._resume_key))
        return outcome

    async def _run(self, record: TaskRecord) -> None:
        """A runner: its task, then each task the supervisor grants it on release.

        Going on with the next task in the same coroutine saves spawning one per
        transfer, and the loop iteration before it starts: with thousands of small
        files, that was a measurable part of each. If the runner is stopped
        (cancelled with the session), the task it was handed gets a runner of its
        own, which sees the same cancellation a spawned one would.
        """
        current = record
        while True:
            try:
                await self._run_task(current)
            except BaseException:
                successor, current.successor = current.successor, None
                if successor is not None:
                    self._spawn_runner(successor)
                raise
            successor, current.successor = current.successor, None
            if successor is None:
                return
            current = successor

    def _spawn_runner(self, record: TaskRecord) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(self._run, record, name=f"bgtransfer-{record.id}")

    async def _run_task(self, record: TaskRecord) -> None:
        """One task: attempts with retries until it ends or is suspended."""
        outcome: TerminalEvent | None = None
        try:
            with anyio.CancelScope() as scope:
                record.scope = scope
                if (
                    record.state is not TaskState.RUNNING
                    or self._draining
                    or record.journal_error is not None
                ):
                    scope.cancel()  # suspended, cancelled, failed or closing before it got going
                outcome = await self._transfer(record)
        except TransferError as exc:
            outcome = self._error_outcome(record, exc)
        except Exception as exc:  # a bug must not take the other tasks down with it
            logger.exception("internal error in task %d (%s)", record.id, record.url)
            error = TransferError(f"internal error: {exc!r}", url=record.url)
            error.__cause__ = exc
            outcome = ErrorEvent(task_id=record.id, error=error)
        finally:
            # Reached on success, failure, cancel(), suspend(), and the session's
            # own cancellation. Exactly one terminal event unless suspended.
            record.scope = None
            requeue, record.requeue = record.requeue, False
            outcome = self._stopped_outcome(record, outcome, requeue=requeue)
            keep_partial = outcome is None or (
                isinstance(outcome, CancelledEvent | ErrorEvent) and outcome.resume_data is not None
            )
            if not keep_partial and not isinstance(outcome, FinishedEvent):
                with anyio.CancelScope(shield=True):
                    await remove_quietly(record.partial)
                if record.state is TaskState.CANCELING and isinstance(outcome, ErrorEvent):
                    outcome = CancelledEvent(task_id=record.id)  # cancel() came meanwhile
            # From here on nothing awaits: commands see a consistent record.
            record.running = False
            self._start(self._supervisor.release(record.id, now=self.clock()), ending=record)
            if outcome is not None:
                self._complete(record, outcome)
            else:
                self._flush_progress(record)
                self._checkpoint(record, urgent=True, data=True)
                if record.state is TaskState.RUNNING and not self._draining:
                    # resumed while winding down
                    self._start(
                        self._supervisor.enqueue(record.id, record.origin, now=self.clock())
                    )

    def _stopped_outcome(
        self, record: TaskRecord, outcome: TerminalEvent | None, *, requeue: bool
    ) -> TerminalEvent | None:
        """What a runner that stopped ends its task with (None: nothing, it goes on)."""
        if record.moved:  # in place: a cancel or a failure came too late
            return outcome if isinstance(outcome, FinishedEvent) else self._finished(record)
        if record.state is TaskState.CANCELING and not isinstance(outcome, FinishedEvent):
            return self._cancel_outcome(record)
        if record.journal_error is not None and not isinstance(outcome, FinishedEvent):
            return ErrorEvent(task_id=record.id, error=record.journal_error)
        if outcome is None and record.state is TaskState.RUNNING and not requeue:
            # Stopped from outside: the session is closing, or the task hosting
            # it is cancelled. Start nothing more. Persistent: the task stays
            # running in the journal and the next process continues it.
            self._draining = True
            if self._journal is None:
                record.state = transition(record.state, Input.CANCEL)
                return CancelledEvent(task_id=record.id)
        return outcome

    async def _transfer(self, record: TaskRecord) -> FinishedEvent:
        """Attempts until the body is whole, then the move into place."""
        timeout = self.config.resource_timeout
        remaining = None if timeout is None else max(0.0, timeout - record.active_time)
        started = self.clock()
        try:
            with contextlib.nullcontext() if remaining is None else anyio.fail_after(remaining):
                await self._attempts(record)
        except TransferError:
            raise
        except TimeoutError as exc:
            raise ResourceTimeoutError(
                f"the task took longer than resource_timeout ({timeout} seconds)", url=record.url
            ) from exc
        finally:
            record.active_time += self.clock() - started  # suspended time is not counted
        if record.moved:  # by the last write (_finish_into)
            return self._finished(record)
        # Shielded: once the move starts, it finishes, and the task has finished.
        # The journal learns of it first, so a crash in between is never taken for
        # a lost partial file (and the file is never downloaded again).
        with anyio.CancelScope(shield=True):
            record.moving = True
            record.one_step = None  # the file is whole now, whatever was said before
            if self._journal is not None:
                self._checkpoint(record, urgent=True, data=True)
                await self._flush_for(record, shielded=True)
            try:
                await move_into_place(record.partial, record.destination, durable=self._fsync)
            except OSError as exc:
                raise file_error(
                    exc, url=record.url, action="move the file to", path=record.destination
                ) from exc
        return self._finished(record)

    @staticmethod
    def _finished(record: TaskRecord) -> FinishedEvent:
        return FinishedEvent(
            task_id=record.id,
            location=record.destination,
            total_bytes=record.bytes_received,
            length_verified=record.bytes_expected is not None,
        )

    async def _finish_into(self, record: TaskRecord, size: int) -> Path | None:
        """The whole body has arrived: may its last write also move it into place?

        Yes, unless every checkpoint must be fsynced first (the classic order
        then: the body whole and synced, ``moving`` committed, the move). A
        background session commits ``moving`` first, with the offset written so
        far and what the destination is now (:class:`OneStepMove`), so a
        process killed during that step can tell whether it completed.
        (Called in the body writer's shielded scope.)
        """
        if self._fsync:
            return None
        if self._journal is not None:
            try:
                replaces = file_identity(record.destination)
            except OSError:  # cannot tell, or not a regular file: the classic order
                return None
            record.one_step = OneStepMove(size=size, replaces=replaces)
        record.moving = True
        if self._journal is not None:
            self._checkpoint(record, urgent=True)
            await self._flush_for(record, shielded=True)
        return record.destination

    async def _attempts(self, record: TaskRecord) -> None:
        """The retry loop: transient failures are retried from the bytes on disk.

        ``failures`` counts consecutive attempts that made no kept progress
        (``kept_progress``): bytes that a later attempt must fetch again do not
        renew the budget, so every task ends."""
        policy = self.config.retry
        failures = 0  # consecutive attempts that made no kept progress
        probes = 0  # ranged requests asking a close-delimited body's end to be confirmed
        while True:
            try:
                await self._attempt(record)
                if not self._needs_probe(record) or probes == policy.max_attempts:
                    return  # (never confirmed by max_attempts probes: unverified)
                probes += 1
                record.announce_resume = True
                continue
            except RestartFromZero as signal:
                self._kept_progress(record)  # (moves the mark; a restart is no progress)
                failures += 1
                if failures >= policy.max_attempts:
                    raise ProtocolError(str(signal), url=record.url) from None
                record.bytes_received = 0
                record.segments = None
                record.validator = None
                if signal.ranges_unsupported:
                    record.segments_wanted = 1  # fall back to one connection
                record.announce_resume = True
                record.restarted = True  # the next attempt starts over: no progress either
                continue
            except TransferError as exc:
                if self._kept_progress(record):
                    failures = 0
                failures += 1
                if not policy.is_transient(exc) or failures >= policy.max_attempts:
                    raise
                delay = backoff(policy, failures, self._rng)
                if isinstance(exc, HTTPStatusError):
                    asked = parse_retry_after(exc.retry_after)
                    if asked is not None:
                        if asked > policy.max_retry_after:
                            raise
                        delay = max(delay, asked)
                        if exc.status in (429, 503):
                            self._hold_origin(record, asked)
                record.announce_resume = True
                self._hub.publish(
                    RetryEvent(task_id=record.id, attempt=failures + 1, error=exc, delay=delay)
                )
                await anyio.sleep(delay)

    @staticmethod
    def _needs_probe(record: TaskRecord) -> bool:
        """After an attempt that ended well: is the body's length still to be
        confirmed by another (ranged) request? Raises ``IncompleteBodyError`` when
        a close-delimited body is detectably cut short; False when the task is
        done, its length vouched for (``bytes_expected`` known) or not."""
        if record.moved or record.bytes_expected is not None:
            return False
        verdict, reason = judge_unframed_end(
            offset=record.bytes_received,
            validator=record.validator,
            announced=record.announced,
            previous=record.last_end,
            whole=record.body_start == 0,
        )
        if record.validator is not None:
            record.last_end = (record.validator, record.bytes_received)
        if verdict is EndVerdict.TRUNCATED:
            raise IncompleteBodyError(reason, url=record.url)
        if verdict is EndVerdict.VERIFIED:
            record.bytes_expected = record.bytes_received
        return verdict is EndVerdict.PROBE

    @staticmethod
    def _kept_progress(record: TaskRecord) -> bool:
        """Whether the attempt that just failed left bytes the next one builds on."""
        kept, record.resume_mark = kept_progress(
            record.resume_mark,
            validator=record.validator,
            offset=record.bytes_received,
            restarted=record.restarted,
        )
        kept = kept and not record.too_slow  # a trickle is no progress, whatever it wrote
        record.restarted = record.too_slow = False
        return kept

    async def _attempt(self, record: TaskRecord) -> None:
        record.moving = False
        record.one_step = None
        if record.segments is not None:
            await self._resume_segments(record)
            return
        plan = plan_resume(
            offset=record.bytes_received, validator=record.validator, total=record.bytes_expected
        )
        # Without a range the whole file comes again; a ResumedEvent with offset 0
        # says so when there were bytes on disk.
        headers = await self._request_headers(record, plan.headers)
        if record.segments_wanted > 1 and not plan.ranged:
            # The answer may be split into segments; their workers live here.
            async with _segment_group() as group:
                await self._attempt_once(record, plan, headers, group)
        else:
            await self._attempt_once(record, plan, headers, None)

    async def _attempt_once(
        self,
        record: TaskRecord,
        plan: ResumePlan,
        headers: Mapping[str, str],
        group: anyio.abc.TaskGroup | None,
    ) -> None:
        """One request; with ``group``, an answer split into segments is finished
        by workers there (and by this one, once its own segment is done)."""
        on_split = None
        queue: deque[Segment] | None = None
        if group is not None:
            segments: deque[Segment] = deque()
            queue = segments

            async def on_split(record: TaskRecord) -> None:
                await self._start_segments(record, group, segments)

        sink = AttemptSink(
            record,
            offset=plan.offset,
            ranged=plan.ranged,
            config=self.config,
            clock=self.clock,
            publish=self._publish,
            before_write=self._before_write,
            finish_into=self._finish_into,
            on_split=on_split,
        )
        try:
            await self._fetch(record, headers, sink)
        except TransferError:
            if not record.moved:
                raise
            return  # the file is in place (by the last write): what failed after is moot
        if sink.split:  # segment 0 is done: help with the others
            assert queue is not None  # only an attempt with a group splits
            await self._segment_worker(record, queue, borrowed=False)

    async def _fetch(
        self, record: TaskRecord, headers: Mapping[str, str], sink: AttemptSink | SegmentSink
    ) -> None:
        assert self._client is not None
        await fetch_to_file(
            self._client,
            url=record.url,
            headers=headers,
            partial=record.partial,
            request_timeout=self.config.request_timeout,
            sink=sink,
            redirects=self._redirects,
        )

    async def _request_headers(
        self, record: TaskRecord, extra: Mapping[str, str]
    ) -> dict[str, str]:
        """The task's headers, the provider's (if any), then the range headers."""
        headers = dict(record.headers)
        if self.config.headers_provider is not None:
            headers = await self._provided_headers(record)
        headers.update(extra)
        return headers

    # -- segmented downloads -------------------------------------------------------

    async def _start_segments(
        self, record: TaskRecord, group: anyio.abc.TaskGroup, queue: deque[Segment]
    ) -> None:
        """The first answer was split: make room for the whole file, journal the
        segments, and start a worker per slot the supervisor can lend."""
        assert record.segments is not None
        assert record.bytes_expected is not None
        try:
            await run_blocking(_preallocate, record.partial, record.bytes_expected)
        except OSError as exc:
            raise file_error(
                exc, url=record.url, action="reserve space for", path=record.partial
            ) from exc
        self._checkpoint(record, urgent=True)
        queue.extend(record.segments[1:])
        for _ in range(self._supervisor.borrow(record.id, len(queue))):
            group.start_soon(self._segment_worker, record, queue, True)

    async def _resume_segments(self, record: TaskRecord) -> None:
        """Continue every unfinished segment, as many at once as slots allow."""
        assert record.segments is not None
        queue = deque(segment for segment in record.segments if not segment.complete)
        record.throttle.restart(record.bytes_received)
        if record.announce_resume:
            record.announce_resume = False
            self._publish(
                ResumedEvent(
                    task_id=record.id,
                    offset=record.bytes_received,
                    expected_total=record.bytes_expected,
                )
            )
        if not queue:
            return
        async with _segment_group() as group:
            for _ in range(self._supervisor.borrow(record.id, len(queue) - 1)):
                group.start_soon(self._segment_worker, record, queue, True)
            await self._segment_worker(record, queue, borrowed=False)

    async def _segment_worker(
        self, record: TaskRecord, queue: deque[Segment], borrowed: bool
    ) -> None:
        """Fetch segments from the queue until it is empty; a borrowed slot goes back."""
        try:
            while queue:
                segment = queue.popleft()
                if segment.complete:
                    continue
                assert record.validator is not None
                headers = await self._request_headers(
                    record,
                    {
                        "Range": f"bytes={segment.next_offset}-{segment.end - 1}",
                        "If-Range": record.validator,
                    },
                )
                sink = SegmentSink(
                    record, segment, config=self.config, clock=self.clock, publish=self._publish
                )
                await self._fetch(record, headers, sink)
        finally:
            if borrowed:
                self._start(self._supervisor.give_back(record.id, 1, now=self.clock()))

    async def _provided_headers(self, record: TaskRecord) -> dict[str, str]:
        """Headers from ``Configuration.headers_provider``, merged by name over the task's."""
        provider = self.config.headers_provider
        assert provider is not None
        try:
            result = provider(record.url)
            if inspect.isawaitable(result):
                result = await result
            extra = normalize_headers(result)
        except Exception as exc:
            raise TransferError(f"headers_provider failed: {exc!r}", url=record.url) from exc
        return _merge_headers(tuple(record.headers.items()), extra)

    def _hold_origin(self, record: TaskRecord, seconds: float) -> None:
        """Retry-After on 429/503: start no task for that origin until it has passed."""
        self._supervisor.hold(record.origin, self.clock() + seconds)

        async def wake() -> None:
            await anyio.sleep(seconds)
            self._start(self._supervisor.poll(self.clock()))

        self._spawn(wake)

    def _publish(self, event: TaskEvent) -> None:
        if isinstance(event, ProgressEvent):
            record = self._records[event.task_id]
            record.last_progress = event
            if self._journal is not None and self.clock() >= record.next_checkpoint:
                self._checkpoint(record, data=True)
        self._hub.publish(event)

    def _flush_progress(self, record: TaskRecord) -> None:
        tail = record.throttle.flush()
        if tail is not None:
            self._publish(tail)

    def _complete(self, record: TaskRecord, outcome: TerminalEvent) -> None:
        """Publish the last progress and the one terminal event; free the destination."""
        if isinstance(outcome, FinishedEvent):
            signal = Input.FINISH
        elif isinstance(outcome, ErrorEvent):
            signal = Input.FAIL
        else:
            signal = Input.CANCELLED
        record.state = transition(record.state, signal)
        self._flush_progress(record)
        record.terminal = outcome
        # Committed before a consumer can see the event and move the file away (a
        # later process would then find neither the partial nor the file, and
        # fetch it again or report it lost): readers wait for it (durable()).
        # Deferred: the slot is free already, nothing else waits on this commit,
        # and in a busy session it rides along with another task's (a commit on
        # the loop costs tens of microseconds; 2,000 small files made two each).
        self._checkpoint(record, deferred=True)
        if self._journal is not None:
            record.end_generation = self._journal.generation
        if self._claims.get(record.destination_key) == record.id:
            del self._claims[record.destination_key]
        self._hub.publish(outcome)
        record.set_done()


def _descriptor_slots(wanted: int) -> int:
    """``max_concurrent_transfers``, lowered to what ``RLIMIT_NOFILE`` (soft) can serve;
    a WARNING says so when it is lowered."""
    try:
        import resource  # noqa: PLC0415 -- not on Windows
    except ImportError:
        return wanted
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    slots = slots_for_descriptors(wanted, None if soft == resource.RLIM_INFINITY else soft)
    if slots < wanted:
        logger.warning(
            "max_concurrent_transfers=%d lowered to %d: the process may open %d file "
            "descriptors (RLIMIT_NOFILE), %d per transfer after %d for the rest "
            "(raise the limit to run more at once)",
            wanted,
            slots,
            soft,
            DESCRIPTORS_PER_SLOT,
            RESERVED_DESCRIPTORS,
        )
    return slots


@contextlib.asynccontextmanager
async def _segment_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group for segment workers that raises one error, not a group: a
    restart signal first (the file changed), else the first transfer error."""
    try:
        async with anyio.create_task_group() as group:
            yield group
    except BaseExceptionGroup as caught:
        leaves = list(_leaves(caught))
        for kind in (RestartFromZero, TransferError):
            for leaf in leaves:
                if isinstance(leaf, kind):
                    raise leaf from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            yield from _leaves(inner)
        else:
            yield inner


def _preallocate(path: Path, size: int) -> None:
    """Create the partial file anew (exclusively: an older one, or a link planted
    there, is unlinked first) and give it its final size, so every segment writes
    in place; reserve its blocks where the platform can (a disk
    that cannot hold it raises ``OSError``, the file removed)."""
    try:
        with open(path, "wb", opener=private_opener) as file:
            file.truncate(size)
            reserve_blocks(file.fileno(), 0, size)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _inspect(
    entries: Sequence[TaskEntry], partials: Sequence[Path]
) -> list[tuple[int | None, tuple[int, int, int, int] | None]]:
    """(partial size or None, the destination's identity if it matters and exists)
    for each entry, after finishing any takeover a crash interrupted; in a worker
    thread."""
    facts: list[tuple[int | None, tuple[int, int, int, int] | None]] = []
    for entry, partial in zip(entries, partials, strict=True):
        size: int | None = None
        if entry.takeover is not None and not partial.exists():
            # Killed between journaling a resumed task and its rename: do it now.
            with contextlib.suppress(FileNotFoundError):
                os.replace(entry.takeover, partial)
        # A live task with nothing vouched for starts from zero whatever is there:
        # no need to look (this keeps reopening 10,000 queued tasks quick).
        if entry.offset > 0 or entry.phase not in (Phase.RUNNING, Phase.SUSPENDED):
            try:
                size = partial.stat().st_size
            except FileNotFoundError:
                size = None
        destination = None
        if entry.phase is Phase.MOVING and size is None:
            with contextlib.suppress(OSError):  # unreadable: as good as missing
                destination = file_identity(entry.destination)
        facts.append((size, destination))
    return facts


def _take_over(source: Path, partial: Path, offset: int, url: str) -> None:
    """Move resume data's partial file (found by ``locate_partial``) to
    ``partial``; in a worker thread."""
    try:
        os.replace(source, partial)
    except FileNotFoundError:
        raise InvalidResumeDataError(
            f"{url}: the partial file {source} is gone "
            "(resumed already by another task, or deleted)"
        ) from None
    except OSError as exc:
        cause = "it is on another file system" if exc.errno == errno.EXDEV else exc.strerror
        raise InvalidResumeDataError(
            f"{url}: cannot take over the partial file {source}: {cause}"
        ) from exc
    size = partial.stat().st_size
    if size < offset:
        os.replace(partial, source)  # give it back untouched: nothing is lost
        raise InvalidResumeDataError(
            f"{url}: the partial file {source} holds {size} bytes, the resume data says {offset}"
        )


def _within(path: str, directory: str) -> bool:
    """``path`` is ``directory`` or below it (both resolved, as text)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _strerror(path: Path, mode: int) -> str:
    return not_regular_error(path, mode).strerror or "not a regular file"


def _check_segments(segments: object) -> int:
    if isinstance(segments, bool) or not isinstance(segments, int):
        raise TypeError(f"segments must be an int, not {type(segments).__name__}")
    if not 1 <= segments <= MAX_SEGMENTS:
        raise ValueError(f"segments must be between 1 and {MAX_SEGMENTS}, got {segments}")
    return segments


def _merge_headers(defaults: HeaderPairs, overrides: HeaderPairs) -> dict[str, str]:
    merged: dict[str, tuple[str, str]] = {}
    for name, value in (*defaults, *overrides, *_FORCED_HEADERS.items()):
        merged[name.lower()] = (name, value)
    return dict(merged.values())
