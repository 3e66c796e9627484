"""The upload body (``_io.file_body.FileBody``): a range of an open file sent
byte-exact, checked as it goes, sent once, its file closed when the request is
over, and a server's early answer heard."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp
import pytest

from bgtransfer import LocalFileError, SourceChangedError
from bgtransfer._core.upload import SourceIdentity
from bgtransfer._io.file_body import CHUNK_BYTES, FileBody
from bgtransfer.testing import TestServer

pytestmark = pytest.mark.asyncio

SIZE = 3 * CHUNK_BYTES + 12_345  # three whole chunks and a short one
URL = "http://example.test/up"  # (the task's URL, as the body's errors name it)


def _file(tmp_path: Path, size: int = SIZE) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "source.bin"
    path.write_bytes(data)
    return path, data


def _body(path: Path, start: int, end: int, sent: list[int], **kwargs: object) -> FileBody:
    def no_change(found: SourceIdentity) -> None:
        del found

    options: dict[str, object] = {
        "check": no_change,
        "short": lambda position: LocalFileError(f"short at {position}", url=URL),
        "fail": lambda exc: LocalFileError(f"read failed: {exc}", url=URL),
        "on_sent": sent.append,
    }
    options.update(kwargs)
    return FileBody(os.open(path, os.O_RDONLY), start, end, **options)  # type: ignore[arg-type]


def _open(path: Path) -> bool:
    fds = Path("/proc/self/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return str(path) in targets


async def _put(server: TestServer, client: aiohttp.ClientSession, body: FileBody) -> int:
    """PUT ``body`` to the server's /up; returns once the server's handler ended."""
    try:
        async with client.put(server.url("/up"), data=body) as response:
            await response.read()
            return response.status
    finally:
        body.release()
        await server.wait_until(lambda statistics: statistics.in_flight == 0)


async def test_the_file_is_sent_byte_exact_a_chunk_at_a_time(
    server: TestServer, tmp_path: Path
) -> None:
    path, data = _file(tmp_path)
    sent: list[int] = []
    body = _body(path, 0, SIZE, sent)
    async with aiohttp.ClientSession() as client:
        status = await _put(server, client, body)
    assert status == 201
    [received] = server.uploads
    assert received.complete
    assert received.sha256 == hashlib.sha256(data).hexdigest()
    assert sent == [CHUNK_BYTES] * 3 + [12_345]
    assert body.sent == SIZE
    assert not _open(path)


async def test_a_range_of_the_file_is_sent_byte_exact(server: TestServer, tmp_path: Path) -> None:
    path, data = _file(tmp_path)
    start, end = CHUNK_BYTES + 5, 3 * CHUNK_BYTES + 7
    sent: list[int] = []
    body = _body(path, start, end, sent)
    async with aiohttp.ClientSession() as client:
        assert await _put(server, client, body) == 201
    [received] = server.uploads
    assert received.length == end - start
    assert received.sha256 == hashlib.sha256(data[start:end]).hexdigest()
    assert sum(sent) == end - start


async def test_a_failed_check_stops_the_body_and_it_is_not_sent_again(
    server: TestServer, tmp_path: Path
) -> None:
    """The check after the second read fails: the request fails with the body's
    error kept, the server never got the whole body, and aiohttp does not send
    the (idempotent) request again by itself."""
    path, _ = _file(tmp_path)
    checks: list[SourceIdentity] = []

    def changed_after_two(found: SourceIdentity) -> None:
        checks.append(found)
        if len(checks) == 2:
            raise SourceChangedError("the file changed", url=URL)

    body = _body(path, 0, SIZE, [], check=changed_after_two)
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.ClientError):
            await _put(server, client, body)
    assert isinstance(body.error, SourceChangedError)
    assert body.sent == CHUNK_BYTES
    [received] = server.uploads  # one request only
    assert not received.complete
    assert received.length < SIZE
    assert not _open(path)


async def test_a_file_shorter_than_its_range_fails_with_the_short_error(
    server: TestServer, tmp_path: Path
) -> None:
    path, _ = _file(tmp_path, size=1000)
    body = _body(path, 0, 5000, [], short=lambda at: LocalFileError(f"ends at {at}", url=URL))
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.ClientError):
            await _put(server, client, body)
    assert isinstance(body.error, LocalFileError)
    assert str(body.error) == f"{URL}: ends at 1000"
    assert not _open(path)


async def test_a_body_released_before_it_is_written_closes_its_file_and_fails(
    server: TestServer, tmp_path: Path
) -> None:
    path, _ = _file(tmp_path, size=1000)
    body = _body(path, 0, 1000, [])
    body.release()
    assert not _open(path)
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.ClientError):
            await _put(server, client, body)
    assert isinstance(body.error, LocalFileError)


async def test_an_early_answer_from_a_server_that_closes_is_read(tmp_path: Path) -> None:
    """A server answers 413 once part of the body came, reads no more and
    closes (an RST, its buffer unread): the body breaks mid-way, and the
    request still gets the server's answer rather than a connection error."""
    answered = asyncio.Event()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(4 * CHUNK_BYTES)  # the body is under way
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
        await writer.drain()
        answered.set()
        writer.transport.abort()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path, _ = _file(tmp_path, size=24 * CHUNK_BYTES)
    body = _body(path, 0, 24 * CHUNK_BYTES, [])
    try:
        async with (
            aiohttp.ClientSession() as client,
            client.put(f"http://127.0.0.1:{port}/up", data=body) as response,
        ):
            assert response.status == 413
            assert await response.read() == b"big!"
    finally:
        body.release()
        server.close()
        await server.wait_closed()
    assert answered.is_set()
    assert body.error is None
    assert 4 * CHUNK_BYTES <= body.sent < 24 * CHUNK_BYTES
    assert not _open(path)
