"""An upload whose process is SIGKILLed part way continues, in another process,
from the offset the server holds, without sending again what it holds."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp
import pytest

from _helpers import LINE_TIMEOUT, child
from bgtransfer._core.resumable_upload import IetfUpload
from bgtransfer._core.tus import TusUpload
from bgtransfer._io.resumable import send_resumable
from bgtransfer.testing import TestServer, UploadFaults

pytestmark = pytest.mark.asyncio

CHILD = Path(__file__).with_name("_upload_child.py")
MiB = 1024 * 1024


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
async def test_sigkill_mid_upload_continues_from_the_servers_offset(
    server: TestServer, tmp_path: Path, protocol: str
) -> None:
    size = 16 * MiB
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(size))
    if protocol == "tus":
        endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=())
    else:
        endpoint = server.add_ietf_endpoint("/ietf/")
    args = {
        "protocol": protocol,
        "endpoint": server.url(endpoint.prefix),
        "path": str(path),
        "size": size,
        "signal_at": 4 * MiB,
    }
    # The server stops reading at 4 MiB: the child cannot finish before the kill.
    endpoint.set_faults(UploadFaults(method="PATCH", hold_after=4 * MiB), times=1)
    async with child(CHILD, args, tmp_path / "child.stderr") as running:
        await running.wait_line(lambda line: "sent" in line)
        await asyncio.wait_for(endpoint.wait_held(), LINE_TIMEOUT)
        lines = await running.killed()
    # The dead child's request reads what reached the server, then ends.
    endpoint.release()
    await asyncio.wait_for(server.wait_until(lambda s: s.in_flight == 0), LINE_TIMEOUT)
    [upload_url] = [line["upload_url"] for line in lines if "upload_url" in line]
    # What a journal would hold: the URL (the offset is asked for again).
    if protocol == "tus":
        machine: TusUpload | IetfUpload = TusUpload.start(
            args["endpoint"], size, upload_url=upload_url
        )  # type: ignore[arg-type]
    else:
        machine = IetfUpload.start(args["endpoint"], size, upload_url=upload_url)  # type: ignore[arg-type]
    positions: list[int] = []
    async with aiohttp.ClientSession() as client:
        await send_resumable(client, machine, path, on_progress=positions.append)
    [upload] = endpoint.uploads.values()
    assert upload.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
    held = positions[0]  # the offset HEAD answered in the new process
    assert 4 * MiB <= held < size
    assert endpoint.bytes_received == size  # nothing the server held was sent again
