"""A batch made by ``upload_many()`` in a process that is then SIGKILLed: a new
process opening the session (in-process, or a new client of the daemon) lists
every task of it, in order, and sends every file byte-exact (the server hashes
what it receives)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from _helpers import LINE_TIMEOUT, child, kill_daemon, sha256_bytes
from bgtransfer import Configuration, FinishedEvent, Session, TaskState, UploadTask
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

CHILD = Path(__file__).with_name("_upload_many_child.py")
IDENTIFIER = "com.example.upload-many"
COUNT = 40


@pytest.mark.parametrize("daemon", [False, True], ids=["in_process", "daemon"])
async def test_a_new_process_lists_and_sends_every_upload_of_the_batch(
    server: TestServer, tmp_path: Path, daemon: bool
) -> None:
    state_dir = tmp_path / "state"
    folder = tmp_path / "sources"
    folder.mkdir()
    sources = []
    for index in range(COUNT):
        path = folder / f"{index}.bin"
        path.write_bytes(os.urandom(500 + 3_001 * index))
        sources.append(path)
    expected = [
        (server.url(f"/batch/{i}"), str(path), f"upload {i}") for i, path in enumerate(sources)
    ]
    # The first upload's first attempt is held: one connection per host keeps
    # every other task queued when the child is killed.
    server.set_faults("/batch/0", Faults(hold_after=0), times=1)
    args = {
        "identifier": IDENTIFIER,
        "state_dir": str(state_dir),
        "daemon": daemon,
        "uploads": expected,
    }
    try:
        async with child(CHILD, args, tmp_path / "child.stderr") as running:
            created = (await running.wait_line())["created"]
            await asyncio.wait_for(server.wait_held("/batch/0"), LINE_TIMEOUT)
            await running.killed()
        assert len(created) == COUNT

        config = Configuration(max_connections_per_host=1)
        async with Session(IDENTIFIER, state_dir=state_dir, config=config, daemon=daemon) as again:
            tasks = again.tasks()
            assert [task.id for task in tasks] == created
            assert all(isinstance(task, UploadTask) for task in tasks)
            listed = [(task.url, str(task.source), task.description) for task in tasks]
            assert listed == [(url, str(Path(file).resolve()), d) for url, file, d in expected]
            assert {task.state for task in tasks} == {TaskState.RUNNING}
            server.release("/batch/0")
            results = [await task.wait() for task in tasks]
    finally:
        if daemon:
            kill_daemon(state_dir)
    assert all(isinstance(result, FinishedEvent) for result in results)
    received = {u.path: u.sha256 for u in server.uploads if u.complete}
    assert received == {f"/batch/{i}": sha256_bytes(p.read_bytes()) for i, p in enumerate(sources)}
