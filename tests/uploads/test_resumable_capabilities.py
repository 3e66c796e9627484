"""What a tus server said of itself (``OPTIONS``) is journalled with the upload:
a continued upload (a retry, a reopened session) still sends ``Upload-Checksum``
where the server offers it, without asking ``OPTIONS`` again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bgtransfer import Configuration, RetryEvent, RetryPolicy, Session
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
