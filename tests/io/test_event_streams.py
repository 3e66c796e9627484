"""Event streams: terminal events, late and slow subscribers, the merged session stream."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest

from _helpers import check_task_stream, collect, sha256_file
from bgtransfer import (
    CancelledEvent,
    Configuration,
    ErrorEvent,
    EventsDeliveredEvent,
    FinishedEvent,
    ProgressEvent,
    Session,
    TaskEvent,
)
from bgtransfer._engine.hub import EventHub
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio


async def test_progress_is_rate_limited(server: TestServer, state_dir: Path, out_dir: Path) -> None:
    file = server.add_file("/big.bin", size=8_000_000)
    config = Configuration(progress_interval=3600)  # far longer than the transfer
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "big.bin")
        events = await collect(task.events())
    check_task_stream(events, task.id)
    # The first chunk, then nothing for an hour, then the final flush.
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert len(progress) == 2
    assert progress[-1].total_bytes_written == file.size
    assert progress[-1].total_bytes_expected == file.size


async def test_several_subscribers_each_see_one_terminal(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=2_000_000)
    server.set_faults(file.path, Faults(hold_after=500_000))
    async with Session(state_dir=state_dir, config=Configuration(progress_interval=0)) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        streams = [task.events() for _ in range(3)]
        await server.wait_held(file.path)
        server.release(file.path)
        results = await asyncio.gather(*(collect(stream) for stream in streams))
    terminals = [check_task_stream(events, task.id) for events in results]
    assert all(isinstance(t, FinishedEvent) for t in terminals)
    assert terminals[0] == terminals[1] == terminals[2]


async def test_late_subscriber_gets_a_condensed_backlog(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    async with Session(state_dir=state_dir) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        finished = await task.wait()
        late = await collect(task.events())
        again = await collect(task.events())
    assert late == again
    assert late == [
        ProgressEvent(
            task_id=task.id,
            bytes_written=file.size,
            total_bytes_written=file.size,
            total_bytes_expected=file.size,
        ),
        finished,
    ]


async def test_subscriber_joining_mid_transfer(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=400_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with Session(state_dir=state_dir, config=Configuration(progress_interval=0)) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        early = task.events()
        await server.wait_held(file.path)
        first = await anext(early)  # the runner has written something by now
        assert isinstance(first, ProgressEvent)
        late = task.events()
        server.release(file.path)
        late_events = await collect(late)
        early_events = [first, *await collect(early)]
    for events in (early_events, late_events):
        terminal = check_task_stream(events, task.id)
        assert isinstance(terminal, FinishedEvent)
        assert terminal.total_bytes == file.size


async def test_slow_consumer_gets_coalesced_progress_and_never_slows_the_transfer(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=6_000_000)
    async with Session(state_dir=state_dir, config=Configuration(progress_interval=0)) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        stream = task.events()
        # Do not read until the task has finished: everything had to wait in the buffer.
        finished = await task.wait()
        stats = stream.statistics()
        assert stats.buffered == 2  # one merged progress event + the terminal event
        assert stats.coalesced > 0
        events = await collect(stream)
    assert len(events) == 2
    assert check_task_stream(events, task.id) == finished
    assert sha256_file(out_dir / "f.bin") == file.sha256
    assert stream.statistics().delivered == 2


async def test_session_stream_merges_every_task(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    files = [server.add_file(f"/m/{i}.bin", size=50_000 * (i + 1)) for i in range(4)]
    missing = server.url("/m/missing.bin")
    async with Session(state_dir=state_dir) as session:
        stream = session.events()
        tasks = [
            await session.download(server.url(f.path), out_dir / f"{i}.bin")
            for i, f in enumerate(files)
        ]
        bad = await session.download(missing, out_dir / "missing.bin")
        seen: dict[int, list[TaskEvent]] = {}
        ended = 0
        # Subscribed before any task existed: an empty backlog, then the marker.
        assert await anext(stream) == EventsDeliveredEvent(replayed=0)
        async for event in stream:
            assert not isinstance(event, EventsDeliveredEvent)
            seen.setdefault(event.task_id, []).append(event)
            if not isinstance(event, ProgressEvent):
                ended += 1
                if ended == 5:
                    break
        late = session.events()  # joins after everything ended: backlog only
    # The session stream ends when the session closes.
    late_events = await collect(late)
    for task in tasks:
        assert isinstance(check_task_stream(seen[task.id], task.id), FinishedEvent)
    assert isinstance(check_task_stream(seen[bad.id], bad.id), ErrorEvent)
    # The backlog (per task: progress so far, terminal event), then the marker.
    assert late_events[-1] == EventsDeliveredEvent(replayed=0)
    assert [e for e in late_events[:-1] if not isinstance(e, ProgressEvent)] == [
        t.result for t in (*tasks, bad)
    ]


async def test_closing_the_session_ends_streams_after_terminal_events(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=100_000)
    server.set_faults(file.path, Faults(hold_after=10_000))
    async with Session(state_dir=state_dir) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        task_stream = task.events()
        session_stream = session.events()
        await server.wait_held(file.path)
    # Leaving the block cancelled the running task; both streams end with that.
    session_events = await collect(session_stream)
    assert session_events[0] == EventsDeliveredEvent(replayed=0)
    for events in (await collect(task_stream), session_events[1:]):
        assert isinstance(check_task_stream(events, task.id), CancelledEvent)
    assert not (out_dir / "f.bin").exists()


async def test_stream_aclose_unsubscribes(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    server.set_faults(file.path, Faults(hold_after=0))
    async with Session(state_dir=state_dir) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        async with task.events() as stream:
            pass
        server.release(file.path)
        await task.wait()
        assert await collect(stream) == []
        assert stream.statistics().buffered == 0


async def test_a_reader_cancelled_while_the_end_is_committed_reads_it_next_time() -> None:
    """A stream hands out a terminal event only once the journal holds it; a
    reader cancelled during that wait has not received it, so the event stays
    first in the stream, and the next read (once the end is durable) returns it
    and acknowledges it (automatic acknowledgement: handed out, delivered)."""
    durable = asyncio.Event()
    waiting = asyncio.Event()
    asked: list[int] = []
    delivered: list[int] = []

    async def wait_durable(task_id: int) -> None:
        asked.append(task_id)
        waiting.set()
        await durable.wait()

    hub = EventHub(on_delivered=delivered.append, durable=wait_durable)
    stream = hub.subscribe(7, ())
    progress = ProgressEvent(
        task_id=7, bytes_written=10, total_bytes_written=10, total_bytes_expected=10
    )
    finished = FinishedEvent(task_id=7, location=Path("/nowhere/f.bin"), total_bytes=10)
    hub.publish(progress)
    hub.publish(finished)

    assert await stream.__anext__() == progress
    reader = asyncio.ensure_future(stream.__anext__())
    await waiting.wait()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert stream.statistics().buffered == 1  # the terminal event is still there

    durable.set()
    assert delivered == []
    async with asyncio.timeout(5):  # (an event lost with the reader: no next one ever)
        assert await stream.__anext__() == finished
    assert asked == [7, 7]
    assert delivered == [7]
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert delivered == [7]


def _progress(task_id: int, total: int) -> ProgressEvent:
    return ProgressEvent(
        task_id=task_id, bytes_written=total, total_bytes_written=total, total_bytes_expected=100
    )


async def test_a_stream_dropped_unclosed_is_collected_and_the_others_still_get_everything() -> None:
    """The hub holds a task's streams weakly: one the application drops without
    ``aclose()`` is garbage, and publishing to its task skips it."""
    hub = EventHub(on_delivered=lambda task_id: None)
    kept = hub.subscribe(3, ())
    dropped = hub.subscribe(3, ())
    gone = weakref.ref(dropped)
    hub.publish(_progress(3, 10))
    del dropped
    gc.collect()
    assert gone() is None

    finished = FinishedEvent(task_id=3, location=Path("/nowhere/f.bin"), total_bytes=100)
    hub.publish(_progress(3, 20))
    hub.publish(finished)
    events = [event async for event in kept]
    assert [type(event) for event in events] == [ProgressEvent, FinishedEvent]
    assert events[0].total_bytes_written == 20  # the two progress events, coalesced
    assert events[-1] == finished


async def test_session_streams_dropped_or_closed_leave_the_hub() -> None:
    """The session's streams are held weakly too: one dropped without
    ``aclose()`` leaves the hub when it is collected, one closed at once; the
    others still get every event."""
    hub = EventHub(on_delivered=lambda task_id: None)
    kept = hub.subscribe(None, ())
    dropped = hub.subscribe(None, ())
    closed = hub.subscribe(None, ())
    gone = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert gone() is None
    await closed.aclose()
    assert len(hub._all) == 1  # only the kept stream's reference is left

    hub.publish(_progress(6, 10))
    hub.close()
    events = [event async for event in kept]
    assert [type(event) for event in events] == [EventsDeliveredEvent, ProgressEvent]
    assert closed.statistics().buffered == 0  # nothing pushed after its close


async def test_aclose_discards_what_was_buffered() -> None:
    """A stream closed with events still buffered returns none of them: its
    reader stopped (and a terminal event it never saw is not acknowledged)."""
    delivered: list[int] = []
    hub = EventHub(on_delivered=delivered.append)
    stream = hub.subscribe(8, ())
    hub.publish(_progress(8, 10))
    hub.publish(FinishedEvent(task_id=8, location=Path("/nowhere/f.bin"), total_bytes=10))
    assert stream.statistics().buffered == 2
    await stream.aclose()
    assert stream.statistics().buffered == 0
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert delivered == []


async def test_a_closed_stream_gets_nothing_more_and_its_siblings_everything() -> None:
    hub = EventHub(on_delivered=lambda task_id: None)
    closed = hub.subscribe(4, ())
    other_task = hub.subscribe(5, ())
    sibling = hub.subscribe(4, ())
    await closed.aclose()

    hub.publish(_progress(4, 50))
    hub.publish(_progress(5, 60))
    assert closed.statistics().buffered == 0
    with pytest.raises(StopAsyncIteration):
        await closed.__anext__()
    assert await sibling.__anext__() == _progress(4, 50)
    assert await other_task.__anext__() == _progress(5, 60)

    hub.close()  # the session closes: the live streams end, the closed one stays ended
    for stream in (sibling, other_task):
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
