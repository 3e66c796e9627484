"""``bgtransfer up``: real processes of the console script against a loopback
server (its plain upload sink and its tus endpoint)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import console_script, json_lines

from bgtransfer.testing import Faults, TestServer, UploadFaults

pytestmark = pytest.mark.asyncio

MiB = 1024 * 1024
TIMEOUT = 90


class Ran:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "BGTRANSFER_STATE_DIR": str(tmp_path / "state")}


async def _start(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *console_script(),
        "up",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=_env(tmp_path),
    )


async def _run(tmp_path: Path, *args: str) -> Ran:
    """``bgtransfer up ARGS`` to its end (the server runs in this loop meanwhile)."""
    process = await _start(tmp_path, *args)
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def _file(tmp_path: Path, size: int) -> tuple[Path, str]:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


async def test_up_sends_a_file_byte_exact(server: TestServer, tmp_path: Path) -> None:
    path, digest = _file(tmp_path, 700_000)
    result = await _run(tmp_path, str(path), server.url("/in/data.bin"))
    assert result.returncode == 0, result.stderr
    [received] = server.uploads
    assert (received.method, received.length, received.complete) == ("PUT", 700_000, True)
    assert received.sha256 == digest
    assert "1 uploaded, 0 failed" in result.stdout
    assert result.stderr == ""


async def test_up_post_with_json_lines(server: TestServer, tmp_path: Path) -> None:
    path, digest = _file(tmp_path, 50_000)
    url = server.url("/in/form")
    result = await _run(tmp_path, "--method", "post", "--json", str(path), url)
    assert result.returncode == 0, result.stderr
    [received] = server.uploads
    assert (received.method, received.sha256) == ("POST", digest)
    records = json_lines(result.stdout)
    assert records[0] == {"event": "started", "url": url, "file": str(path)}
    assert {"event": "finished", "url": url, "file": str(path), "bytes": 50_000} in records
    assert records[-1] == {"event": "summary", "exit_status": 0, "uploaded": 1, "failed": 0}


async def test_up_exit_statuses_of_get(server: TestServer, tmp_path: Path) -> None:
    path, _ = _file(tmp_path, 1_000)
    server.set_faults("/in/refused", Faults(status=403))
    url = server.url("/in/refused")
    result = await _run(tmp_path, "--tries", "1", str(path), url)
    assert result.returncode == 8, result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"bgtransfer: {url}: ")
    result = await _run(tmp_path, str(tmp_path / "missing.bin"), url)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


async def test_a_tus_upload_stopped_by_ctrl_c_continues_without_resending(
    server: TestServer, tmp_path: Path
) -> None:
    size = 16 * MiB
    path, digest = _file(tmp_path, size)
    endpoint = server.add_tus_endpoint("/tus/", checksum_algorithms=())
    url = server.url(endpoint.prefix)
    # The server stops reading at 1 MiB: the first run cannot finish before Ctrl-C.
    endpoint.set_faults(UploadFaults(method="PATCH", hold_after=MiB), times=1)
    process = await _start(tmp_path, "--json", "--protocol", "tus", str(path), url)
    assert process.stdout is not None
    seen: list[dict[str, Any]] = []
    try:
        while not seen or seen[-1]["event"] != "progress" or seen[-1]["bytes"] == 0:
            line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
            assert line, f"the command ended early: {seen}"
            seen.append(json.loads(line))
        await asyncio.wait_for(endpoint.wait_held(), TIMEOUT)
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert process.returncode == 130, err.decode()
    assert "run the same command again to continue" in err.decode()
    endpoint.release()
    await asyncio.wait_for(server.wait_until(lambda s: s.in_flight == 0), TIMEOUT)
    [held] = endpoint.uploads.values()  # what reached the server before the stop
    assert MiB <= held.offset < size
    assert endpoint.bytes_received == held.offset
    # The same command again continues from the server's offset.
    result = await _run(tmp_path, "--json", "--protocol", "tus", str(path), url)
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert records[0]["event"] == "continued"
    assert records[-1]["exit_status"] == 0
    [upload] = endpoint.uploads.values()
    assert upload.sha256() == digest
    assert endpoint.bytes_received == size  # nothing the server held was sent again
