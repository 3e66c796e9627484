"""A plain upload whose process was SIGKILLed mid-body is reattached by the next
process and sent again from its first byte, byte-exact (the server hashes it)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from _helpers import LINE_TIMEOUT, check_resumable_stream, child, collect, sha256_bytes
from bgtransfer import (
    Configuration,
    FinishedEvent,
    ResumedEvent,
    Session,
    TaskState,
    UploadTask,
)
from bgtransfer.testing import Faults, TestServer, UploadFaults

pytestmark = pytest.mark.asyncio

CHILD = Path(__file__).with_name("_upload_child.py")
IDENTIFIER = "com.example.upload"


async def _child_killed_mid_body(
    args: dict[str, Any],
    server: TestServer,
    path: str,
    stderr_path: Path,
    held: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run the child until the server holds its body mid-way, then SIGKILL it.
    Its first line (what it printed before the body was held)."""
    async with child(CHILD, args, stderr_path) as running:
        first = await running.wait_line()
        await asyncio.wait_for(server.wait_held(path) if held is None else held(), LINE_TIMEOUT)
        await running.killed()
        return first


@pytest.mark.parametrize("with_reply", [False, True])
async def test_a_killed_upload_is_sent_again_from_the_start(
    server: TestServer, tmp_path: Path, with_reply: bool
) -> None:
    state_dir = tmp_path / "state"
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    reply_to = tmp_path / "reply.json" if with_reply else None
    server.set_faults("/up", Faults(hold_after=500_000), times=1)
    args = {
        "identifier": IDENTIFIER,
        "state_dir": str(state_dir),
        "url": server.url("/up"),
        "file": str(source),
        "reply_to": None if reply_to is None else str(reply_to),
    }
    created = await _child_killed_mid_body(args, server, "/up", tmp_path / "child.stderr")
    server.release("/up")  # the killed body ends (cut short)

    async with Session(IDENTIFIER, state_dir=state_dir, config=Configuration()) as session:
        [task] = session.tasks()
        assert isinstance(task, UploadTask)
        assert task.id == created["created"]
        assert task.source == source.resolve()
        assert task.state in (TaskState.RUNNING, TaskState.COMPLETED)
        stream = task.events()
        finished = await asyncio.wait_for(task.wait(), LINE_TIMEOUT)
        events = await collect(stream)
    assert isinstance(finished, FinishedEvent)
    assert check_resumable_stream(events, task.id) == finished
    assert finished.total_bytes == source.stat().st_size
    expected = sha256_bytes(source.read_bytes())
    # The killed attempt (cut short, unless the socket buffers held all of it),
    # then the whole file again.
    killed, again = server.uploads
    assert killed.length <= again.length
    assert (again.sha256, again.complete) == (expected, True)
    if reply_to is not None:
        assert finished.location == reply_to
        assert json.loads(reply_to.read_text())["sha256"] == expected
    assert not list((state_dir / IDENTIFIER / "partials").iterdir())


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
async def test_a_killed_resumable_upload_continues_from_the_servers_offset(
    server: TestServer, tmp_path: Path, protocol: str
) -> None:
    """The upload URL was journalled before the first byte: the next process
    asks the server (HEAD) and sends only what it does not hold."""
    MiB = 1024 * 1024
    state_dir = tmp_path / "state"
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(8 * MiB))
    if protocol == "tus":
        # (without the checksum extension: a checksummed PATCH cut short keeps nothing)
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=())
    else:
        endpoint = server.add_ietf_endpoint("/ietf/")
    endpoint.set_faults(UploadFaults(method="PATCH", hold_after=3 * MiB), times=1)
    args = {
        "identifier": IDENTIFIER,
        "state_dir": str(state_dir),
        "url": server.url(endpoint.prefix),
        "file": str(source),
        "reply_to": None,
        "protocol": protocol,
    }
    created = await _child_killed_mid_body(
        args, server, endpoint.prefix, tmp_path / "child.stderr", held=endpoint.wait_held
    )
    endpoint.release()  # the killed PATCH ends with what the server read
    await asyncio.wait_for(server.wait_until(lambda s: s.in_flight == 0), LINE_TIMEOUT)
    [held] = [upload.offset for upload in endpoint.uploads.values()]
    assert held >= 3 * MiB

    async with Session(IDENTIFIER, state_dir=state_dir, config=Configuration()) as session:
        [task] = session.tasks()
        assert isinstance(task, UploadTask)
        assert task.id == created["created"]
        stream = task.events()
        finished = await asyncio.wait_for(task.wait(), LINE_TIMEOUT)
        events = await collect(stream)
    assert isinstance(finished, FinishedEvent)
    assert finished.total_bytes == source.stat().st_size
    assert [e.offset for e in events if isinstance(e, ResumedEvent)] == [held]
    [upload] = endpoint.uploads.values()  # one upload: the journalled URL was used
    assert upload.sha256() == sha256_bytes(source.read_bytes())
    assert endpoint.bytes_received == source.stat().st_size  # nothing sent twice
