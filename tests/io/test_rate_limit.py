"""``Configuration.max_bytes_per_second``: the session's bandwidth limit, against
the loopback test server.

What is checked is behaviour, not speed: a limited transfer of ``size`` bytes
cannot end sooner than ``(size - burst) / rate`` after it starts (the bucket
holds ``burst`` bytes, then refills at ``rate``), and its bytes are exact. On
loopback the same transfers take milliseconds without the limit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from _helpers import sha256_bytes, wait_for_bytes
from bgtransfer import (
    CancelledEvent,
    Configuration,
    FinishedEvent,
    RetryPolicy,
    Session,
    TaskState,
)
from bgtransfer._core.pacing import BucketStatistics, burst_for
from bgtransfer._io.pacing import Pacer, pacer_for, pieces
from bgtransfer.testing import TestServer

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024
SLACK = 0.01  # the clocks' granularity, no more


def _least(size: int, rate: int) -> float:
    """The shortest time ``size`` bytes can take under a limit of ``rate``."""
    return (size - burst_for(rate)) / rate - SLACK


async def test_a_limited_download_takes_its_time_and_is_byte_exact(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """In this process and through the daemon (the limit crosses the wire)."""
    rate = 2_000_000
    file = server.add_file("/paced.bin", size=3_000_000)
    config = Configuration(max_bytes_per_second=rate)
    async with background("paced", state_dir=state_dir, config=config) as session:
        started = time.monotonic()
        task = await session.download(server.url(file.path), out_dir / "paced.bin")
        finished = await task.wait()
        elapsed = time.monotonic() - started
    assert isinstance(finished, FinishedEvent)
    assert sha256_bytes((out_dir / "paced.bin").read_bytes()) == file.sha256
    assert elapsed >= _least(file.size, rate), elapsed


async def test_concurrent_downloads_share_the_session_limit(
    server: TestServer, out_dir: Path
) -> None:
    """Two tasks at once take as long as their bytes together need: one budget
    for the session, not one per task (each alone would need a third of it)."""
    rate = 2_000_000
    files = [server.add_file(f"/{n}.bin", size=1_500_000) for n in range(2)]
    async with Session(config=Configuration(max_bytes_per_second=rate)) as session:
        started = time.monotonic()
        tasks = [
            await session.download(server.url(file.path), out_dir / f"{n}.bin")
            for n, file in enumerate(files)
        ]
        for task in tasks:
            assert isinstance(await task.wait(), FinishedEvent)
        elapsed = time.monotonic() - started
    for n, file in enumerate(files):
        assert sha256_bytes((out_dir / f"{n}.bin").read_bytes()) == file.sha256
    assert elapsed >= _least(3_000_000, rate), elapsed
    assert server.statistics().peak_connections == 2  # they did run at once


async def test_a_large_segmented_download_is_paced_as_a_whole(
    server: TestServer, out_dir: Path
) -> None:
    """A body large enough for the pump, fetched as four segments: the
    segments share the limit, and the pump (which reads in a thread) is not
    used under a limit."""
    rate = 8_000_000
    file = server.add_file("/big.iso", size=9 * MiB)
    config = Configuration(max_bytes_per_second=rate, segments=4)
    async with Session(config=config) as session:
        started = time.monotonic()
        task = await session.download(server.url(file.path), out_dir / "big.iso")
        assert isinstance(await task.wait(), FinishedEvent)
        elapsed = time.monotonic() - started
    assert sha256_bytes((out_dir / "big.iso").read_bytes()) == file.sha256
    assert len([r for r in server.requests if "Range" in r.headers]) >= 3  # segmented
    assert elapsed >= _least(file.size, rate), elapsed


async def test_waiting_for_the_limit_is_not_a_slow_server(
    server: TestServer, out_dir: Path
) -> None:
    """A limit below ``min_speed``: the time the session holds itself back
    does not count in ``min_speed``'s window."""
    rate = 800_000
    file = server.add_file("/f.bin", size=1_200_000)
    config = Configuration(
        max_bytes_per_second=rate,
        min_speed=2 * rate,
        min_speed_window=0.2,
        retry=RetryPolicy(max_attempts=1),
    )
    async with Session(config=config) as session:
        started = time.monotonic()
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        assert isinstance(await task.wait(), FinishedEvent)
        elapsed = time.monotonic() - started
    assert sha256_bytes((out_dir / "f.bin").read_bytes()) == file.sha256
    assert elapsed >= _least(file.size, rate), elapsed


@pytest.mark.parametrize("direction", ["download", "upload"])
async def test_waiting_for_the_limit_is_not_a_silent_server(
    server: TestServer, out_dir: Path, tmp_path: Path, direction: str
) -> None:
    """Waits for the limit longer than ``request_timeout`` (a 256 KiB chunk
    read is 0.65 s of debt; each 50 kB piece sent, past the burst, 0.25 s):
    the watchdog does not count them."""
    if direction == "download":
        rate, size, timeout = 400_000, 700_000, 0.5
    else:
        rate, size, timeout = 200_000, 400_000, 0.2
    config = Configuration(
        max_bytes_per_second=rate, request_timeout=timeout, retry=RetryPolicy(max_attempts=1)
    )
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(size))
    file = server.add_file("/f.bin", size=size)
    async with Session(config=config) as session:
        started = time.monotonic()
        if direction == "download":
            task = await session.download(server.url(file.path), out_dir / "f.bin")
        else:
            task = await session.upload(server.url("/up/f.bin"), source)
        assert isinstance(await task.wait(), FinishedEvent)
        elapsed = time.monotonic() - started
    if direction == "download":
        assert sha256_bytes((out_dir / "f.bin").read_bytes()) == file.sha256
    else:
        [received] = server.uploads
        assert received.sha256 == sha256_bytes(source.read_bytes())
    assert elapsed >= _least(size, rate), elapsed


@pytest.mark.parametrize("protocol", ["plain", "tus", "ietf"])
async def test_an_upload_is_paced_and_byte_exact(
    server: TestServer, tmp_path: Path, protocol: str
) -> None:
    rate = 2_000_000
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(2_000_000))
    if protocol == "tus":
        endpoint = server.add_tus_endpoint("/tus/")
        url = server.url("/tus/")
    elif protocol == "ietf":
        endpoint = server.add_ietf_endpoint("/ietf/")
        url = server.url("/ietf/")
    else:
        url = server.url("/up/a.bin")
    async with Session(config=Configuration(max_bytes_per_second=rate)) as session:
        started = time.monotonic()
        task = await session.upload(url, source, protocol=protocol)  # type: ignore[arg-type]
        finished = await task.wait()
        elapsed = time.monotonic() - started
    assert isinstance(finished, FinishedEvent)
    expected = sha256_bytes(source.read_bytes())
    if protocol == "plain":
        [received] = server.uploads
        assert (received.length, received.sha256) == (2_000_000, expected)
    else:
        [stored] = endpoint.uploads.values()
        assert stored.sha256() == expected
    assert elapsed >= _least(2_000_000, rate), elapsed


@pytest.mark.parametrize("how", ["cancel", "cancel_with_resume_data"])
async def test_a_paced_task_stops_at_once(
    server: TestServer, state_dir: Path, out_dir: Path, how: str
) -> None:
    """The task waits for the limit (seconds of debt), and a cancel ends it at
    once: nothing waits for the bucket."""
    rate = 10_000  # a 64 KiB chunk is 6 s of debt
    file = server.add_file("/slow.bin", size=2 * MiB)
    config = Configuration(max_bytes_per_second=rate)
    async with Session("paced", state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "slow.bin")
        await wait_for_bytes(task, 1)
        with anyio.fail_after(4.0):  # well below the 6 s of debt, above a loaded machine's delays
            if how == "cancel":
                await task.cancel()
                outcome = await task.wait()
                assert outcome == CancelledEvent(task_id=task.id, resume_data=None)
            else:
                data = await task.cancel_with_resume_data()
                assert data is not None
        assert task.state is TaskState.COMPLETED
        assert task.bytes_received < file.size // 2
    assert not (out_dir / "slow.bin").exists()


async def test_the_pacer_counts_and_waits_nothing_within_the_burst() -> None:
    pacer = Pacer(4000, clock=lambda: 7.0)
    assert pacer.piece_bytes == 1000
    assert await pacer.pace(1000) == 0.0  # the whole burst, at once
    assert pacer.statistics() == BucketStatistics(rate=4000, burst=1000, tokens=0.0, taken=1000)
    assert pacer_for(None) is None


async def test_an_upload_chunk_goes_in_pieces() -> None:
    assert list(pieces(b"abcdefg", 3)) == [b"abc", b"def", b"g"]
    chunk = b"ab"
    [whole] = pieces(chunk, 3)
    assert whole is chunk  # (no copy when it fits)
