"""The demo's detached server (``bgtransfer demo --daemon``): found by its lock,
not by its pid, so a stale pid file never names a process to signal."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtransfer._cli import main
from bgtransfer._demo.model import DemoFile
from bgtransfer._demo.server import (
    SERVER_FILE,
    ensure_server,
    read_log,
    running_server,
    stop_server,
)
from bgtransfer.testing import TestServer

FILES = (DemoFile("/demo/a.bin", 50_000, "A"),)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    state.mkdir()
    try:
        yield state
    finally:
        asyncio.run(stop_server(state))


def test_a_pid_file_without_its_server_is_not_a_server(state_dir: Path) -> None:
    # A server killed with SIGKILL leaves its file; its pid may be anyone's now
    # (here: this very process, which must not get the SIGTERM).
    stale = {"pid": os.getpid(), "url": "http://127.0.0.1:9"}
    (state_dir / SERVER_FILE).write_text(json.dumps(stale))
    assert running_server(state_dir) is None
    assert asyncio.run(stop_server(state_dir)) is False


def test_started_once_reused_logged_and_stopped(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = asyncio.run(ensure_server(state_dir, FILES, throttle=None))
    assert server.pid is not None
    assert running_server(state_dir) == server
    assert asyncio.run(ensure_server(state_dir, FILES, throttle=None)) == server  # reused
    request = urllib.request.Request(server.url("/demo/a.bin"), headers={"Range": "bytes=10-"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    expected = TestServer().add_file("/demo/a.bin", size=50_000).data
    assert body == expected[10:]
    assert main(["demo", "--stop-server", "--state-dir", str(state_dir)]) == 0
    assert "the demo's server stopped" in capsys.readouterr().out
    assert read_log(state_dir) == [("/demo/a.bin", "bytes=10-")]  # complete once it stopped
    assert running_server(state_dir) is None
    assert not (state_dir / SERVER_FILE).exists()
