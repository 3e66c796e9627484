"""The daemon's socket is this user's only, and bad input never hurts it."""

from __future__ import annotations

import asyncio
import io
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _raw import BASE, HEADERS, attach

from _helpers import kill_daemon
from bgtransfer import Configuration, DaemonError, Session
from bgtransfer._core.wire import PROTOCOL_VERSION
from bgtransfer._daemon import connection as daemon_client
from bgtransfer._daemon.paths import SOCKET_PATH_MAX, socket_path
from bgtransfer._daemon.server import MAX_BODY, Daemon
from bgtransfer.testing import TestServer

pytestmark = pytest.mark.asyncio


async def test_socket_and_its_directory_are_private(daemon_state: Path) -> None:
    async with Session("modes", state_dir=daemon_state, daemon=True):
        sock = socket_path(daemon_state)
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.lstat(sock.parent).st_mode) == 0o700


async def test_a_relative_destination_is_refused_by_the_daemon(
    http: aiohttp.ClientSession, server: TestServer
) -> None:
    server.add_file("/a.bin", size=10)
    stream, lease = await attach(http, "rel")
    try:
        request = {"url": server.url("/a.bin"), "destination": "out/a.bin"}
        async with http.post(
            f"{BASE}/v1/sessions/rel/tasks",
            json={"request": request},
            headers={**HEADERS, "Bgtransfer-Lease": lease},
        ) as response:
            answer = await response.json()
        assert response.status == 400
        assert answer["error"]["type"] == "InvalidDestinationError"
        assert "relative" in answer["error"]["message"]
        assert "out/a.bin" in answer["error"]["message"]
    finally:
        stream.close()


async def test_the_client_makes_destinations_absolute(
    daemon_state: Path, server: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = server.add_file("/b.bin", size=5_000)
    monkeypatch.chdir(tmp_path)
    async with Session("abs", state_dir=daemon_state, daemon=True) as session:
        task = await session.download(server.url("/b.bin"), "b.bin")
        assert task.destination == tmp_path / "b.bin"
        finished = await task.wait()
    assert finished.location == tmp_path / "b.bin"
    assert (tmp_path / "b.bin").read_bytes() == file.data


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/nowhere", None, 404),
        ("GET", "/v1/sessions/x/attach", None, 405),
        ("POST", "/v1/sessions/x/attach", b"{not json", 400),
        ("POST", "/v1/sessions/x/attach", b"[1, 2]", 400),
        ("POST", "/v1/sessions/x/attach", b'{"config": {"segments": 99}}', 400),
        ("POST", "/v1/sessions/x/attach", b'{"config": {"headers_provider": 1}}', 400),
        ("POST", "/v1/sessions/..%2F/attach", b'{"config": {}}', 400),
        ("POST", "/v1/sessions/x/tasks", b"{}", 409),  # no lease
    ],
)
async def test_wrong_requests_get_a_json_error(
    http: aiohttp.ClientSession, method: str, path: str, body: bytes | None, status: int
) -> None:
    async with http.request(method, BASE + path, data=body, headers=HEADERS) as response:
        answer = await response.json(content_type=None)
    assert response.status == status, answer
    assert set(answer["error"]) >= {"type", "message"}
    async with http.get(BASE + "/v1/hello", headers=HEADERS) as response:
        assert response.status == 200  # still serving


async def test_an_oversized_body_is_refused(http: aiohttp.ClientSession) -> None:
    body = b'{"config": "' + b"x" * (MAX_BODY + 1) + b'"}'
    async with http.post(
        BASE + "/v1/sessions/big/attach", data=io.BytesIO(body), headers=HEADERS
    ) as response:
        answer = await response.json(content_type=None)
    assert response.status == 413
    assert "error" in answer


async def test_garbage_bytes_get_an_error_and_the_daemon_serves_on(
    http: aiohttp.ClientSession, daemon_state: Path
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(socket_path(daemon_state)))
    try:
        writer.write(b"\x00\xffGARBAGE\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    # (Bytes that are not HTTP never reach a handler: aiohttp answers, in plain text.)
    assert answer.split(b" ", 2)[1] == b"400", answer[:80]
    async with http.get(BASE + "/v1/hello", headers=HEADERS) as response:
        assert response.status == 200


async def test_a_version_mismatch_is_refused_naming_both_versions(
    http: aiohttp.ClientSession, daemon_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = str(PROTOCOL_VERSION + 1)
    async with http.get(BASE + "/v1/hello", headers={"Bgtransfer-Protocol": theirs}) as response:
        answer = await response.json()
    assert response.status == 400
    message = answer["error"]["message"]
    assert f"version {theirs}" in message
    assert f"version {PROTOCOL_VERSION}" in message
    # The client says the same, as a DaemonError.
    monkeypatch.setattr(daemon_client, "HEADERS", {"Bgtransfer-Protocol": theirs})
    with pytest.raises(DaemonError, match=f"version {theirs}.*version {PROTOCOL_VERSION}"):
        async with Session("v", state_dir=daemon_state, daemon=True):
            pass


async def test_another_uid_is_refused(tmp_path: Path) -> None:
    """SO_PEERCRED: a daemon told its user is another uid refuses this one
    (any user; test_other_uid.py does it with a real other uid, as root)."""
    sock = tmp_path / "s" / "daemon.sock"
    daemon = Daemon(tmp_path / "s", socket_file=sock, allowed_uid=os.getuid() + 1)
    serving = asyncio.create_task(daemon.serve())
    try:
        connector = aiohttp.UnixConnector(path=str(sock))
        async with aiohttp.ClientSession(connector=connector) as http:
            while not sock.exists():  # bound before serve() awaits its stop: no sleep
                assert not serving.done(), serving
                await asyncio.sleep(0)
            async with http.get(BASE + "/v1/hello", headers=HEADERS) as response:
                answer = await response.json()
        assert response.status == 403
        assert f"uid {os.getuid()}" in answer["error"]["message"]
    finally:
        daemon.stop()
        await asyncio.wait_for(serving, 30)


async def test_a_client_that_stops_reading_hurts_nobody(
    http: aiohttp.ClientSession, daemon_state: Path, server: TestServer, out_dir: Path
) -> None:
    many = Configuration(progress_interval=0)
    stalled, lease = await attach(http, "stalled", many)  # never read from here on
    try:
        urls = []
        for index in range(20):
            server.add_file(f"/s{index}.bin", size=1_000_000)
            urls.append({"url": server.url(f"/s{index}.bin"), "destination": None})
        async with http.post(
            f"{BASE}/v1/sessions/stalled/tasks",
            json={"requests": urls},
            headers={**HEADERS, "Bgtransfer-Lease": lease},
        ) as response:
            assert response.status == 200
        other = server.add_file("/other.bin", size=200_000)
        async with Session("other", state_dir=daemon_state, daemon=True) as session:
            task = await session.download(server.url("/other.bin"), out_dir / "other.bin")
            await asyncio.wait_for(task.wait(), 60)
        assert (out_dir / "other.bin").read_bytes() == other.data
        # The stalled client's tasks ran to their end all the same.
        async with asyncio.timeout(60):
            while True:
                async with http.get(BASE + "/v1/status", headers=HEADERS) as response:
                    status: dict[str, Any] = await response.json()
                (session_status,) = [s for s in status["sessions"] if s["identifier"] == "stalled"]
                if all(t["state"] == "completed" for t in session_status["tasks"]):
                    break
                await server.wait_until(lambda s: s.open_connections == 0)
    finally:
        stalled.close()


async def test_a_state_dir_too_long_for_a_socket_path_works(
    tmp_path: Path, server: TestServer
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "state"
    assert len(os.fsencode(deep / "daemon.sock")) > SOCKET_PATH_MAX
    sock = socket_path(deep)
    assert len(os.fsencode(sock)) <= SOCKET_PATH_MAX
    file = server.add_file("/l.bin", size=1_000)
    try:
        async with Session("long", state_dir=deep, daemon=True) as session:
            task = await session.download(server.url("/l.bin"))
            finished = await task.wait()
        assert finished.location.read_bytes() == file.data
        assert stat.S_IMODE(os.lstat(sock.parent).st_mode) == 0o700
    finally:
        kill_daemon(deep)


async def test_a_headers_provider_is_refused_for_a_daemon_session(tmp_path: Path) -> None:
    config = Configuration(headers_provider=lambda url: {"Authorization": "x"})
    with pytest.raises(ValueError, match="headers_provider cannot be used with daemon=True"):
        Session("hp", state_dir=tmp_path, config=config, daemon=True)


async def test_a_link_at_the_daemon_log_is_never_followed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (state / "daemon.log").symlink_to(victim)
    try:
        with pytest.raises(DaemonError, match="cannot launch the bgtransfer daemon"):
            async with Session("links", state_dir=state, daemon=True):
                pytest.fail("a daemon was launched writing through a link")
    finally:
        kill_daemon(state)
    assert victim.read_text() == "precious"
