"""ThreadedTestServer: the test server driven from synchronous code (urllib)."""

from __future__ import annotations

import hashlib
import threading
import urllib.error
import urllib.request
from email.message import Message

import pytest

from bgtransfer.testing import Faults, ThreadedTestServer


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers, response.read()


def test_threaded_server_serves_files_to_sync_code() -> None:
    with ThreadedTestServer() as server:
        file = server.add_file("/files/a.bin", size=300_000)
        status, headers, body = _get(server.url(file.path))
        assert status == 200
        assert hashlib.sha256(body).hexdigest() == file.sha256
        assert headers["ETag"] == file.etag

        status, headers, body = _get(server.url(file.path), {"Range": "bytes=-100"})
        assert status == 206
        assert headers["Content-Range"] == f"bytes {file.size - 100}-{file.size - 1}/{file.size}"
        assert body == file.data[-100:]

        server.set_faults(file.path, Faults(status=503, retry_after="1"), times=1)
        with pytest.raises(urllib.error.HTTPError) as caught:
            _get(server.url(file.path))
        assert caught.value.code == 503
        assert caught.value.headers["Retry-After"] == "1"
        caught.value.close()

        replaced = server.replace_file(file.path, data=b"new")
        assert _get(server.url(file.path))[2] == b"new"
        assert replaced.etag != file.etag

        stats = server.statistics()
        assert stats.requests == 4
        assert stats.bytes_sent == file.size + 100 + 3
        assert [request.method for request in server.requests] == ["GET"] * 4
        server.reset_statistics()
        assert server.statistics().requests == 0
        assert server.base_url.startswith("http://127.0.0.1:")
        thread_names = {thread.name for thread in threading.enumerate()}
        assert "bgtransfer-test-server" in thread_names
    assert "bgtransfer-test-server" not in {thread.name for thread in threading.enumerate()}
    with pytest.raises(RuntimeError, match="not running"):
        server.statistics()


def test_threaded_server_startup_errors_propagate() -> None:
    with (
        ThreadedTestServer() as first,
        pytest.raises(OSError, match=r"(?i)address already in use"),
        ThreadedTestServer(port=first.port),
    ):
        pass


def test_threaded_server_must_be_running() -> None:
    server = ThreadedTestServer()
    with pytest.raises(RuntimeError, match="not running"):
        server.statistics()
