"""A reader killed with SIGKILL comes back with its cursor (issue 20's event log).

A child process starts three downloads, reads ``session.events(since=0)`` up to the
first terminal event (its cursor), lets the second quick file end unread, and is
killed with SIGKILL while the third is held mid-body by the server. This process
then opens the same background session with ``since=<cursor>``: it receives every
terminal event numbered after the cursor (the one the child never read, though it
was acknowledged, and the held task's, which ends here), none before it, and
every file is byte-exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from _helpers import LINE_TIMEOUT, child, sha256_file
from bgtransfer import (
    Configuration,
    EventsDeliveredEvent,
    FinishedEvent,
    Session,
    SessionEvent,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

CHILD = Path(__file__).with_name("_cursor_child.py")
IDENTIFIER = "com.example.cursor"


async def _child_until_ended(
    args: dict[str, Any], stderr_path: Path, *, before_kill: Awaitable[None]
) -> list[dict[str, Any]]:
    """Run the child until it prints ``ended`` and ``before_kill`` is done;
    SIGKILL it then. Its lines."""
    async with child(CHILD, args, stderr_path) as running:
        await running.wait_line(lambda line: "ended" in line)
        await asyncio.wait_for(before_kill, LINE_TIMEOUT)
        return await running.killed()


async def test_a_killed_reader_resumes_from_its_cursor_in_a_new_process(
    server: TestServer, tmp_path: Path
) -> None:
    state_dir, out_dir = tmp_path / "state", tmp_path / "out"
    out_dir.mkdir()
    quick = [server.add_file(f"/{name}", size=30_000) for name in ("a.bin", "b.bin")]
    held = server.add_file("/c.bin", size=300_000)
    server.set_faults(held.path, Faults(hold_after=60_000))
    served = [*quick, held]
    files = [{"url": server.url(f.path), "destination": str(out_dir / f.path[1:])} for f in served]
    args = {"identifier": IDENTIFIER, "state_dir": str(state_dir), "files": files, "finishing": 2}

    # Killed while c's body is held mid-way by the server: its task is running.
    lines = await _child_until_ended(
        args, tmp_path / "child.stderr", before_kill=server.wait_held(held.path)
    )

    read = [line for line in lines if "event" in line]
    assert read[-1]["event"] == "finished"
    cursor = read[-1]["seq"]
    seen_by_child = read[-1]["task"]
    assert isinstance(cursor, int)
    assert cursor >= 1

    server.release(held.path)
    replayed: list[SessionEvent] = []
    async with Session(IDENTIFIER, state_dir=state_dir, config=Configuration()) as session:
        ids = {task.id for task in session.tasks()} | {seen_by_child}
        async with asyncio.timeout(LINE_TIMEOUT), session.events(since=cursor) as stream:
            ended: set[int] = set()
            async for event in stream:
                replayed.append(event)
                if isinstance(event, FinishedEvent):
                    ended.add(event.task_id)
                if len(ended) == 2:
                    break
    finished = [e for e in replayed if isinstance(e, FinishedEvent)]
    # Every terminal event after the cursor, at least once; none at or before it.
    assert all(e.seq is not None and e.seq > cursor for e in finished)
    assert {e.task_id for e in finished} | {seen_by_child} == {1, 2, 3}
    assert seen_by_child not in {e.task_id for e in finished}
    assert ids <= {1, 2, 3}
    delivered = [e for e in replayed if isinstance(e, EventsDeliveredEvent)]
    assert len(delivered) == 1
    for file in served:
        assert sha256_file(out_dir / file.path[1:]) == file.sha256
