"""Segmented downloads: one file over several connections, written in place."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from _helpers import check_resumable_stream, collect, sha256_file, wait_for_bytes
from _nginx import NginxServer
from bgtransfer import (
    Configuration,
    FinishedEvent,
    RetryPolicy,
    Session,
    TaskState,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024
FAST = Configuration(progress_interval=0, retry=RetryPolicy(initial_delay=0, jitter=0))


def _ranges(server: TestServer, path: str) -> list[str | None]:
    return [r.headers.get("Range") for r in server.requests if r.path == path]


async def test_four_segments_byte_exact_with_one_bounded_range_each(
    server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/big.bin", size=8 * MiB + 123)
    async with Session(config=FAST) as session:
        task = await session.download(server.url(file.path), out_dir / "big.bin", segments=4)
        events = await collect(task.events())
        assert session.statistics().borrowed == 0  # every extra slot went back
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "big.bin") == file.sha256
    total = file.size
    bounds = [total * i // 4 for i in range(5)]
    assert sorted(_ranges(server, file.path), key=str) == sorted(
        [None, *(f"bytes={a}-{b - 1}" for a, b in itertools.pairwise(bounds[1:]))],
        key=str,
    )
    assert server.statistics().peak_connections == 4
    assert task.bytes_received == task.bytes_expected == total


async def test_segments_never_exceed_the_per_host_limit(server: TestServer, out_dir: Path) -> None:
    """Counted on the client: the slots in use per host, seen at every event. (The
    server may briefly see one more socket: the first answer's connection is closed
    when its segment ends, and the server learns of it a moment later.)"""
    files = [server.add_file(f"/f{i}.bin", size=4 * MiB + i) for i in range(3)]
    config = Configuration(max_connections_per_host=2, segments=4, progress_interval=0)
    peak = 0
    async with Session(config=config) as session:
        stream = session.events()
        tasks = [
            await session.download(server.url(f.path), out_dir / f"f{i}.bin")
            for i, f in enumerate(files)
        ]
        ended = 0
        async for event in stream:
            peak = max(peak, *session.statistics().active_by_origin.values(), 0)
            if event in [t.result for t in tasks]:
                ended += 1
                if ended == len(tasks):
                    break
    for i, file in enumerate(files):
        assert sha256_file(out_dir / f"f{i}.bin") == file.sha256
    assert peak == 2
    assert sum(len(_ranges(server, f.path)) for f in files) > len(files)  # segments were used


async def test_small_files_and_servers_without_validators_use_one_connection(
    server: TestServer, out_dir: Path
) -> None:
    small = server.add_file("/small.bin", size=MiB)  # below two minimum segments
    plain = server.add_file("/plain.bin", size=4 * MiB)
    server.set_faults(plain.path, Faults(etag="none", last_modified=False))
    async with Session(config=Configuration(segments=4)) as session:
        for file in (small, plain):
            task = await session.download(server.url(file.path), out_dir / file.path[1:])
            assert isinstance(await task.wait(), FinishedEvent)
            assert sha256_file(out_dir / file.path[1:]) == file.sha256
            assert _ranges(server, file.path) == [None]


async def test_a_server_that_ignores_ranges_falls_back_to_one_connection(
    server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/ignore.bin", size=4 * MiB)
    server.set_faults(file.path, Faults(ignore_range=True))  # still says Accept-Ranges
    async with Session(config=FAST) as session:
        task = await session.download(server.url(file.path), out_dir / "i.bin", segments=4)
        events = await collect(task.events())
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "i.bin") == file.sha256
    # One split, whose range requests got the whole file: then one connection only.
    requests = _ranges(server, file.path)
    assert requests[0] is None
    assert requests[-1] is None
    assert sum(r is None for r in requests) == 2


async def test_segments_survive_connection_resets(server: TestServer, out_dir: Path) -> None:
    file = server.add_file("/reset.bin", size=6 * MiB)
    # The first four requests (the whole-file GET and the three ranges) are cut.
    server.set_faults(file.path, Faults(reset_after=700_000), times=4)
    async with Session(config=FAST) as session:
        task = await session.download(server.url(file.path), out_dir / "r.bin", segments=4)
        events = await collect(task.events())
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "r.bin") == file.sha256
    # Every segment continued from where its bytes stopped: all later requests are
    # bounded ranges with If-Range.
    later = [r for r in server.requests if r.path == file.path][4:]
    assert later
    assert all(r.headers.get("If-Range") == file.etag for r in later)
    assert all(str(r.headers.get("Range", "")).startswith("bytes=") for r in later)


async def test_a_file_that_changes_mid_download_restarts_cleanly(
    server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/change.bin", size=4 * MiB)
    server.set_faults(file.path, Faults(hold_after=200_000, reset_after=400_000), times=4)
    async with Session(config=FAST) as session:
        task = await session.download(server.url(file.path), out_dir / "c.bin", segments=4)
        await server.wait_held(file.path, count=4)
        changed = server.replace_file(file.path, size=4 * MiB + 77, seed="new")
        server.release(file.path)
        events = await collect(task.events())
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "c.bin") == changed.sha256
    assert task.bytes_received == changed.size


async def test_segments_continue_in_the_next_session(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/bg.bin", size=8 * MiB)
    server.set_faults(file.path, Faults(hold_after=MiB))
    async with Session("segments", state_dir=state_dir, config=FAST) as session:
        task = await session.download(server.url(file.path), out_dir / "bg.bin", segments=4)
        await server.wait_held(file.path, count=4)
        await wait_for_bytes(task, 4 * MiB)  # every segment wrote its first MiB
    partial = state_dir / "segments" / "partials" / f"{task.id}.part"
    assert partial.stat().st_size == file.size  # preallocated, written in place
    server.set_faults(file.path, Faults())
    before = len(server.requests)
    async with Session("segments", state_dir=state_dir, config=FAST) as session:
        [again] = session.tasks()
        assert again.state is TaskState.RUNNING
        assert again.bytes_received == 4 * MiB
        events = await collect(again.events())
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "bg.bin") == file.sha256
    quarter = file.size // 4
    resumed = sorted(str(r.headers.get("Range")) for r in server.requests[before:])
    assert resumed == sorted(f"bytes={i * quarter + MiB}-{(i + 1) * quarter - 1}" for i in range(4))


@pytest.mark.nginx
async def test_segments_against_nginx(nginx: NginxServer, out_dir: Path) -> None:
    data = bytes(range(256)) * (6 * MiB // 256) + b"tail"
    (nginx.root / "seg.bin").write_bytes(data)
    async with Session(config=Configuration(segments=3)) as session:
        task = await session.download(nginx.url("seg.bin"), out_dir / "seg.bin")
        assert isinstance(await task.wait(), FinishedEvent)
    assert (out_dir / "seg.bin").read_bytes() == data
    log = await nginx.wait_access_log(lambda log: log.count('"GET /seg.bin') >= 3)
    assert log.count('"GET /seg.bin HTTP/1.1" 200 ') == 1
    assert log.count('"GET /seg.bin HTTP/1.1" 206 ') == 2
