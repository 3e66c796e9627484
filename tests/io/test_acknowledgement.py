"""When a background session's terminal event counts as delivered.

By default (``acknowledge="auto"``) it does once it is handed to the application:
the natural loop, which ``return``\\ s on ``FinishedEvent`` and never reads past
it, leaves nothing to replay. ``acknowledge="explicit"`` is at-least-once: the
event comes back in every later session until the application acknowledges it.
``session.events(follow=False)`` drains what was missed and ends.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from _helpers import collect, journal_task_ids, sha256_file
from bgtransfer import (
    CancelledEvent,
    Configuration,
    DownloadTask,
    ErrorEvent,
    EventsDeliveredEvent,
    FinishedEvent,
    HTTPStatusError,
    ProgressEvent,
    Session,
    SessionClosedError,
    SessionEvent,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

ID = "com.example.ack"
AUTO = Configuration(progress_interval=0)
EXPLICIT = Configuration(progress_interval=0, acknowledge="explicit")

# The loop a new user writes, run in a process of its own.
NATURAL_LOOP = """
import asyncio, sys
from bgtransfer import Configuration, ErrorEvent, FinishedEvent, Session

async def main(state_dir, url, destination, acknowledge):
    config = Configuration(acknowledge=acknowledge)
    async with Session("com.example.ack", state_dir=state_dir, config=config) as session:
        task = await session.download(url, destination)
        async for event in task.events():
            match event:
                case FinishedEvent():
                    print("finished", event.task_id, flush=True)
                    return
                case ErrorEvent():
                    raise event.error

asyncio.run(main(*sys.argv[1:]))
"""


async def _natural_loop(task: DownloadTask) -> FinishedEvent:
    async for event in task.events():
        match event:
            case FinishedEvent():
                return event  # never reads past it
            case ErrorEvent() | CancelledEvent():
                raise AssertionError(event)
    raise AssertionError("the stream ended without a terminal event")


async def _drain(session: Session) -> list[SessionEvent]:
    with anyio.fail_after(10):
        return [event async for event in session.events(follow=False)]


@pytest.mark.parametrize("acknowledge", ["auto", "explicit"])
async def test_natural_loop_in_a_process_then_the_next_process(
    acknowledge: str, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """A real process runs the natural loop and exits; the next one (this) finds
    no replay by default, and the finished event again with explicit acknowledgement."""
    file = server.add_file("/n.bin", size=50_000)
    destination = out_dir / "n.bin"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        NATURAL_LOOP,
        str(state_dir),
        server.url(file.path),
        str(destination),
        acknowledge,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    with anyio.fail_after(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().split() == ["finished", "1"]
    assert sha256_file(destination) == file.sha256

    config = Configuration(acknowledge=acknowledge)  # type: ignore[arg-type]
    async with Session(ID, state_dir=state_dir, config=config) as session:
        if acknowledge == "auto":
            assert session.tasks() == []
            assert await _drain(session) == [EventsDeliveredEvent(replayed=0)]
        else:
            [task] = session.tasks()
            assert isinstance(task.result, FinishedEvent)
            assert task.result.location == destination
            drained = await _drain(session)
            assert drained[1:] == [task.result, EventsDeliveredEvent(replayed=1)]
            await task.acknowledge()
            assert journal_task_ids(state_dir, ID) == []
    assert journal_task_ids(state_dir, ID) == []
    assert len(server.requests) == 1  # nothing was downloaded again
    assert sha256_file(destination) == file.sha256


async def test_natural_loop_acknowledges_and_the_journal_forgets(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/a.bin", size=20_000)
    async with background(ID, state_dir=state_dir, config=AUTO) as session:
        task = await session.download(server.url(file.path), out_dir / "a.bin")
        finished = await _natural_loop(task)
        assert finished.location == out_dir / "a.bin"
    assert journal_task_ids(state_dir, ID) == []  # the close committed the deletion
    async with background(ID, state_dir=state_dir, config=AUTO) as session:
        assert session.tasks() == []
        with anyio.fail_after(10):
            await session.wait_events_delivered()
    assert sha256_file(out_dir / "a.bin") == file.sha256


async def test_explicit_replays_until_acknowledged(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/e.bin", size=20_000)
    async with background(ID, state_dir=state_dir, config=EXPLICIT) as session:
        task = await session.download(server.url(file.path), out_dir / "e.bin")
        finished = await _natural_loop(task)
        # Reading past it, to the stream's end, does not acknowledge either.
        assert (await collect(task.events()))[-1] == finished
    for _ in range(2):  # replayed in every later session
        async with background(ID, state_dir=state_dir, config=EXPLICIT) as session:
            [again] = session.tasks()
            assert again.id == task.id
            assert await _natural_loop(again) == finished
            assert await again.wait() == finished
            assert (await _drain(session))[-1] == EventsDeliveredEvent(replayed=1)
        with pytest.raises(SessionClosedError):
            await again.acknowledge()  # too late: the next session delivers it again
        assert journal_task_ids(state_dir, ID) == [task.id]
    async with background(ID, state_dir=state_dir, config=EXPLICIT) as session:
        [again] = session.tasks()
        await again.acknowledge()
        assert journal_task_ids(state_dir, ID) == []  # forgotten when acknowledge() returned
        with anyio.fail_after(10):
            await session.wait_events_delivered()
        await again.acknowledge()  # twice is harmless
    async with background(ID, state_dir=state_dir, config=EXPLICIT) as session:
        assert session.tasks() == []
    assert len(server.requests) == 1
    assert sha256_file(out_dir / "e.bin") == file.sha256


async def test_explicit_acknowledge_by_id_from_the_session(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    ok = server.add_file("/ok.bin", size=10_000)
    async with background(ID, state_dir=state_dir, config=EXPLICIT) as session:
        good = await session.download(server.url(ok.path), out_dir / "ok.bin")
        bad = await session.download(server.url("/missing"), out_dir / "missing.bin")
        with pytest.raises(HTTPStatusError):
            await bad.wait()
        await good.wait()
        ids = [good.id, bad.id]
    async with background(ID, state_dir=state_dir, config=EXPLICIT) as session:
        assert [task.id for task in session.tasks()] == ids
        await session.acknowledge(*ids, 999)  # an unknown id is left alone
        assert journal_task_ids(state_dir, ID) == []
        with anyio.fail_after(10):
            await session.wait_events_delivered()
        with pytest.raises(TypeError, match="int"):
            await session.acknowledge("1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"not list \(pass them as arguments"):
            await session.acknowledge(ids)  # type: ignore[arg-type]
    with pytest.raises(SessionClosedError):
        await session.acknowledge(good.id)
    async with background(ID, state_dir=state_dir, config=EXPLICIT) as session:
        assert session.tasks() == []


@pytest.mark.parametrize("config", [AUTO, EXPLICIT], ids=["auto", "explicit"])
async def test_wait_acknowledges_only_by_default(
    background: Callable[..., Session],
    config: Configuration,
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
) -> None:
    file = server.add_file("/w.bin", size=10_000)
    async with background(ID, state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "w.bin")
        finished = await task.wait()
    async with background(ID, state_dir=state_dir, config=config) as session:
        if config.acknowledge == "auto":
            assert session.tasks() == []
        else:
            [again] = session.tasks()
            assert again.result == finished


@pytest.mark.parametrize("config", [AUTO, EXPLICIT], ids=["auto", "explicit"])
async def test_result_alone_does_not_acknowledge(
    background: Callable[..., Session],
    config: Configuration,
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
) -> None:
    file = server.add_file("/r.bin", size=10_000)
    async with background(ID, state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "r.bin")
        with anyio.fail_after(10):
            await session.finish_tasks_and_invalidate()  # hands out nothing
        assert isinstance(task.result, FinishedEvent)
    async with background(ID, state_dir=state_dir, config=config) as session:
        [again] = session.tasks()
        assert again.result == task.result


async def test_drain_ends_after_exactly_the_missed_events(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    done = server.add_file("/done.bin", size=30_000)
    held = server.add_file("/held.bin", size=100_000)
    server.set_faults(held.path, Faults(hold_after=40_000))
    async with background(ID, state_dir=state_dir, config=EXPLICIT) as session:
        finished = await session.download(server.url(done.path), out_dir / "done.bin")
        await finished.wait()  # explicit: not acknowledged
        suspended = await session.download(server.url(held.path), out_dir / "held.bin")
        async for event in suspended.events():
            if isinstance(event, ProgressEvent) and event.total_bytes_written >= 40_000:
                suspended.suspend()
                break

    live = server.add_file("/live.bin", size=10_000)
    server.set_faults(live.path, Faults(hold_after=0))  # never sends a body byte
    async with background(ID, state_dir=state_dir, config=EXPLICIT) as session:
        later = await session.download(server.url(live.path), out_dir / "later.bin")
        drained = await _drain(session)
        assert drained == [
            ProgressEvent(
                task_id=finished.id,
                bytes_written=30_000,
                total_bytes_written=30_000,
                total_bytes_expected=30_000,
            ),
            finished.result,
            # A task reattached suspended: one progress event with its bytes on disk.
            ProgressEvent(
                task_id=suspended.id,
                bytes_written=40_000,
                total_bytes_written=40_000,
                total_bytes_expected=100_000,
            ),
            EventsDeliveredEvent(replayed=1),
        ]
        assert [t.bytes_received for t in session.tasks()] == [30_000, 40_000, 0]
        # The drain ended without waiting for the task of this session, which has
        # nothing to tell yet. It acknowledges nothing in explicit mode: again.
        assert later.result is None
        assert await _drain(session) == drained
        await later.cancel()
        await session.acknowledge(later.id)

    async with background(ID, state_dir=state_dir, config=AUTO) as session:
        # Auto: draining hands the replay out, and so acknowledges it.
        assert await _drain(session) == drained
        with anyio.fail_after(10):
            await session.wait_events_delivered()
        assert await _drain(session) == [*drained[:-1], EventsDeliveredEvent(replayed=1)]
    assert journal_task_ids(state_dir, ID) == [suspended.id]
