"""``LocalBackend``: the in-process engine as a :class:`~.backend.TaskBackend`.

An adapter rather than the engine itself: the engine's own methods hand out
its live records (to restore, to the download, to its tests); this class is
the boundary where a record becomes a :class:`~.backend.TaskSnapshot` and a
wait on a record's event becomes an awaitable call.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .._core.config import HeaderPairs
from .._core.fetch import FetchResponse
from .._core.metrics import SessionMetrics, TaskMetrics
from .._core.resume_data import ResumeData
from .._core.states import TaskState
from .._core.supervisor import SupervisorStatistics
from .._exceptions import SessionClosedError
from .backend import TaskSnapshot

if TYPE_CHECKING:
    from .._core.request import DownloadRequest
    from .._core.upload import UploadRequest
    from .engine import Engine
    from .hub import EventStream
    from .record import TaskRecord

__all__ = ["LocalBackend", "snapshot_of"]


def snapshot_of(record: TaskRecord) -> TaskSnapshot:
    return TaskSnapshot(
        id=record.id,
        url=record.url,
        description=record.description,
        destination=record.destination,
        state=record.state,
        bytes_received=record.bytes_received,
        bytes_expected=record.bytes_expected,
        terminal=record.terminal,
        kind=record.kind,
        source=record.source,
    )


class LocalBackend:
    """The tasks of one :class:`~.engine.Engine`, behind the backend protocol."""

    __slots__ = ("_arriving", "_directory", "_engine", "_suspensions", "gathers")

    def __init__(self, engine: Engine, directory: Path) -> None:
        self._engine = engine
        self._directory = directory
        # Per task, the scopes of wait() calls to end when it is suspended.
        self._suspensions: dict[int, list[anyio.CancelScope]] = {}
        self._arriving = 0  # calls that make tasks, at their scheduling point
        self.gathers = True
        """Whether a call that makes tasks takes its scheduling point first
        (below). The daemon turns it off for the sessions it serves: their
        submissions come one message at a time, gathered by the client already,
        and the yield would only cost each a turn of the loop."""

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def engine(self) -> Engine:
        return self._engine

    # -- commands ---------------------------------------------------------------

    # A call that makes tasks takes its scheduling point first (a loop of
    # download() calls lets the other tasks run), where a cancelled caller
    # stops before anything is made; then it makes the tasks and commits them
    # with no await in between when the commit runs on the loop: returned, a
    # task is in the journal, cancelled, the caller made none. Callers that
    # arrived together (an asyncio.gather of download() calls) resume one after
    # the other in the next turn: each but the last leaves its commit to the
    # last one, one commit for all. (A shielded yield after making them cost
    # more than twice a bare one: docs/design.md, "Enqueue: what one call pays".)

    async def _arrive(self) -> bool:
        """The call's scheduling and cancellation point; whether no other call
        that makes tasks resumes after this one in this turn (it commits)."""
        if not self.gathers:
            return True
        self._arriving += 1
        try:
            await asyncio.sleep(0)
        finally:
            self._arriving -= 1
        return not self._arriving

    async def submit(self, request: DownloadRequest) -> TaskSnapshot:
        engine = self._engine
        last = await self._arrive()
        record = engine.submit(
            request.url,
            request.destination,
            description=request.description,
            headers=request.headers,
            segments=request.segments,
            integrity=request.integrity,
        )
        await engine.flush(at_once=last)  # in the journal before it is handed out
        return snapshot_of(record)

    async def submit_many(self, requests: Sequence[DownloadRequest]) -> list[TaskSnapshot]:
        engine = self._engine
        last = await self._arrive()
        records = engine.submit_many(
            [
                (r.url, r.destination, r.description, r.headers, r.segments, r.integrity)
                for r in requests
            ]
        )
        await engine.flush(at_once=last)  # in the journal before they are handed out
        return [snapshot_of(record) for record in records]

    async def submit_upload(self, request: UploadRequest) -> TaskSnapshot:
        engine = self._engine
        last = await self._arrive()
        record = engine.submit_upload(request)
        await engine.flush(at_once=last)  # in the journal before it is handed out
        return snapshot_of(record)

    async def submit_uploads(self, requests: Sequence[UploadRequest]) -> list[TaskSnapshot]:
        engine = self._engine
        last = await self._arrive()
        records = engine.submit_uploads(requests)
        await engine.flush(at_once=last)  # in the journal before they are handed out
        return [snapshot_of(record) for record in records]

    async def fetch(
        self, url: str, *, method: str, headers: HeaderPairs, max_bytes: int | None
    ) -> FetchResponse:
        """A data task (``Session.fetch``): the answer, body in memory."""
        return await self._engine.fetch(url, method=method, headers=headers, max_bytes=max_bytes)

    async def submit_resumed(
        self,
        data: ResumeData,
        destination: str | os.PathLike[str] | None,
        *,
        headers: HeaderPairs,
    ) -> TaskSnapshot:
        record = await self._engine.submit_resumed(data, destination, headers=headers)
        return snapshot_of(record)

    async def cancel(
        self, task_id: int, *, resume_data: bool = False, wait: bool = True
    ) -> TaskSnapshot:
        engine = self._engine
        record = engine.record(task_id)
        engine.cancel(task_id, resume_data=resume_data)
        if wait:
            await record.done.wait()
            await engine.flush()  # the journal agrees before the outcome is handed out
            if resume_data and engine.config.acknowledge == "auto":
                engine.acknowledge(task_id)  # the caller gets the outcome
        return snapshot_of(record)

    def suspend(self, task_id: int) -> TaskSnapshot:
        self._engine.suspend(task_id)
        record = self._engine.record(task_id)
        if record.state is TaskState.SUSPENDED:
            for scope in self._suspensions.pop(task_id, ()):
                scope.cancel()  # its waiters return: nothing ends it now
        return snapshot_of(record)

    def resume(self, task_id: int) -> TaskSnapshot:
        self._engine.resume(task_id)
        return snapshot_of(self._engine.record(task_id))

    async def acknowledge(self, task_ids: Sequence[int]) -> None:
        engine = self._engine
        for task_id in task_ids:
            engine.acknowledge(task_id, urgent=True)
        await engine.flush()

    def invalidate(self) -> None:
        self._engine.invalidate()

    # -- waiting and events -------------------------------------------------------

    async def wait(
        self, task_id: int, *, hand_out: bool = True, stop_when_suspended: bool = True
    ) -> TaskSnapshot:
        engine = self._engine
        record = engine.record(task_id)
        while record.terminal is None:
            if record.done.is_set():  # set without an end: the engine closed
                raise SessionClosedError(
                    f"the session closed before task {task_id} ({record.url}) ended"
                )
            if not stop_when_suspended:
                await record.done.wait()
            elif record.state is TaskState.SUSPENDED:
                return snapshot_of(record)
            else:
                await self._wait_unless_suspended(record)
        if hand_out:
            await engine.durable(task_id)  # the journal holds the end before the caller sees it
            if engine.config.acknowledge == "auto":
                engine.acknowledge(task_id)
        return snapshot_of(record)

    async def _wait_unless_suspended(self, record: TaskRecord) -> None:
        """Until the task ends, or :meth:`suspend` ends the wait."""
        with anyio.CancelScope() as scope:
            scopes = self._suspensions.setdefault(record.id, [])
            scopes.append(scope)
            try:
                await record.done.wait()
            finally:
                if scope in scopes:
                    scopes.remove(scope)
                if not scopes and self._suspensions.get(record.id) is scopes:
                    del self._suspensions[record.id]

    def subscribe(
        self, task_id: int | None, *, follow: bool = True, since: int | None = None
    ) -> EventStream[Any]:
        return self._engine.subscribe(task_id, follow=follow, since=since)

    async def wait_events_delivered(self) -> None:
        await self._engine.wait_events_delivered()

    # -- queries ------------------------------------------------------------------

    def task(self, task_id: int) -> TaskSnapshot:
        return snapshot_of(self._engine.record(task_id))

    def tasks(self) -> list[TaskSnapshot]:
        return [snapshot_of(record) for record in self._engine.records()]

    def statistics(self) -> SupervisorStatistics:
        return self._engine.statistics()

    async def task_metrics(self, task_id: int) -> TaskMetrics:
        return self._engine.task_metrics(task_id)

    async def metrics(self) -> SessionMetrics:
        return self._engine.metrics()

    async def flush(self) -> None:
        await self._engine.flush()
