"""Resumable uploads through the daemon: ``protocol=`` crosses the wire, and a
daemon SIGKILLed mid-upload is replaced by one that continues from the server's
offset (the journalled upload URL), sending nothing twice."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from pathlib import Path

import pytest

from _helpers import daemon_pid, kill_daemon
from bgtransfer import (
    CancelledEvent,
    Configuration,
    FinishedEvent,
    RetryEvent,
    RetryPolicy,
    Session,
    SessionError,
    TransferError,
)
from bgtransfer._core.tus import CHECKSUM_CHUNK
from bgtransfer.testing import ServerStatistics, TestServer, UploadFaults

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024
FAST = {"checkpoint_interval": 0.05, "progress_interval": 0.0}
TIMEOUT = 60


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "up.bin"
    path.write_bytes(os.urandom(size))
    return path


@pytest.mark.parametrize("protocol", ["tus", "ietf", "auto"])
async def test_a_resumable_upload_through_the_daemon(
    server: TestServer, daemon_state: Path, tmp_path: Path, protocol: str
) -> None:
    source = _file(tmp_path, 2 * MiB + 5)
    endpoint = server.add_tus_endpoint("/tus/") if protocol != "ietf" else None
    endpoint = endpoint or server.add_ietf_endpoint("/ietf/")
    config = Configuration(**FAST)
    async with Session("up", state_dir=daemon_state, config=config, daemon=True) as session:
        task = await session.upload(server.url(endpoint.prefix), source, protocol=protocol)
        finished = await asyncio.wait_for(task.wait(), TIMEOUT)
    assert isinstance(finished, FinishedEvent)
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == hashlib.sha256(source.read_bytes()).hexdigest()
    methods = [method for method, _path, _headers in endpoint.requests]
    assert "PATCH" in methods
    assert (methods[0] == "OPTIONS") is (protocol != "ietf")


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
async def test_a_daemon_sigkilled_mid_upload_is_continued_from_the_servers_offset(
    server: TestServer, daemon_state: Path, tmp_path: Path, protocol: str
) -> None:
    source = _file(tmp_path, 8 * MiB)
    if protocol == "tus":
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=())
    else:
        endpoint = server.add_ietf_endpoint("/ietf/")
    endpoint.set_faults(UploadFaults(method="PATCH", hold_after=3 * MiB), times=1)
    config = Configuration(**FAST)
    async with Session("kill", state_dir=daemon_state, config=config, daemon=True) as session:
        task = await session.upload(server.url(endpoint.prefix), source, protocol=protocol)
        await asyncio.wait_for(endpoint.wait_held(), TIMEOUT)
        pid = daemon_pid(daemon_state)
        assert pid is not None
        kill_daemon(daemon_state)  # SIGKILL mid-PATCH
        endpoint.release()  # the killed PATCH ends with what the server read
        finished = await asyncio.wait_for(task.wait(), TIMEOUT)
        assert daemon_pid(daemon_state) not in (None, pid)
    assert isinstance(finished, FinishedEvent)
    assert finished.total_bytes == source.stat().st_size
    [stored] = endpoint.uploads.values()  # created once: the journalled URL was used
    assert stored.sha256() == hashlib.sha256(source.read_bytes()).hexdigest()
    assert endpoint.bytes_received == source.stat().st_size  # nothing sent twice


async def test_resume_data_round_trip_through_the_daemon(
    server: TestServer, daemon_state: Path, tmp_path: Path
) -> None:
    source = _file(tmp_path, 3 * MiB)
    endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=())
    endpoint.set_faults(UploadFaults(method="PATCH", hold_after=1 * MiB), times=1)
    config = Configuration(**FAST)
    async with Session("rd", state_dir=daemon_state, config=config, daemon=True) as session:
        task = await session.upload(server.url("/tus/"), source, protocol="tus")
        await asyncio.wait_for(endpoint.wait_held(), TIMEOUT)
        data = await task.cancel_with_resume_data()
        endpoint.release()
        await asyncio.wait_for(server.wait_until(lambda s: s.in_flight == 0), TIMEOUT)
        assert data is not None
        assert data.kind == "upload"
        again = await session.upload_with_resume_data(data.to_bytes())
        finished = await asyncio.wait_for(again.wait(), TIMEOUT)
    assert isinstance(finished, FinishedEvent)
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == hashlib.sha256(source.read_bytes()).hexdigest()
    assert endpoint.bytes_received == source.stat().st_size


async def test_resume_data_through_the_daemon_keeps_the_checksum(
    server: TestServer, daemon_state: Path, tmp_path: Path
) -> None:
    """The tus capabilities in upload resume data cross the wire both ways: the
    continued upload's PATCHes carry the checksum the server offered."""
    source = _file(tmp_path, 3 * CHECKSUM_CHUNK)
    content = source.read_bytes()
    endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=("sha256",))
    # The newest override is taken first: the first PATCH goes through, the next is held.
    endpoint.set_faults(UploadFaults(method="PATCH", hold_after=1 * MiB), times=1)
    endpoint.set_faults(UploadFaults(method="PATCH"), times=1)
    config = Configuration(**FAST)
    async with Session("rd", state_dir=daemon_state, config=config, daemon=True) as session:
        task = await session.upload(server.url("/tus/"), source, protocol="tus")
        await asyncio.wait_for(endpoint.wait_held(), TIMEOUT)
        data = await task.cancel_with_resume_data()
        endpoint.release()
        await asyncio.wait_for(server.wait_until(lambda s: s.in_flight == 0), TIMEOUT)
        assert data is not None
        assert data.tus is not None
        assert data.tus.checksum == "sha256"
        before = len(endpoint.requests)
        again = await session.upload_with_resume_data(data.to_bytes())
        finished = await asyncio.wait_for(again.wait(), TIMEOUT)
    assert isinstance(finished, FinishedEvent)
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == hashlib.sha256(content).hexdigest()
    continued = endpoint.requests[before:]
    patches = [headers for method, _path, headers in continued if method == "PATCH"]
    assert patches
    for patch in patches:
        offset, length = int(patch["Upload-Offset"]), int(patch["Content-Length"])
        digest = hashlib.sha256(content[offset : offset + length]).digest()
        assert patch["Upload-Checksum"] == "sha256 " + base64.b64encode(digest).decode()


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
async def test_a_daemon_sigkilled_mid_cancel_removes_the_upload_once_back(
    server: TestServer, daemon_state: Path, tmp_path: Path, protocol: str
) -> None:
    """The termination was journalled before its DELETE went out: the daemon
    that replaces the killed one sends it when it reopens the session."""
    source = _file(tmp_path, 4 * MiB)
    if protocol == "tus":
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=())
    else:
        endpoint = server.add_ietf_endpoint("/ietf/")
    endpoint.set_faults(UploadFaults(method="PATCH", reset_after=1 * MiB), times=1)
    config = Configuration(**FAST, retry=RetryPolicy(initial_delay=600, jitter=0.0))
    async with Session("term", state_dir=daemon_state, config=config, daemon=True) as session:
        task = await session.upload(server.url(endpoint.prefix), source, protocol=protocol)
        async with task.events() as stream:
            async for event in stream:
                if isinstance(event, RetryEvent):
                    break  # backing off for 10 minutes, the server holding 1 MiB
        endpoint.set_faults(UploadFaults(method="DELETE", hold_after=0), times=1)
        cancelling = asyncio.create_task(task.cancel())
        await asyncio.wait_for(endpoint.wait_held(), TIMEOUT)
        pid = daemon_pid(daemon_state)
        kill_daemon(daemon_state)  # SIGKILL while its DELETE is held
        endpoint.release()  # (the dead daemon's DELETE, if the server saw it die, is dropped)
        with contextlib.suppress(TransferError, SessionError):
            await asyncio.wait_for(cancelling, TIMEOUT)
        assert isinstance(await asyncio.wait_for(task.wait(), TIMEOUT), CancelledEvent)
        assert daemon_pid(daemon_state) not in (None, pid)

        def deleted_again(stats: ServerStatistics) -> bool:
            deletes = [m for m, _p, _h in endpoint.requests].count("DELETE")
            return deletes >= 2 and not endpoint.uploads and stats.in_flight == 0

        # The killed daemon sent one DELETE; the others are the new daemon's (more
        # than one when it opened the session at start and closed it meanwhile:
        # a termination it did not see answered is sent again).
        await asyncio.wait_for(server.wait_until(deleted_again), TIMEOUT)
    assert endpoint.uploads == {}
