"""A checksum survives a SIGKILL of the application: the reattached task checks the
whole file (bytes of both processes) before moving it into place."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from test_crash_harness import DRIP, IDENTIFIER, ONE_FILE, QUICK, RUN_TIMEOUT, Scene, _child

from _helpers import sha256_file
from bgtransfer import FinishedEvent, IntegrityError, Session, TaskState
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

VICTIM = b"the file that was here before\n"


@pytest.mark.parametrize("corrupt", [False, True])
async def test_a_reattached_download_is_verified_byte_exact_after_sigkill(
    corrupt: bool, server: TestServer, tmp_path: Path
) -> None:
    # The engine journals a task's offset with a progress event, once
    # checkpoint_interval has passed since the last time: with progress_interval 0,
    # bytes that arrive within that interval of a checkpoint and are the last
    # before a stall are never journaled. Progress events at most every 0.1 s
    # (longer than QUICK's checkpoint_interval, 0.05 s) each journal the offset,
    # and the bytes held back at the stall are reported 0.1 s after the last one.
    scene = Scene(server, tmp_path, {**QUICK, "progress_interval": 0.1}, files=ONE_FILE)
    (url,) = scene.specs
    spec = scene.specs[url]
    spec["checksum"] = f"sha256:{scene.sha256[url]}"
    target = Path(spec["target"])
    # Killed right after the journal vouched for 200 000 bytes or more (the hook's
    # rule for a file written as it arrives: twice the 100 000 given). The server
    # holds the body at 250 000 bytes, so that commit comes before the file ends
    # however slowly the machine runs: the report of every byte before the hold
    # is journaled (see above), and the writer commits it.
    server.set_faults(spec["path"], Faults(drip=DRIP, hold_after=250_000), times=1)
    try:
        run = await scene.child("run1", kill_at={"point": "after_commit", "nth": 100_000})
    finally:
        server.release(spec["path"])
    assert run.self_killed, run.describe()
    assert not target.exists()
    target.write_bytes(VICTIM)
    if corrupt:  # the rest, fetched by the next process, is damaged on the way
        server.set_faults(spec["path"], Faults(corrupt=True))
    requests = len(server.requests)
    config = _child.make_config(QUICK)
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
        (task,) = session.tasks()
        assert task.state is not TaskState.COMPLETED
        async with asyncio.timeout(RUN_TIMEOUT):
            if corrupt:
                with pytest.raises(IntegrityError) as caught:
                    await task.wait()
                assert caught.value.expected == scene.sha256[url]
            else:
                assert isinstance(await task.wait(), FinishedEvent)
    resumed = server.requests[requests:]
    assert resumed[0].headers["Range"].startswith("bytes=")  # it went on from the partial
    if corrupt:
        assert target.read_bytes() == VICTIM
    else:
        assert sha256_file(target) == scene.sha256[url]
    assert os.listdir(scene.session_dir / "partials") == []
