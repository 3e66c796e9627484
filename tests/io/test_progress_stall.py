"""Progress held back by the throttle is reported when the server stalls.

With ``progress_interval=0.1`` (the default), bytes written within 0.1 s of the
last event wait for the next one. They used to wait for the next *bytes*: a
server that stalled after 300,000 bytes left ``total_bytes_written`` at 65,536
until the request timed out a minute later. Now the held-back bytes are reported
once the interval has passed, whatever the network does, on every path a body
takes: the file thread (aiohttp's reads, chunked or with a length), the pump
(large bodies read by a worker thread) and segments.

Each test waits for the progress event that reaches the held position and checks
its numbers; the time bound (``STALE``, far above the interval and far below the
request timeout) only turns a stale stream into a failure instead of a hang.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from _helpers import sha256_file
from bgtransfer import (
    Configuration,
    DownloadTask,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    Session,
)
from bgtransfer._io import progress as progress_timers
from bgtransfer._io import pump
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

INTERVAL = 0.1
CONFIG = Configuration(progress_interval=INTERVAL, request_timeout=120)
STALE = 20.0  # seconds: a report this late is the stall's, not the throttle's


async def progress_until(task: DownloadTask, count: int) -> list[ProgressEvent]:
    """The task's progress events up to the first that reports ``count`` bytes."""
    seen: list[ProgressEvent] = []
    async with asyncio.timeout(STALE), task.events() as stream:
        async for event in stream:
            if isinstance(event, ResumedEvent):
                continue
            assert isinstance(event, ProgressEvent), event  # nothing ends while held
            seen.append(event)
            if event.total_bytes_written >= count:
                return seen
    raise AssertionError(f"the stream ended before {count} bytes")


def check_held_progress(events: list[ProgressEvent], held: int, expected: int | None) -> None:
    """Every byte written before the hold reported, none twice, none more."""
    assert events[-1].total_bytes_written == held
    assert events[-1].total_bytes_expected == expected
    assert sum(event.bytes_written for event in events) == held
    totals = [event.total_bytes_written for event in events]
    assert totals == sorted(totals)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "length"])
async def test_a_stalled_body_reports_every_byte_written(
    server: TestServer, out_dir: Path, *, chunked: bool
) -> None:
    """The colleague's case: a body held after 300,000 bytes."""
    file = server.add_file("/f.bin", size=1_000_000, seed="stall")
    server.set_faults(file.path, Faults(hold_after=300_000, chunked=chunked))
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        events = await progress_until(task, 300_000)
        check_held_progress(events, 300_000, None if chunked else file.size)
        assert task.bytes_received == 300_000
        server.release(file.path)
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256


async def test_stalls_after_each_burst_report_each_burst(server: TestServer, out_dir: Path) -> None:
    """A stall, a release, a stall again: the throttle's timer comes back each time."""
    file = server.add_file("/f.bin", size=900_000, seed="bursts")
    server.set_faults(file.path, Faults(hold_after=300_000), times=1)
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await progress_until(task, 300_000)
        task.suspend()  # keeps its bytes; the next request asks for the rest
        await server.wait_held(file.path)
        server.set_faults(file.path, Faults(hold_after=300_000), times=1)  # of the rest
        task.resume()
        events = await progress_until(task, 600_000)
        assert events[-1].total_bytes_written == 600_000
        server.release(file.path)
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256


@pytest.fixture
def pumped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bodies of 64 KiB and more take the pump; the length of each pumped body."""
    lengths: list[int] = []
    real_pump = pump._pump

    def recording(job: pump.PumpJob) -> object:
        lengths.append(job.want + len(job.head))
        return real_pump(job)

    monkeypatch.setattr(pump, "_pump", recording)
    monkeypatch.setattr(pump, "PUMP_MIN_BYTES", 64 * 1024)
    return lengths


async def test_a_stalled_pumped_body_reports_every_byte_written(
    server: TestServer, out_dir: Path, pumped: list[int]
) -> None:
    file = server.add_file("/big.bin", size=2_000_000, seed="pump")
    # Three bursts 0.2 s apart, then the stall: the first is reported at once, the
    # other two fall within the (one second) interval and are held back. (At
    # loopback speed, a body sent at once is all in the pump's first report.)
    server.set_faults(file.path, Faults(hold_after=750_000, drip=(250_000, 0.2)))
    config = CONFIG.replace(progress_interval=1.0)
    async with Session(config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "big.bin")
        events = await progress_until(task, 750_000)
        check_held_progress(events, 750_000, file.size)
        assert len(events) >= 2
        server.release(file.path)
        assert isinstance(await task.wait(), FinishedEvent)
    assert pumped == [file.size]
    assert sha256_file(out_dir / "big.bin") == file.sha256


@pytest.mark.parametrize("path", ["file-thread", "pump"])
async def test_stalled_segments_report_every_byte_written(
    server: TestServer, out_dir: Path, request: pytest.FixtureRequest, path: str
) -> None:
    """Two segments, each held after 150,000 bytes of its own body."""
    pumped: list[int] = request.getfixturevalue("pumped") if path == "pump" else []
    file = server.add_file("/seg.bin", size=3_000_000, seed="segments")
    server.set_faults(file.path, Faults(hold_after=150_000))
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "seg.bin", segments=2)
        events = await progress_until(task, 300_000)
        check_held_progress(events, 300_000, file.size)
        server.release(file.path)
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "seg.bin") == file.sha256
    assert [request.headers.get("Range") for request in server.requests] == [
        None,
        "bytes=1500000-2999999",
    ]
    assert pumped == ([1_500_000, 1_500_000] if path == "pump" else [])


async def test_small_files_that_arrive_at_once_arm_no_timer(
    server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path (benchmark scenario 2: files of 16 KiB): a body written at once
    is reported at once; no timer per file."""
    armed: list[float] = []
    real_arm = progress_timers.arm

    def counting(*args: Any) -> None:
        armed.append(args[1])  # the delay
        real_arm(*args)

    monkeypatch.setattr(progress_timers, "arm", counting)
    files = [server.add_file(f"/s{i}.bin", size=16_384, seed=str(i)) for i in range(50)]
    async with Session(config=CONFIG) as session:
        tasks = [await session.download(server.url(f.path), out_dir / f.path[1:]) for f in files]
        results = [await task.wait() for task in tasks]
    assert all(isinstance(result, FinishedEvent) for result in results)
    assert armed == []
