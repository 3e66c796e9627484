"""The command channel: a session's commands as messages of one WebSocket,
answered as their requests would be; bad messages get an error answer and the
channel goes on; it needs the lease and ends with it; its commands are bounded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _raw import BASE, HEADERS, attach
from aiohttp import WSMsgType, web

from bgtransfer import Session
from bgtransfer._daemon import server as server_module
from bgtransfer._daemon.channel_server import IN_FLIGHT
from bgtransfer._daemon.paths import socket_path
from bgtransfer._daemon.protocol import MAX_BODY, error_response
from bgtransfer._daemon.server import Daemon
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio


async def channel(
    http: aiohttp.ClientSession, identifier: str, lease: str
) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(
        f"{BASE}/v1/sessions/{identifier}/channel",
        headers={**HEADERS, "Bgtransfer-Lease": lease},
    )


async def ask(ws: aiohttp.ClientWebSocketResponse, message: Any) -> dict[str, Any]:
    """Send one message, return the next answer."""
    await ws.send_str(message if isinstance(message, str) else json.dumps(message))
    return await answer(ws)


async def answer(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    received = await ws.receive(timeout=30)
    assert received.type is WSMsgType.TEXT, received
    decoded = json.loads(received.data)
    assert isinstance(decoded, dict)
    return decoded


async def test_a_command_is_answered_as_its_request(
    http: aiohttp.ClientSession, server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/c.bin", size=300_000)
    stream, lease = await attach(http, "chan")
    try:
        ws = await channel(http, "chan", lease)
        request = {"url": server.url("/c.bin"), "destination": str(out_dir / "c.bin")}
        made = await ask(ws, {"id": 1, "command": "/tasks", "body": {"request": request}})
        assert made["id"] == 1
        assert made["status"] == 200, made
        [task] = made["answer"]["tasks"]
        assert "statistics" in made["answer"]  # as every command's answer
        waited = await ask(ws, {"id": 2, "command": f"/tasks/{task['id']}/wait", "body": {}})
        assert waited["status"] == 200, waited
        assert waited["answer"]["task"]["state"] == "completed"
        digest = hashlib.sha256((out_dir / "c.bin").read_bytes()).hexdigest()
        assert digest == hashlib.sha256(file.data).hexdigest()
        # A refusal is the request's own: the same status and error.
        relative = {"url": server.url("/c.bin"), "destination": "rel/c.bin"}
        refused = await ask(ws, {"id": 3, "command": "/tasks", "body": {"request": relative}})
        async with http.post(
            f"{BASE}/v1/sessions/chan/tasks",
            json={"request": relative},
            headers={**HEADERS, "Bgtransfer-Lease": lease},
        ) as response:
            posted = await response.json()
        assert refused["status"] == response.status == 400
        assert refused["answer"]["error"]["type"] == "InvalidDestinationError"
        assert refused["answer"] == posted
        await ws.close()
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("message", "ident", "status", "words"),
    [
        ("{not json", None, 400, "not JSON"),
        ("[1, 2]", None, 400, "not a JSON object"),
        ('{"command": "/flush"}', None, 400, "no integer 'id'"),
        ('{"id": true, "command": "/flush"}', None, 400, "no integer 'id'"),
        ('{"id": 5, "command": "/nowhere"}', 5, 404, "no such command"),
        ('{"id": 5, "command": "/tasks/1/2/cancel"}', 5, 404, "no such command"),
        ('{"id": 5, "command": "/tasks/{n}/cancel"}', 5, 404, "no such command"),
        ('{"id": 5, "command": "tasks"}', 5, 404, "no such command"),
        ('{"id": 5, "command": 7}', 5, 404, "no such command"),
        ('{"id": 6, "command": "/flush", "body": [1]}', 6, 400, "not a JSON object"),
        ('{"id": 7, "command": "/tasks", "body": {"each": 3}}', 7, 400, "'each' is not a list"),
        ('{"id": 8, "command": "/tasks/99/cancel"}', 8, 404, "99"),
    ],
)
async def test_a_bad_message_gets_an_error_answer_and_the_channel_goes_on(
    http: aiohttp.ClientSession, message: str, ident: int | None, status: int, words: str
) -> None:
    stream, lease = await attach(http, "bad")
    try:
        ws = await channel(http, "bad", lease)
        refused = await ask(ws, message)
        assert (refused["id"], refused["status"]) == (ident, status), refused
        assert words in refused["answer"]["error"]["message"]
        await ws.send_bytes(b"\x00\x01")
        binary = await answer(ws)
        assert (binary["id"], binary["status"]) == (None, 400)
        fine = await ask(ws, {"id": 9, "command": "/flush"})
        assert (fine["id"], fine["status"]) == (9, 200)
        await ws.close()
    finally:
        stream.close()


@pytest.mark.parametrize("lease", [None, "0" * 32])
async def test_a_channel_needs_the_attachments_lease(
    http: aiohttp.ClientSession, lease: str | None
) -> None:
    stream, _real = await attach(http, "lease")
    try:
        headers = dict(HEADERS) if lease is None else {**HEADERS, "Bgtransfer-Lease": lease}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{BASE}/v1/sessions/lease/channel", headers=headers)
        assert refused.value.status == 409
    finally:
        stream.close()


async def test_the_channel_ends_with_its_lease(http: aiohttp.ClientSession) -> None:
    stream, lease = await attach(http, "ends")
    ws = await channel(http, "ends", lease)
    assert (await ask(ws, {"id": 1, "command": "/flush"}))["status"] == 200
    async with http.post(
        f"{BASE}/v1/sessions/ends/detach", headers={**HEADERS, "Bgtransfer-Lease": lease}
    ) as response:
        assert response.status == 200
    closed = await ws.receive(timeout=30)
    assert closed.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    stream.close()


async def test_an_oversized_message_ends_only_its_channel(http: aiohttp.ClientSession) -> None:
    stream, lease = await attach(http, "big")
    other_stream, other_lease = await attach(http, "other")
    try:
        ws = await channel(http, "big", lease)
        other = await channel(http, "other", other_lease)
        huge = '{"id": 1, "command": "/flush", "body": {"x": "' + "y" * MAX_BODY + '"}}'
        with contextlib.suppress(ConnectionError):  # (closed while it is still sent)
            await ws.send_str(huge)
        closed = await ws.receive(timeout=30)
        assert closed.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR), closed
        if closed.type is WSMsgType.CLOSE:
            assert closed.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        assert (await ask(other, {"id": 1, "command": "/flush"}))["status"] == 200
        async with http.get(BASE + "/v1/hello", headers=HEADERS) as response:
            assert response.status == 200  # still serving
        await other.close()
    finally:
        stream.close()
        other_stream.close()


async def test_commands_in_flight_are_bounded_and_a_cancel_frees_one(
    http: aiohttp.ClientSession, server: TestServer, out_dir: Path
) -> None:
    """IN_FLIGHT waits on a held transfer fill the channel: the next command is
    refused at once (429, the channel still read); a cancel frees a slot."""
    server.add_file("/held.bin", size=100_000)
    server.set_faults("/held.bin", Faults(hold_after=0))
    stream, lease = await attach(http, "full")
    try:
        ws = await channel(http, "full", lease)
        request = {"url": server.url("/held.bin"), "destination": str(out_dir / "held.bin")}
        made = await ask(ws, {"id": 1, "command": "/tasks", "body": {"request": request}})
        [task] = made["answer"]["tasks"]
        await server.wait_held("/held.bin")
        wait = {"command": f"/tasks/{task['id']}/wait", "body": {}}
        for ident in range(100, 100 + IN_FLIGHT):
            await ws.send_str(json.dumps({"id": ident, **wait}))
        full = await ask(ws, {"id": 2, "command": "/flush"})
        assert (full["id"], full["status"]) == (2, 429)
        await ws.send_str(json.dumps({"cancel": 100}))
        freed = await ask(ws, {"id": 3, "command": "/flush"})
        assert (freed["id"], freed["status"]) == (3, 200)
        server.release("/held.bin")
        answered = {(await answer(ws))["id"] for _ in range(IN_FLIGHT - 1)}
        assert answered == set(range(101, 100 + IN_FLIGHT))  # not the cancelled one
        await ws.close()
    finally:
        stream.close()


@pytest.mark.parametrize("daemon", ["with a channel", "without, saying so", "without, not saying"])
async def test_a_client_sends_its_commands_over_the_channel_where_there_is_one(
    tmp_path: Path,
    server: TestServer,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    daemon: str,
) -> None:
    """A daemon of this version: one channel per attachment, no command
    request. One without a channel (an older one) gets the commands as
    requests, after one refused upgrade if its hello did not say."""
    file = server.add_file("/f.bin", size=200_000)
    state = tmp_path / "state"
    if daemon == "without, saying so":
        monkeypatch.setattr(server_module, "CAPABILITIES", ("attach", "status", "stop"))
    serving = Daemon(state, socket_file=socket_path(state))
    handle = serving._handle
    seen: list[str] = []

    async def recording(request: web.BaseRequest) -> web.StreamResponse:
        path = request.path.removeprefix("/v1/sessions/s")
        seen.append(f"{request.method} {path}")
        if path == "/channel" and daemon != "with a channel":
            return error_response(404, RuntimeError("Not Found"))
        return await handle(request)

    monkeypatch.setattr(serving, "_handle", recording)
    running = asyncio.create_task(serving.serve())
    try:
        # Listening before the client looks (else it launches a daemon of its own).
        while not socket_path(state).exists():  # bound before serve() awaits its stop
            assert not running.done(), running
            await asyncio.sleep(0)
        async with Session("s", state_dir=state, daemon=True) as session:
            tasks = [
                await session.download(server.url("/f.bin"), out_dir / f"{n}.bin") for n in range(3)
            ]
            for task in tasks:
                await task.wait()
                await session.metrics()
    finally:
        serving.stop()
        await asyncio.wait_for(running, 30)
    for n in range(3):
        assert hashlib.sha256((out_dir / f"{n}.bin").read_bytes()).hexdigest() == file.sha256
    assert seen[:2] == ["GET /v1/hello", "POST /attach"]  # this daemon, no other
    commands = [s for s in seen if s not in ("GET /v1/hello", "POST /attach", "POST /detach")]
    if daemon == "with a channel":
        assert commands == ["GET /channel"]
        return
    if daemon == "without, not saying":
        assert commands.pop(0) == "GET /channel"  # refused once, then never asked again
    assert all(c.startswith("POST /") for c in commands), commands
    assert commands.count("POST /tasks") == commands.count("POST /metrics") == 3


async def test_a_channel_whose_client_stops_reading_hurts_nobody(
    http: aiohttp.ClientSession, daemon_state: Path, server: TestServer, out_dir: Path
) -> None:
    """Thousands of commands whose answers are never read: the daemon's writes
    to that channel wait (its reader too, at most 64 commands running), and
    another session's client is served meanwhile."""
    file = server.add_file("/ok.bin", size=100_000)
    stream, lease = await attach(http, "stalled")
    try:
        stalled = await channel(http, "stalled", lease)
        for ident in range(5_000):  # far more answers than the socket's buffers hold
            await stalled.send_str(json.dumps({"id": ident, "command": "/metrics"}))
        async with Session("other", state_dir=daemon_state, daemon=True) as other:
            task = await other.download(server.url("/ok.bin"), out_dir / "ok.bin")
            await task.wait()
        assert hashlib.sha256((out_dir / "ok.bin").read_bytes()).hexdigest() == file.sha256
        await stalled.close()
    finally:
        stream.close()
