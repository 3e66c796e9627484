"""Downloads from nginx, a real server nobody here wrote."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from _helpers import check_task_stream, collect, sha256_file, wait_for_bytes
from _nginx import NginxServer
from bgtransfer import (
    CancelledEvent,
    Configuration,
    FinishedEvent,
    HTTPStatusError,
    ProgressEvent,
    ResumedEvent,
    RetryPolicy,
    Session,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.nginx]

SIZES = [700_000, 4_400_000, 9_100_000, 17_300_000, 29_000_000]


async def test_five_files_from_nginx(nginx: NginxServer, state_dir: Path, out_dir: Path) -> None:
    digests = {}
    for i, size in enumerate(SIZES):
        data = os.urandom(size)
        (nginx.root / f"file{i}.bin").write_bytes(data)
        digests[f"file{i}.bin"] = hashlib.sha256(data).hexdigest()
    config = Configuration(max_connections_per_host=2)
    async with Session("nginx", state_dir=state_dir, config=config) as session:
        tasks = [await session.download(nginx.url(name), out_dir / name) for name in digests]
        results = await asyncio.gather(*(collect(task.events()) for task in tasks))
    for task, events in zip(tasks, results, strict=True):
        terminal = check_task_stream(events, task.id)
        assert isinstance(terminal, FinishedEvent)
        assert sha256_file(terminal.location) == digests[terminal.location.name]
        assert task.bytes_expected == terminal.total_bytes
    # nginx saw plain identity GETs: no Range, no compression negotiated.
    log = await nginx.wait_access_log(lambda log: log.count('"GET /file') >= 5)
    assert log.count('"GET /file') == 5
    assert '"-"' in log


async def test_nginx_404(nginx: NginxServer, state_dir: Path, out_dir: Path) -> None:
    async with Session(state_dir=state_dir) as session:
        task = await session.download(nginx.url("missing.bin"), out_dir / "m.bin")
        with pytest.raises(HTTPStatusError) as raised:
            await task.wait()
    assert raised.value.status == 404
    assert str(raised.value).startswith(nginx.url("missing.bin"))
    assert not (out_dir / "m.bin").exists()


async def test_cancel_a_throttled_nginx_download(
    nginx_binary: str, tmp_path: Path, state_dir: Path, out_dir: Path
) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "slow.bin").write_bytes(os.urandom(2_000_000))
    with NginxServer(root, binary=nginx_binary, prefix=tmp_path / "ng", limit_rate=200_000) as slow:
        async with Session("nginx-cancel", state_dir=state_dir) as session:
            task = await session.download(slow.url("slow.bin"), out_dir / "slow.bin")
            async for event in task.events():
                if isinstance(event, ProgressEvent):
                    await task.cancel()  # mid-body: the first bytes have been written
                else:
                    assert event == CancelledEvent(task_id=task.id)
            assert 0 < task.bytes_received < 2_000_000
            assert not list((session.directory / "partials").iterdir())
    assert not (out_dir / "slow.bin").exists()


async def test_suspend_and_resume_against_nginx_ranges(
    nginx_binary: str, tmp_path: Path, state_dir: Path, out_dir: Path
) -> None:
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(3_000_000)
    (root / "big.bin").write_bytes(data)
    config = Configuration(retry=RetryPolicy(max_attempts=2, initial_delay=0, jitter=0))
    with NginxServer(
        root, binary=nginx_binary, prefix=tmp_path / "ng", limit_rate=1_000_000
    ) as slow:
        async with Session("nginx-resume", state_dir=state_dir, config=config) as session:
            task = await session.download(slow.url("big.bin"), out_dir / "big.bin")
            await wait_for_bytes(task, 100_000)
            stream = task.events()
            task.suspend()
            task.resume()
            events = await collect(stream)
        log = await slow.wait_access_log(lambda log: " 206 " in log)  # the resumed request's
    assert isinstance(events[-1], FinishedEvent)
    offset = next(e.offset for e in events if isinstance(e, ResumedEvent))
    assert 0 < offset < len(data)
    assert (
        hashlib.sha256((out_dir / "big.bin").read_bytes()).hexdigest()
        == hashlib.sha256(data).hexdigest()
    )
    assert f'"bytes={offset}-"' in log
    assert " 206 " in log


async def test_file_changed_on_nginx_between_pause_and_resume(
    nginx_binary: str, tmp_path: Path, state_dir: Path, out_dir: Path
) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "doc.bin").write_bytes(os.urandom(2_000_000))
    with NginxServer(
        root, binary=nginx_binary, prefix=tmp_path / "ng", limit_rate=1_000_000
    ) as slow:
        async with Session(state_dir=state_dir) as session:
            task = await session.download(slow.url("doc.bin"), out_dir / "doc.bin")
            await wait_for_bytes(task, 100_000)
            data = await task.cancel_with_resume_data()
            assert data is not None
            assert data.validator.startswith('"')  # nginx's strong ETag
            new = os.urandom(2_100_000)
            (root / "doc.bin").write_bytes(new)  # new size and mtime: a new ETag
            resumed = await session.download_with_resume_data(data)
            events = await collect(resumed.events())
    assert isinstance(events[-1], FinishedEvent)
    assert events[0] == ResumedEvent(task_id=resumed.id, offset=0, expected_total=len(new))
    assert (out_dir / "doc.bin").read_bytes() == new  # never spliced onto old bytes
