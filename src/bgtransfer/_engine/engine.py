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

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import aiohttp
import anyio
import anyio.abc

from .._core.config import Configuration, HeaderPairs
from .._core.events import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    ProgressEvent,
    TaskEvent,
    TerminalEvent,
)
from .._core.naming import Origin, filename_from_url, parse_url, unique_name
from .._core.progress import ProgressThrottle
from .._core.response import ResponseInfo
from .._core.states import Input, TaskState, transition
from .._core.supervisor import Supervisor, SupervisorStatistics
from .._exceptions import (
    InvalidDestinationError,
    SessionClosedError,
    TransferError,
    TransferTimeoutError,
)
from .._io.errors import file_error
from .._io.files import move_into_place, remove_quietly
from .._io.transfer import fetch_to_file
from .hub import EventHub, EventStream, snapshot_progress

__all__ = ["Engine", "TaskRecord"]

logger = logging.getLogger("bgtransfer")

_FORCED_HEADERS = {"Accept-Encoding": "identity"}  # offsets on disk = offsets of the representation


class TaskRecord:
    """Everything the engine knows about one task. Mutated only by the engine."""

    __slots__ = (
        "bytes_expected",
        "bytes_received",
        "description",
        "destination",
        "done",
        "headers",
        "id",
        "last_progress",
        "origin",
        "partial",
        "scope",
        "state",
        "terminal",
        "throttle",
        "url",
    )

    def __init__(
        self,
        *,
        task_id: int,
        url: str,
        origin: Origin,
        destination: Path,
        partial: Path,
        description: str | None,
        headers: Mapping[str, str],
        progress_interval: float,
    ) -> None:
        self.id = task_id
        self.url = url
        self.origin = origin
        self.destination = destination
        self.partial = partial
        self.description = description
        self.headers = headers
        self.state = TaskState.RUNNING
        self.bytes_received = 0
        self.bytes_expected: int | None = None
        self.last_progress: ProgressEvent | None = None
        self.terminal: TerminalEvent | None = None
        self.done = anyio.Event()
        self.scope: anyio.CancelScope | None = None
        self.throttle = ProgressThrottle(task_id, interval=progress_interval)


class _Sink:
    """Adapts one record to the transfer's :class:`~bgtransfer._io.transfer.TransferSink`."""

    __slots__ = ("_engine", "_record")

    def __init__(self, engine: Engine, record: TaskRecord) -> None:
        self._engine = engine
        self._record = record

    def response_received(self, info: ResponseInfo) -> None:
        self._record.bytes_expected = info.expected_length
        self._record.throttle.set_expected(info.expected_length)

    def bytes_written(self, nbytes: int) -> None:
        record = self._record
        record.bytes_received += nbytes
        event = record.throttle.feed(nbytes, self._engine.clock())
        if event is not None:
            self._engine._publish_progress(record, event)


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

    def get(self, task_id: int) -> TaskRecord:
        return self._records[task_id]

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
        if self._task_group is None or self._closing:
            raise SessionClosedError("the session is not open; use 'async with Session(...)'")
        if self._invalidated:
            raise SessionClosedError("the session was invalidated and accepts no new tasks")
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
        self._records[task_id] = record
        self._claims[target] = task_id
        self._start(self._supervisor.enqueue(task_id, origin, now=self.clock()))
        return record

    def cancel(self, task_id: int) -> None:
        """Ask a task to stop; it ends with a ``CancelledEvent`` and leaves no partial file."""
        record = self._records[task_id]
        if record.state in (TaskState.COMPLETED, TaskState.CANCELING):
            return
        record.state = transition(record.state, Input.CANCEL)
        if self._supervisor.is_queued(task_id):
            self._start(self._supervisor.remove(task_id, now=self.clock()))
            self._complete(record, CancelledEvent(task_id=task_id))
        elif record.scope is not None:
            record.scope.cancel()
        # else: its runner was spawned but has not entered its scope yet; it checks state.

    # -- internals ----------------------------------------------------------------

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

    def _start(self, task_ids: list[int]) -> None:
        if not task_ids:
            return
        assert self._task_group is not None, "the supervisor started a task after close"
        for task_id in task_ids:
            self._task_group.start_soon(
                self._run, self._records[task_id], name=f"bgtransfer-{task_id}"
            )

    async def _run(self, record: TaskRecord) -> None:
        outcome: TerminalEvent | None = None
        try:
            with anyio.CancelScope() as scope:
                record.scope = scope
                if record.state is TaskState.CANCELING:
                    scope.cancel()
                outcome = await self._transfer(record)
        except TransferError as exc:
            outcome = ErrorEvent(task_id=record.id, error=exc)
        except Exception as exc:  # a bug must not take the other tasks down with it
            logger.exception("internal error in task %d (%s)", record.id, record.url)
            error = TransferError(f"internal error: {exc!r}", url=record.url)
            error.__cause__ = exc
            outcome = ErrorEvent(task_id=record.id, error=error)
        finally:
            # Reached on success, failure, cancel(), and the session's own cancellation.
            record.scope = None
            if outcome is None or (
                record.state is TaskState.CANCELING and isinstance(outcome, ErrorEvent)
            ):
                outcome = CancelledEvent(task_id=record.id)
            if not isinstance(outcome, FinishedEvent):
                with anyio.CancelScope(shield=True):
                    await remove_quietly(record.partial)
            self._start(self._supervisor.release(record.id, now=self.clock()))
            self._complete(record, outcome)

    async def _transfer(self, record: TaskRecord) -> FinishedEvent:
        assert self._client is not None
        timeout = self.config.resource_timeout
        try:
            with anyio.fail_after(timeout):
                await fetch_to_file(
                    self._client,
                    url=record.url,
                    headers=record.headers,
                    partial=record.partial,
                    request_timeout=self.config.request_timeout,
                    sink=_Sink(self, record),
                )
        except TransferError:
            raise
        except TimeoutError as exc:
            raise TransferTimeoutError(
                f"the task took longer than resource_timeout ({timeout} seconds)", url=record.url
            ) from exc
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

    def _publish_progress(self, record: TaskRecord, event: ProgressEvent) -> None:
        record.last_progress = event
        self._hub.publish(event)

    def _complete(self, record: TaskRecord, outcome: TerminalEvent) -> None:
        """Publish the last progress and the one terminal event; free the destination."""
        if isinstance(outcome, FinishedEvent):
            signal = Input.FINISH
        elif isinstance(outcome, ErrorEvent):
            signal = Input.FAIL
        else:
            signal = Input.CANCELLED
        record.state = transition(record.state, signal)
        tail = record.throttle.flush()
        if tail is not None:
            self._publish_progress(record, tail)
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
