"""The tus driver against the tus project's own server, ``@tus/server`` with
``@tus/file-store`` (Node), on loopback: a server nobody here wrote."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import attrs
import pytest
import pytest_asyncio
from _upload_helpers import TusNodeServer, send_until

from bgtransfer import (
    Configuration,
    ProgressEvent,
    ResumableUploadError,
    ResumedEvent,
    Session,
)
from bgtransfer._core.tus import TusUpload
from bgtransfer._core.upload_protocol import UploadMachine
from bgtransfer._io.resumable import send_resumable, terminate_upload

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _file(tmp_path: Path, size: int, name: str = "up.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("size", [0, 1000, 6 * MiB + 7])
async def test_upload_is_byte_exact(
    tus_node: TusNodeServer, client: aiohttp.ClientSession, tmp_path: Path, size: int
) -> None:
    path = _file(tmp_path, size)
    urls: list[str] = []

    async def on_upload_url(machine: UploadMachine) -> None:
        assert machine.upload_url is not None
        urls.append(machine.upload_url)

    machine = TusUpload.start(tus_node.url, size, metadata=[("filename", "up.bin")])
    result = await send_resumable(client, machine, path, on_upload_url=on_upload_url)
    assert result.status in {201, 204}
    [url] = urls
    assert url.startswith(tus_node.url + "/")
    assert _sha(tus_node.stored(url)) == _sha(path)


async def test_interrupted_upload_continues_from_the_servers_offset(
    tus_node: TusNodeServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    size = 24 * MiB
    path = _file(tmp_path, size)
    url = await send_until(client, TusUpload.start(tus_node.url, size), path, cut_at=8 * MiB)
    positions: list[int] = []
    resumed = TusUpload.start(tus_node.url, size, upload_url=url)
    await send_resumable(client, resumed, path, on_progress=positions.append)
    assert _sha(tus_node.stored(url)) == _sha(path)
    # The first position reported is the offset HEAD answered: the bytes the
    # server held were not sent again.
    held = positions[0]
    assert 0 < held < size
    assert positions[1] > held


async def test_termination_removes_the_upload(
    tus_node: TusNodeServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    size = 16 * MiB
    path = _file(tmp_path, size)
    url = await send_until(client, TusUpload.start(tus_node.url, size), path, cut_at=2 * MiB)
    stored = TusUpload.start(tus_node.url, size, upload_url=url)
    assert await terminate_upload(client, stored) == 204
    assert not tus_node.stored(url).exists()
    headers = dict(stored.next_request().headers)
    async with client.head(url, headers=headers) as answer:
        assert answer.status in {404, 410}


async def test_an_upload_of_another_size_is_refused(
    tus_node: TusNodeServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = _file(tmp_path, 5000)
    url = await send_until(
        client, TusUpload.start(tus_node.url, 5000, chunk_size=1000), path, cut_at=1000
    )
    other = _file(tmp_path, 6000, "other.bin")
    with pytest.raises(ResumableUploadError, match="upload is of 5000 bytes, the file of 6000"):
        await send_resumable(client, TusUpload.start(tus_node.url, 6000, upload_url=url), other)


async def test_a_stale_offset_is_recovered_by_head(
    tus_node: TusNodeServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    size = 16 * MiB
    path = _file(tmp_path, size)
    url = await send_until(client, TusUpload.start(tus_node.url, size), path, cut_at=4 * MiB)
    # A machine that believes the server holds nothing: its PATCH from 0 gets a 409.
    stale = attrs.evolve(
        TusUpload.start(tus_node.url, size, upload_url=url), phase="send", offset=0
    )
    methods: list[str] = []

    async def on_request(_session: object, _context: object, params: object) -> None:
        methods.append(params.method)  # type: ignore[attr-defined]

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(on_request)
    async with aiohttp.ClientSession(trace_configs=[tracing]) as traced:
        await send_resumable(traced, stale, path)
    assert methods == ["PATCH", "HEAD", "PATCH"]
    assert _sha(tus_node.stored(url)) == _sha(path)


def _stored_files(server: TusNodeServer) -> list[Path]:
    return [path for path in server.directory.iterdir() if path.suffix != ".json"]


async def test_session_upload_is_byte_exact(tus_node: TusNodeServer, tmp_path: Path) -> None:
    path = _file(tmp_path, 6 * MiB + 7)
    async with Session() as session:
        task = await session.upload(tus_node.url, path, protocol="tus")
        finished = await task.wait()
    assert finished.reply is not None
    assert finished.reply.status == 204
    [stored] = _stored_files(tus_node)
    assert _sha(stored) == _sha(path)


async def test_session_upload_suspended_continues_from_the_servers_offset(
    tus_node: TusNodeServer, tmp_path: Path
) -> None:
    size = 24 * MiB
    path = _file(tmp_path, size)
    resumed: list[int] = []
    # Paced (24 MiB take a second): the suspend at 8 MiB cuts the PATCH with two
    # thirds of it still to send; unpaced, loopback could send all of it before
    # the event reached this loop (the server then held the whole file).
    async with Session(config=Configuration(max_bytes_per_second=size)) as session:
        task = await session.upload(tus_node.url, path, protocol="tus")
        interrupted = False
        async for event in task.events():
            if isinstance(event, ResumedEvent):
                resumed.append(event.offset)
            elif (
                isinstance(event, ProgressEvent)
                and not interrupted
                and event.total_bytes_written >= 8 * MiB
            ):
                interrupted = True
                task.suspend()  # the PATCH is cut where it stands
                task.resume()
        finished = await task.wait()
    assert finished.total_bytes == size
    [stored] = _stored_files(tus_node)
    assert _sha(stored) == _sha(path)
    [offset] = resumed
    assert 0 < offset < size  # what the server held was not sent again
