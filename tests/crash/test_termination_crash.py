"""A process SIGKILLed while it cancels a resumable upload (its DELETE sent but
not acted on) leaves the termination in the journal; the next open of the
session sends it, and forgets it. The journal keeps no credentials for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from _helpers import LINE_TIMEOUT, child
from _logwait import log_seen
from bgtransfer import CancelledEvent, Configuration, Session
from bgtransfer._io.journal import JOURNAL_NAME
from bgtransfer.testing import TestServer, UploadFaults

pytestmark = pytest.mark.asyncio

CHILD = Path(__file__).with_name("_upload_child.py")
IDENTIFIER = "com.example.terminate"
MiB = 1024 * 1024


def _terminations(state_dir: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(state_dir / IDENTIFIER / JOURNAL_NAME)) as db:
        return db.execute("SELECT * FROM terminations").fetchall()


async def _child_killed_mid_cancel(args: dict[str, Any], held: Any, stderr_path: Path) -> None:
    """Run the child until the server holds its DELETE, then SIGKILL it."""
    async with child(CHILD, args, stderr_path) as running:
        await asyncio.wait_for(held(), LINE_TIMEOUT)
        await running.killed()


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
async def test_a_termination_cut_by_a_kill_is_sent_by_the_next_open(
    server: TestServer, tmp_path: Path, protocol: str
) -> None:
    state_dir = tmp_path / "state"
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(4 * MiB))
    if protocol == "tus":
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=())
    else:
        endpoint = server.add_ietf_endpoint("/ietf/")
    # The first PATCH is cut (the child backs off for 10 minutes and cancels);
    # the DELETE that follows is held until the child is dead, then dropped.
    endpoint.set_faults(UploadFaults(method="PATCH", reset_after=1 * MiB), times=1)
    endpoint.set_faults(UploadFaults(method="DELETE", hold_after=0), times=1)
    args = {
        "identifier": IDENTIFIER,
        "state_dir": str(state_dir),
        "url": server.url(endpoint.prefix),
        "file": str(source),
        "reply_to": None,
        "protocol": protocol,
        "headers": {"Authorization": "Bearer s3cret", "X-Trace": "t-1"},
        "cancel_on_retry": True,
    }
    await _child_killed_mid_cancel(args, endpoint.wait_held, tmp_path / "child.stderr")
    # Once the server saw the dead child's connections close, its held DELETE
    # is let go: its client is gone, nothing is removed.
    await asyncio.wait_for(server.wait_until(lambda s: s.open_connections == 0), LINE_TIMEOUT)
    endpoint.release()
    await asyncio.wait_for(server.wait_until(lambda s: s.in_flight == 0), LINE_TIMEOUT)
    [upload] = endpoint.uploads.values()
    assert upload.offset == 1 * MiB

    # Journalled before it was sent: the upload URL, no credentials.
    [row] = _terminations(state_dir)
    assert row[2].endswith("/" + upload.id)
    assert "s3cret" not in repr(row)
    assert "X-Trace" in row[4]

    deletes = [h for m, _p, h in endpoint.requests if m == "DELETE"]
    assert len(deletes) == 1
    with log_seen("removed the upload") as removed:
        async with Session(IDENTIFIER, state_dir=state_dir, config=Configuration()) as session:
            [task] = session.tasks()
            assert isinstance(await asyncio.wait_for(task.wait(), LINE_TIMEOUT), CancelledEvent)
            # Sent in the background by the open: the server removes the upload.
            await asyncio.wait_for(removed.wait(), LINE_TIMEOUT)
    assert endpoint.uploads == {}
    deletes = [h for m, _p, h in endpoint.requests if m == "DELETE"]
    assert len(deletes) == 2
    assert deletes[1].get("X-Trace") == "t-1"
    assert "Authorization" not in deletes[1]  # (secrets come from headers_provider)
    assert upload.id in endpoint.removed
    assert _terminations(state_dir) == []  # forgotten once answered
