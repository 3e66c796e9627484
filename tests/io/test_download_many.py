"""``Session.download_many``: a batch of downloads, checked all or none, journaled in
one commit, against the real loopback server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from _helpers import journal_task_ids, sha256_file
from bgtransfer import (
    Configuration,
    DownloadRequest,
    FinishedEvent,
    InvalidDestinationError,
    InvalidURLError,
    Session,
    SessionClosedError,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio


async def test_a_batch_downloads_every_file_byte_exact_in_the_order_given(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    files = [server.add_file(f"/many/{i}.bin", size=1000 + 7919 * i) for i in range(12)]
    inbox = out_dir / "inbox"
    inbox.mkdir()
    requests: list[DownloadRequest | str] = [
        DownloadRequest(server.url(files[0].path), out_dir / "first.bin", description="one"),
        DownloadRequest(server.url(files[1].path), inbox, headers={"X-Batch": "yes"}),
        server.url(files[2].path),  # a URL alone: the session's downloads directory
        *(DownloadRequest(server.url(f.path), out_dir / f"{i}.bin") for i, f in enumerate(files)),
    ]
    config = Configuration(max_connections_per_host=3)
    async with background("batch", state_dir=state_dir, config=config) as session:
        tasks = await session.download_many(requests)
        assert [task.url for task in tasks] == [
            r.url if isinstance(r, DownloadRequest) else r for r in requests
        ]
        assert tasks[0].description == "one"
        results = [await task.wait() for task in tasks]
    expected = [files[0], files[1], files[2], *files]
    for result, file in zip(results, expected, strict=True):
        assert isinstance(result, FinishedEvent)
        assert sha256_file(result.location) == file.sha256
    assert results[0].location == out_dir / "first.bin"
    assert results[1].location == inbox / "1.bin"
    assert results[2].location.parent == state_dir / "batch" / "downloads"
    assert server.statistics().peak_connections <= 3
    tagged = [r.path for r in server.requests if r.headers.get("X-Batch") == "yes"]
    assert tagged == [files[1].path]  # the one request that asked for it
    assert len(server.requests) == len(requests)


async def test_the_batch_is_in_the_journal_when_the_call_returns(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/held.bin", size=50_000)
    server.set_faults(file.path, Faults(hold_after=0))  # nothing finishes meanwhile
    async with background("durable", state_dir=state_dir) as session:
        tasks = await session.download_many(
            [DownloadRequest(server.url(file.path), out_dir / f"{i}.bin") for i in range(100)]
        )
        assert journal_task_ids(state_dir, "durable") == [task.id for task in tasks]
        server.release(file.path)
        for task in tasks:
            result = await task.wait()
            assert isinstance(result, FinishedEvent)
            assert sha256_file(result.location) == file.sha256


async def test_one_wrong_request_makes_no_task_and_is_named(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/a.bin", size=100)
    good = [DownloadRequest(server.url(file.path), out_dir / f"{i}.bin") for i in range(4)]
    async with background("atomic", state_dir=state_dir) as session:
        with pytest.raises(InvalidURLError) as info:
            await session.download_many([*good[:3], DownloadRequest("http://"), good[3]])
        assert "request 3 of 5; no task was made" in info.value.__notes__
        with pytest.raises(InvalidDestinationError) as clash:
            await session.download_many([good[0], good[1], good[0]])
        assert "already claimed by task" in str(clash.value)
        assert "request 2 of 3; no task was made" in clash.value.__notes__
        with pytest.raises(InvalidDestinationError):
            await session.download_many(
                [DownloadRequest(server.url(file.path), out_dir / "no" / "x")]
            )
        assert session.tasks() == []
        assert journal_task_ids(state_dir, "atomic") == []
        # Nothing stayed claimed: the same destinations are free for the next batch.
        tasks = await session.download_many(good)
        for task in tasks:
            result = await task.wait()
            assert isinstance(result, FinishedEvent)
            assert sha256_file(result.location) == file.sha256
    assert server.statistics().requests == 4


async def test_names_made_from_urls_are_unique_across_the_batch(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/report.pdf", size=3000)
    (out_dir / "report.pdf").write_bytes(b"already here")
    async with Session(config=Configuration(), state_dir=state_dir) as session:
        tasks = await session.download_many(
            [DownloadRequest(server.url(file.path), out_dir) for _ in range(3)]
        )
        results = [await task.wait() for task in tasks]
    names = [r.location.name for r in results if isinstance(r, FinishedEvent)]
    assert names == ["report (1).pdf", "report (2).pdf", "report (3).pdf"]
    assert (out_dir / "report.pdf").read_bytes() == b"already here"
    for name in names:
        assert sha256_file(out_dir / name) == file.sha256


async def test_wrong_arguments_raise_type_errors(state_dir: Path) -> None:
    async with Session(state_dir=state_dir) as session:
        with pytest.raises(TypeError, match="iterable of DownloadRequest or str, not str"):
            await session.download_many("http://example.com/a")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="request 1: expected a DownloadRequest"):
            await session.download_many(["http://example.com/a", 7])  # type: ignore[list-item]
        assert await session.download_many([]) == []
        assert session.tasks() == []
    with pytest.raises(TypeError, match="description must be a str"):
        DownloadRequest("http://example.com/a", description=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="header"):
        DownloadRequest("http://example.com/a", headers={"Bad Name": "x"})
    with pytest.raises(SessionClosedError):
        await session.download_many(["http://example.com/a"])
