"""Resumable uploads through the session (``upload(..., protocol=...)``) against the
test server's tus and IETF-draft endpoints: byte-exact, resets continued without
re-sending, suspend/resume, cancel terminating, "auto", and a reopened session
continuing from the server's offset."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Literal

import attrs
import pytest

from bgtransfer import (
    CancelledEvent,
    Configuration,
    InvalidResumeDataError,
    ResumeData,
    ResumedEvent,
    RetryEvent,
    RetryPolicy,
    Session,
    SourceChangedError,
    TaskState,
)
from bgtransfer.testing import Faults, TestServer, UploadFaults
from bgtransfer.testing._uploads import UploadEndpoint

pytestmark = pytest.mark.asyncio

Protocol = Literal["tus", "ietf"]
MiB = 1024 * 1024
FAST_RETRY = Configuration(retry=RetryPolicy(initial_delay=0.01, jitter=0.0))


def _file(tmp_path: Path, size: int, name: str = "up.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _endpoint(
    server: TestServer, protocol: Protocol, *, checksum: bool = True
) -> tuple[UploadEndpoint, str]:
    if protocol == "tus":
        # (a checksummed PATCH cut short keeps nothing on the server)
        algorithms = ("sha1",) if checksum else ()
        return server.add_tus_endpoint("/tus/", checksum_algorithms=algorithms), server.url("/tus/")
    return server.add_ietf_endpoint("/ietf/"), server.url("/ietf/")


def _methods(endpoint: UploadEndpoint) -> list[str]:
    return [method for method, _path, _headers in endpoint.requests]


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
async def test_byte_exact(tmp_path: Path, protocol: Protocol) -> None:
    source = _file(tmp_path, 3 * MiB + 17)
    async with TestServer() as server, Session() as session:
        endpoint, url = _endpoint(server, protocol)
        task = await session.upload(url, source, protocol=protocol)
        stream = task.events()
        finished = await task.wait()
        events = [event async for event in stream]
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == _sha(source)
    assert endpoint.bytes_received == source.stat().st_size
    assert finished.total_bytes == source.stat().st_size
    assert finished.reply is not None
    assert 200 <= finished.reply.status < 300
    assert not [event for event in events if isinstance(event, ResumedEvent)]
    assert "PATCH" in _methods(endpoint)


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
async def test_reset_mid_patch_continues_without_resending(
    tmp_path: Path, protocol: Protocol
) -> None:
    source = _file(tmp_path, 2 * MiB)
    async with TestServer() as server, Session(config=FAST_RETRY) as session:
        endpoint, url = _endpoint(server, protocol)
        endpoint.set_faults(UploadFaults(method="PATCH", reset_after=700_000), times=1)
        task = await session.upload(url, source, protocol=protocol)
        stream = task.events()
        finished = await task.wait()
        events = [event async for event in stream]
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == _sha(source)
    # Every byte went to the server once: nothing it held was sent again.
    assert endpoint.bytes_received == source.stat().st_size
    assert any(isinstance(event, RetryEvent) for event in events)
    assert [e.offset for e in events if isinstance(e, ResumedEvent)] == [700_000]
    assert finished.total_bytes == source.stat().st_size
    assert _methods(endpoint).count("HEAD") == 1


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
async def test_suspend_and_resume_continue_from_the_server_offset(
    tmp_path: Path, protocol: Protocol
) -> None:
    source = _file(tmp_path, 3 * MiB)
    async with TestServer() as server, Session() as session:
        endpoint, url = _endpoint(server, protocol, checksum=False)
        endpoint.set_faults(UploadFaults(method="PATCH", hold_after=1 * MiB), times=1)
        task = await session.upload(url, source, protocol=protocol)
        stream = task.events()
        await endpoint.wait_held()
        task.suspend()
        assert task.state is TaskState.SUSPENDED
        endpoint.release()
        task.resume()
        finished = await task.wait()
        events = [event async for event in stream]
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == _sha(source)
    [resumed] = [e for e in events if isinstance(e, ResumedEvent)]
    assert resumed.offset >= 1 * MiB
    assert finished.total_bytes == source.stat().st_size


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
async def test_cancel_terminates_the_upload_on_the_server(
    tmp_path: Path, protocol: Protocol
) -> None:
    source = _file(tmp_path, 3 * MiB)
    async with TestServer() as server, Session() as session:
        endpoint, url = _endpoint(server, protocol)
        endpoint.set_faults(UploadFaults(method="PATCH", hold_after=1 * MiB), times=1)
        task = await session.upload(url, source, protocol=protocol)
        await endpoint.wait_held()
        await task.cancel()
        endpoint.release()
        assert isinstance(task.result, CancelledEvent)
    assert "DELETE" in _methods(endpoint)
    assert endpoint.uploads == {}
    assert source.stat().st_size == 3 * MiB  # the file is only read


async def test_cancel_of_a_suspended_upload_terminates_it(tmp_path: Path) -> None:
    source = _file(tmp_path, 2 * MiB)
    async with TestServer() as server, Session() as session:
        endpoint, url = _endpoint(server, "tus")
        endpoint.set_faults(UploadFaults(method="PATCH", hold_after=MiB // 2), times=1)
        task = await session.upload(url, source, protocol="tus")
        await endpoint.wait_held()
        task.suspend()
        endpoint.release()
        await task.cancel()
    assert "DELETE" in _methods(endpoint)
    assert endpoint.uploads == {}


async def test_a_failed_termination_is_logged_not_the_tasks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _file(tmp_path, 2 * MiB)
    async with TestServer() as server, Session() as session:
        endpoint, url = _endpoint(server, "tus")
        endpoint.set_faults(UploadFaults(method="PATCH", hold_after=MiB // 2), times=1)
        endpoint.set_faults(UploadFaults(method="DELETE", status=500), times=1)
        task = await session.upload(url, source, protocol="tus")
        await endpoint.wait_held()
        with caplog.at_level(logging.WARNING, logger="bgtransfer"):
            await task.cancel()
        endpoint.release()
        assert isinstance(task.result, CancelledEvent)
    assert "HTTP 500 to removing the upload" in caplog.text


@pytest.mark.parametrize("expected", ["tus", "ietf", "plain"])
async def test_auto_picks_what_the_server_advertises(tmp_path: Path, expected: str) -> None:
    source = _file(tmp_path, 600_000)
    async with TestServer() as server, Session() as session:
        if expected == "plain":
            url = server.url("/photos/up.bin")
        else:
            endpoint, url = _endpoint(server, expected)  # type: ignore[arg-type]
        task = await session.upload(url, source, protocol="auto")
        finished = await task.wait()
    assert finished.total_bytes == 600_000
    assert finished.reply is not None
    if expected == "plain":
        assert finished.reply.status == 201
        return
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == _sha(source)
    assert _methods(endpoint)[0] == "OPTIONS"


async def test_protocol_and_reply_to_are_checked_at_the_call(tmp_path: Path) -> None:
    source = _file(tmp_path, 10)
    async with Session() as session:
        with pytest.raises(ValueError, match="protocol must be one of"):
            await session.upload("http://127.0.0.1:9/x", source, protocol="ftp")
        with pytest.raises(ValueError, match="reply_to is for plain uploads"):
            await session.upload(
                "http://127.0.0.1:9/x", source, protocol="tus", reply_to=tmp_path / "r"
            )


@pytest.mark.parametrize("protocol", ["tus", "ietf", "auto"])
async def test_a_reopened_session_continues_from_the_server_offset(
    tmp_path: Path, protocol: str
) -> None:
    """The upload URL was journalled before the first byte: the next session
    (the next process) asks the server and sends only the rest. "auto"'s
    choice is journalled too: the server is asked once."""
    source = _file(tmp_path, 3 * MiB)
    state = tmp_path / "state"
    slow_retry = Configuration(retry=RetryPolicy(initial_delay=600, jitter=0.0))
    async with TestServer() as server:
        endpoint, url = _endpoint(server, "ietf" if protocol == "ietf" else "tus")
        endpoint.set_faults(UploadFaults(method="PATCH", reset_after=1 * MiB), times=1)
        async with Session("up", state_dir=state, config=slow_retry) as session:
            task = await session.upload(url, source, protocol=protocol)
            async for event in task.events():
                if isinstance(event, RetryEvent):
                    break  # backing off for 10 minutes: the session closes here
        async with Session("up", state_dir=state) as session:
            [again] = session.tasks()
            assert again.id == task.id
            stream = again.events()
            finished = await again.wait()
            events = [event async for event in stream]
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == _sha(source)
    assert endpoint.bytes_received == source.stat().st_size
    assert [e.offset for e in events if isinstance(e, ResumedEvent)] == [1 * MiB]
    assert finished.total_bytes == source.stat().st_size
    # Created once: the reopened session used the journalled upload URL.
    methods = _methods(endpoint)
    assert methods.count("POST") + methods.count("PUT") == 1
    # The reopened session asked nothing but HEAD: the choice and URL were journalled.
    assert "OPTIONS" not in methods[methods.index("HEAD") :]
    assert methods.count("OPTIONS") == (0 if protocol == "ietf" else 1)


async def _cancelled_with_resume_data(
    server: TestServer, session: Session, endpoint: UploadEndpoint, url: str, source: Path
) -> ResumeData:
    """An upload cut at 1 MiB by cancel_with_resume_data(), the server's side ended."""
    endpoint.set_faults(UploadFaults(method="PATCH", hold_after=1 * MiB), times=1)
    task = await session.upload(url, source, protocol=endpoint_protocol(endpoint))
    await endpoint.wait_held()
    data = await task.cancel_with_resume_data()
    endpoint.release()
    await server.wait_until(lambda stats: stats.in_flight == 0)
    assert data is not None
    assert isinstance(task.result, CancelledEvent)
    assert task.result.resume_data == data
    return data


def endpoint_protocol(endpoint: UploadEndpoint) -> Protocol:
    return "tus" if endpoint.prefix == "/tus/" else "ietf"


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
async def test_resume_data_round_trip(tmp_path: Path, protocol: Protocol) -> None:
    source = _file(tmp_path, 24 * MiB)
    async with TestServer() as server, Session(state_dir=tmp_path / "state") as session:
        endpoint, url = _endpoint(server, protocol, checksum=False)
        data = await _cancelled_with_resume_data(server, session, endpoint, url, source)
        assert (data.kind, data.protocol, data.source) == ("upload", protocol, str(source))
        assert "DELETE" not in _methods(endpoint)  # the server keeps the upload
        [held] = [upload.offset for upload in endpoint.uploads.values()]
        assert 1 * MiB <= held < source.stat().st_size
        again = await session.upload_with_resume_data(data.to_bytes())
        stream = again.events()
        finished = await again.wait()
        events = [event async for event in stream]
    assert finished.total_bytes == source.stat().st_size
    [stored] = endpoint.uploads.values()  # the same upload, continued
    assert stored.sha256() == _sha(source)
    assert [e.offset for e in events if isinstance(e, ResumedEvent)] == [held]
    assert endpoint.bytes_received == source.stat().st_size  # nothing sent twice


async def test_resume_data_of_a_changed_file_is_refused(tmp_path: Path) -> None:
    source = _file(tmp_path, 3 * MiB)
    async with TestServer() as server, Session() as session:
        endpoint, url = _endpoint(server, "tus")
        data = await _cancelled_with_resume_data(server, session, endpoint, url, source)
        with source.open("ab") as file:
            file.write(b"more")
        with pytest.raises(SourceChangedError, match="changed"):
            await session.upload_with_resume_data(data)
        assert len(session.tasks()) == 1


async def test_forged_resume_data_is_refused(tmp_path: Path) -> None:
    source = _file(tmp_path, 3 * MiB)
    async with TestServer() as server, Session() as session:
        endpoint, url = _endpoint(server, "tus")
        data = await _cancelled_with_resume_data(server, session, endpoint, url, source)
        forged = attrs.evolve(data, offset=2 * MiB)
        with pytest.raises(InvalidResumeDataError, match="signature does not match"):
            await session.upload_with_resume_data(forged.to_bytes())
        elsewhere = attrs.evolve(data, upload_url="http://attacker.example/u1")
        with pytest.raises(InvalidResumeDataError, match="signature does not match"):
            await session.upload_with_resume_data(elsewhere)
        with pytest.raises(InvalidResumeDataError, match="upload_with_resume_data"):
            await session.download_with_resume_data(data)
        blob = data.to_bytes().replace(b'"protocol":"tus"', b'"protocol":"ftp"')
        with pytest.raises(InvalidResumeDataError, match="unknown protocol"):
            await session.upload_with_resume_data(blob)
        assert len(session.tasks()) == 1


async def test_a_plain_upload_has_no_resume_data(tmp_path: Path) -> None:
    source = _file(tmp_path, 3 * MiB)
    async with TestServer() as server, Session() as session:
        server.set_faults("/plain", Faults(hold_after=MiB), times=1)
        task = await session.upload(server.url("/plain"), source)
        await server.wait_held("/plain")
        assert await task.cancel_with_resume_data() is None
        server.release("/plain")


async def test_a_file_changed_after_upload_with_resume_data_fails_the_attempt(
    tmp_path: Path,
) -> None:
    source = _file(tmp_path, 3 * MiB)
    async with TestServer() as server, Session() as session:
        endpoint, url = _endpoint(server, "tus")
        data = await _cancelled_with_resume_data(server, session, endpoint, url, source)
        before = source.read_bytes()
        again = await session.upload_with_resume_data(data)
        again.suspend()
        with source.open("r+b") as file:
            file.write(b"x")  # same size, a new modification time
        os.utime(source, ns=(0, 0))
        [stored] = endpoint.uploads.values()
        held = bytes(stored.data)
        received = endpoint.bytes_received
        again.resume()
        with pytest.raises(SourceChangedError, match="changed"):
            await again.wait()
    assert before.startswith(held)
    assert endpoint.bytes_received == received  # nothing of the new version was sent
    assert endpoint.uploads == {}  # nobody can complete it: removed from the server
