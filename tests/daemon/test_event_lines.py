"""The daemon's event streams write the lines that are ready together in one
write (issue 20, "Speed"): every event still arrives, in order, and none waits
for the next."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from _helpers import sha256_file
from bgtransfer import (
    Configuration,
    DownloadRequest,
    EventsDeliveredEvent,
    EventStream,
    FinishedEvent,
    ProgressEvent,
    Session,
)
from bgtransfer._daemon import protocol
from bgtransfer._daemon.protocol import send_all, send_lines
from bgtransfer.testing import TestServer

pytestmark = pytest.mark.asyncio

COUNT = 300


async def _until_all_finished(stream: EventStream[Any], count: int) -> list[Any]:
    seen: list[Any] = []
    finished = 0
    async with stream:
        async for event in stream:
            seen.append(event)
            if isinstance(event, FinishedEvent):
                finished += 1
                if finished == count:
                    break
    return seen


@pytest.mark.parametrize("since", [None, 0], ids=["attach-stream", "cursor-stream"])
async def test_many_tasks_every_event_in_order(
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    background: Callable[..., Session],
    since: int | None,
) -> None:
    files = [server.add_file(f"/lines/{n}.bin", size=4096 + n) for n in range(COUNT)]
    config = Configuration(max_connections_per_host=8)
    async with background("lines", state_dir=state_dir, config=config) as session:
        stream = session.events(since=since)
        watcher = asyncio.create_task(_until_all_finished(stream, COUNT))
        try:
            tasks = await session.download_many(
                [
                    DownloadRequest(server.url(f.path), out_dir / f"{n}.bin")
                    for n, f in enumerate(files)
                ]
            )
            seen = await asyncio.wait_for(watcher, 60)
        finally:
            watcher.cancel()
    ids = [task.id for task in tasks]
    ends = [e for e in seen if isinstance(e, FinishedEvent)]
    assert sorted(e.task_id for e in ends) == sorted(ids)  # each exactly once
    numbered = [e.seq for e in seen if getattr(e, "seq", None) is not None]
    assert numbered == sorted(numbered)
    assert len(set(numbered)) == len(numbered)
    written: dict[int, int] = {}
    ended: set[int] = set()
    for event in seen:
        if isinstance(event, EventsDeliveredEvent):
            continue
        assert event.task_id not in ended, f"an event after the end of its task: {event}"
        if isinstance(event, ProgressEvent):
            assert event.total_bytes_written >= written.get(event.task_id, 0)
            written[event.task_id] = event.total_bytes_written
        if isinstance(event, FinishedEvent):
            ended.add(event.task_id)
    for n, file in enumerate(files):
        assert sha256_file(out_dir / f"{n}.bin") == file.sha256


class _Response:
    """A StreamResponse's write: records each write; ``gate`` holds them (a full socket)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.gate: asyncio.Event | None = None
        self.writing = asyncio.Event()

    async def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.writing.set()
        if self.gate is not None:
            await self.gate.wait()


async def _items(queue: asyncio.Queue[int | None]) -> AsyncIterator[int]:
    while (item := await queue.get()) is not None:
        yield item


def _render(item: int) -> dict[str, Any]:
    return {"n": item}


async def test_lines_ready_together_go_in_one_write() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    for n in range(50):
        queue.put_nowait(n)
    queue.put_nowait(None)
    response = _Response()
    await send_lines(response, _items(queue), _render)  # type: ignore[arg-type]
    assert response.writes == [b"".join(b'{"n":%d}\n' % n for n in range(50))]


async def test_a_line_is_written_without_waiting_for_the_next() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    response = _Response()
    sending = asyncio.create_task(send_lines(response, _items(queue), _render))  # type: ignore[arg-type]
    queue.put_nowait(1)
    await asyncio.wait_for(response.writing.wait(), 5)  # no second item yet
    assert response.writes == [b'{"n":1}\n']
    queue.put_nowait(None)
    await sending


async def test_lines_that_follow_closely_go_in_the_next_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a write, the lines of the next turns gather until LINGER has
    passed (one wake-up of the client for them all); the lines held when the
    items end go at once, not after the pause."""
    monkeypatch.setattr(protocol, "LINGER", 60.0)  # the end must cut it short
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    response = _Response()
    sending = asyncio.create_task(send_lines(response, _items(queue), _render))  # type: ignore[arg-type]
    queue.put_nowait(1)
    await asyncio.wait_for(response.writing.wait(), 5)  # the first line: at once
    for n in (2, 3, 4):
        queue.put_nowait(n)
        for _ in range(5):  # a few turns apart: each would have had a write
            await asyncio.sleep(0)
    assert response.writes == [b'{"n":1}\n']
    queue.put_nowait(None)
    await asyncio.wait_for(sending, 5)
    assert response.writes == [b'{"n":1}\n', b'{"n":2}\n{"n":3}\n{"n":4}\n']


async def test_a_full_batch_goes_without_waiting_out_the_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(protocol, "LINGER", 60.0)
    monkeypatch.setattr(protocol, "WRITE_BATCH", 8)
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    response = _Response()
    sending = asyncio.create_task(send_lines(response, _items(queue), _render))  # type: ignore[arg-type]
    queue.put_nowait(0)
    await asyncio.wait_for(response.writing.wait(), 5)
    response.writing.clear()
    for n in range(1, 9):
        queue.put_nowait(n)
    await asyncio.wait_for(response.writing.wait(), 5)  # the batch, not after 60 s
    assert response.writes[1] == b"".join(b'{"n":%d}\n' % n for n in range(1, 9))
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending


async def test_a_slow_client_holds_at_most_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "WRITE_BATCH", 8)
    taken: list[int] = []

    async def items() -> AsyncIterator[int]:
        for n in range(100):
            taken.append(n)
            yield n

    response = _Response()
    response.gate = asyncio.Event()  # the client reads nothing
    sending = asyncio.create_task(send_lines(response, items(), _render))  # type: ignore[arg-type]
    await asyncio.wait_for(response.writing.wait(), 5)
    for _ in range(20):  # let the reader run as far as it may
        await asyncio.sleep(0)
    assert len(taken) <= 2 * 8  # a batch in the write that waits, one batch held
    response.gate.set()
    await asyncio.wait_for(sending, 5)
    assert b"".join(response.writes) == b"".join(b'{"n":%d}\n' % n for n in range(100))


async def test_an_error_of_the_items_ends_the_stream_after_the_lines_before() -> None:
    async def items() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise RuntimeError("the stream broke")

    response = _Response()
    with pytest.raises(RuntimeError, match="the stream broke"):
        await send_lines(response, items(), _render)  # type: ignore[arg-type]
    assert b"".join(response.writes) == b'{"n":1}\n{"n":2}\n'


async def test_a_failed_write_stops_the_reader() -> None:
    stopped = asyncio.Event()

    async def items() -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
                await asyncio.sleep(0)
        finally:
            stopped.set()

    class Broken(_Response):
        async def write(self, data: bytes) -> None:
            raise ConnectionResetError("the client is gone")

    with pytest.raises(ConnectionResetError):
        await send_lines(Broken(), items(), _render)  # type: ignore[arg-type]
    assert stopped.is_set()


async def test_a_backlog_goes_a_batch_to_a_write() -> None:
    response = _Response()
    await send_all(response, ({"n": n} for n in range(600)))  # type: ignore[arg-type]
    assert [len(w.splitlines()) for w in response.writes] == [256, 256, 88]
    assert b"".join(response.writes) == b"".join(b'{"n":%d}\n' % n for n in range(600))


async def test_a_session_stream_keeps_what_it_holds_when_the_session_closes(
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    background: Callable[..., Session],
) -> None:
    """Closing the session ends its streams after the events they hold, in this
    process and through the daemon alike: a reader that was behind still gets
    them (``aclose()`` is what discards)."""
    files = [server.add_file(f"/held/{n}.bin", size=1000 + n) for n in range(3)]
    async with background("held", state_dir=state_dir) as session:
        tasks = await session.download_many(
            [DownloadRequest(server.url(f.path), out_dir / f"{n}.bin") for n, f in enumerate(files)]
        )
        for task in tasks:
            await task.wait()
        stream = session.events(since=0)
        deadline = asyncio.get_running_loop().time() + 30
        while stream.statistics().buffered < 4:  # the three ends and the delivered event
            assert asyncio.get_running_loop().time() < deadline, stream.statistics()
            await asyncio.sleep(0.01)
    events = [event async for event in stream]
    assert sorted(e.task_id for e in events if isinstance(e, FinishedEvent)) == sorted(
        task.id for task in tasks
    )
    assert isinstance(events[-1], EventsDeliveredEvent)
