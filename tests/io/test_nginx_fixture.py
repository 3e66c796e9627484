"""The nginx test fixture itself: a real server that behaves like a CDN origin."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import aiohttp
import pytest

import _nginx
from _nginx import NginxServer, NginxStartError

pytestmark = pytest.mark.nginx

SIZE = 3 * 1024 * 1024 + 17  # several sendfile chunks, not a round number


def _write_payload(root: Path, name: str = "payload.bin", size: int = SIZE) -> bytes:
    data = os.urandom(size)
    (root / name).write_bytes(data)
    return data


def _nginx_etag(path: Path) -> str:
    st = path.stat()
    return f'"{int(st.st_mtime):x}-{st.st_size:x}"'


@pytest.mark.asyncio
async def test_serves_file_byte_exact_with_validators(nginx: NginxServer) -> None:
    data = _write_payload(nginx.root)

    async with aiohttp.ClientSession() as session, session.get(nginx.url("payload.bin")) as resp:
        body = await resp.read()
        headers = resp.headers

    assert resp.status == 200
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert headers["Content-Length"] == str(SIZE)
    assert headers["ETag"] == _nginx_etag(nginx.root / "payload.bin")
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "application/octet-stream"
    assert "Last-Modified" in headers


@pytest.mark.asyncio
async def test_honours_open_ended_range(nginx: NginxServer) -> None:
    data = _write_payload(nginx.root)
    offset = 1_000_003

    async with (
        aiohttp.ClientSession() as session,
        session.get(nginx.url("payload.bin"), headers={"Range": f"bytes={offset}-"}) as resp,
    ):
        body = await resp.read()
        headers = resp.headers

    assert resp.status == 206
    assert headers["Content-Range"] == f"bytes {offset}-{SIZE - 1}/{SIZE}"
    assert headers["Content-Length"] == str(SIZE - offset)
    assert headers["ETag"] == _nginx_etag(nginx.root / "payload.bin")
    assert hashlib.sha256(body).digest() == hashlib.sha256(data[offset:]).digest()
    assert f'"bytes={offset}-"' in await nginx.wait_access_log(lambda log: '"GET ' in log)


@pytest.mark.asyncio
async def test_unsatisfiable_range_and_missing_file(nginx: NginxServer) -> None:
    _write_payload(nginx.root, size=10)

    async with aiohttp.ClientSession() as session:
        async with session.get(nginx.url("payload.bin"), headers={"Range": "bytes=10-"}) as resp:
            assert resp.status == 416
            assert resp.headers["Content-Range"] == "bytes */10"
        async with session.get(nginx.url("missing.bin")) as resp:
            assert resp.status == 404


@pytest.mark.asyncio
async def test_four_ports_serve_the_same_root(nginx_binary: str, tmp_path: Path) -> None:
    with NginxServer(
        tmp_path / "www", binary=nginx_binary, prefix=tmp_path / "nginx", ports=4
    ) as server:
        data = _write_payload(server.root, size=64 * 1024)
        assert len(server.ports) == 4
        assert len(set(server.ports)) == 4
        assert server.base_urls == [f"http://127.0.0.1:{port}" for port in server.ports]
        assert server.base_url == server.base_urls[0]
        assert server.config_text.count("server {") == 4

        async with aiohttp.ClientSession() as session:
            for host in range(4):
                url = server.url("/payload.bin", host=host)
                assert url == f"{server.base_urls[host]}/payload.bin"
                async with session.get(url) as resp:
                    assert resp.status == 200
                    assert await resp.read() == data


@pytest.mark.asyncio
async def test_limit_rate_is_configured(nginx_binary: str, tmp_path: Path) -> None:
    with NginxServer(
        tmp_path / "www", binary=nginx_binary, prefix=tmp_path / "nginx", limit_rate=1_000_000
    ) as server:
        assert "    limit_rate 1000000;\n" in server.config_text
        assert server.conf_path.read_text() == server.config_text
        data = _write_payload(server.root, size=1024)
        async with aiohttp.ClientSession() as session, session.get(server.url("payload.bin")) as r:
            assert r.status == 200
            assert await r.read() == data


def test_default_config_is_unthrottled_and_self_contained(nginx: NginxServer) -> None:
    conf = nginx.config_text
    assert "limit_rate" not in conf
    for directive in ("sendfile on;", "keepalive_timeout 65;", "etag on;"):
        assert directive in conf
    assert f"listen 127.0.0.1:{nginx.port};" in conf
    # Every path nginx writes to is inside the private prefix.
    for line in conf.splitlines():
        if line.strip().startswith(("pid ", "error_log ", "access_log ")) or "_temp_path " in line:
            assert str(nginx.prefix) in line, line
    assert nginx.pid_path.read_text().strip().isdigit()


def test_stop_releases_the_port(nginx_binary: str, tmp_path: Path) -> None:
    server = NginxServer(tmp_path / "www", binary=nginx_binary, prefix=tmp_path / "nginx")
    with server:
        port = server.port
        assert server.pid_path.exists()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert not server.running
    server.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.base_url


def test_bad_config_reports_nginx_error_log(nginx_binary: str, tmp_path: Path) -> None:
    server = NginxServer(
        tmp_path / "www", binary=nginx_binary, prefix=tmp_path / "nginx", worker_connections=-1
    )
    with pytest.raises(NginxStartError, match=r'invalid number "-1" in .*nginx\.conf'):
        server.start()
    assert not server.running


def test_retries_when_a_picked_port_is_taken(
    nginx_binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_free_ports = _nginx._free_ports
    calls: list[int] = []
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]

        def lose_the_race_once(count: int) -> list[int]:
            calls.append(count)
            return [taken] if len(calls) == 1 else real_free_ports(count)

        monkeypatch.setattr(_nginx, "_free_ports", lose_the_race_once)
        with NginxServer(tmp_path / "www", binary=nginx_binary, prefix=tmp_path / "nginx") as srv:
            assert len(calls) == 2
            assert srv.port != taken
            assert srv.running


def test_rejects_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ports"):
        NginxServer(tmp_path, ports=0)
    with pytest.raises(ValueError, match="limit_rate"):
        NginxServer(tmp_path, limit_rate=0)
