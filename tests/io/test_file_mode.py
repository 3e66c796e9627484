"""The mode of a finished file: what a new file gets under the process umask.

A partial file is private (0600) while it is in ``partials/``; the move into
place gives it ``0o666 & ~umask`` (0644 under umask 022), as curl, wget and
aria2c give a file they create. Every way into place is checked: the one-step
move of a small body (written on the loop, or by the file thread after a first
write), a large body (the pump, then a rename), a chunked body, a segmented
download, a move to another file system (a copy) and a destination replaced.

The umask is set for the test (and restored), and the library's reading of it,
made once per process, is forgotten before and after, so each test sees its own.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import sha256_file, wait_for_bytes
from bgtransfer import Configuration, FinishedEvent, Session
from bgtransfer._io import body_writer, files, transfer
from bgtransfer.testing import Faults, TestServer

UMASKS = {0o022: 0o644, 0o077: 0o600, 0o027: 0o640}
KINDS = ["ephemeral", "background"]


@pytest.fixture(params=sorted(UMASKS), ids=lambda umask: f"umask{umask:03o}")
def umask(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The process umask for the test; the library reads it afresh."""
    monkeypatch.setattr(files, "_finished_mode", None)
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def open_session(kind: str, state_dir: Path, config: Configuration | None = None) -> Session:
    identifier = "com.example.mode" if kind == "background" else None
    return Session(identifier, state_dir=state_dir, config=config)


def other_file_system(tmp_path: Path) -> Path:
    """A new directory on another file system than ``tmp_path`` (skip if there is none)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary directory")
    return Path(tempfile.mkdtemp(dir=shm, prefix="bgtransfer-mode-"))


def only_partial(session: Session) -> Path:
    (partial,) = (session.directory / "partials").iterdir()
    return partial


async def held_download(
    server: TestServer,
    session: Session,
    destination: Path,
    *,
    size: int,
    hold_after: int,
    faults: dict[str, Any] | None = None,
    **download: Any,
) -> FinishedEvent:
    """Download ``size`` bytes to ``destination``, held after ``hold_after``
    bytes: meanwhile the partial file is private; afterwards the file is whole."""
    file = server.add_file("/f.bin", size=size)
    server.set_faults(file.path, Faults(hold_after=hold_after, **(faults or {})))
    task = await session.download(server.url(file.path), destination, **download)
    await wait_for_bytes(task, 1)  # the partial file is there
    assert mode_of(only_partial(session)) == 0o600
    assert not destination.exists()
    server.release(file.path)
    result = await task.wait()
    assert isinstance(result, FinishedEvent), result
    assert sha256_file(destination) == file.sha256
    assert list((session.directory / "partials").iterdir()) == []
    return result


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_small_file_in_one_step(
    kind: str, umask: int, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/small.bin", size=16 * 1024)
    async with open_session(kind, state_dir) as session:
        task = await session.download(server.url(file.path), out_dir / "small.bin")
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "small.bin") == file.sha256
    assert mode_of(out_dir / "small.bin") == UMASKS[umask]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_small_file_held_after_its_first_write(
    kind: str, umask: int, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """The file is open (by the first write) when the last write closes and moves it."""
    async with open_session(kind, state_dir) as session:
        await held_download(server, session, out_dir / "f.bin", size=40 * 1024, hold_after=1000)
    assert mode_of(out_dir / "f.bin") == UMASKS[umask]


@pytest.mark.asyncio
async def test_large_file_through_the_pump(
    umask: int,
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pumped = []
    real = transfer.pump_body

    async def counting(*args: Any) -> Any:
        pumped.append(1)
        return await real(*args)

    monkeypatch.setattr(transfer, "pump_body", counting)
    async with open_session("background", state_dir) as session:
        await held_download(
            server, session, out_dir / "big.bin", size=9 * 1024 * 1024, hold_after=1024 * 1024
        )
    assert pumped == [1]
    assert mode_of(out_dir / "big.bin") == UMASKS[umask]


@pytest.mark.asyncio
async def test_chunked_body_through_the_file_thread(
    umask: int, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    async with open_session("ephemeral", state_dir) as session:
        await held_download(
            server,
            session,
            out_dir / "c.bin",
            size=1024 * 1024,
            hold_after=300_000,
            faults={"chunked": True},
        )
    assert mode_of(out_dir / "c.bin") == UMASKS[umask]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_segmented_download(
    kind: str, umask: int, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    async with open_session(kind, state_dir) as session:
        await held_download(
            server, session, out_dir / "s.bin", size=4 * 1024 * 1024, hold_after=100_000, segments=4
        )
    assert mode_of(out_dir / "s.bin") == UMASKS[umask]


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [16 * 1024, 9 * 1024 * 1024], ids=["small", "large"])
async def test_move_to_another_file_system(
    size: int, umask: int, server: TestServer, state_dir: Path, tmp_path: Path
) -> None:
    other = other_file_system(tmp_path)
    try:
        async with open_session("background", state_dir) as session:
            await held_download(
                server, session, other / "x.bin", size=size, hold_after=min(size // 2, 100_000)
            )
        assert mode_of(other / "x.bin") == UMASKS[umask]
        assert sorted(os.listdir(other)) == ["x.bin"]  # no copy left behind
    finally:
        shutil.rmtree(other)


@pytest.mark.asyncio
@pytest.mark.parametrize("old_mode", [0o600, 0o755])
@pytest.mark.parametrize("size", [16 * 1024, 9 * 1024 * 1024], ids=["small", "large"])
async def test_a_replaced_file_gets_the_mode_of_a_new_one(
    *, size: int, old_mode: int, umask: int, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """The new file replaces the old one (a rename), so it has a new file's mode,
    not the old file's (as ``mv``; unlike ``curl -o``, which writes into it)."""
    destination = out_dir / "r.bin"
    destination.write_bytes(b"old")
    destination.chmod(old_mode)
    file = server.add_file("/r.bin", size=size)
    async with open_session("ephemeral", state_dir) as session:
        task = await session.download(server.url(file.path), destination)
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(destination) == file.sha256
    assert mode_of(destination) == UMASKS[umask]


# -- reading the umask ----------------------------------------------------------------------


def test_umask_read_from_proc_leaves_it_unchanged(umask: int) -> None:
    if not Path(files._PROC_STATUS).exists():
        pytest.skip("no /proc/self/status here")
    assert files.finished_file_mode() == UMASKS[umask]
    assert os.umask(umask) == umask  # (reads and keeps it)


def test_umask_read_without_proc_restores_it(
    umask: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(files, "_PROC_STATUS", str(tmp_path / "no-proc"))
    assert files.finished_file_mode() == UMASKS[umask]
    assert os.umask(umask) == umask


def test_umask_is_read_once(umask: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert files.finished_file_mode() == UMASKS[umask]
    os.umask(0o000)  # restored by the fixture
    assert files.finished_file_mode() == UMASKS[umask]


def counted_fchmods(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The modes of every ``os.fchmod`` from here on."""
    modes: list[int] = []
    real = os.fchmod

    def fchmod(fd: int, mode: int) -> None:
        modes.append(mode)
        real(fd, mode)

    monkeypatch.setattr(os, "fchmod", fchmod)
    return modes


def test_a_new_partial_file_is_private_with_no_fchmod(
    umask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the usual umasks (which leave the owner's bits alone) the exclusive
    create's 0600 is the mode: no ``fchmod`` per file."""
    modes = counted_fchmods(monkeypatch)
    os.close(files.create_private(tmp_path / "1.part"))
    assert mode_of(tmp_path / "1.part") == 0o600
    assert modes == []


@pytest.mark.parametrize("strict_umask", [0o277, 0o477, 0o777])
def test_a_umask_that_takes_the_owners_bits_still_gives_a_private_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strict_umask: int
) -> None:
    monkeypatch.setattr(files, "_finished_mode", None)
    modes = counted_fchmods(monkeypatch)
    old = os.umask(strict_umask)
    try:
        fd = files.create_private(tmp_path / "1.part")
        os.write(fd, b"written through the descriptor")
        os.close(fd)
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "1.part") == 0o600
    assert modes == [0o600]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_small_file_costs_one_fchmod(
    umask: int,
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    kind: str,
) -> None:
    """The finished file's mode is the one ``fchmod`` of a small download; the
    partial file was private from its creation."""
    file = server.add_file("/f.bin", size=16 * 1024)
    async with open_session(kind, state_dir) as session:
        modes = counted_fchmods(monkeypatch)
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        result = await task.wait()
    assert isinstance(result, FinishedEvent), result
    assert sha256_file(out_dir / "f.bin") == file.sha256
    assert mode_of(out_dir / "f.bin") == UMASKS[umask]
    assert modes == [UMASKS[umask]]


# -- the moves themselves -------------------------------------------------------------------


def private_partial(tmp_path: Path, data: bytes = b"body") -> Path:
    partials = files.make_private_dir(tmp_path / "partials")
    partial = partials / "1.part"
    fd = files.create_private(partial)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return partial


@pytest.mark.asyncio
@pytest.mark.parametrize("recovering", [False, True])
async def test_recovering_move_to_another_file_system(
    recovering: bool, umask: int, tmp_path: Path
) -> None:
    """The move a later process makes of a body that was whole (``recovering``),
    and a copy to another file system: the copy gets the mode before its rename."""
    other = other_file_system(tmp_path)
    try:
        partial = private_partial(tmp_path)
        await files.move_into_place(partial, other / "m.bin", recovering=recovering)
        assert (other / "m.bin").read_bytes() == b"body"
        assert mode_of(other / "m.bin") == UMASKS[umask]
        assert not partial.exists()
        assert os.listdir(other) == ["m.bin"]
    finally:
        shutil.rmtree(other)


def test_a_failed_move_leaves_the_partial_file_private(umask: int, tmp_path: Path) -> None:
    partial = private_partial(tmp_path)
    obstacle = tmp_path / "dir"
    (obstacle / "inside").mkdir(parents=True)  # a non-empty directory: the rename fails
    with pytest.raises(OSError, match=r"directory|not empty"):
        files._move_sync(partial, obstacle, False, False)
    assert mode_of(partial) == 0o600
    assert partial.read_bytes() == b"body"


def test_a_failed_one_step_move_leaves_the_partial_file_private(umask: int, tmp_path: Path) -> None:
    partial = files.make_private_dir(tmp_path / "partials") / "1.part"
    obstacle = tmp_path / "dir"
    (obstacle / "inside").mkdir(parents=True)
    plan = transfer.BodyPlan(offset=0, length=4)
    outcome = body_writer.write_chunks(-1, partial, plan, [b"body"], 0, True, obstacle)
    assert outcome.error is not None
    assert not outcome.moved
    assert mode_of(partial) == 0o600
    assert partial.read_bytes() == b"body"


def test_a_one_step_move_sets_the_mode_before_the_rename(umask: int, tmp_path: Path) -> None:
    partial = files.make_private_dir(tmp_path / "partials") / "1.part"
    plan = transfer.BodyPlan(offset=0, length=4)
    outcome = body_writer.write_chunks(-1, partial, plan, [b"body"], 0, True, tmp_path / "d")
    assert outcome.moved
    assert mode_of(tmp_path / "d") == UMASKS[umask]
