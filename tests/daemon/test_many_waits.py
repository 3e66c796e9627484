"""Many tasks waited on at once through the daemon (issue 20, scenario 2 of the bench).

``task.wait()`` is answered from the snapshots the attachment keeps current, and
commands share a few connections: a thousand concurrent ``download()`` and
``wait()`` calls used to open a connection each, overflow the daemon's listen
backlog and fail with "Can not write request body".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from _helpers import sha256_file
from bgtransfer import Configuration, FinishedEvent, Session
from bgtransfer.testing import TestServer

pytestmark = pytest.mark.asyncio

COUNT = 1000


async def test_a_thousand_concurrent_downloads_and_waits_all_finish(
    server: TestServer, state_dir: Path, out_dir: Path, background: Callable[..., Session]
) -> None:
    files = [server.add_file(f"/many/{n}.bin", size=2048 + n) for n in range(COUNT)]
    config = Configuration(max_connections_per_host=8)
    async with background("many", state_dir=state_dir, config=config) as session:
        tasks = await asyncio.gather(
            *(
                session.download(server.url(f.path), out_dir / f"{n}.bin")
                for n, f in enumerate(files)
            )
        )
        ends = await asyncio.gather(*(task.wait() for task in tasks))
    assert all(isinstance(end, FinishedEvent) for end in ends)
    for n, file in enumerate(files):
        assert sha256_file(out_dir / f"{n}.bin") == file.sha256
