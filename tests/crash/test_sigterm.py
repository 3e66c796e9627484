"""SIGTERM with background sessions open (issue 18, item 11).

A process whose SIGTERM disposition is the default, with background sessions open
in its main thread, checkpoints every running task of every open session before
it dies of the signal: the next process re-fetches at most what arrived in the
instant between the signal and the checkpoint, not everything since the last
progress checkpoint. An application's own handler is never replaced, and
``Configuration(handle_sigterm=False)`` installs nothing.

The children are real processes (``_sigterm_child.py``); the parent synchronises
on the lines they print, never on sleeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from _helpers import Child, child, sha256_file
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

CHILD = Path(__file__).with_name("_sigterm_child.py")
SIZE = 16 * 1024 * 1024
KILL_AFTER = 1024 * 1024  # bytes written (per task) before the parent sends SIGTERM
SLACK = 512 * 1024  # what may arrive between the child's line and the signal
# The server holds each body here: however long the signal takes to arrive and
# be handled on a loaded machine, no more than SLACK arrives after KILL_AFTER.
HOLD = KILL_AFTER + SLACK
# No progress checkpoint for a minute: without the SIGTERM checkpoint the journal
# would vouch for nothing, and the next process would fetch everything again.
CONFIG = {"checkpoint_interval": 60.0, "progress_interval": 0}


def _child(args: dict[str, Any], stderr: Path) -> contextlib.AbstractAsyncContextManager[Child]:
    return child(CHILD, args, stderr)


def _written_by(lines: list[dict[str, Any]], identifier: str) -> int:
    return max((line["bytes"] for line in lines if line.get("written") == identifier), default=0)


async def _terminate_after_progress(
    args: dict[str, Any], tmp_path: Path, identifiers: list[str]
) -> tuple[Child, dict[str, int]]:
    """Start the child, wait until every task wrote ``KILL_AFTER`` bytes, SIGTERM it."""
    async with _child(args, tmp_path / "first.err") as first:
        line = await first.wait_line(lambda line: "disposition" in line)
        assert line["disposition"] == "bgtransfer", first.describe()
        waiting = set(identifiers)
        while waiting:
            line = await first.wait_line(lambda line: "written" in line)
            if line["bytes"] >= KILL_AFTER:
                waiting.discard(line["written"])
        # Written before the signal: the lines read so far. (The child goes on
        # writing, and printing, while it journals: its later lines may count
        # bytes that arrived after the checkpoint.)
        before = list(first.lines)
        os.kill(first.process.pid, signal.SIGTERM)
        returncode = await first.finish()
        assert returncode == -signal.SIGTERM, first.describe()
        return first, {name: _written_by(before, name) for name in identifiers}


async def test_sigterm_checkpoints_every_open_session_then_ends_as_sigterm_would(
    server: TestServer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    out = tmp_path / "out"
    out.mkdir()
    downloads = []
    files = {}
    for name in ("com.example.a", "com.example.b"):
        file = server.add_file(f"/{name}.bin", size=SIZE)
        server.set_faults(file.path, Faults(drip=(32 * 1024, 0.01), hold_after=HOLD))
        files[name] = file
        downloads.append(
            {"identifier": name, "url": server.url(file.path), "destination": str(out / name)}
        )
    args = {"mode": "download", "state_dir": str(state_dir), "downloads": downloads}
    _, written = await _terminate_after_progress({**args, "config": CONFIG}, tmp_path, list(files))

    for file in files.values():
        server.set_faults(file.path, Faults())
    async with _child({**args, "mode": "reopen"}, tmp_path / "second.err") as second:
        assert await second.finish() == 0, second.describe()
    for name, file in files.items():
        [resumed] = [line["offset"] for line in second.lines if line.get("resumed") == name]
        # Every byte written before the signal is vouched for, and little more
        # arrived before the checkpoint.
        assert written[name] <= resumed <= written[name] + SLACK, (name, written, resumed)
        assert {"finished": name, "location": str(out / name)} in second.lines
        assert sha256_file(out / name) == file.sha256
        ranges = [r.headers.get("Range") for r in server.requests if r.path == file.path]
        assert ranges == [None, f"bytes={resumed}-"]


async def test_an_applications_own_sigterm_handler_is_kept(
    server: TestServer, tmp_path: Path
) -> None:
    file = server.add_file("/app.bin", size=SIZE)
    server.set_faults(file.path, Faults(drip=(32 * 1024, 0.01)))
    spec = {"identifier": "com.example.app", "url": server.url(file.path)}
    spec["destination"] = str(tmp_path / "app.bin")
    args = {
        "mode": "download",
        "state_dir": str(tmp_path / "state"),
        "downloads": [spec],
        "config": CONFIG,
        "app_handler": True,
    }
    async with _child(args, tmp_path / "app.err") as running:
        line = await running.wait_line(lambda line: "disposition" in line)
        assert line["disposition"] == "app", running.describe()
        await running.wait_line(lambda line: line.get("bytes", 0) >= KILL_AFTER)
        os.kill(running.process.pid, signal.SIGTERM)
        assert await running.finish() == 0, running.describe()
    assert {"app_handler": True} in running.lines
    assert {"closed": True, "disposition": "app"} in running.lines


async def test_with_the_opt_out_sigterm_kills_at_once(server: TestServer, tmp_path: Path) -> None:
    file = server.add_file("/off.bin", size=SIZE)
    server.set_faults(file.path, Faults(drip=(32 * 1024, 0.01)))
    spec = {"identifier": "com.example.off", "url": server.url(file.path)}
    spec["destination"] = str(tmp_path / "off.bin")
    state_dir = tmp_path / "state"
    args = {
        "mode": "download",
        "state_dir": str(state_dir),
        "downloads": [spec],
        "config": {**CONFIG, "handle_sigterm": False},
    }
    async with _child(args, tmp_path / "off.err") as running:
        line = await running.wait_line(lambda line: "disposition" in line)
        assert line["disposition"] == "default", running.describe()
        await running.wait_line(lambda line: line.get("bytes", 0) >= KILL_AFTER)
        os.kill(running.process.pid, signal.SIGTERM)
        assert await running.finish() == -signal.SIGTERM, running.describe()
    server.set_faults(file.path, Faults())
    reopen = {"mode": "reopen", "state_dir": str(state_dir), "downloads": [spec]}
    async with _child(reopen, tmp_path / "off2.err") as second:
        assert await second.finish() == 0, second.describe()
    # Nothing checkpointed the task: the next process fetched it all again.
    assert [line for line in second.lines if "resumed" in line] == []
    assert [r.headers.get("Range") for r in server.requests if r.path == file.path] == [None, None]
    assert sha256_file(tmp_path / "off.bin") == file.sha256


async def test_the_disposition_is_restored_when_the_last_session_closes(tmp_path: Path) -> None:
    args = {"mode": "dispositions", "state_dir": str(tmp_path / "state")}
    async with _child(args, tmp_path / "d.err") as running:
        assert await running.finish() == 0, running.describe()
    assert [(line["step"], line["disposition"]) for line in running.lines] == [
        ("before", "default"),
        ("one open", "bgtransfer"),
        ("two open", "bgtransfer"),
        ("two closed", "bgtransfer"),
        ("one closed", "default"),
        ("ephemeral open", "default"),
        ("opted out", "default"),
    ]
