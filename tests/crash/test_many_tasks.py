"""10,000 queued tasks in a background session (issue #4).

``max_connections_per_host=1`` and a server that holds the one request it lets
through (``Faults(hold_after=0)``) keep every other task queued, deterministically.
Creating them, closing the session, reopening it and listing them all works, and a
queued task costs a record, not a coroutine: the number of asyncio tasks alive
stays small before and after the reopen. The timings are printed (``-s``), not
asserted; the benchmarks state the numbers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bgtransfer import Configuration, Session, TaskState
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

COUNT = 10_000
IDENTIFIER = "com.example.many"
# Asyncio tasks a session may add whatever its number of tasks: the one runner,
# the journal's writer, aiohttp's and the server's own for the one connection.
FEW = 20


async def test_ten_thousand_queued_tasks_survive_a_reopen(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    held = server.add_file("/files/0.bin", size=1_000)
    server.set_faults(held.path, Faults(hold_after=0))
    config = Configuration(max_connections_per_host=1)
    baseline = len(asyncio.all_tasks())
    expected = [
        (server.url(f"/files/{index}.bin"), out_dir / f"{index}.bin", f"task {index}")
        for index in range(COUNT)
    ]

    started = time.perf_counter()
    async with Session(IDENTIFIER, state_dir=state_dir, config=config) as session:
        ids = []
        for url, destination, description in expected:
            task = await session.download(url, destination, description=description)
            ids.append(task.id)
        created = time.perf_counter()
        async with asyncio.timeout(60):
            await server.wait_held(held.path)
        statistics = session.statistics()
        assert (statistics.active, statistics.queued) == (1, COUNT - 1)
        alive = len(asyncio.all_tasks()) - baseline
        assert alive <= FEW, f"{alive} asyncio tasks for {COUNT} queued tasks"
        closing = time.perf_counter()
    closed = time.perf_counter()
    assert len(set(ids)) == COUNT
    assert ids == sorted(ids)

    async with Session(IDENTIFIER, state_dir=state_dir, config=config) as session:
        reopened = time.perf_counter()
        tasks = session.tasks()
        listed = time.perf_counter()
        assert [task.id for task in tasks] == ids
        assert [(task.url, task.destination, task.description) for task in tasks] == expected
        assert {task.state for task in tasks} == {TaskState.RUNNING}
        statistics = session.statistics()
        assert (statistics.active + statistics.queued) == COUNT
        assert statistics.active <= 1
        alive = len(asyncio.all_tasks()) - baseline
        assert alive <= FEW, f"{alive} asyncio tasks for {COUNT} reattached tasks"
        # New ids do not collide with the old ones.
        extra = await session.download(server.url("/files/extra.bin"), out_dir / "extra.bin")
        assert extra.id > ids[-1]
    print(
        f"\n{COUNT} tasks: create {created - started:.2f} s, close {closed - closing:.2f} s, "
        f"reopen {reopened - closed:.2f} s, list {listed - reopened:.3f} s"
    )
