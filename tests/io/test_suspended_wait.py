"""``task.wait()`` on a suspended task raises ``TaskSuspendedError`` instead of
hanging: nothing ends a suspended task until it is resumed or cancelled."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from _helpers import sha256_file, wait_for_bytes
from bgtransfer import (
    Configuration,
    FinishedEvent,
    Session,
    SessionError,
    TaskState,
    TaskSuspendedError,
)
from bgtransfer.testing import Faults, TestServer

CONFIG = Configuration(progress_interval=0)


@pytest.mark.asyncio
async def test_waiting_on_a_suspended_task_raises(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with background("pause", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await wait_for_bytes(task, 100_000)
        task.suspend()
        with anyio.fail_after(5), pytest.raises(TaskSuspendedError) as raised:
            await task.wait()
        assert isinstance(raised.value, SessionError)
        assert (raised.value.task_id, raised.value.url) == (task.id, task.url)
        assert str(raised.value) == (
            f"task {task.id} ({task.url}) is suspended: resume() or cancel() it to see it end"
        )
        assert task.state is TaskState.SUSPENDED  # the wait changed nothing
        server.release(file.path)
        task.resume()
        with anyio.fail_after(10):
            finished = await task.wait()  # resumed: the wait sees its end
    assert isinstance(finished, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256


@pytest.mark.asyncio
async def test_a_wait_under_way_ends_when_the_task_is_suspended(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    outcome: list[BaseException] = []

    async def waiter() -> None:
        try:
            await task.wait()
        except TaskSuspendedError as exc:
            outcome.append(exc)

    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await wait_for_bytes(task, 100_000)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()  # the waiter is waiting
                task.suspend()
        assert [type(exc) for exc in outcome] == [TaskSuspendedError]
        await task.cancel()
    assert not (out_dir / "f.bin").exists()


@pytest.mark.asyncio
async def test_a_task_restored_suspended_raises_too(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with background("pause", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await wait_for_bytes(task, 100_000)
        task.suspend()
    async with background("pause", state_dir=state_dir, config=CONFIG) as session:
        [again] = session.tasks()
        assert again.state is TaskState.SUSPENDED
        with anyio.fail_after(5), pytest.raises(TaskSuspendedError):
            await again.wait()
        await again.cancel()


def test_the_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(TaskSuspendedError(3, "http://h/f")))
    assert (error.task_id, error.url, str(error)) == (
        3,
        "http://h/f",
        "task 3 (http://h/f) is suspended: resume() or cancel() it to see it end",
    )
