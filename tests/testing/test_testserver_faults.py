"""Each Faults knob, observed from an ordinary aiohttp client; fault scheduling."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from typing import Any

import aiohttp
import pytest

from bgtransfer.testing import Faults, ServedFile, TestServer


@pytest.mark.asyncio
async def test_status_fault_with_retry_after(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(status=503, retry_after="7"))
    async with session.get(server.url(served.path)) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "7"
        assert response.headers["Content-Type"].startswith("text/plain")
        assert await response.text() == "503 Service Unavailable\n"
    server.set_faults(served.path, Faults(status=500))
    async with session.get(server.url(served.path)) as response:
        assert response.status == 500
        assert "Retry-After" not in response.headers


@pytest.mark.asyncio
async def test_status_fault_applies_to_paths_without_a_file(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    server.set_faults("/ghost", Faults(status=410))
    async with session.get(server.url("/ghost")) as response:
        assert response.status == 410


@pytest.mark.asyncio
async def test_chunked_has_no_content_length(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(chunked=True))
    async with session.get(server.url(served.path)) as response:
        assert "Content-Length" not in response.headers
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert await response.read() == served.data
    async with session.get(server.url(served.path), headers={"Range": "bytes=10-19"}) as response:
        assert response.status == 206
        assert "Content-Length" not in response.headers
        assert response.headers["Content-Range"] == f"bytes 10-19/{served.size}"
        assert await response.read() == served.data[10:20]


@pytest.mark.asyncio
async def test_drip_sends_slowly_in_small_pieces(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    file = server.add_file("/slow", size=5000)
    server.set_faults(file.path, Faults(drip=(1000, 0.02)))
    started = time.monotonic()
    async with session.get(server.url(file.path)) as response:
        pieces = [piece async for piece in response.content.iter_any()]
    elapsed = time.monotonic() - started
    assert b"".join(pieces) == file.data
    assert elapsed >= 4 * 0.02  # four pauses between five pieces


@pytest.mark.asyncio
async def test_headers_delay(server: TestServer, served: ServedFile) -> None:
    server.set_faults(served.path, Faults(headers_delay=0.1))
    timeout = aiohttp.ClientTimeout(sock_read=0.02)
    async with aiohttp.ClientSession(timeout=timeout) as impatient:
        with pytest.raises(TimeoutError):
            await impatient.get(server.url(served.path))
    started = time.monotonic()
    async with aiohttp.ClientSession() as patient, patient.get(server.url(served.path)) as r:
        assert r.status == 200
    assert time.monotonic() - started >= 0.1


@pytest.mark.asyncio
async def test_reset_after_truncates_with_a_reset(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(reset_after=1000))
    async with session.get(server.url(served.path)) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(served.size)
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert server.statistics().bytes_sent == 1000


@pytest.mark.asyncio
async def test_close_after_truncates_cleanly(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(close_after=1000))
    async with session.get(server.url(served.path)) as response:
        # A clean close delivers exactly the bytes sent before it.
        assert await response.content.readexactly(1000) == served.data[:1000]
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.content.read()


async def _raw_exchange(server: TestServer, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` on a fresh connection; return (head, body) read until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return head, body


@pytest.mark.asyncio
async def test_reset_after_is_a_tcp_reset_and_close_after_is_not(
    server: TestServer, served: ServedFile
) -> None:
    request = f"GET {served.path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()
    server.set_faults(served.path, Faults(close_after=1000))
    head, body = await _raw_exchange(server, request)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == served.data[:1000]  # then a clean EOF

    server.set_faults(served.path, Faults(reset_after=1000))
    with pytest.raises(ConnectionResetError):
        await _raw_exchange(server, request)


@pytest.mark.asyncio
async def test_chunked_fault_with_http_1_0_ends_the_body_by_closing(
    server: TestServer, served: ServedFile
) -> None:
    server.set_faults(served.path, Faults(chunked=True))
    head, body = await _raw_exchange(server, f"GET {served.path} HTTP/1.0\r\n\r\n".encode())
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"content-length" not in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert body == served.data


@pytest.mark.asyncio
async def test_close_after_with_chunked_encoding(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(close_after=10, chunked=True))
    async with session.get(server.url(served.path)) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


@pytest.mark.asyncio
async def test_redirect_keeps_range_semantics_on_the_target(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults("/old", Faults(redirect_to=served.path))
    async with session.get(server.url("/old"), allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == served.path
    async with session.get(server.url("/old"), headers={"Range": "bytes=100-199"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 100-199/{served.size}"
        assert await response.read() == served.data[100:200]
        assert [str(r.url) for r in response.history] == [server.url("/old")]
    assert [r.path for r in server.requests[-2:]] == ["/old", served.path]
    assert server.requests[-1].headers["range"] == "bytes=100-199"


@pytest.mark.asyncio
async def test_ignore_range(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(ignore_range=True))
    headers = {"Range": "bytes=100-199", "If-Range": served.etag}
    async with session.get(server.url(served.path), headers=headers) as response:
        assert response.status == 200
        assert "Content-Range" not in response.headers
        assert await response.read() == served.data


@pytest.mark.asyncio
async def test_validator_knobs(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(etag="weak", last_modified=False))
    async with session.head(server.url(served.path)) as response:
        assert response.headers["ETag"] == f"W/{served.etag}"
        assert "Last-Modified" not in response.headers
    server.set_faults(served.path, Faults(etag="none"))
    async with session.head(server.url(served.path)) as response:
        assert "ETag" not in response.headers
        assert "Last-Modified" in response.headers


@pytest.mark.asyncio
async def test_gzip_even_when_identity_was_asked_for(
    server: TestServer, served: ServedFile
) -> None:
    server.set_faults(served.path, Faults(gzip=True))
    async with aiohttp.ClientSession(auto_decompress=False) as raw:
        headers = {"Accept-Encoding": "identity"}
        async with raw.get(server.url(served.path), headers=headers) as response:
            body = await response.read()
            assert response.headers["Content-Encoding"] == "gzip"
            assert response.headers["Content-Length"] == str(len(body))
    assert gzip.decompress(body) == served.data
    async with aiohttp.ClientSession() as decoding, decoding.get(server.url(served.path)) as r:
        assert await r.read() == served.data


@pytest.mark.asyncio
async def test_wrong_content_range_start(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(content_range_start_offset=5))
    async with session.get(server.url(served.path), headers={"Range": "bytes=100-"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 105-{served.size + 4}/{served.size}"
        assert await response.read() == served.data[100:]  # the body itself is right


@pytest.mark.asyncio
async def test_short_206(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(short_206=True))
    async with session.get(server.url(served.path), headers={"Range": "bytes=0-999"}) as response:
        assert response.status == 206
        assert response.headers["Content-Length"] == "1000"
        assert await response.content.readexactly(500) == served.data[:500]
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.content.read()
    # Without a Range the knob has nothing to shorten.
    async with session.get(server.url(served.path)) as response:
        assert await response.read() == served.data


@pytest.mark.asyncio
async def test_one_shot_faults_revert(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(etag="weak"))
    server.set_faults(served.path, Faults(status=500), times=2)
    server.set_faults(served.path, Faults(status=503), times=1)
    statuses = []
    for _ in range(5):
        async with session.get(server.url(served.path)) as response:
            await response.read()
            statuses.append((response.status, response.headers.get("ETag")))
    assert statuses == [
        (503, None),
        (500, None),
        (500, None),
        (200, served.weak_etag),
        (200, served.weak_etag),
    ]


@pytest.mark.asyncio
async def test_standing_faults_drop_pending_one_shots(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(status=500), times=3)
    server.set_faults(served.path, Faults())
    async with session.get(server.url(served.path)) as response:
        assert response.status == 200


@pytest.mark.asyncio
async def test_faults_are_per_path(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    other = server.add_file("/other", size=10)
    server.set_faults(served.path, Faults(status=500))
    async with session.get(server.url(other.path)) as response:
        assert response.status == 200


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"status": 99}, ValueError),
        ({"status": 600}, ValueError),
        ({"status": "500"}, TypeError),
        ({"retry_after": "5"}, ValueError),  # without status
        ({"status": 503, "retry_after": "5\r\nX: y"}, ValueError),
        ({"status": 503, "retry_after": ""}, ValueError),
        ({"drip": (0, 0.1)}, ValueError),
        ({"drip": (10, -1.0)}, ValueError),
        ({"drip": (1.5, 0.1)}, TypeError),
        ({"drip": (1, 2, 3)}, ValueError),
        ({"reset_after": -1}, ValueError),
        ({"close_after": -1}, ValueError),
        ({"hold_after": -1}, ValueError),
        ({"headers_delay": -0.5}, ValueError),
        ({"reset_after": 1, "close_after": 1}, ValueError),
        ({"redirect_to": "relative"}, ValueError),
        ({"redirect_to": "/x", "status": 500}, ValueError),
        ({"etag": "medium"}, ValueError),
        ({"chunked": 1}, TypeError),
        ({"content_range_start_offset": 1.0}, TypeError),
    ],
)
def test_faults_validate_knobs(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Faults(**kwargs)


def test_faults_are_frozen_and_keyword_only() -> None:
    faults = Faults(status=500)
    with pytest.raises(AttributeError):
        faults.status = 404  # type: ignore[misc]
    with pytest.raises(TypeError):
        Faults(500)  # type: ignore[call-arg]
    assert Faults() == Faults(etag="strong", last_modified=True)


@pytest.mark.asyncio
async def test_set_faults_validates_times(server: TestServer, served: ServedFile) -> None:
    for times in (0, -1, True):
        with pytest.raises(ValueError, match="times"):
            server.set_faults(served.path, Faults(), times=times)
    with pytest.raises(TypeError):
        server.set_faults(served.path, {"status": 500}, times=1)  # type: ignore[arg-type]
