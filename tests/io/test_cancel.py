"""Cancellation: an outcome, never a leftover file, never a swallowed cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from _helpers import check_task_stream, collect, wait_for_bytes
from bgtransfer import (
    CancelledEvent,
    Configuration,
    FinishedEvent,
    Session,
    SessionClosedError,
    TaskState,
)
from bgtransfer._engine import download_job
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio


async def test_cancel_mid_body(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=500_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with background("cancel", state_dir=state_dir) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        stream = task.events()
        await server.wait_held(file.path)
        await task.cancel()
        assert task.state is TaskState.COMPLETED
        assert await task.wait() == CancelledEvent(task_id=task.id, resume_data=None)
        events = await collect(stream)
        assert check_task_stream(events, task.id) == CancelledEvent(task_id=task.id)
        assert not (out_dir / "f.bin").exists()
        assert not list((state_dir / "cancel" / "partials").iterdir())
        await task.cancel()  # idempotent
        assert task.state is TaskState.COMPLETED


async def test_cancel_a_queued_task_never_contacts_the_server(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    first = server.add_file("/first.bin", size=10_000)
    second = server.add_file("/second.bin", size=10_000)
    server.set_faults(first.path, Faults(hold_after=0))
    async with Session(
        state_dir=state_dir, config=Configuration(max_connections_per_host=1)
    ) as session:
        running = await session.download(server.url(first.path), out_dir / "1")
        queued = await session.download(server.url(second.path), out_dir / "2")
        await server.wait_held(first.path)
        await queued.cancel()
        assert isinstance(await queued.wait(), CancelledEvent)
        server.release(first.path)
        assert isinstance(await running.wait(), FinishedEvent)
    assert [r.path for r in server.requests] == [first.path]


async def test_cancelling_a_finished_task_keeps_its_file(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=1_000)
    async with Session(state_dir=state_dir) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        result = await task.wait()
        await task.cancel()
        assert task.result == result
    assert (out_dir / "f.bin").read_bytes() == file.data


async def test_cancelling_the_host_task_propagates(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=100_000)
    server.set_faults(file.path, Faults(hold_after=1_000))
    session = Session(state_dir=state_dir)
    with anyio.move_on_after(30) as outer:  # a bound for the test, not synchronisation
        async with session:
            task = await session.download(server.url(file.path), out_dir / "f.bin")
            await server.wait_held(file.path)
            outer.cancel()
            await anyio.sleep_forever()  # the cancellation must reach here and propagate
    assert outer.cancelled_caught
    assert task.result == CancelledEvent(task_id=task.id)
    assert not (out_dir / "f.bin").exists()


async def test_application_error_is_not_wrapped(state_dir: Path) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with Session(state_dir=state_dir):
            raise KeyError("mine")


async def test_invalidate_and_cancel(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    server.set_faults(file.path, Faults(hold_after=0))
    async with Session(
        state_dir=state_dir, config=Configuration(max_connections_per_host=1)
    ) as session:
        tasks = [await session.download(server.url(file.path), out_dir / f"{i}") for i in range(3)]
        await server.wait_held(file.path)
        await session.invalidate_and_cancel()
        assert all(task.result == CancelledEvent(task_id=task.id) for task in tasks)
        with pytest.raises(SessionClosedError, match="invalidated"):
            await session.download(server.url(file.path))
    assert list(out_dir.iterdir()) == []


async def test_finish_tasks_and_invalidate(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    files = [server.add_file(f"/{i}.bin", size=20_000) for i in range(3)]
    async with Session(
        state_dir=state_dir, config=Configuration(max_connections_per_host=1)
    ) as session:
        tasks = [
            await session.download(server.url(f.path), out_dir / f"{i}")
            for i, f in enumerate(files)
        ]
        await session.finish_tasks_and_invalidate()
        assert all(isinstance(task.result, FinishedEvent) for task in tasks)
        with pytest.raises(SessionClosedError):
            await session.download(server.url(files[0].path))


async def test_many_concurrent_cancels(server: TestServer, state_dir: Path, out_dir: Path) -> None:
    file = server.add_file("/f.bin", size=50_000)
    server.set_faults(file.path, Faults(hold_after=25_000))
    config = Configuration(max_connections_per_host=3)
    async with Session(state_dir=state_dir, config=config) as session:
        tasks = [await session.download(server.url(file.path), out_dir / f"{i}") for i in range(30)]
        await server.wait_held(file.path, count=3)
        await asyncio.gather(*(task.cancel() for task in tasks))
        assert {type(task.result) for task in tasks} == {CancelledEvent}
        assert session.statistics().active == 0
    assert server.statistics().peak_connections <= 3
    assert list(out_dir.iterdir()) == []


async def test_host_cancellation_does_not_respawn_runners(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=100_000)
    server.set_faults(file.path, Faults(hold_after=1_000))
    with anyio.CancelScope() as outer:
        async with Session(state_dir=state_dir) as session:
            task = await session.download(server.url(file.path), out_dir / "f.bin")
            await server.wait_held(file.path)
            outer.cancel()
            await anyio.sleep_forever()
    assert task.result == CancelledEvent(task_id=task.id)
    assert server.statistics().requests == 1  # cancelled once, never sent again


async def test_a_suspended_task_ends_cancelled_only_once_its_partial_is_gone(
    server: TestServer, state_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling a task with no runner (suspended, with bytes on disk) removes its
    partial file *before* the task ends: until then it is CANCELING with no
    result, and ``cancel()`` does not return. Ended first, its event could be
    acknowledged and the task forgotten by the journal while the file was still
    there; a process killed then left it to nobody."""
    file = server.add_file("/f.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    removing = anyio.Event()
    release = anyio.Event()
    real = download_job.remove_quietly

    async def held_remove(*paths: Path) -> None:
        if paths:  # (the session's opening asks to remove no leftovers: not held)
            removing.set()
            await release.wait()
        await real(*paths)

    monkeypatch.setattr(download_job, "remove_quietly", held_remove)
    async with Session("cancel", state_dir=state_dir) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await wait_for_bytes(task, 100_000)  # on disk
        task.suspend()
        await server.wait_until(lambda stats: stats.open_connections == 0)
        partial = state_dir / "cancel" / "partials" / f"{task.id}.part"
        assert partial.exists()
        async with anyio.create_task_group() as group:
            group.start_soon(task.cancel)
            await removing.wait()
            assert task.state is TaskState.CANCELING
            assert task.result is None  # nothing to acknowledge yet
            assert partial.exists()
            release.set()
        assert not partial.exists()
        assert task.result == CancelledEvent(task_id=task.id)
        assert await task.wait() == CancelledEvent(task_id=task.id)
    assert not (out_dir / "f.bin").exists()
