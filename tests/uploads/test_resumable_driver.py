"""The resumable-upload driver (``_io.resumable``) against the test server's tus and
IETF-draft endpoints: byte-exact uploads, resets, 409s, expiry, checksums,
termination and malicious answers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import aiohttp
import pytest
import pytest_asyncio

from bgtransfer import (
    LocalFileError,
    NetworkError,
    ResumableUploadError,
    UploadChecksumError,
    UploadExpiredError,
)
from bgtransfer._core.resumable_upload import IetfUpload
from bgtransfer._core.tus import TusUpload
from bgtransfer._core.upload_protocol import (
    UploadMachine,
    UploadResponse,
    advertised_protocol,
    discovery_request,
)
from bgtransfer._io.resumable import send_resumable, terminate_upload
from bgtransfer.testing import TestServer, UploadFaults
from bgtransfer.testing._uploads import UploadEndpoint

pytestmark = pytest.mark.asyncio

Protocol = Literal["tus", "ietf"]
MiB = 1024 * 1024


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _file(tmp_path: Path, size: int, name: str = "up.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _endpoint(server: TestServer, protocol: Protocol, **kw: object) -> UploadEndpoint:
    if protocol == "tus":
        return server.add_tus_endpoint("/tus/", **kw)  # type: ignore[arg-type]
    return server.add_ietf_endpoint("/ietf/", **kw)  # type: ignore[arg-type]


def _machine(
    server: TestServer,
    protocol: Protocol,
    size: int,
    *,
    upload_url: str | None = None,
    offset: int | None = None,
) -> TusUpload | IetfUpload:
    if protocol == "tus":
        return TusUpload.start(
            server.url("/tus/"),
            size,
            upload_url=upload_url,
            offset=offset,
            metadata=[("filename", "up.bin")],
        )
    return IetfUpload.start(server.url("/ietf/"), size, upload_url=upload_url, offset=offset)


class Seen:
    """What the driver's callbacks saw."""

    def __init__(self, endpoint: UploadEndpoint) -> None:
        self.endpoint = endpoint
        self.urls: list[str] = []
        self.offsets: list[int] = []
        self.positions: list[int] = []
        self.patches_before_url: list[int] = []

    async def on_upload_url(self, machine: UploadMachine) -> None:
        assert machine.upload_url is not None
        self.urls.append(machine.upload_url)
        self.patches_before_url.append(
            sum(1 for method, _, _ in self.endpoint.requests if method == "PATCH")
        )

    async def on_offset(self, offset: int) -> None:
        self.offsets.append(offset)

    def on_progress(self, position: int) -> None:
        self.positions.append(position)


async def _send(
    client: aiohttp.ClientSession,
    machine: TusUpload | IetfUpload,
    path: Path,
    seen: Seen,
) -> object:
    return await send_resumable(
        client,
        machine,
        path,
        on_upload_url=seen.on_upload_url,
        on_offset=seen.on_offset,
        on_progress=seen.on_progress,
        request_timeout=30,
    )


PROTOCOLS: tuple[Protocol, ...] = ("tus", "ietf")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("size", [0, 1000, 5 * MiB + 123])
async def test_upload_is_byte_exact(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path, protocol: Protocol, size: int
) -> None:
    endpoint = _endpoint(server, protocol)
    path = _file(tmp_path, size)
    seen = Seen(endpoint)
    result = await _send(client, _machine(server, protocol, size), path, seen)
    [upload] = endpoint.uploads.values()
    assert upload.sha256() == _sha(path)
    assert upload.offset == size
    assert endpoint.bytes_received == size
    if protocol == "ietf" and size == 0:
        assert seen.urls == []  # one request, complete: nothing to resume
    else:
        assert seen.urls == [server.url(endpoint.prefix + upload.id)]
        assert seen.patches_before_url == [0]  # journaled before the first byte went out
    if size:
        assert seen.positions[-1] == size
    if protocol == "tus":
        assert upload.metadata == {"filename": "up.bin"}
    else:
        assert result.status == 200  # type: ignore[attr-defined]
        assert json.loads(result.body)["sha256"] == _sha(path)  # type: ignore[attr-defined]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_reset_mid_patch_continues_from_the_servers_offset(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path, protocol: Protocol
) -> None:
    size = 3 * MiB
    endpoint = _endpoint(server, protocol)
    path = _file(tmp_path, size)
    endpoint.set_faults(UploadFaults(method="PATCH", reset_after=1_000_000), times=1)
    seen = Seen(endpoint)
    with pytest.raises(NetworkError):
        await _send(client, _machine(server, protocol, size), path, seen)
    [upload] = endpoint.uploads.values()
    assert upload.offset == 1_000_000
    # The next attempt starts from what the journal would hold: URL and offset.
    [url] = seen.urls
    machine = _machine(server, protocol, size, upload_url=url, offset=seen.offsets[-1])
    await _send(client, machine, path, seen)
    assert upload.sha256() == _sha(path)
    assert endpoint.bytes_received == size  # nothing the server held was sent again
    methods = [method for method, _, _ in endpoint.requests]
    assert methods[-2:] == ["HEAD", "PATCH"]
    assert seen.positions[-1] == size


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_offset_conflict_is_recovered_by_head(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path, protocol: Protocol
) -> None:
    endpoint = _endpoint(server, protocol)
    path = _file(tmp_path, 200_000)
    endpoint.set_faults(UploadFaults(method="PATCH", status=409), times=1)
    await _send(client, _machine(server, protocol, 200_000), path, Seen(endpoint))
    [upload] = endpoint.uploads.values()
    assert upload.sha256() == _sha(path)
    methods = [method for method, _, _ in endpoint.requests]
    assert methods[-3:] == ["PATCH", "HEAD", "PATCH"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_conflicts_without_end_fail_clearly(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path, protocol: Protocol
) -> None:
    endpoint = _endpoint(server, protocol)
    path = _file(tmp_path, 1000)
    endpoint.set_faults(UploadFaults(method="PATCH", status=409))
    with pytest.raises(ResumableUploadError, match="409"):
        await _send(client, _machine(server, protocol, 1000), path, Seen(endpoint))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("status", [404, 410])
async def test_expired_upload_is_started_over(
    server: TestServer,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    protocol: Protocol,
    status: int,
) -> None:
    endpoint = _endpoint(server, protocol)
    path = _file(tmp_path, 300_000)
    endpoint.set_faults(UploadFaults(method="PATCH", status=status, forget=True), times=1)
    seen = Seen(endpoint)
    await _send(client, _machine(server, protocol, 300_000), path, seen)
    [upload] = endpoint.uploads.values()
    assert upload.sha256() == _sha(path)
    assert len(seen.urls) == 2  # a new upload URL, journaled again
    assert len(endpoint.removed) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_resuming_an_upload_the_server_dropped_starts_over(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path, protocol: Protocol
) -> None:
    endpoint = _endpoint(server, protocol)
    path = _file(tmp_path, 10_000)
    stale = server.url(endpoint.prefix + "gone")
    seen = Seen(endpoint)
    await _send(client, _machine(server, protocol, 10_000, upload_url=stale, offset=5), path, seen)
    [upload] = endpoint.uploads.values()
    assert upload.sha256() == _sha(path)
    assert seen.urls == [server.url(endpoint.prefix + upload.id)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_upload_expiring_every_time_fails_clearly(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path, protocol: Protocol
) -> None:
    endpoint = _endpoint(server, protocol)
    path = _file(tmp_path, 10_000)
    endpoint.set_faults(UploadFaults(method="PATCH", status=410, forget=True))
    with pytest.raises(UploadExpiredError, match="410") as caught:
        await _send(client, _machine(server, protocol, 10_000), path, Seen(endpoint))
    assert caught.value.status == 410
    assert caught.value.url == server.url(endpoint.prefix)


async def test_tus_checksum_is_sent_where_offered(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=("md5", "sha1"))
    path = _file(tmp_path, 100_000)
    await _send(client, _machine(server, "tus", 100_000), path, Seen(endpoint))
    [patch] = [headers for method, _, headers in endpoint.requests if method == "PATCH"]
    digest = hashlib.sha1(path.read_bytes()).digest()
    assert patch["Upload-Checksum"] == "sha1 " + base64.b64encode(digest).decode()
    assert endpoint.upload(next(iter(endpoint.uploads))).sha256() == _sha(path)


async def test_tus_checksum_is_not_sent_where_not_offered(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=())
    path = _file(tmp_path, 1000)
    await _send(client, _machine(server, "tus", 1000), path, Seen(endpoint))
    [patch] = [headers for method, _, headers in endpoint.requests if method == "PATCH"]
    assert "Upload-Checksum" not in patch


async def test_tus_checksum_mismatch_is_sent_again(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    endpoint = server.add_tus_endpoint("/tus/")
    path = _file(tmp_path, 50_000)
    endpoint.set_faults(UploadFaults(method="PATCH", status=460), times=1)
    await _send(client, _machine(server, "tus", 50_000), path, Seen(endpoint))
    methods = [method for method, _, _ in endpoint.requests]
    assert methods == ["OPTIONS", "POST", "PATCH", "HEAD", "PATCH"]
    [upload] = endpoint.uploads.values()
    assert upload.sha256() == _sha(path)


async def test_tus_checksum_refused_again_and_again_fails_clearly(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    endpoint = server.add_tus_endpoint("/tus/")
    path = _file(tmp_path, 50_000)
    endpoint.set_faults(UploadFaults(method="PATCH", status=460))
    with pytest.raises(UploadChecksumError, match="460"):
        await _send(client, _machine(server, "tus", 50_000), path, Seen(endpoint))


async def test_tus_version_mismatch_fails_clearly(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    endpoint = server.add_tus_endpoint("/tus/")
    path = _file(tmp_path, 1000)
    endpoint.set_faults(UploadFaults(method="POST", status=412), times=1)
    with pytest.raises(ResumableUploadError, match="412"):
        await _send(client, _machine(server, "tus", 1000), path, Seen(endpoint))


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_cancel_terminates_the_upload(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path, protocol: Protocol
) -> None:
    endpoint = _endpoint(server, protocol)
    size = 4 * MiB
    path = _file(tmp_path, size)
    seen = Seen(endpoint)
    endpoint.set_faults(UploadFaults(method="PATCH", hold_after=1 * MiB), times=1)
    machine = _machine(server, protocol, size)
    sending = asyncio.create_task(
        send_resumable(client, machine, path, on_upload_url=seen.on_upload_url)
    )
    await endpoint.wait_held()
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    endpoint.release()
    await server.wait_until(lambda s: s.in_flight == 0)
    [url] = seen.urls
    stored = _machine(server, protocol, size, upload_url=url)
    assert await terminate_upload(client, stored) == 204
    assert endpoint.uploads == {}
    async with client.head(url, headers=dict(stored.next_request().headers)) as answer:
        assert answer.status in {404, 410}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_offset_moved_backwards_fails_clearly(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path, protocol: Protocol
) -> None:
    size = 400_000
    endpoint = _endpoint(server, protocol)
    path = _file(tmp_path, size)
    endpoint.set_faults(UploadFaults(method="PATCH", reset_after=200_000), times=1)
    seen = Seen(endpoint)
    with pytest.raises(NetworkError):
        await _send(client, _machine(server, protocol, size), path, seen)
    # The server lost what it held: HEAD answers less than a journaled offset.
    endpoint.set_faults(UploadFaults(method="HEAD", offset_shift=-100_000))
    machine = _machine(server, protocol, size, upload_url=seen.urls[0], offset=200_000)
    with pytest.raises(ResumableUploadError, match="backwards, from 200000 to 100000") as caught:
        await _send(client, machine, path, seen)
    assert caught.value.url == server.url(endpoint.prefix)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("method", ["HEAD", "PATCH"])
async def test_offset_beyond_the_size_fails_clearly(
    server: TestServer,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    protocol: Protocol,
    method: str,
) -> None:
    size = 300_000
    # (An IETF append answers with an offset only while the upload is incomplete.)
    limit = {"max_append_size": 150_000} if protocol == "ietf" else {}
    endpoint = _endpoint(server, protocol, **limit)
    path = _file(tmp_path, size)
    endpoint.set_faults(UploadFaults(method="PATCH", reset_after=100_000), times=1)
    seen = Seen(endpoint)
    with pytest.raises(NetworkError):
        await _send(client, _machine(server, protocol, size), path, seen)
    endpoint.set_faults(UploadFaults(method=method, offset_shift=size))
    machine = _machine(server, protocol, size, upload_url=seen.urls[0], offset=100_000)
    with pytest.raises(ResumableUploadError, match="bytes"):
        await _send(client, machine, path, seen)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "location", ["ftp://127.0.0.1/up/1", "file:///etc/passwd", "http://user:pw@127.0.0.1/x"]
)
async def test_location_to_another_scheme_fails_clearly(
    server: TestServer,
    client: aiohttp.ClientSession,
    tmp_path: Path,
    protocol: Protocol,
    location: str,
) -> None:
    endpoint = _endpoint(server, protocol)
    path = _file(tmp_path, 1000)
    endpoint.set_faults(UploadFaults(method="POST", location=location))
    seen = Seen(endpoint)
    with pytest.raises(ResumableUploadError, match="upload URL") as caught:
        await _send(client, _machine(server, protocol, 1000), path, seen)
    assert "pw" not in str(caught.value)
    assert seen.urls == []
    assert not any(method == "PATCH" for method, _, _ in endpoint.requests)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_file_that_changed_size_fails_clearly(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path, protocol: Protocol
) -> None:
    endpoint = _endpoint(server, protocol)
    path = _file(tmp_path, 1000)
    with pytest.raises(LocalFileError, match="the file changed"):
        await _send(client, _machine(server, protocol, 999), path, Seen(endpoint))
    assert endpoint.requests == []


async def test_ietf_append_limit_splits_the_upload(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    endpoint = server.add_ietf_endpoint("/ietf/", max_append_size=100_000)
    path = _file(tmp_path, 250_000)
    await _send(client, _machine(server, "ietf", 250_000), path, Seen(endpoint))
    patches = [headers for method, _, headers in endpoint.requests if method == "PATCH"]
    assert [p["Upload-Complete"] for p in patches] == ["?0", "?0", "?1"]
    [upload] = endpoint.uploads.values()
    assert upload.sha256() == _sha(path)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_endpoints_advertise_their_protocol(
    server: TestServer, client: aiohttp.ClientSession, protocol: Protocol
) -> None:
    endpoint = _endpoint(server, protocol)
    request = discovery_request(server.url(endpoint.prefix))
    async with client.options(request.url, headers=dict(request.headers)) as response:
        answer = UploadResponse.of(response.status, response.headers.items())
    assert advertised_protocol(answer) == protocol


def _open_on(path: Path) -> int:
    """How many descriptors of this process are open on ``path``."""
    count = 0
    for entry in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(entry) == str(path):
                count += 1
        except OSError:
            continue
    return count


@pytest.mark.parametrize("fails", [False, True], ids=["finished", "failed"])
async def test_the_file_is_closed_when_the_call_ends(
    server: TestServer, client: aiohttp.ClientSession, tmp_path: Path, fails: bool
) -> None:
    endpoint = server.add_tus_endpoint("/tus/")
    path = _file(tmp_path, 300_000)
    if fails:
        endpoint.set_faults(UploadFaults(method="PATCH", status=500))
    try:
        await _send(client, _machine(server, "tus", 300_000), path, Seen(endpoint))
    except Exception:
        assert fails
    assert _open_on(path) == 0
