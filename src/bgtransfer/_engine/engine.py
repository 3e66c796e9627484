"""The engine: task records, the supervisor's decisions carried out, one runner per transfer.

The engine knows nothing of identifiers, state directories or handles: it takes
validated requests, runs them under the connection limits and publishes their
events. :class:`~bgtransfer.Session` is one front for it; the daemon will put the
same engine behind a Unix socket.

Concurrency shape: one anyio task group for the engine's life; a runner task is
spawned only when the supervisor grants a slot, so queued tasks cost a record,
not a coroutine. Every runner ends in ``finally`` by publishing exactly one
terminal event and releasing its slot, whatever happened to it.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import anyio
import anyio.abc

from .._core.config import Configuration, HeaderPairs
from .._core.events import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    ProgressEvent,
    RetryEvent,
    TaskEvent,
    TerminalEvent,
)
from .._core.naming import filename_from_url, parse_url, unique_name
from .._core.ranges import plan_resume
from .._core.resume_data import InvalidResumeDataError, ResumeData
from .._core.retry import backoff, parse_retry_after
from .._core.states import Input, TaskState, transition
from .._core.supervisor import Supervisor, SupervisorStatistics
from .._exceptions import (
    HTTPStatusError,
    InvalidDestinationError,
    ProtocolError,
    ResourceTimeoutError,
    SessionClosedError,
    TransferError,
)
from .._io.errors import file_error
from .._io.files import move_into_place, remove_quietly
from .._io.transfer import fetch_to_file
from .hub import EventHub, EventStream, snapshot_progress
from .record import AttemptSink, RestartFromZero, TaskRecord

__all__ = ["Engine"]

logger = logging.getLogger("bgtransfer")

_FORCED_HEADERS = {"Accept-Encoding": "identity"}  # offsets on disk = offsets of the representation


class Engine:
    """Runs download tasks under a :class:`Configuration`; use as an async context manager."""

    def __init__(
        self,
        *,
        config: Configuration,
        downloads_dir: Path,
        partials_dir: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self._downloads_dir = downloads_dir
        self._partials_dir = partials_dir
        self._supervisor = Supervisor(
            per_host_limit=config.max_connections_per_host,
            total_limit=config.max_concurrent_transfers,
        )
        self._hub = EventHub()
        self._records: dict[int, TaskRecord] = {}
        self._claims: dict[Path, int] = {}  # destinations of live tasks
        self._next_id = 1
        self._task_group: anyio.abc.TaskGroup | None = None
        self._client: aiohttp.ClientSession | None = None
        self._closing = False
        self._invalidated = False
        self._rng = random.Random()

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_concurrent_transfers,
            # Defence in depth: the supervisor already keeps each origin within the
            # limit; this also bounds the hosts a redirect leads to.
            limit_per_host=self.config.max_connections_per_host,
        )
        self._client = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
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
        """Cancel every task that has not ended, wait for their runners, close the client.

        The exception leaving the ``async with`` body (if any) is not handed to the
        task group: the application's own error comes out as it went in, never
        wrapped in an exception group.
        """
        self._closing = True
        try:
            for record in list(self._records.values()):
                self.cancel(record.id)
            if self._task_group is not None:
                # Runners are all cancelled; this only waits for their cleanup.
                await self._task_group.__aexit__(None, None, None)
        finally:
            self._task_group = None
            with anyio.CancelScope(shield=True):
                self._hub.close()
                if self._client is not None:
                    await self._client.close()
        return None

    # -- queries ------------------------------------------------------------------

    def records(self) -> list[TaskRecord]:
        return list(self._records.values())

    def statistics(self) -> SupervisorStatistics:
        return self._supervisor.statistics()

    def subscribe(self, task_id: int | None) -> EventStream:
        """A stream of one task's events (or every task's, with None).

        A late subscriber first gets what it missed in condensed form: one
        progress event with the total so far, and the terminal event if the task
        has ended; so it too sees exactly one terminal event per task.
        """
        records = [self._records[task_id]] if task_id is not None else self._records.values()
        backlog: list[TaskEvent] = []
        for record in records:
            backlog.extend(snapshot_progress(record.last_progress))
            if record.terminal is not None:
                backlog.append(record.terminal)
        return self._hub.subscribe(task_id, backlog)

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
    ) -> TaskRecord:
        """Validate a download request, queue it, and start it if a slot is free."""
        self._check_open()
        url, origin = parse_url(url)
        task_id = self._next_id
        target = self._resolve_destination(url, destination)
        self._next_id += 1
        record = TaskRecord(
            task_id=task_id,
            url=url,
            origin=origin,
            destination=target,
            partial=self._partials_dir / f"{task_id}.part",
            description=description,
            headers=_merge_headers(self.config.headers, headers),
            progress_interval=self.config.progress_interval,
        )
        return self._admit(record)

    def submit_resumed(
        self,
        data: ResumeData,
        destination: str | os.PathLike[str] | None,
        *,
        headers: HeaderPairs,
    ) -> TaskRecord:
        """A new task continuing from resume data; it takes the partial file over.

        The partial file is moved into this session's partials with one rename, so
        of two tasks started from the same resume data at once exactly one gets
        it; the other raises :class:`InvalidResumeDataError`.
        """
        self._check_open()
        url, origin = parse_url(data.url)
        given = destination if destination is not None else data.destination
        target = self._resolve_destination(url, given)
        task_id = self._next_id
        partial = self._partials_dir / f"{task_id}.part"
        source = Path(data.partial)
        try:
            os.replace(source, partial)
        except FileNotFoundError:
            raise InvalidResumeDataError(
                f"{url}: the partial file {data.partial} is gone "
                "(resumed already by another task, or deleted)"
            ) from None
        except OSError as exc:
            cause = "it is on another file system" if exc.errno == errno.EXDEV else exc.strerror
            raise InvalidResumeDataError(
                f"{url}: cannot take over the partial file {data.partial}: {cause}"
            ) from exc
        size = partial.stat().st_size
        if size < data.offset:
            os.replace(partial, source)  # give it back untouched: nothing is lost
            raise InvalidResumeDataError(
                f"{url}: the partial file {data.partial} holds {size} bytes, "
                f"the resume data says {data.offset}"
            )
        self._next_id += 1
        record = TaskRecord(
            task_id=task_id,
            url=url,
            origin=origin,
            destination=target,
            partial=partial,
            description=data.description,
            headers=_merge_headers(self.config.headers, (*data.headers, *headers)),
            progress_interval=self.config.progress_interval,
            offset=data.offset,
            validator=data.validator,
            total=data.total,
            encoding=data.encoding,
        )
        record.announce_resume = True
        return self._admit(record)

    def cancel(self, task_id: int, *, resume_data: bool = False) -> None:
        """Ask a task to stop. It ends with a ``CancelledEvent``; with ``resume_data``
        its partial file is kept for the resume data (when resuming is safe),
        otherwise removed."""
        record = self._records[task_id]
        if record.state in (TaskState.COMPLETED, TaskState.CANCELING):
            return
        record.state = transition(record.state, Input.CANCEL)
        record.want_resume_data = resume_data
        if record.running:
            self._interrupt(record)
            return
        # Queued or suspended: no runner to wind down; end it here.
        self._start(self._supervisor.remove(task_id, now=self.clock()))
        outcome = self._cancel_outcome(record)
        if outcome.resume_data is None:
            self._spawn(remove_quietly, record.partial)
        self._complete(record, outcome)

    def suspend(self, task_id: int) -> None:
        """Pause a running task in place: its slot is freed, its partial file kept."""
        record = self._records[task_id]
        previous = record.state
        record.state = transition(previous, Input.SUSPEND)
        if previous is not TaskState.RUNNING:
            return  # idempotent, or too late: the table says what stays
        record.announce_resume = True
        if record.running:
            self._interrupt(record)
        else:
            self._start(self._supervisor.remove(task_id, now=self.clock()))

    def resume(self, task_id: int) -> None:
        """Continue a suspended task from its offset (it queues for a slot first)."""
        record = self._records[task_id]
        previous = record.state
        record.state = transition(previous, Input.RESUME)
        if previous is not TaskState.SUSPENDED:
            return  # idempotent, or too late: the table says what stays
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
        if self._task_group is None or self._closing:
            raise SessionClosedError("the session is not open; use 'async with Session(...)'")
        if self._invalidated:
            raise SessionClosedError("the session was invalidated and accepts no new tasks")

    def _admit(self, record: TaskRecord) -> TaskRecord:
        self._records[record.id] = record
        self._claims[record.destination] = record.id
        self._start(self._supervisor.enqueue(record.id, record.origin, now=self.clock()))
        return record

    def _resolve_destination(self, url: str, destination: str | os.PathLike[str] | None) -> Path:
        """The absolute target path; raises at the call when it cannot work.

        No destination, or an existing directory: a name from the URL, made unique
        against existing files and other live tasks (``name (1).ext``). A file path:
        its directory must exist and no other live task may target it; an existing
        file there is replaced when the download finishes.
        """
        if destination is None:
            return self._unique_in(self._downloads_dir, filename_from_url(url))
        if not isinstance(destination, str | os.PathLike):
            raise TypeError(
                f"destination must be a str or os.PathLike, not {type(destination).__name__}"
            )
        path = Path(destination).expanduser()
        if path.is_dir():
            return self._unique_in(path.resolve(), filename_from_url(url))
        if not path.parent.is_dir():
            raise InvalidDestinationError(
                f"{url}: destination directory {str(path.parent)!r} does not exist"
            )
        target = path.parent.resolve() / path.name
        owner = self._claims.get(target)
        if owner is not None:
            raise InvalidDestinationError(
                f"{url}: destination {str(target)!r} is already claimed by task {owner}"
            )
        return target

    def _unique_in(self, directory: Path, name: str) -> Path:
        def taken(candidate: str) -> bool:
            path = directory / candidate
            return path in self._claims or path.exists()

        return directory / unique_name(name, taken)

    def _spawn(self, func: Callable[..., Coroutine[Any, Any, object]], *args: object) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(func, *args)

    def _start(self, task_ids: list[int]) -> None:
        if not task_ids:
            return
        assert self._task_group is not None, "the supervisor started a task after close"
        for task_id in task_ids:
            record = self._records[task_id]
            record.running = True
            self._task_group.start_soon(self._run, record, name=f"bgtransfer-{task_id}")

    def _cancel_outcome(self, record: TaskRecord) -> CancelledEvent:
        data = record.resume_data() if record.want_resume_data else None
        return CancelledEvent(task_id=record.id, resume_data=data)

    async def _run(self, record: TaskRecord) -> None:
        """One runner: attempts with retries until the task ends or is suspended."""
        outcome: TerminalEvent | None = None
        try:
            with anyio.CancelScope() as scope:
                record.scope = scope
                if record.state is not TaskState.RUNNING:
                    scope.cancel()  # suspended or cancelled before it got going
                outcome = await self._transfer(record)
        except TransferError as exc:
            outcome = ErrorEvent(task_id=record.id, error=exc)
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
            if record.state is TaskState.CANCELING and not isinstance(outcome, FinishedEvent):
                outcome = self._cancel_outcome(record)
            elif outcome is None and record.state is TaskState.RUNNING and not requeue:
                # Cancelled from outside: the session, or the task hosting it, is
                # being cancelled. Never spawn it again into a cancelled group.
                record.state = transition(record.state, Input.CANCEL)
                outcome = CancelledEvent(task_id=record.id)
            keep_partial = outcome is None or (
                isinstance(outcome, CancelledEvent) and outcome.resume_data is not None
            )
            if not keep_partial and not isinstance(outcome, FinishedEvent):
                with anyio.CancelScope(shield=True):
                    await remove_quietly(record.partial)
                if record.state is TaskState.CANCELING and isinstance(outcome, ErrorEvent):
                    outcome = CancelledEvent(task_id=record.id)  # cancel() came meanwhile
            # From here on nothing awaits: commands see a consistent record.
            record.running = False
            self._start(self._supervisor.release(record.id, now=self.clock()))
            if outcome is not None:
                self._complete(record, outcome)
            else:
                self._flush_progress(record)
                if record.state is TaskState.RUNNING:  # resumed while winding down
                    self._start(
                        self._supervisor.enqueue(record.id, record.origin, now=self.clock())
                    )

    async def _transfer(self, record: TaskRecord) -> FinishedEvent:
        """Attempts until the body is whole, then the move into place."""
        timeout = self.config.resource_timeout
        remaining = None if timeout is None else max(0.0, timeout - record.active_time)
        started = self.clock()
        try:
            with anyio.fail_after(remaining):
                await self._attempts(record)
        except TransferError:
            raise
        except TimeoutError as exc:
            raise ResourceTimeoutError(
                f"the task took longer than resource_timeout ({timeout} seconds)", url=record.url
            ) from exc
        finally:
            record.active_time += self.clock() - started  # suspended time is not counted
        # Shielded: once the rename starts, it finishes, and the task has finished.
        with anyio.CancelScope(shield=True):
            try:
                await move_into_place(record.partial, record.destination)
            except OSError as exc:
                raise file_error(
                    exc, url=record.url, action="move the file to", path=record.destination
                ) from exc
        return FinishedEvent(
            task_id=record.id, location=record.destination, total_bytes=record.bytes_received
        )

    async def _attempts(self, record: TaskRecord) -> None:
        """The retry loop: transient failures are retried from the bytes on disk."""
        policy = self.config.retry
        failures = 0  # consecutive attempts that made no progress
        while True:
            try:
                await self._attempt(record)
            except RestartFromZero as signal:
                failures += 1
                if failures >= policy.max_attempts:
                    raise ProtocolError(str(signal), url=record.url) from None
                record.bytes_received = 0
                record.validator = None
                record.announce_resume = True
                continue
            except TransferError as exc:
                if record.written_this_attempt:
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
            else:
                return

    async def _attempt(self, record: TaskRecord) -> None:
        assert self._client is not None
        plan = plan_resume(
            offset=record.bytes_received, validator=record.validator, total=record.bytes_expected
        )
        # Without a range the whole file comes again; a ResumedEvent with offset 0
        # says so when there were bytes on disk.
        headers = {**record.headers, **plan.headers}
        record.written_this_attempt = 0
        sink = AttemptSink(
            record,
            offset=plan.offset,
            ranged=plan.ranged,
            config=self.config,
            clock=self.clock,
            publish=self._publish,
        )
        await fetch_to_file(
            self._client,
            url=record.url,
            headers=headers,
            partial=record.partial,
            request_timeout=self.config.request_timeout,
            sink=sink,
        )

    def _hold_origin(self, record: TaskRecord, seconds: float) -> None:
        """Retry-After on 429/503: start no task for that origin until it has passed."""
        self._supervisor.hold(record.origin, self.clock() + seconds)

        async def wake() -> None:
            await anyio.sleep(seconds)
            self._start(self._supervisor.poll(self.clock()))

        self._spawn(wake)

    def _publish(self, event: TaskEvent) -> None:
        if isinstance(event, ProgressEvent):
            self._records[event.task_id].last_progress = event
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
        if self._claims.get(record.destination) == record.id:
            del self._claims[record.destination]
        self._hub.publish(outcome)
        record.done.set()


def _merge_headers(defaults: HeaderPairs, overrides: HeaderPairs) -> dict[str, str]:
    merged: dict[str, tuple[str, str]] = {}
    for name, value in (*defaults, *overrides, *_FORCED_HEADERS.items()):
        merged[name.lower()] = (name, value)
    return dict(merged.values())
