"""The command channel's client side against a WebSocket server of the test's
own: answers reach their callers in any order, a cancelled caller cancels its
command, and a channel that closes fails the callers still waiting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bgtransfer._daemon.channel_client import Channel, open_channel

pytestmark = pytest.mark.asyncio


class Peer:
    """The daemon's end, played by the test: what it received, and its socket."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ws: web.WebSocketResponse | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        ws = self.ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await self.received.put(json.loads(message.data))
        return ws

    async def answer(self, ident: int, answer: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps({"id": ident, "status": 200, "answer": answer}))


@pytest_asyncio.fixture
async def linked(tmp_path: Path) -> AsyncIterator[tuple[Peer, Channel]]:
    peer = Peer()
    runner = web.ServerRunner(web.Server(peer.handle))
    await runner.setup()
    path = tmp_path / "peer.sock"
    await web.UnixSite(runner, str(path)).start()
    http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path)))
    try:
        channel = await open_channel(http, "http://peer/channel", {}, "lease")
        try:
            yield peer, channel
        finally:
            await channel.close()
    finally:
        await http.close()
        await runner.cleanup()


async def test_each_caller_gets_its_own_answer_in_any_order(
    linked: tuple[Peer, Channel],
) -> None:
    peer, channel = linked
    first = asyncio.create_task(channel.call("/tasks", '{"each":[]}'))
    second = asyncio.create_task(channel.call("/metrics", "{}"))
    assert await peer.received.get() == {"id": 1, "command": "/tasks", "body": {"each": []}}
    assert await peer.received.get() == {"id": 2, "command": "/metrics", "body": {}}
    await peer.answer(2, {"metrics": 2})
    await peer.answer(1, {"results": []})
    assert await first == (200, {"results": []})
    assert await second == (200, {"metrics": 2})


async def test_a_cancelled_caller_cancels_its_command(linked: tuple[Peer, Channel]) -> None:
    peer, channel = linked
    call = asyncio.create_task(channel.call("/tasks/3/cancel", '{"wait":true}'))
    assert (await peer.received.get())["id"] == 1
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await peer.received.get() == {"cancel": 1}
    await peer.answer(1, {})  # a late answer of the cancelled command: dropped
    later = asyncio.create_task(channel.call("/flush", "{}"))
    assert (await peer.received.get())["id"] == 2
    await peer.answer(2, {"flushed": True})
    assert await later == (200, {"flushed": True})


async def test_a_closed_channel_fails_its_callers_with_a_connection_error(
    linked: tuple[Peer, Channel],
) -> None:
    peer, channel = linked
    waiting = asyncio.create_task(channel.call("/flush", "{}"))
    await peer.received.get()
    assert peer.ws is not None
    await peer.ws.close()
    with pytest.raises(aiohttp.ClientConnectionError, match="closed the command channel"):
        await waiting
    assert not channel.open
    with pytest.raises(aiohttp.ClientConnectionError):
        await channel.call("/flush", "{}")
