"""What a tus server said of itself (``OPTIONS``) is journalled with the upload,
and carried in its resume data: a continued upload (a retry, a reopened session,
``upload_with_resume_data()``) still sends ``Upload-Checksum`` where the server
offers it, without asking ``OPTIONS`` again."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import attrs
import pytest

from bgtransfer import Configuration, ResumeData, ResumedEvent, RetryEvent, RetryPolicy, Session
from bgtransfer._core.resume_data import sign
from bgtransfer._core.tus import CHECKSUM_CHUNK
from bgtransfer.testing import TestServer, UploadFaults
from bgtransfer.testing._tus import TusEndpoint

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024


def _patches(endpoint: TusEndpoint) -> list[dict[str, str]]:
    return [headers for method, _path, headers in endpoint.requests if method == "PATCH"]


def _checksums(endpoint: TusEndpoint) -> list[str | None]:
    return [
        next((v for k, v in headers.items() if k.lower() == "upload-checksum"), None)
        for headers in _patches(endpoint)
    ]


async def test_a_retried_tus_upload_still_sends_its_checksum(tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(2 * MiB))
    config = Configuration(retry=RetryPolicy(initial_delay=0.01, jitter=0.0))
    async with TestServer() as server, Session(config=config) as session:
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=("sha1",))
        endpoint.set_faults(UploadFaults(method="PATCH", reset_after=700_000), times=1)
        task = await session.upload(server.url("/tus/"), source, protocol="tus")
        await task.wait()
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == hashlib.sha256(source.read_bytes()).hexdigest()
    checksums = _checksums(endpoint)
    assert len(checksums) == 2  # the one reset, and the one after the retry
    assert all(value is not None and value.startswith("sha1 ") for value in checksums)
    assert [m for m, _p, _h in endpoint.requests].count("OPTIONS") == 1


async def test_a_reopened_session_still_sends_the_checksum(tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(3 * MiB))
    state = tmp_path / "state"
    slow_retry = Configuration(retry=RetryPolicy(initial_delay=600, jitter=0.0))
    async with TestServer() as server:
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=("sha256",))
        endpoint.set_faults(UploadFaults(method="PATCH", reset_after=1 * MiB), times=1)
        async with Session("up", state_dir=state, config=slow_retry) as session:
            task = await session.upload(server.url("/tus/"), source, protocol="tus")
            async for event in task.events():
                if isinstance(event, RetryEvent):
                    break  # backing off for 10 minutes: the session closes here
        async with Session("up", state_dir=state) as session:
            [again] = session.tasks()
            await again.wait()
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == hashlib.sha256(source.read_bytes()).hexdigest()
    checksums = _checksums(endpoint)
    assert len(checksums) == 2
    assert all(value is not None and value.startswith("sha256 ") for value in checksums)
    # Not asked again: the reopened session had it from the journal.
    assert [m for m, _p, _h in endpoint.requests].count("OPTIONS") == 1


async def test_a_server_without_termination_is_not_sent_a_delete(tmp_path: Path) -> None:
    """The capabilities journalled say more than the checksum: a server that
    offers no termination is not sent a DELETE when an upload it holds is
    cancelled between attempts."""
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(3 * MiB))
    slow_retry = Configuration(retry=RetryPolicy(initial_delay=600, jitter=0.0))
    async with TestServer() as server, Session(config=slow_retry) as session:
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=(), termination=False)
        endpoint.set_faults(UploadFaults(method="PATCH", reset_after=700_000), times=1)
        task = await session.upload(server.url("/tus/"), source, protocol="tus")
        async for event in task.events():
            if isinstance(event, RetryEvent):
                break  # backing off for 10 minutes
        await task.cancel()
    assert "DELETE" not in [m for m, _p, _h in endpoint.requests]
    [stored] = endpoint.uploads.values()
    assert stored.offset == 700_000


def _checksum_of(source: bytes, headers: dict[str, str]) -> str:
    """The Upload-Checksum a PATCH with these headers should carry (sha256)."""
    offset = int(headers["Upload-Offset"])
    length = int(headers["Content-Length"])
    digest = hashlib.sha256(source[offset : offset + length]).digest()
    return "sha256 " + base64.b64encode(digest).decode()


async def _cancel_after_one_patch(
    server: TestServer, session: Session, endpoint: TusEndpoint, source: Path
) -> ResumeData:
    """A tus upload whose first PATCH (CHECKSUM_CHUNK bytes) the server stores and
    whose second it holds; cancelled there with resume data. The server keeps
    the first PATCH's bytes, and the held one's only if the whole of it was
    already in the sockets' buffers (it is checksummed: all or nothing)."""
    # The newest override is taken first: the first PATCH goes through, the next is held.
    endpoint.set_faults(UploadFaults(method="PATCH", hold_after=1 * MiB), times=1)
    endpoint.set_faults(UploadFaults(method="PATCH"), times=1)
    task = await session.upload(server.url("/tus/"), source, protocol="tus")
    await endpoint.wait_held()
    data = await task.cancel_with_resume_data()
    endpoint.release()
    await server.wait_until(lambda stats: stats.in_flight == 0)
    assert data is not None
    return data


async def test_upload_resume_data_carries_the_servers_checksum(tmp_path: Path) -> None:
    """Resume data of a tus upload carries what the server offered: a new
    session continuing it sends a correct Upload-Checksum on every PATCH,
    without asking OPTIONS again."""
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(3 * CHECKSUM_CHUNK))
    content = source.read_bytes()
    state = tmp_path / "state"
    async with TestServer() as server:
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=("md5", "sha256"))
        async with Session("up", state_dir=state) as session:
            data = await _cancel_after_one_patch(server, session, endpoint, source)
        blob = data.to_bytes()
        assert json.loads(blob)["version"] == 4
        assert data.tus is not None
        assert data.tus.checksum == "sha256"
        assert "termination" in data.tus.extensions
        [held] = [upload.offset for upload in endpoint.uploads.values()]
        assert held in (CHECKSUM_CHUNK, 2 * CHECKSUM_CHUNK)
        before = len(endpoint.requests)
        async with Session("up", state_dir=state) as session:
            again = await session.upload_with_resume_data(blob)
            stream = again.events()
            finished = await again.wait()
            events = [event async for event in stream]
    [stored] = endpoint.uploads.values()  # the same upload, continued
    assert stored.sha256() == hashlib.sha256(content).hexdigest()
    assert finished.total_bytes == len(content)
    assert [e.offset for e in events if isinstance(e, ResumedEvent)] == [held]
    continued = endpoint.requests[before:]
    patches = [headers for method, _path, headers in continued if method == "PATCH"]
    assert [method for method, _path, _headers in continued] == ["HEAD"] + ["PATCH"] * len(patches)
    assert patches[0]["Upload-Offset"] == str(held)
    for patch in patches:
        assert patch["Upload-Checksum"] == _checksum_of(content, patch)


async def test_a_continued_upload_knows_the_server_offers_no_termination(
    tmp_path: Path,
) -> None:
    """The capabilities say more than the checksum: an upload continued from
    resume data, on a server without termination, is not sent a DELETE when
    it is cancelled."""
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(3 * MiB))
    async with TestServer() as server, Session(state_dir=tmp_path / "state") as session:
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=(), termination=False)
        endpoint.set_faults(UploadFaults(method="PATCH", hold_after=1 * MiB), times=1)
        task = await session.upload(server.url("/tus/"), source, protocol="tus")
        await endpoint.wait_held()
        data = await task.cancel_with_resume_data()
        endpoint.release()
        await server.wait_until(lambda stats: stats.in_flight == 0)
        assert data is not None
        assert data.tus is not None
        assert data.tus.extensions == {"creation", "expiration"}
        endpoint.set_faults(UploadFaults(method="PATCH", hold_after=1 * MiB), times=1)
        again = await session.upload_with_resume_data(data)
        await endpoint.wait_held()
        await again.cancel()
        endpoint.release()
        await server.wait_until(lambda stats: stats.in_flight == 0)
    assert "DELETE" not in [method for method, _path, _headers in endpoint.requests]


async def test_resume_data_without_capabilities_still_continues(tmp_path: Path) -> None:
    """Resume data as bgtransfer wrote it before it carried the capabilities
    (version 2, signed the same way) still continues the upload, as it did:
    with no Upload-Checksum, since nothing says the server offers one."""
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(3 * CHECKSUM_CHUNK))
    content = source.read_bytes()
    state = tmp_path / "state"
    async with TestServer() as server:
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=("sha256",))
        async with Session("up", state_dir=state) as session:
            data = await _cancel_after_one_patch(server, session, endpoint, source)
        key = (state / ".resume-data.key").read_bytes()
        older = sign(attrs.evolve(data, tus=None), key)
        document = json.loads(older.to_bytes())
        assert document["version"] == 2
        assert "tus" not in document
        [held] = [upload.offset for upload in endpoint.uploads.values()]
        assert held < len(content)
        before = len(endpoint.requests)
        async with Session("up", state_dir=state) as session:
            again = await session.upload_with_resume_data(older.to_bytes())
            await again.wait()
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == hashlib.sha256(content).hexdigest()
    continued = endpoint.requests[before:]
    assert [method for method, _path, _headers in continued] == ["HEAD", "PATCH"]
    assert continued[1][2]["Upload-Offset"] == str(held)
    assert "Upload-Checksum" not in continued[1][2]
