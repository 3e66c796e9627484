"""The daemon client's command channel (``_daemon/channel.py``): HTTP/1.1 POSTs
with JSON bodies over kept-alive Unix connections, against aiohttp's server (the
daemon's) and against a raw server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from bgtransfer._daemon.channel import COMMAND_CONNECTIONS, ChannelError, CommandChannel

pytestmark = pytest.mark.asyncio

HEADERS = {"Bgtransfer-Protocol": "1"}


class Served:
    """What an aiohttp server on a Unix socket saw."""

    def __init__(self) -> None:
        self.transports: list[object] = []  # one per connection (kept: ids stay unique)
        self.busy = 0
        self.most_busy = 0
        self.full = asyncio.Event()  # as many requests held as the limit allows
        self.release = asyncio.Event()

    def connection(self, request: web.Request) -> None:
        if not any(t is request.transport for t in self.transports):
            self.transports.append(request.transport)


@pytest_asyncio.fixture
async def aiohttp_socket(tmp_path: Path) -> AsyncIterator[tuple[Path, Served]]:
    served = Served()

    async def echo(request: web.Request) -> web.Response:
        served.connection(request)
        body = await request.json()
        return web.json_response({"got": body, "lease": request.headers.get("Bgtransfer-Lease")})

    async def hold(request: web.Request) -> web.Response:
        served.connection(request)
        served.busy += 1
        served.most_busy = max(served.most_busy, served.busy)
        if served.busy == COMMAND_CONNECTIONS:
            served.full.set()
        try:
            await served.release.wait()
        finally:
            served.busy -= 1
        return web.json_response({"n": (await request.json())["n"]})

    app = web.Application()
    app.router.add_post("/v1/echo", echo)
    app.router.add_post("/v1/hold", hold)
    runner = web.AppRunner(app)
    await runner.setup()
    path = tmp_path / "s"
    await web.UnixSite(runner, str(path)).start()
    try:
        yield path, served
    finally:
        await runner.cleanup()


async def test_answers_come_back_on_one_kept_alive_connection(
    aiohttp_socket: tuple[Path, Served],
) -> None:
    path, served = aiohttp_socket
    channel = CommandChannel(path)
    try:
        for n in range(5):
            body = json.dumps({"n": n, "text": "é"}).encode()
            status, answer = await channel.post(
                "/v1/echo", body, {**HEADERS, "Bgtransfer-Lease": "ab"}
            )
            assert status == 200
            assert json.loads(answer) == {"got": {"n": n, "text": "é"}, "lease": "ab"}
        status, answer = await channel.post("/v1/nothing", b"{}", HEADERS)
        assert status == 404  # aiohttp's own answer, and the connection serves on
        status, _ = await channel.post("/v1/echo", b"{}", HEADERS)
        assert status == 200
    finally:
        await channel.close()
    assert len(served.transports) == 1


async def test_concurrent_posts_use_at_most_the_limit_of_connections(
    aiohttp_socket: tuple[Path, Served],
) -> None:
    path, served = aiohttp_socket
    channel = CommandChannel(path)
    try:
        calls = [
            asyncio.create_task(channel.post("/v1/hold", json.dumps({"n": n}).encode(), HEADERS))
            for n in range(3 * COMMAND_CONNECTIONS)
        ]
        await served.full.wait()
        served.release.set()
        answers = await asyncio.gather(*calls)
    finally:
        await channel.close()
    assert [json.loads(body)["n"] for _, body in answers] == list(range(3 * COMMAND_CONNECTIONS))
    assert served.most_busy == COMMAND_CONNECTIONS
    assert len(served.transports) == COMMAND_CONNECTIONS


Script = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(path: Path, script: Script) -> AsyncIterator[list[bytes]]:
    """A Unix server that reads each request (head and JSON body) and lets
    ``script`` answer it; yields the requests' bodies, in order of arrival."""
    bodies: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                bodies.append(body)
                await script(body, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(serve, str(path))
    try:
        yield bodies
    finally:
        server.close()
        await server.wait_closed()


def _answer(body: bytes, *, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_connection_close_is_honoured_and_a_new_connection_made(tmp_path: Path) -> None:
    async def script(body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer(body, extra="Connection: close\r\n"))
        await writer.drain()
        writer.close()  # as it said

    async with raw_server(tmp_path / "s", script) as bodies:
        channel = CommandChannel(tmp_path / "s")
        try:
            first = await channel.post("/v1/x", b'{"n":1}', HEADERS)
            second = await channel.post("/v1/x", b'{"n":2}', HEADERS)
        finally:
            await channel.close()
    assert (first, second) == ((200, b'{"n":1}'), (200, b'{"n":2}'))
    assert bodies == [b'{"n":1}', b'{"n":2}']


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without a word
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",  # cut short
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70_000 + b"\r\n\r\n",  # an endless head
    ],
)
async def test_an_answer_that_is_not_understood_is_a_channel_error(
    tmp_path: Path, answer: bytes
) -> None:
    async def script(body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with raw_server(tmp_path / "s", script):
        channel = CommandChannel(tmp_path / "s")
        try:
            with pytest.raises(ChannelError):
                await channel.post("/v1/x", b"{}", HEADERS)
        finally:
            await channel.close()
    assert isinstance(ChannelError(), OSError)  # what the attachment treats as a lost daemon


async def test_a_cancelled_exchange_leaves_no_answer_for_the_next(tmp_path: Path) -> None:
    """The first request's late answer must never be taken as the second's."""
    first_arrived = asyncio.Event()
    answer_first = asyncio.Event()

    async def script(body: bytes, writer: asyncio.StreamWriter) -> None:
        if body == b'{"n":1}':
            first_arrived.set()
            await answer_first.wait()
        writer.write(_answer(body))
        await writer.drain()

    async with raw_server(tmp_path / "s", script) as bodies:
        channel = CommandChannel(tmp_path / "s", limit=1)
        try:
            first = asyncio.create_task(channel.post("/v1/x", b'{"n":1}', HEADERS))
            await first_arrived.wait()
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            answer_first.set()  # written to a connection the channel closed
            assert await channel.post("/v1/x", b'{"n":2}', HEADERS) == (200, b'{"n":2}')
        finally:
            await channel.close()
    assert bodies == [b'{"n":1}', b'{"n":2}']


async def test_a_header_with_a_line_break_is_refused_before_sending(tmp_path: Path) -> None:
    async def script(body: bytes, writer: asyncio.StreamWriter) -> None:
        raise AssertionError("nothing may be sent")

    async with raw_server(tmp_path / "s", script) as bodies:
        channel = CommandChannel(tmp_path / "s")
        try:
            with pytest.raises(ValueError, match="line break"):
                await channel.post("/v1/x", b"{}", {"Bgtransfer-Lease": "a\r\nX-Evil: 1"})
        finally:
            await channel.close()
    assert bodies == []


async def test_no_socket_is_an_oserror_and_a_closed_channel_refuses(tmp_path: Path) -> None:
    channel = CommandChannel(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        await channel.post("/v1/x", b"{}", HEADERS)
    await channel.close()
    with pytest.raises(ChannelError, match="closed"):
        await channel.post("/v1/x", b"{}", HEADERS)
