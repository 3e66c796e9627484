"""What daemon.log shows: the daemon's own lines, not one line per finished task
unless asked (``BGTRANSFER_DAEMON_LOG``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgtransfer import Session
from bgtransfer._daemon.process import LOG_ENV
from bgtransfer.testing import TestServer


async def _one_download(state: Path, server: TestServer, out_dir: Path) -> str:
    """daemon.log after a task the launched daemon ran has ended (the engine
    writes its INFO line before the task's end is journalled, so before the
    client sees it)."""
    file = server.add_file("/a.bin", size=20_000)
    async with Session("logged", state_dir=state, daemon=True) as session:
        task = await session.download(server.url("/a.bin"), out_dir / "a.bin")
        await task.wait()
        assert (out_dir / "a.bin").read_bytes() == file.data
        return (state / "daemon.log").read_text()


@pytest.mark.asyncio
async def test_the_daemon_log_has_the_daemon_not_each_finished_task(
    daemon_state: Path, server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LOG_ENV, raising=False)
    log = await _one_download(daemon_state, server, out_dir)
    assert "bgtransfer.daemon: listening on" in log
    assert "session 'logged' open" in log
    assert "task 1 finished" not in log


@pytest.mark.asyncio
async def test_the_engine_lines_come_back_when_asked(
    daemon_state: Path, server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOG_ENV, "info")  # inherited by the daemon the client launches
    log = await _one_download(daemon_state, server, out_dir)
    assert "bgtransfer.daemon: listening on" in log
    assert "bgtransfer: task 1 finished: 20000 bytes in " in log


@pytest.mark.asyncio
async def test_a_level_that_is_none_is_said_and_the_default_kept(
    daemon_state: Path, server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOG_ENV, "chatty")
    log = await _one_download(daemon_state, server, out_dir)
    assert f"{LOG_ENV}='chatty' is not a logging level: WARNING" in log
    assert "task 1 finished" not in log
