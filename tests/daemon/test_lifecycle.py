"""The daemon's life: idle exit, SIGTERM, ``--stop``, ``bgtransfer status``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from _helpers import daemon_pid, sha256_file, wait_exited
from bgtransfer import Configuration, ProgressEvent, RetryEvent, RetryPolicy, Session
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio


async def bgtransfer(*args: str) -> tuple[int, str, str]:
    """Run ``python -m bgtransfer ARGS``; its status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bgtransfer",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_an_idle_daemon_exits_by_itself(daemon_state: Path) -> None:
    status, _out, err = await bgtransfer(
        "daemon", "--state-dir", str(daemon_state), "--idle-timeout", "0.2"
    )
    assert status == 0, err
    assert "idle for 0.2 s" in err
    assert not (daemon_state / "daemon.sock").exists()


async def test_a_second_daemon_says_already_running_and_exits_0(daemon_state: Path) -> None:
    async with Session("x", state_dir=daemon_state, daemon=True):
        status, _out, err = await bgtransfer("daemon", "--state-dir", str(daemon_state))
    assert status == 0
    assert "already running" in err


async def test_sigterm_journals_where_tasks_stand_and_exits(
    daemon_state: Path, server: TestServer, out_dir: Path
) -> None:
    served = server.add_file("/t.bin", size=1_000_000)
    server.set_faults("/t.bin", Faults(hold_after=400_000), times=1)
    # A long checkpoint interval: only SIGTERM's checkpoint records the bytes.
    config = Configuration(checkpoint_interval=3600, progress_interval=0)
    async with Session("term", state_dir=daemon_state, config=config, daemon=True) as session:
        task = await session.download(server.url("/t.bin"), out_dir / "t.bin")
        await asyncio.wait_for(server.wait_held("/t.bin"), 30)
        async for event in task.events():  # every held byte is on disk
            if getattr(event, "total_bytes_written", 0) >= 400_000:
                break
        journal = session.directory / "journal.sqlite3"
    # (Signalled with no client attached: an attached one would launch it again.)
    pid = daemon_pid(daemon_state)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    await wait_exited(pid)  # bounded, well above SHUTDOWN_BOUND
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        (offset,) = db.execute("SELECT offset FROM tasks WHERE id = ?", (task.id,)).fetchone()
    assert offset == 400_000
    server.release("/t.bin")
    async with Session("term", state_dir=daemon_state, config=config, daemon=True) as session:
        (again,) = session.tasks()
        await asyncio.wait_for(again.wait(), 60)
    assert sha256_file(out_dir / "t.bin") == served.sha256
    assert server.requests[-1].headers["Range"] == "bytes=400000-"


async def test_stop_stops_the_daemon_cleanly(daemon_state: Path) -> None:
    async with Session("s", state_dir=daemon_state, daemon=True):
        pid = daemon_pid(daemon_state)
    assert pid is not None
    status, _out, err = await bgtransfer("daemon", "--stop", "--state-dir", str(daemon_state))
    assert status == 0, err
    assert daemon_pid(daemon_state) is None
    await wait_exited(pid)
    status, _out, err = await bgtransfer("daemon", "--stop", "--state-dir", str(daemon_state))
    assert status == 0
    assert "no daemon runs" in err


async def test_status_shows_the_daemon_its_sessions_and_tasks(
    daemon_state: Path, server: TestServer, out_dir: Path
) -> None:
    server.add_file("/st.bin", size=100_000)
    server.set_faults("/st.bin", Faults(hold_after=10_000))
    async with Session("st", state_dir=daemon_state, daemon=True) as session:
        task = await session.download(server.url("/st.bin"), out_dir / "st.bin")
        await asyncio.wait_for(server.wait_held("/st.bin"), 30)
        status, out, err = await bgtransfer("status", "--json", "--state-dir", str(daemon_state))
        assert status == 0, err
        document = json.loads(out)
        assert document["pid"] == daemon_pid(daemon_state)
        assert document["uptime"] >= 0
        assert document["socket"] == str(daemon_state / "daemon.sock")
        assert document["version"]
        (session_status,) = document["sessions"]
        assert session_status["identifier"] == "st"
        assert session_status["client_pid"] == os.getpid()
        (task_status,) = session_status["tasks"]
        assert (task_status["id"], task_status["state"]) == (task.id, "running")
        assert task_status["activity"] == "transferring"
        # Held after its first bytes: one report so far, so no rate measured yet.
        assert task_status["rate"] is None
        status, out, err = await bgtransfer("status", "--state-dir", str(daemon_state))
        assert status == 0, err
        assert f"daemon pid {document['pid']}" in out
        assert "session 'st'" in out
        assert f"task {task.id} running" in out
        server.release("/st.bin")
        await task.wait()


async def test_status_without_a_daemon_says_so(tmp_path: Path) -> None:
    status, out, _err = await bgtransfer("status", "--json", "--state-dir", str(tmp_path))
    assert status == 1
    assert json.loads(out) == {"running": False}


async def test_status_says_until_when_a_task_backs_off(
    daemon_state: Path, server: TestServer, out_dir: Path
) -> None:
    server.add_file("/busy.bin", size=10_000)
    server.set_faults("/busy.bin", Faults(status=503, retry_after="120"))
    config = Configuration(retry=RetryPolicy(max_attempts=3, max_retry_after=600))
    async with Session("bo", state_dir=daemon_state, config=config, daemon=True) as session:
        task = await session.download(server.url("/busy.bin"), out_dir / "busy.bin")
        async with task.events() as events:
            async for event in events:
                if isinstance(event, RetryEvent):
                    break
        status, out, err = await bgtransfer("status", "--json", "--state-dir", str(daemon_state))
        assert status == 0, err
        (session_status,) = json.loads(out)["sessions"]
        (task_status,) = session_status["tasks"]
        assert task_status["activity"].startswith("backing off until ")
        await task.cancel()


async def test_status_shows_the_rate_of_a_transferring_task(
    daemon_state: Path, server: TestServer, out_dir: Path
) -> None:
    server.add_file("/slow.bin", size=64_000_000)  # ~40 s at the drip: still running
    server.set_faults("/slow.bin", Faults(drip=(16 * 1024, 0.01)))
    config = Configuration(progress_interval=0.05)
    async with Session("rate", state_dir=daemon_state, config=config, daemon=True) as session:
        task = await session.download(server.url("/slow.bin"), out_dir / "slow.bin")
        reports = 0
        async with task.events() as events:
            async for event in events:
                reports += isinstance(event, ProgressEvent)
                if reports == 3:
                    break
        status, out, err = await bgtransfer("status", "--json", "--state-dir", str(daemon_state))
        assert status == 0, err
        (session_status,) = json.loads(out)["sessions"]
        (task_status,) = session_status["tasks"]
        assert task_status["activity"] == "transferring"
        assert task_status["rate"] > 0
        status, out, err = await bgtransfer("status", "--state-dir", str(daemon_state))
        assert " MB/s" in out
        await task.cancel()
