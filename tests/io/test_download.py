"""Downloads against the real loopback server: bytes, limits, order, naming."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from _helpers import check_task_stream, collect, sha256_file
from bgtransfer import (
    Configuration,
    FinishedEvent,
    ProgressEvent,
    Session,
    TaskState,
)
from bgtransfer._io import files
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

FIVE_FILES = [
    ("/demo/overview.pdf", 700_000),
    ("/demo/video-480p.mp4", 4_400_000),
    ("/demo/sample-code.zip", 9_100_000),
    ("/demo/video-720p.mp4", 17_300_000),
    ("/demo/video-1080p.mp4", 29_000_000),
]


async def test_five_files_concurrently_under_a_limit_of_two(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    served = {path: server.add_file(path, size=size) for path, size in FIVE_FILES}
    config = Configuration(max_connections_per_host=2, max_concurrent_transfers=16)
    async with Session("com.example.bg", state_dir=state_dir, config=config) as session:
        tasks = [
            await session.download(server.url(path), out_dir / Path(path).name, description=path)
            for path in served
        ]
        streams = [task.events() for task in tasks]
        results = await asyncio.gather(*(collect(stream) for stream in streams))
        for task, events in zip(tasks, results, strict=True):
            terminal = check_task_stream(events, task.id)
            assert isinstance(terminal, FinishedEvent)
            assert terminal.location == out_dir / Path(task.description or "").name
            assert sha256_file(terminal.location) == served[task.description or ""].sha256
            assert any(isinstance(event, ProgressEvent) for event in events)
            assert task.state is TaskState.COMPLETED
            assert task.bytes_received == task.bytes_expected == served[task.description or ""].size
            assert await task.wait() == terminal
    assert server.statistics().peak_connections <= 2
    assert server.statistics().requests == 5
    assert not list((state_dir / "com.example.bg" / "partials").iterdir())


async def test_per_host_limit_holds_with_twenty_tasks_queued(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/big.bin", size=200_000)
    server.set_faults(file.path, Faults(hold_after=1000))
    config = Configuration(max_connections_per_host=2)
    async with Session("limits", state_dir=state_dir, config=config) as session:
        tasks = [
            await session.download(server.url(file.path), out_dir / f"{i}.bin") for i in range(20)
        ]
        await server.wait_held(file.path, count=2)
        # Two requests sit at the gate; the other 18 tasks are queued, not connecting.
        assert server.statistics().open_connections == 2
        assert session.statistics().queued == 18
        assert [task.state for task in tasks] == [TaskState.RUNNING] * 20
        server.release(file.path)
        for task in tasks:
            result = await task.wait()
            assert isinstance(result, FinishedEvent)
            assert sha256_file(result.location) == file.sha256
    stats = server.statistics()
    assert stats.peak_connections == 2
    assert stats.peak_in_flight == 2
    assert stats.requests == 20


async def test_limit_is_per_origin(state_dir: Path, out_dir: Path) -> None:
    async with TestServer() as first, TestServer() as second:
        for srv in (first, second):
            srv.add_file("/f.bin", size=50_000)
            srv.set_faults("/f.bin", Faults(hold_after=0))
        config = Configuration(max_connections_per_host=2)
        async with Session("origins", state_dir=state_dir, config=config) as session:
            tasks = []
            for i in range(6):
                srv = first if i % 2 else second
                tasks.append(await session.download(srv.url("/f.bin"), out_dir / f"{i}.bin"))
            # A full origin does not block the other: both reach their own limit.
            await first.wait_held("/f.bin", count=2)
            await second.wait_held("/f.bin", count=2)
            first.release("/f.bin")
            second.release("/f.bin")
            for task in tasks:
                assert isinstance(await task.wait(), FinishedEvent)
        assert first.statistics().peak_connections == 2
        assert second.statistics().peak_connections == 2


async def test_total_limit_caps_all_origins(state_dir: Path, out_dir: Path) -> None:
    async with TestServer() as first, TestServer() as second:
        for srv in (first, second):
            srv.add_file("/f.bin", size=10_000)
            srv.set_faults("/f.bin", Faults(hold_after=0))
        config = Configuration(max_connections_per_host=5, max_concurrent_transfers=3)
        async with Session("total", state_dir=state_dir, config=config) as session:
            tasks = [
                await session.download((first, second)[i % 2].url("/f.bin"), out_dir / f"{i}")
                for i in range(8)
            ]
            # Tasks 0, 2, 4, 6 go to the first server; 1, 3, 5, 7 to the second.
            await first.wait_held("/f.bin", count=2)
            await second.wait_held("/f.bin", count=1)
            assert session.statistics().active == 3
            assert first.held("/f.bin") + second.held("/f.bin") == 3
            first.release("/f.bin")
            second.release("/f.bin")
            for task in tasks:
                assert isinstance(await task.wait(), FinishedEvent)
        assert first.statistics().peak_in_flight <= 3
        assert second.statistics().peak_in_flight <= 3


async def test_queued_tasks_start_in_creation_order(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    paths = [f"/order/{i}.bin" for i in range(8)]
    for path in paths:
        server.add_file(path, size=5_000)
    config = Configuration(max_connections_per_host=1)
    async with Session("order", state_dir=state_dir, config=config) as session:
        tasks = [await session.download(server.url(path), out_dir) for path in reversed(paths)]
        for task in tasks:
            await task.wait()
    assert [request.path for request in server.requests] == list(reversed(paths))


async def test_request_headers(server: TestServer, state_dir: Path, out_dir: Path) -> None:
    file = server.add_file("/h.bin", size=1000)
    config = Configuration(headers={"User-Agent": "bgtransfer-tests", "X-Session": "s"})
    async with Session(config=config, state_dir=state_dir) as session:
        task = await session.download(
            server.url(file.path),
            out_dir / "h.bin",
            headers={"X-Session": "task", "Accept-Encoding": "gzip"},
        )
        await task.wait()
    (request,) = server.requests
    assert request.headers["User-Agent"] == "bgtransfer-tests"
    assert request.headers["X-Session"] == "task"  # the task's header wins
    # Bytes on disk must be the representation's bytes: identity, whatever was asked.
    assert request.headers["Accept-Encoding"] == "identity"
    assert "Range" not in request.headers


async def test_chunked_body_without_length(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/chunked.bin", size=300_000)
    server.set_faults(file.path, Faults(chunked=True))
    async with Session(state_dir=state_dir, config=Configuration(progress_interval=0)) as session:
        task = await session.download(server.url(file.path), out_dir / "c.bin")
        events = await collect(task.events())
    terminal = check_task_stream(events, task.id)
    assert isinstance(terminal, FinishedEvent)
    assert sha256_file(terminal.location) == file.sha256
    assert terminal.length_verified  # the last chunk vouches for the length
    assert task.bytes_expected == file.size  # known once the framing ended, not before
    assert all(e.total_bytes_expected is None for e in events if isinstance(e, ProgressEvent))


async def test_empty_file(server: TestServer, state_dir: Path, out_dir: Path) -> None:
    file = server.add_file("/empty", data=b"")
    async with Session(state_dir=state_dir) as session:
        task = await session.download(server.url(file.path), out_dir / "empty")
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert result.total_bytes == 0
    assert (out_dir / "empty").read_bytes() == b""


async def test_redirect_is_followed(server: TestServer, state_dir: Path, out_dir: Path) -> None:
    target = server.add_file("/real.bin", size=64_000)
    server.add_file("/alias.bin", data=b"not this")
    server.set_faults("/alias.bin", Faults(redirect_to="/real.bin"))
    async with Session(state_dir=state_dir) as session:
        task = await session.download(server.url("/alias.bin"), out_dir / "r.bin")
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(result.location) == target.sha256
    assert [r.path for r in server.requests] == ["/alias.bin", "/real.bin"]


async def test_existing_destination_is_replaced_on_success(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/new.bin", size=10_000)
    destination = out_dir / "file.bin"
    destination.write_bytes(b"old contents")
    async with Session(state_dir=state_dir) as session:
        await (await session.download(server.url(file.path), destination)).wait()
    assert sha256_file(destination) == file.sha256


async def test_names_from_url_are_unique(server: TestServer, state_dir: Path) -> None:
    file = server.add_file("/dir/report%20final.pdf", size=2_000)
    async with Session("names", state_dir=state_dir) as session:
        first = await session.download(server.url(file.path))
        second = await session.download(server.url(file.path))
        results = [await first.wait(), await second.wait()]
    downloads = state_dir / "names" / "downloads"
    locations = [r.location for r in results if isinstance(r, FinishedEvent)]
    assert locations == [downloads / "report%20final.pdf", downloads / "report%20final (1).pdf"]
    assert all(sha256_file(path) == file.sha256 for path in locations)


async def test_destination_directory_gets_a_name_from_the_url(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/pub/data.csv", data=b"a,b\n1,2\n")
    (out_dir / "data.csv").write_bytes(b"keep me")
    async with Session(state_dir=state_dir) as session:
        result = await (await session.download(server.url(file.path), out_dir)).wait()
    assert isinstance(result, FinishedEvent)
    assert result.location == out_dir / "data (1).csv"
    assert (out_dir / "data.csv").read_bytes() == b"keep me"
    assert result.location.read_bytes() == b"a,b\n1,2\n"


async def test_files_and_dirs_are_private(
    server: TestServer, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's directories are 0700 whatever the umask; a finished file has
    a new file's mode under the umask (here 0666), so one in ``downloads/`` is
    private by its directory."""
    file = server.add_file("/p.bin", size=100)
    monkeypatch.setattr(files, "_finished_mode", None)  # read under this umask
    old = os.umask(0)
    try:
        async with Session("private", state_dir=state_dir) as session:
            await (await session.download(server.url(file.path))).wait()
    finally:
        os.umask(old)
    for name in ("partials", "downloads"):
        assert (state_dir / "private" / name).stat().st_mode & 0o777 == 0o700
    assert (state_dir / "private" / "downloads" / "p.bin").stat().st_mode & 0o777 == 0o666
