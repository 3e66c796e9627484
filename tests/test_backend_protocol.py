"""The task backend seam: ``Session`` and ``DownloadTask`` use nothing but it.

An in-memory :class:`TaskBackend` (no engine, no network, no files) drives the
front; the in-process engine's backend satisfies the same protocol; snapshots
are frozen values, current after events.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from bgtransfer import (
    CancelledEvent,
    Configuration,
    DownloadRequest,
    DownloadTask,
    ErrorEvent,
    EventsDeliveredEvent,
    FinishedEvent,
    HTTPStatusError,
    ProgressEvent,
    ResumeData,
    Session,
    SessionClosedError,
    SupervisorStatistics,
    TaskState,
    TaskSuspendedError,
    UploadTask,
)
from bgtransfer._core.config import HeaderPairs
from bgtransfer._core.events import TerminalEvent
from bgtransfer._core.metrics import SessionMetrics, TaskMetrics, TimingSummary
from bgtransfer._core.states import Input, transition
from bgtransfer._core.upload import UploadRequest
from bgtransfer._engine.backend import TaskBackend, TaskSnapshot
from bgtransfer._engine.hub import EventHub, EventStream
from bgtransfer._engine.local import LocalBackend
from bgtransfer._engine.startup import open_backend
from bgtransfer.testing import Faults, TestServer

SRC = Path(__file__).parent.parent / "src" / "bgtransfer"


class FakeBackend:
    """Tasks in a dict; the test says what happens to them (``progress``, ``end``)."""

    def __init__(self, directory: Path = Path("/nowhere")) -> None:
        self._directory = directory
        self.snapshots: dict[int, TaskSnapshot] = {}
        self.hub = EventHub(on_delivered=None)
        self.acknowledged: list[int] = []
        self.flushes = 0
        self.invalidated = False
        self.closed = False
        self.cursors: list[int | None] = []  # the ``since`` of each subscribe()
        self._changed = anyio.Event()

    @property
    def directory(self) -> Path:
        return self._directory

    # -- driving it ---------------------------------------------------------------

    def _set(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        self.snapshots[snapshot.id] = snapshot
        self._changed.set()
        self._changed = anyio.Event()
        return snapshot

    def progress(self, task_id: int, nbytes: int, expected: int | None = None) -> None:
        old = self.snapshots[task_id]
        total = old.bytes_received + nbytes
        self._set(attrs.evolve(old, bytes_received=total, bytes_expected=expected))
        self.hub.publish(
            ProgressEvent(
                task_id=task_id,
                bytes_written=nbytes,
                total_bytes_written=total,
                total_bytes_expected=expected,
            )
        )

    def end(self, task_id: int, terminal: TerminalEvent) -> None:
        old = self.snapshots[task_id]
        self._set(attrs.evolve(old, state=TaskState.COMPLETED, terminal=terminal))
        self.hub.publish(terminal)

    def close(self) -> None:
        self.closed = True
        self.hub.close()
        self._changed.set()

    # -- the protocol ----------------------------------------------------------------

    def _new(self, request: DownloadRequest) -> TaskSnapshot:
        task_id = len(self.snapshots) + 1
        return self._set(
            TaskSnapshot(
                id=task_id,
                url=request.url,
                description=request.description,
                destination=Path(request.destination or f"/downloads/{task_id}"),
                state=TaskState.RUNNING,
                bytes_received=0,
                bytes_expected=None,
                terminal=None,
            )
        )

    async def submit(self, request: DownloadRequest) -> TaskSnapshot:
        return self._new(request)

    async def submit_many(self, requests: Sequence[DownloadRequest]) -> list[TaskSnapshot]:
        return [self._new(request) for request in requests]

    async def submit_upload(self, request: UploadRequest) -> TaskSnapshot:
        task_id = len(self.snapshots) + 1
        source = Path(request.file)
        return self._set(
            TaskSnapshot(
                id=task_id,
                url=request.url,
                description=request.description,
                destination=source if request.reply_to is None else Path(request.reply_to),
                state=TaskState.RUNNING,
                bytes_received=0,
                bytes_expected=100,
                terminal=None,
                kind="upload",
                source=source,
            )
        )

    async def submit_uploads(self, requests: Sequence[UploadRequest]) -> list[TaskSnapshot]:
        return [await self.submit_upload(request) for request in requests]

    async def submit_resumed(
        self, data: ResumeData, destination: Any, *, headers: HeaderPairs
    ) -> TaskSnapshot:
        snapshot = self._new(DownloadRequest(data.url, destination or data.destination))
        return self._set(attrs.evolve(snapshot, bytes_received=data.offset))

    async def cancel(
        self, task_id: int, *, resume_data: bool = False, wait: bool = True
    ) -> TaskSnapshot:
        snapshot = self.snapshots[task_id]
        if snapshot.terminal is None:
            data = None
            if resume_data:
                data = ResumeData(
                    url=snapshot.url,
                    partial="/p/1.part",
                    offset=snapshot.bytes_received,
                    validator='"v"',
                    total=snapshot.bytes_expected,
                )
            self.end(task_id, CancelledEvent(task_id=task_id, resume_data=data))
        return self.snapshots[task_id]

    def suspend(self, task_id: int) -> TaskSnapshot:
        old = self.snapshots[task_id]
        return self._set(attrs.evolve(old, state=transition(old.state, Input.SUSPEND)))

    def resume(self, task_id: int) -> TaskSnapshot:
        old = self.snapshots[task_id]
        return self._set(attrs.evolve(old, state=transition(old.state, Input.RESUME)))

    async def acknowledge(self, task_ids: Sequence[int]) -> None:
        self.acknowledged.extend(task_ids)

    def invalidate(self) -> None:
        self.invalidated = True

    async def wait(
        self, task_id: int, *, hand_out: bool = True, stop_when_suspended: bool = True
    ) -> TaskSnapshot:
        while True:
            snapshot = self.snapshots[task_id]
            if snapshot.terminal is not None:
                return snapshot
            if stop_when_suspended and snapshot.state is TaskState.SUSPENDED:
                return snapshot
            if self.closed:
                raise SessionClosedError(f"closed before task {task_id} ended")
            await self._changed.wait()

    def subscribe(
        self, task_id: int | None, *, follow: bool = True, since: int | None = None
    ) -> EventStream[Any]:
        self.cursors.append(since)
        snapshots = [self.snapshots[task_id]] if task_id is not None else self.snapshots.values()
        backlog = [s.terminal for s in snapshots if s.terminal is not None]
        return self.hub.subscribe(task_id, backlog, follow=follow)

    async def wait_events_delivered(self) -> None:
        await anyio.lowlevel.checkpoint()

    def task(self, task_id: int) -> TaskSnapshot:
        return self.snapshots[task_id]

    def tasks(self) -> list[TaskSnapshot]:
        return list(self.snapshots.values())

    def statistics(self) -> SupervisorStatistics:
        return SupervisorStatistics(
            active=len(self.snapshots), queued=0, active_by_origin={}, queued_by_origin={}
        )

    async def flush(self) -> None:
        self.flushes += 1

    async def task_metrics(self, task_id: int) -> TaskMetrics:
        self.snapshots[task_id]
        return TaskMetrics(
            task_id=task_id,
            attempts=(),
            dropped_attempts=0,
            redirects=(),
            bytes_sent=0,
            bytes_received=0,
        )

    async def metrics(self) -> SessionMetrics:
        return SessionMetrics(
            attempts=0,
            retries=0,
            failures=0,
            redirects=0,
            bytes_sent=0,
            bytes_received=0,
            connections_opened=0,
            connections_reused=0,
            time_to_first_byte=TimingSummary(),
        )


# -- the protocol's shape ---------------------------------------------------------------


def _members(cls: type) -> dict[str, inspect.Signature | None]:
    found: dict[str, inspect.Signature | None] = {}
    for name, value in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        found[name] = inspect.signature(value) if callable(value) else None
    return found


@pytest.mark.parametrize("implementation", [LocalBackend, FakeBackend])
def test_implementations_have_the_protocols_signatures(implementation: type) -> None:
    """Every member of the protocol, with the same parameters (names, kinds,
    defaults) and the same sync-or-async colour."""
    wanted = _members(TaskBackend)
    have = _members(implementation)
    for name, signature in wanted.items():
        assert name in have, name
        if signature is None:
            continue
        theirs = have[name]
        assert theirs is not None, name
        assert [(p.name, p.kind, p.default) for p in theirs.parameters.values()] == [
            (p.name, p.kind, p.default) for p in signature.parameters.values()
        ], name
        assert inspect.iscoroutinefunction(getattr(implementation, name)) == (
            inspect.iscoroutinefunction(getattr(TaskBackend, name))
        ), name


@pytest.mark.asyncio
async def test_the_engine_backend_satisfies_the_protocol(tmp_path: Path) -> None:
    async with open_backend(None, state_dir=tmp_path, config=Configuration()) as backend:
        assert isinstance(backend, LocalBackend)
        assert isinstance(backend, TaskBackend)
        assert backend.directory.parent == tmp_path
        assert backend.tasks() == []
    assert isinstance(FakeBackend(), TaskBackend)


def test_the_front_imports_only_the_seam_from_the_engine() -> None:
    """``_session.py`` and ``_task.py`` name the engine package's protocol, its
    event stream type and its start-up function, never the engine or a record."""
    allowed = {"backend", "hub", "startup"}
    for name in ("_session.py", "_task.py"):
        tree = ast.parse((SRC / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "_engine" in node.module:
                module = node.module.split(".")[-1]
                assert module in allowed, f"{name}: {node.module}"
                assert {a.name for a in node.names} <= {
                    "DataTasks",  # (fetch(): ephemeral, in-process sessions only)
                    "GivenBackend",  # (a backend made elsewhere, entered as it is)
                    "TaskBackend",
                    "TaskSnapshot",
                    "EventStream",
                    "open_backend",
                }, f"{name}: {ast.unparse(node)}"


def test_a_snapshot_is_frozen() -> None:
    snapshot = TaskSnapshot(
        id=1,
        url="http://h/f",
        description=None,
        destination=Path("/d/f"),
        state=TaskState.RUNNING,
        bytes_received=0,
        bytes_expected=None,
        terminal=None,
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        snapshot.state = TaskState.COMPLETED  # type: ignore[misc]
    assert snapshot.length_verified is None
    finished = attrs.evolve(
        snapshot,
        terminal=FinishedEvent(task_id=1, location=Path("/d/f"), total_bytes=3),
    )
    assert finished.length_verified is True


# -- the front over the fake -----------------------------------------------------------


@pytest.mark.asyncio
async def test_a_session_runs_on_the_fake_backend() -> None:
    fake = FakeBackend()
    async with Session._with_backend(fake, "com.example.fake") as session:
        assert session.directory == fake.directory
        task = await session.download("http://h/a.bin", "/out/a.bin", description="a")
        assert (task.id, task.url, task.description, task.destination) == (
            1,
            "http://h/a.bin",
            "a",
            Path("/out/a.bin"),
        )
        assert (task.state, task.bytes_received, task.bytes_expected) == (
            TaskState.RUNNING,
            0,
            None,
        )
        stream = task.events()
        fake.progress(1, 10, expected=30)
        assert (task.bytes_received, task.bytes_expected) == (10, 30)  # current after it
        fake.progress(1, 20, expected=30)
        finished = FinishedEvent(task_id=1, location=Path("/out/a.bin"), total_bytes=30)
        fake.end(1, finished)
        events = [event async for event in stream]
        assert events[-1] == finished  # (the progress before it coalesced, up to 30)
        assert all(isinstance(e, ProgressEvent) for e in events[:-1])
        assert [e.total_bytes_written for e in events[:-1]][-1:] == [30]  # type: ignore[union-attr]
        with anyio.fail_after(5):
            assert await task.wait() == finished
        assert (task.state, task.result, task.length_verified) == (
            TaskState.COMPLETED,
            finished,
            True,
        )
        await task.acknowledge()
        await session.acknowledge(1)
        assert fake.acknowledged == [1, 1]
        assert [t.id for t in session.tasks()] == [1]
        assert session.statistics().active == 1
        assert repr(task) == "<DownloadTask 1 'a' completed http://h/a.bin>"
    with pytest.raises(SessionClosedError):
        session.tasks()


@pytest.mark.asyncio
async def test_commands_go_to_the_fake_backend() -> None:
    fake = FakeBackend()
    async with Session._with_backend(fake) as session:
        first, second = await session.download_many(
            [DownloadRequest("http://h/1", "/o/1"), "http://h/2"]
        )
        assert (first.destination, second.destination) == (Path("/o/1"), Path("/downloads/2"))
        first.suspend()
        assert first.state is TaskState.SUSPENDED
        with anyio.fail_after(5), pytest.raises(TaskSuspendedError):
            await first.wait()
        first.resume()
        assert first.state is TaskState.RUNNING
        fake.progress(first.id, 7)
        data = await first.cancel_with_resume_data()
        assert data is not None
        assert data.offset == 7
        assert isinstance(first.result, CancelledEvent)
        resumed = await session.download_with_resume_data(data, "/o/1b")
        assert (resumed.bytes_received, resumed.destination) == (7, Path("/o/1b"))
        await second.cancel()
        assert isinstance(second.result, CancelledEvent)
        fake.end(resumed.id, ErrorEvent(task_id=resumed.id, error=HTTPStatusError(404, url="x")))
        with pytest.raises(HTTPStatusError):
            await resumed.wait()
        await session.invalidate_and_cancel()
        assert fake.invalidated


@pytest.mark.asyncio
async def test_a_wait_ends_when_the_fake_backend_closes() -> None:
    fake = FakeBackend()
    async with Session._with_backend(fake) as session:
        task = await session.download("http://h/1")
        async with anyio.create_task_group() as tg:

            async def close_soon() -> None:
                await anyio.wait_all_tasks_blocked()
                fake.close()

            tg.start_soon(close_soon)
            with anyio.fail_after(5), pytest.raises(SessionClosedError):
                await task.wait()
        assert [event async for event in session.events()] == [EventsDeliveredEvent(replayed=0)]


@pytest.mark.asyncio
async def test_session_passes_the_cursor_to_the_backend() -> None:
    """``Session.events(since=N)`` is the backend's ``subscribe(None, since=N)``:
    a daemon's client only has to carry the number over its socket."""
    fake = FakeBackend()
    async with Session._with_backend(fake) as session:
        async with session.events(follow=False, since=7) as stream:
            assert [event async for event in stream] == [EventsDeliveredEvent(replayed=0)]
        async with session.events(follow=False) as stream:
            assert [event async for event in stream] == [EventsDeliveredEvent(replayed=0)]
    assert fake.cursors == [7, None]


# -- snapshots of the real engine --------------------------------------------------------


@pytest.mark.asyncio
async def test_engine_snapshots_are_current_after_events(
    server: TestServer, tmp_path: Path
) -> None:
    file = server.add_file("/f.bin", size=200_000)
    server.set_faults(file.path, Faults(hold_after=50_000))
    config = Configuration(progress_interval=0)
    async with open_backend(None, state_dir=tmp_path, config=config) as backend:
        before = await backend.submit(DownloadRequest(server.url(file.path), tmp_path / "f.bin"))
        assert (before.state, before.bytes_received, before.terminal) == (
            TaskState.RUNNING,
            0,
            None,
        )
        async with backend.subscribe(before.id) as stream:
            async for event in stream:
                if isinstance(event, ProgressEvent) and event.total_bytes_written >= 50_000:
                    break
        now = backend.task(before.id)
        assert now.bytes_received >= 50_000
        assert now.bytes_expected == file.size
        assert before.bytes_received == 0  # a snapshot never changes
        suspended = backend.suspend(before.id)
        assert suspended.state is TaskState.SUSPENDED
        server.release(file.path)
        assert backend.resume(before.id).state is TaskState.RUNNING
        with anyio.fail_after(10):
            ended = await backend.wait(before.id)
        assert isinstance(ended.terminal, FinishedEvent)
        assert (ended.state, ended.bytes_received) == (TaskState.COMPLETED, file.size)
        assert backend.tasks() == [ended]


@pytest.mark.asyncio
async def test_an_upload_goes_through_the_protocol_only() -> None:
    """``Session.upload`` and ``UploadTask`` use nothing but the backend: the
    fake one's upload snapshot makes an ``UploadTask`` that reads it, and
    ``tasks()`` lists both kinds."""
    backend = FakeBackend()
    async with Session._with_backend(backend) as session:
        download = await session.download("http://example.com/a", "/tmp/a")
        upload = await session.upload("http://example.com/up", "/data/file.bin", method="POST")
        assert isinstance(upload, UploadTask)
        assert (upload.source, upload.reply_to, upload.bytes_sent) == (
            Path("/data/file.bin"),
            None,
            0,
        )
        assert upload.bytes_expected == 100
        assert [type(task) for task in session.tasks()] == [DownloadTask, UploadTask]
        assert [task.id for task in session.tasks()] == [download.id, upload.id]
        assert repr(upload).startswith("<UploadTask 2 running")
