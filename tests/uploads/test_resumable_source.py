"""A resumable upload's source file that changes while it is sent: the task
fails with ``SourceChangedError`` before the server holds a whole upload made
of two versions, and the upload the server holds is removed (the task cannot
go on: nobody can complete it)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import pytest

from bgtransfer import Session, SourceChangedError
from bgtransfer.testing import TestServer, UploadFaults
from bgtransfer.testing._uploads import UploadEndpoint

pytestmark = pytest.mark.asyncio

Protocol = Literal["tus", "ietf"]
MiB = 1024 * 1024
SIZE = 32 * MiB
"""Far more than loopback's socket buffers hold: the client is mid-file when
the server stops reading."""


def _endpoint(server: TestServer, protocol: Protocol, checksum: bool) -> UploadEndpoint:
    if protocol == "tus":
        algorithms = ("sha1",) if checksum else ()
        return server.add_tus_endpoint("/up/", checksum_algorithms=algorithms)
    return server.add_ietf_endpoint("/up/")


def _rewrite_tail(path: Path) -> None:
    """Write new bytes at the file's end (same size) and move its modification
    time: a second version of the file, as an application saving it would."""
    with path.open("r+b") as file:
        file.seek(-MiB, os.SEEK_END)
        file.write(b"\xff" * MiB)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize(("protocol", "checksum"), [("tus", False), ("tus", True), ("ietf", False)])
async def test_a_file_written_mid_send_stops_the_upload(
    tmp_path: Path, protocol: Protocol, checksum: bool
) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(SIZE))
    first = hashlib.sha256(source.read_bytes()).hexdigest()
    async with TestServer() as server, Session() as session:
        endpoint = _endpoint(server, protocol, checksum)
        endpoint.set_faults(UploadFaults(method="PATCH", hold_after=MiB), times=1)
        task = await session.upload(server.url("/up/"), source, protocol=protocol)
        await endpoint.wait_held()
        _rewrite_tail(source)
        endpoint.release()
        with pytest.raises(SourceChangedError, match="changed") as caught:
            await task.wait()
    assert str(source) in str(caught.value)
    # The server never got the whole file: no upload of two versions exists.
    assert endpoint.bytes_received < SIZE
    assert not any(upload.complete for upload in endpoint.uploads.values())
    # The upload nobody can complete is removed from the server.
    assert endpoint.uploads == {}
    assert "DELETE" in [method for method, _path, _headers in endpoint.requests]
    assert first != hashlib.sha256(source.read_bytes()).hexdigest()


async def test_a_file_appended_to_mid_send_stops_the_upload(tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(SIZE))
    async with TestServer() as server, Session() as session:
        endpoint = _endpoint(server, "tus", checksum=False)
        endpoint.set_faults(UploadFaults(method="PATCH", hold_after=MiB), times=1)
        task = await session.upload(server.url("/up/"), source, protocol="tus")
        await endpoint.wait_held()
        with source.open("ab") as file:
            file.write(b"more")
        endpoint.release()
        # Either words are right: a write moves the modification time before
        # the size, so a read finishing during the append sees only the first.
        changed = f"size changed from {SIZE} to {SIZE + 4} bytes|modification time changed"
        with pytest.raises(SourceChangedError, match=changed):
            await task.wait()
    assert endpoint.bytes_received < SIZE
    assert endpoint.uploads == {}


async def test_a_file_replaced_mid_send_is_sent_whole_then_the_task_fails(
    tmp_path: Path,
) -> None:
    """The open file is still the one taken: it is sent whole (no mix), and the
    task fails since its path names another file now; the server keeps the
    complete upload (it is not removed: it is the file the task took)."""
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(4 * MiB))
    original = hashlib.sha256(source.read_bytes()).hexdigest()
    async with TestServer() as server, Session() as session:
        endpoint = _endpoint(server, "tus", checksum=False)
        endpoint.set_faults(UploadFaults(method="PATCH", hold_after=MiB), times=1)
        task = await session.upload(server.url("/up/"), source, protocol="tus")
        await endpoint.wait_held()
        replacement = tmp_path / "new.bin"
        replacement.write_bytes(b"another file")
        replacement.replace(source)
        endpoint.release()
        with pytest.raises(SourceChangedError, match="replaced"):
            await task.wait()
    [stored] = endpoint.uploads.values()
    assert stored.complete
    assert stored.sha256() == original
