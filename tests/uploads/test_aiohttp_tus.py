"""The tus driver against ``aiohttp-tus`` (a tus server for aiohttp.web, from PyPI),
on loopback: a server nobody here wrote.

aiohttp-tus reads each PATCH whole into memory, within aiohttp's request size
limit (1 MiB by default), so the uploads here go in 512 KiB PATCHes
(``chunk_size``), as a client of such a server must. It completes an upload in
its last PATCH, so a 0-byte file (complete at creation) never reaches its final
name there: that case is left to the other servers.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import attrs
import pytest
import pytest_asyncio
from _upload_helpers import send_until
from aiohttp import web
from aiohttp_tus import setup_tus

from bgtransfer._core.tus import TusUpload
from bgtransfer._io.resumable import send_resumable, terminate_upload

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024
CHUNK = 512 * 1024


@pytest_asyncio.fixture
async def tus_app(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """aiohttp-tus at ``/uploads`` on 127.0.0.1; its URL and upload directory."""
    store = tmp_path / "aiohttp-tus"
    store.mkdir()
    with warnings.catch_warnings():
        # aiohttp-tus (2022) keys the app with strings, which aiohttp now warns of.
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app = setup_tus(web.Application(), upload_path=store, upload_url="/uploads")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}/uploads", store
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "up.bin"
    path.write_bytes(os.urandom(size))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _machine(url: str, size: int, **kw: object) -> TusUpload:
    return TusUpload.start(
        url,
        size,
        metadata=[("filename", "done.bin")],
        chunk_size=CHUNK,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("size", [1000, 3 * MiB + 5])
async def test_upload_is_byte_exact(
    tus_app: tuple[str, Path], client: aiohttp.ClientSession, tmp_path: Path, size: int
) -> None:
    url, store = tus_app
    path = _file(tmp_path, size)
    result = await send_resumable(client, _machine(url, size), path)
    assert result.status == 204
    assert _sha(store / "done.bin") == _sha(path)


async def test_interrupted_upload_continues_from_the_servers_offset(
    tus_app: tuple[str, Path], client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url, store = tus_app
    size = 4 * MiB
    path = _file(tmp_path, size)
    upload_url = await send_until(client, _machine(url, size), path, cut_at=CHUNK + 1)
    positions: list[int] = []
    resumed = _machine(url, size, upload_url=upload_url)
    await send_resumable(client, resumed, path, on_progress=positions.append)
    assert _sha(store / "done.bin") == _sha(path)
    held = positions[0]  # what HEAD answered: whole PATCHes the server kept
    assert held >= CHUNK
    assert held % CHUNK == 0


async def test_termination_removes_the_upload(
    tus_app: tuple[str, Path], client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url, store = tus_app
    size = 4 * MiB
    path = _file(tmp_path, size)
    upload_url = await send_until(client, _machine(url, size), path, cut_at=CHUNK + 1)
    stored = _machine(url, size, upload_url=upload_url)
    assert await terminate_upload(client, stored) == 204
    headers = dict(stored.next_request().headers)
    async with client.head(upload_url, headers=headers) as answer:
        assert answer.status in {404, 410}
    assert not (store / "done.bin").exists()


async def test_a_stale_offset_is_recovered_by_head(
    tus_app: tuple[str, Path], tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    url, store = tus_app
    size = 4 * MiB
    path = _file(tmp_path, size)
    upload_url = await send_until(client, _machine(url, size), path, cut_at=CHUNK + 1)
    # A machine that believes the server holds nothing: its PATCH from 0 gets a 409.
    stale = attrs.evolve(_machine(url, size, upload_url=upload_url), phase="send", offset=0)
    methods: list[str] = []

    async def on_request(_session: object, _context: object, params: object) -> None:
        methods.append(params.method)  # type: ignore[attr-defined]

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(on_request)
    async with aiohttp.ClientSession(trace_configs=[tracing]) as traced:
        await send_resumable(traced, stale, path)
    assert methods[:3] == ["PATCH", "HEAD", "PATCH"]
    assert _sha(store / "done.bin") == _sha(path)
