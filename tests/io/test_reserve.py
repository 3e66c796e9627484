"""Disk blocks reserved before a large body is written (``files.reserve_blocks``)."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from _helpers import sha256_file
from bgtransfer import Configuration, LocalFileError, RetryPolicy, Session
from bgtransfer._io import files, pump
from bgtransfer.testing import TestServer

MiB = 1024 * 1024
NO_RETRY = Configuration(retry=RetryPolicy(max_attempts=1))

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="fallocate(2) is Linux's")


@linux_only
def test_reserve_allocates_blocks_and_keeps_the_size(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    fd = os.open(path, os.O_WRONLY)
    try:
        files.reserve_blocks(fd, 3, 8 * MiB)
        stat = os.fstat(fd)
    finally:
        os.close(fd)
    assert stat.st_size == 3  # reattaching trusts the size: only written bytes count
    assert stat.st_blocks * 512 >= 8 * MiB
    assert path.read_bytes() == b"abc"


def test_reserve_skips_short_bodies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int, int]] = []
    monkeypatch.setattr(files, "_fallocate", lambda: lambda *args: calls.append(args) or 0)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        files.reserve_blocks(fd, 0, files.RESERVE_MIN_BYTES - 1)
        assert calls == []
        files.reserve_blocks(fd, 5, files.RESERVE_MIN_BYTES)
        assert calls == [(fd, 1, 5, files.RESERVE_MIN_BYTES)]  # FALLOC_FL_KEEP_SIZE
    finally:
        os.close(fd)


@linux_only
def test_reserve_beyond_what_the_file_system_allows_raises(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError, match=r"too large|space") as raised:
            files.reserve_blocks(fd, 0, 1 << 62)
    finally:
        os.close(fd)
    assert raised.value.errno in (errno.EFBIG, errno.ENOSPC)
    assert os.stat(tmp_path / "f").st_size == 0


def failing_fallocate(code: int) -> Callable[[], Callable[..., int]]:
    def fallocate(*_args: object) -> int:
        ctypes.set_errno(code)
        return -1

    return lambda: fallocate


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["aiohttp", "pump"])
async def test_no_space_for_the_body_fails_before_writing_and_leaves_nothing(
    server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    file = server.add_file("/big.bin", size=2 * MiB)
    pumped: list[pump.PumpJob] = []
    real_pump = pump._pump

    def counting(job: pump.PumpJob) -> object:
        pumped.append(job)
        return real_pump(job)

    monkeypatch.setattr(pump, "_pump", counting)
    if path == "pump":
        monkeypatch.setattr(pump, "PUMP_MIN_BYTES", MiB)
    monkeypatch.setattr(files, "_fallocate", failing_fallocate(errno.ENOSPC))
    async with Session(config=NO_RETRY) as session:
        task = await session.download(server.url(file.path), out_dir / "big.bin")
        with pytest.raises(LocalFileError) as raised:
            await task.wait()
        partials = list(session.directory.glob("partials/*"))
    error = raised.value
    assert error.errno == errno.ENOSPC
    assert str(error).startswith(server.url(file.path))
    assert "cannot reserve space for" in str(error)
    assert "no space left on device" in str(error)
    assert not (out_dir / "big.bin").exists()
    assert partials == []
    assert len(pumped) == (1 if path == "pump" else 0)


@pytest.mark.asyncio
async def test_a_file_system_without_fallocate_still_downloads(
    server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = server.add_file("/big.bin", size=2 * MiB + 17)
    monkeypatch.setattr(files, "_fallocate", failing_fallocate(errno.EOPNOTSUPP))
    async with Session(config=NO_RETRY) as session:
        task = await session.download(server.url(file.path), out_dir / "big.bin")
        await task.wait()
    assert sha256_file(out_dir / "big.bin") == file.sha256


@pytest.mark.asyncio
async def test_no_space_for_a_segmented_file_fails_with_a_clear_error_and_leaves_nothing(
    server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partial file of a segmented download is sized to the whole file and its
    blocks reserved before the other segments start; a disk that cannot hold it
    fails the task at once with ``LocalFileError`` (it used to be ignored, and the
    download failed later, on a write, or filled the disk)."""
    file = server.add_file("/seg.bin", size=4 * MiB)
    monkeypatch.setattr(files, "_fallocate", failing_fallocate(errno.ENOSPC))
    async with Session(config=NO_RETRY) as session:
        task = await session.download(server.url(file.path), out_dir / "seg.bin", segments=4)
        with pytest.raises(LocalFileError) as raised:
            await task.wait()
        partials = list(session.directory.glob("partials/*"))
    error = raised.value
    assert error.errno == errno.ENOSPC
    assert str(error).startswith(f"{server.url(file.path)}: cannot reserve space for ")
    assert "no space left on device" in str(error)
    assert not (out_dir / "seg.bin").exists()
    assert partials == []
    ranges = [r.headers.get("Range") for r in server.requests if r.path == file.path]
    assert ranges == [None], "segments were requested for a file that has no room"


@pytest.mark.asyncio
async def test_a_segmented_file_on_a_file_system_without_fallocate_still_downloads(
    server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = server.add_file("/seg.bin", size=4 * MiB + 3)
    monkeypatch.setattr(files, "_fallocate", failing_fallocate(errno.EOPNOTSUPP))
    async with Session(config=NO_RETRY) as session:
        task = await session.download(server.url(file.path), out_dir / "seg.bin", segments=4)
        await task.wait()
    assert sha256_file(out_dir / "seg.bin") == file.sha256
    ranges = [r.headers.get("Range") for r in server.requests if r.path == file.path]
    assert len(ranges) == 4, ranges
