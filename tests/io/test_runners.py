"""Runners: how they are stopped, waited for, and fail.

The session's close stops each runner and waits for its cleanup, whatever
cancels the session meanwhile; a cancellation of the session's host (anyio's
or asyncio's ``Task.cancel()``) propagates; a runner's unexpected exception
reaches the session. These pin the contract any shape of the runner must keep
(docs/design.md, "Concurrency"; docs/benchmarks.md, "Runners on asyncio").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from _helpers import collect, seeded_bytes, sha256_bytes, sha256_file
from bgtransfer import (
    CancelledEvent,
    Configuration,
    FinishedEvent,
    Session,
    TaskState,
)
from bgtransfer._engine import download_job, scheduler
from bgtransfer._engine.record import TaskRecord
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio


class Gate:
    """Holds the first call of an async function until released."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.used = False

    def wrap(
        self, real: Callable[..., Awaitable[Any]], when: Callable[..., bool]
    ) -> Callable[..., Awaitable[Any]]:
        async def held(*args: Any, **kwargs: Any) -> Any:
            if not self.used and when(*args, **kwargs):
                self.used = True
                self.reached.set()
                await self.release.wait()
            return await real(*args, **kwargs)

        return held


async def test_a_native_cancel_of_the_host_ends_every_runner_and_propagates(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """``asyncio.Task.cancel()`` of the task hosting an ephemeral session, with
    runners mid-body: each task ends cancelled, no file is left, and the
    cancellation comes out of the ``async with`` (the host ends cancelled)."""
    files = [server.add_file(f"/{i}.bin", size=200_000) for i in range(3)]
    for file in files:
        server.set_faults(file.path, Faults(hold_after=50_000))
    tasks = []
    inside = asyncio.Event()

    async def host() -> None:
        async with Session(state_dir=state_dir) as session:
            for i, file in enumerate(files):
                tasks.append(await session.download(server.url(file.path), out_dir / f"{i}"))
            inside.set()
            await asyncio.Event().wait()  # until cancelled

    hosting = asyncio.create_task(host())
    await inside.wait()
    for file in files:
        await server.wait_held(file.path)
    hosting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hosting
    assert hosting.cancelled()
    assert [task.result for task in tasks] == [CancelledEvent(task_id=t.id) for t in tasks]
    assert list(out_dir.iterdir()) == []
    await server.wait_until(lambda stats: stats.open_connections == 0)


async def test_a_background_session_cancelled_from_outside_keeps_its_tasks(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """The same for a background session: its running tasks stay in the
    journal where they stood and the next session finishes them, byte-exact."""
    data = seeded_bytes(300_000, "runners")
    file = server.add_file("/f.bin", data=data)
    server.set_faults(file.path, Faults(hold_after=100_000))
    inside = asyncio.Event()

    async def host() -> None:
        async with Session("runners", state_dir=state_dir) as session:
            await session.download(server.url(file.path), out_dir / "f.bin")
            inside.set()
            await asyncio.Event().wait()

    hosting = asyncio.create_task(host())
    await inside.wait()
    await server.wait_held(file.path)
    hosting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hosting
    assert not (out_dir / "f.bin").exists()
    server.set_faults(file.path, Faults())
    async with Session("runners", state_dir=state_dir) as session:
        (task,) = session.tasks()
        assert task.state is TaskState.RUNNING
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == sha256_bytes(data)


async def test_the_close_waits_for_a_runner_cleanup_through_a_second_cancel(
    server: TestServer, state_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel of the host that comes while the close waits for a runner's
    cleanup (removing its partial file) does not cut the wait short: the file
    is removed, the task ends cancelled, and the cancellation propagates."""
    file = server.add_file("/f.bin", size=200_000)
    server.set_faults(file.path, Faults(hold_after=50_000))
    removal = Gate()
    monkeypatch.setattr(
        download_job,
        "remove_quietly",
        removal.wrap(download_job.remove_quietly, lambda *paths: bool(paths)),
    )
    tasks = []

    async def host() -> None:
        async with Session(state_dir=state_dir) as session:
            tasks.append(await session.download(server.url(file.path), out_dir / "f.bin"))
            await asyncio.Event().wait()

    hosting = asyncio.create_task(host())
    await server.wait_held(file.path)
    hosting.cancel()
    await removal.reached.wait()  # the runner removes its partial (shielded)
    hosting.cancel()  # again
    await asyncio.sleep(0)
    assert not hosting.done()
    removal.release.set()
    with pytest.raises(asyncio.CancelledError):
        await hosting
    (task,) = tasks
    assert task.result == CancelledEvent(task_id=task.id)
    assert list(out_dir.iterdir()) == []
    assert not any(path.suffix == ".part" for path in state_dir.rglob("*"))


async def _hold_the_moving_commit(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """Hold the first shielded commit (a background session's ``moving``)."""
    gate = Gate()
    monkeypatch.setattr(
        scheduler.Scheduler,
        "_flush_for",
        gate.wrap(scheduler.Scheduler._flush_for, lambda *a, shielded=False, **k: bool(shielded)),
    )
    return gate


async def test_close_with_a_runner_in_its_shielded_commit(
    server: TestServer, state_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host is cancelled while a runner waits for its ``moving`` commit
    (shielded): the close waits for it, the file is moved into place byte-exact,
    the task has finished (the next session says so), and the cancellation
    propagates."""
    data = seeded_bytes(20_000, "moving")
    file = server.add_file("/f.bin", data=data)
    gate = await _hold_the_moving_commit(monkeypatch)

    async def host() -> None:
        async with Session("moving", state_dir=state_dir) as session:
            await session.download(server.url(file.path), out_dir / "f.bin")
            await asyncio.Event().wait()

    hosting = asyncio.create_task(host())
    await gate.reached.wait()
    hosting.cancel()
    await asyncio.sleep(0)
    assert not hosting.done()  # the close waits for the runner
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await hosting
    assert sha256_file(out_dir / "f.bin") == sha256_bytes(data)
    async with Session("moving", state_dir=state_dir) as session:
        (task,) = session.tasks()
        assert isinstance(await task.wait(), FinishedEvent)
    assert not any(path.suffix == ".part" for path in state_dir.rglob("*"))


async def test_a_suspend_racing_the_finish_loses(
    server: TestServer, state_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``suspend()`` while the runner waits for its ``moving`` commit comes too
    late: the task finishes (one terminal event) with its file in place."""
    data = seeded_bytes(20_000, "race")
    file = server.add_file("/f.bin", data=data)
    gate = await _hold_the_moving_commit(monkeypatch)
    async with Session("race", state_dir=state_dir) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        stream = task.events()
        await gate.reached.wait()
        task.suspend()
        gate.release.set()
        events = await collect(stream)
        assert [type(e) for e in events if not hasattr(e, "bytes_written")][-1] is FinishedEvent
        assert task.state is TaskState.COMPLETED
        assert isinstance(task.result, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == sha256_bytes(data)


async def test_a_runner_bug_reaches_the_session(
    server: TestServer, state_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception that escapes a runner (a bug past its own catch, here in
    ending the task) cancels the session's body and comes out of the
    ``async with`` in an exception group, as from a task group's child."""
    file = server.add_file("/f.bin", size=1_000)
    real = scheduler.Scheduler._complete

    def broken(self: scheduler.Scheduler, record: TaskRecord, outcome: Any) -> None:
        real(self, record, outcome)
        raise RuntimeError("bug in the runner")

    monkeypatch.setattr(scheduler.Scheduler, "_complete", broken)
    body_cancelled = False

    async def use() -> None:
        nonlocal body_cancelled
        async with Session(state_dir=state_dir) as session:
            await session.download(server.url(file.path), out_dir / "f.bin")
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                body_cancelled = True
                raise

    with pytest.raises(BaseExceptionGroup) as raised:
        await use()
    assert body_cancelled
    (error,) = raised.value.exceptions
    assert isinstance(error, RuntimeError)
    assert str(error) == "bug in the runner"


async def test_a_wait_that_gives_up_leaves_no_waiter(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """A ``task.wait()`` cancelled while the task runs (by a scope or by
    ``Task.cancel()``) gives up alone: the task goes on, and a later wait still
    gets the end."""
    file = server.add_file("/f.bin", size=100_000)
    server.set_faults(file.path, Faults(hold_after=10_000))
    config = Configuration(max_connections_per_host=1)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await server.wait_held(file.path)
        for _ in range(3):
            with anyio.CancelScope() as scope:
                scope.cancel()
                await task.wait()
            waiting = asyncio.create_task(task.wait())
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        server.release(file.path)
        assert isinstance(await task.wait(), FinishedEvent)
