"""Destinations and temporary files an attacker (or an unlucky user) points elsewhere.

Issue 18, items 1, 3 and 10, through real sessions against the loopback server:

- a destination inside the session's state directory (the journal, the lock file,
  ``partials/``, a partial file, a session directory, the state directory itself)
  is refused at the call, and the session's files are left exactly as they were;
- an existing destination that is not a regular file (a character device, a FIFO,
  a symbolic link) is refused at the call, and one appearing later makes the task
  fail at the move, the thing at the destination untouched;
- a symbolic link planted where the library creates a temporary file (the next
  ``partials/<id>.part``, the cross-file-system copy beside the destination) is
  never followed: the file it points to keeps its bytes;
- a destination a path cannot hold (empty, a NUL byte, a lone surrogate) is
  refused at the call by every entry point.

The devices are clones of ``/dev/null`` made in the test's own directory (the
suite runs as root); the real ``/dev/null`` is never touched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _helpers import collect, sha256_file, wait_for_bytes
from bgtransfer import (
    Configuration,
    DownloadRequest,
    DownloadTask,
    ErrorEvent,
    FinishedEvent,
    InvalidDestinationError,
    LocalFileError,
    ResumeData,
    Session,
    TaskState,
)
from bgtransfer._io import files
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

ID = "com.example.victim"
OTHER_ID = "com.example.neighbour"
CONFIG = Configuration(progress_interval=0)
NULL_DEVICE = os.makedev(1, 3)
KINDS = ["ephemeral", "background"]


def open_session(kind: str, state_dir: Path, config: Configuration = CONFIG) -> Session:
    """A background session, or an ephemeral one whose directory is under ``state_dir``."""
    return Session(ID if kind == "background" else None, state_dir=state_dir, config=config)


def make_device(path: Path) -> None:
    """A character device like ``/dev/null`` at ``path``."""
    os.mknod(path, stat.S_IFCHR | 0o600, NULL_DEVICE)


def make_fifo(path: Path) -> None:
    os.mkfifo(path, 0o600)


def is_null_device(path: Path) -> bool:
    info = os.lstat(path)
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == NULL_DEVICE


def victim_file(tmp_path: Path) -> tuple[Path, str]:
    """A file nobody may touch, and the sha256 of its bytes."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the victim's own bytes\n" * 100)
    return victim, sha256_file(victim)


async def call(
    session: Session,
    entry: str,
    url: str,
    destination: str | Path,
    resume_data: ResumeData | None,
) -> DownloadTask | list[DownloadTask]:
    """Start a download to ``destination`` through one of the three entry points
    (``download_many``: after a good request, so all-or-none shows)."""
    if entry == "download":
        return await session.download(url, destination)
    if entry == "download_many":
        return await session.download_many(
            [DownloadRequest(url), DownloadRequest(url, destination)]
        )
    assert resume_data is not None
    return await session.download_with_resume_data(resume_data, destination)


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A new directory on another file system than ``tmp_path`` (/dev/shm, a tmpfs)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary directory")
    directory = Path(tempfile.mkdtemp(dir=shm, prefix="bgtransfer-hardening-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Item 1: nothing inside the state directory; never over what is not a regular file
# --------------------------------------------------------------------------------------

STATE_TARGETS: dict[str, Callable[[Path], Path]] = {
    "the journal": lambda state: state / ID / "journal.sqlite3",
    "the lock file": lambda state: state / ID / "lock",
    "the partials directory": lambda state: state / ID / "partials",
    "a partial file": lambda state: state / ID / "partials" / "1.part",
    "a new file in partials": lambda state: state / ID / "partials" / "new.bin",
    "the session directory": lambda state: state / ID,
    "a new file in the session directory": lambda state: state / ID / "new.bin",
    "the state directory": lambda state: state,
    "a new file in the state directory": lambda state: state / "new.bin",
    "another session's journal": lambda state: state / OTHER_ID / "journal.sqlite3",
    "another session's downloads": lambda state: state / OTHER_ID / "downloads" / "x.bin",
    "the journal through a link": lambda state: state.parent / "link" / "journal.sqlite3",
    "the journal, spelt with ..": lambda state: state / ID / "partials" / ".." / "journal.sqlite3",
}


@pytest.mark.parametrize("target", list(STATE_TARGETS))
@pytest.mark.parametrize("entry", ["download", "download_many", "download_with_resume_data"])
async def test_a_destination_in_the_state_directory_is_refused_at_the_call(
    server: TestServer, state_dir: Path, out_dir: Path, target: str, entry: str
) -> None:
    file = server.add_file("/f.bin", size=200_000, seed="state")
    server.set_faults(file.path, Faults(hold_after=50_000))
    async with Session(OTHER_ID, state_dir=state_dir):
        pass  # a neighbour with a journal of its own
    (state_dir.parent / "link").symlink_to(state_dir / ID, target_is_directory=True)
    destination = STATE_TARGETS[target](state_dir)
    url = server.url(file.path)
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        # Task 1 has a partial file (partials/1.part) and stays suspended.
        held = await session.download(url, out_dir / "held.bin")
        await wait_for_bytes(held, 50_000)
        held.suspend()
        resume_data = None
        if entry == "download_with_resume_data":
            other = await session.download(url, out_dir / "other.bin")
            await wait_for_bytes(other, 50_000)
            resume_data = await other.cancel_with_resume_data()
            assert resume_data is not None
        session_files = {
            path: path.read_bytes()
            for path in (state_dir / ID / "lock", state_dir / ID / "partials" / "1.part")
        }
        neighbour = (state_dir / OTHER_ID / "journal.sqlite3").read_bytes()
        with pytest.raises(InvalidDestinationError) as refused:
            await call(session, entry, url, destination, resume_data)
        message = str(refused.value)
        assert url in message
        assert "state directory" in message
        assert [task.id for task in session.tasks()][:1] == [held.id]
        if entry == "download_many":  # all or none: the first request made no task
            assert len(session.tasks()) == 1
        for path, data in session_files.items():
            assert path.read_bytes() == data, path
        assert (state_dir / OTHER_ID / "journal.sqlite3").read_bytes() == neighbour
        if resume_data is not None:  # refused before the partial file was taken over
            resumed = await session.download_with_resume_data(resume_data, out_dir / "r.bin")
            server.release(file.path)
            assert isinstance(await resumed.wait(), FinishedEvent)
            assert sha256_file(out_dir / "r.bin") == file.sha256
    assert not (state_dir / "new.bin").exists()
    # The journal still opens, with every task; the held one finishes from its bytes.
    server.release(file.path)
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        restored = {task.id: task for task in session.tasks()}
        assert restored[held.id].state is TaskState.SUSPENDED
        restored[held.id].resume()
        assert isinstance(await restored[held.id].wait(), FinishedEvent)
    assert sha256_file(out_dir / "held.bin") == file.sha256
    async with Session(OTHER_ID, state_dir=state_dir) as neighbour_session:
        assert neighbour_session.tasks() == []


@pytest.mark.parametrize(
    "where", ["partials", "partials/x.bin", "the directory", "the directory/x.bin"]
)
async def test_an_ephemeral_session_refuses_its_own_directory(
    server: TestServer, tmp_path: Path, where: str
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    async with Session(state_dir=tmp_path / "eph", config=CONFIG) as session:
        destination = session.directory / where.removeprefix("the directory").lstrip("/")
        with pytest.raises(InvalidDestinationError, match="state directory"):
            await session.download(server.url(file.path), destination)
        assert session.tasks() == []


async def test_an_ephemeral_sessions_state_dir_may_hold_destinations(
    server: TestServer, tmp_path: Path
) -> None:
    """Only the ephemeral session's own temporary directory is off limits: its
    ``state_dir`` may be where the application's files go (same file system)."""
    file = server.add_file("/f.bin", size=10_000)
    async with Session(state_dir=tmp_path, config=CONFIG) as session:
        result = await (await session.download(server.url(file.path), tmp_path / "f.bin")).wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(tmp_path / "f.bin") == file.sha256


@pytest.mark.parametrize("kind", KINDS)
async def test_the_sessions_own_downloads_folder_stays_allowed(
    server: TestServer, state_dir: Path, kind: str
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    async with open_session(kind, state_dir) as session:
        downloads = session.directory / "downloads"
        (downloads / "sub").mkdir()
        tasks = [
            await session.download(server.url(file.path), downloads / "named.bin"),
            await session.download(server.url(file.path), downloads),
            await session.download(server.url(file.path), downloads / "sub" / "deeper.bin"),
            await session.download(server.url(file.path)),
        ]
        results = [await task.wait() for task in tasks]
    for result in results:
        assert isinstance(result, FinishedEvent)
        assert result.location.parent in (downloads, downloads / "sub")
        assert sha256_file(result.location) == file.sha256


NOT_REGULAR: dict[str, Callable[[Path, Path], None]] = {
    "a character device": lambda path, victim: make_device(path),
    "a FIFO": lambda path, victim: make_fifo(path),
    "a link to a file": lambda path, victim: path.symlink_to(victim),
    "a dangling link": lambda path, victim: path.symlink_to(path.parent / "nowhere"),
    "a link to a device": lambda path, victim: path.symlink_to("/dev/null"),
}


@pytest.mark.parametrize("what", list(NOT_REGULAR))
@pytest.mark.parametrize("kind", KINDS)
async def test_an_existing_destination_that_is_not_a_regular_file_is_refused(
    server: TestServer, state_dir: Path, tmp_path: Path, out_dir: Path, *, kind: str, what: str
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    victim, victim_sha = victim_file(tmp_path)
    destination = out_dir / "f.bin"
    NOT_REGULAR[what](destination, victim)
    before = os.lstat(destination)
    async with open_session(kind, state_dir) as session:
        with pytest.raises(InvalidDestinationError, match="not a regular file") as refused:
            await session.download(server.url(file.path), destination)
        assert str(destination) in str(refused.value)
        with pytest.raises(InvalidDestinationError, match="not a regular file"):
            await session.download_many([DownloadRequest(server.url(file.path), destination)])
        assert session.tasks() == []
    after = os.lstat(destination)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (
        before.st_mode,
        before.st_ino,
        before.st_rdev,
    )
    assert sha256_file(victim) == victim_sha
    assert [request.path for request in server.requests] == []


async def test_a_link_to_a_directory_is_still_a_directory(
    server: TestServer, tmp_path: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    link = tmp_path / "to-out"
    link.symlink_to(out_dir, target_is_directory=True)
    async with Session(config=CONFIG) as session:
        result = await (await session.download(server.url(file.path), link)).wait()
    assert isinstance(result, FinishedEvent)
    assert result.location == out_dir / "f.bin"
    assert sha256_file(out_dir / "f.bin") == file.sha256


@pytest.mark.parametrize("given", ["through a linked directory", "relative", "with dot parts"])
async def test_a_file_destination_becomes_its_real_absolute_path(
    server: TestServer,
    tmp_path: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    given: str,
) -> None:
    """A file path whose directory is a link, relative, or not normalized is
    the file in the real directory: the event names the resolved path, and the
    claim is on it (the same file named plainly is refused while the task lives)."""
    file = server.add_file("/f.bin", size=10_000)
    server.set_faults(file.path, Faults(hold_after=1_000))
    (tmp_path / "to-out").symlink_to(out_dir, target_is_directory=True)
    (out_dir / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    destination = {
        "through a linked directory": tmp_path / "to-out" / "g.bin",
        "relative": Path("to-out") / "g.bin",
        "with dot parts": Path(f"{out_dir}/./sub/../g.bin"),
    }[given]
    real = out_dir.resolve() / "g.bin"
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), destination)
        with pytest.raises(InvalidDestinationError, match="already claimed"):
            await session.download(server.url(file.path), real)
        server.release(file.path)
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert result.location == real
    assert sha256_file(real) == file.sha256
    assert sorted(p.name for p in out_dir.iterdir()) == ["g.bin", "sub"]


async def test_a_name_made_unique_skips_a_dangling_link(server: TestServer, out_dir: Path) -> None:
    file = server.add_file("/f.bin", size=10_000)
    (out_dir / "f.bin").symlink_to(out_dir / "nowhere")
    async with Session(config=CONFIG) as session:
        result = await (await session.download(server.url(file.path), out_dir)).wait()
    assert isinstance(result, FinishedEvent)
    assert result.location == out_dir / "f (1).bin"
    assert (out_dir / "f.bin").is_symlink()
    assert not (out_dir / "nowhere").exists()


MOVES = {
    # A body small enough for its last write to rename it (the one-step move).
    "one step": (CONFIG, 64 * 1024, False),
    # durability="fsync": the body is synced, then moved by move_into_place.
    "classic": (Configuration(progress_interval=0, durability="fsync"), 64 * 1024, False),
    # The destination on another file system: a copy beside it, then a rename.
    "across file systems": (CONFIG, 64 * 1024, True),
    # Large enough for the pump (its own thread), then move_into_place.
    "pump": (CONFIG, 9 * 1024 * 1024, False),
}


@pytest.mark.parametrize("appears", ["a character device", "a FIFO", "a link to a file"])
@pytest.mark.parametrize("move", list(MOVES))
@pytest.mark.parametrize("kind", KINDS)
async def test_something_not_regular_appearing_at_the_destination_fails_the_task(
    server: TestServer,
    state_dir: Path,
    tmp_path: Path,
    out_dir: Path,
    request: pytest.FixtureRequest,
    *,
    kind: str,
    move: str,
    appears: str,
) -> None:
    config, size, across = MOVES[move]
    directory = request.getfixturevalue("other_fs") if across else out_dir
    victim, victim_sha = victim_file(tmp_path)
    file = server.add_file("/f.bin", size=size, seed="appears")
    server.set_faults(file.path, Faults(hold_after=1_000))
    destination = directory / "f.bin"
    async with open_session(kind, state_dir, config) as session:
        task = await session.download(server.url(file.path), destination)
        await server.wait_held(file.path)
        NOT_REGULAR[appears](destination, victim)  # after the call, before the move
        before = os.lstat(destination)
        server.release(file.path)
        events = await collect(task.events())
    terminal = events[-1]
    assert isinstance(terminal, ErrorEvent), terminal
    assert isinstance(terminal.error, LocalFileError)
    assert str(destination) in str(terminal.error)
    assert "not a regular file" in str(terminal.error)
    after = os.lstat(destination)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (
        before.st_mode,
        before.st_ino,
        before.st_rdev,
    )
    if appears == "a character device":
        assert is_null_device(destination)
    assert sha256_file(victim) == victim_sha
    assert [p.name for p in directory.iterdir()] == ["f.bin"]  # no temporary file left


# --------------------------------------------------------------------------------------
# Item 3: temporary files never follow a planted link
# --------------------------------------------------------------------------------------

BODIES = {
    "small (one step)": (16 * 1024, None),
    "medium (file thread)": (3 * 1024 * 1024, None),
    "segmented (preallocated)": (4 * 1024 * 1024, 4),
    "large (pump)": (9 * 1024 * 1024, None),
}


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("kind", KINDS)
async def test_a_link_planted_at_the_next_partial_file_is_not_followed(
    server: TestServer,
    state_dir: Path,
    tmp_path: Path,
    out_dir: Path,
    *,
    kind: str,
    body: str,
) -> None:
    size, segments = BODIES[body]
    victim, victim_sha = victim_file(tmp_path)
    file = server.add_file("/f.bin", size=size, seed="planted")
    async with open_session(kind, state_dir) as session:
        (session.directory / "partials" / "1.part").symlink_to(victim)
        task = await session.download(server.url(file.path), out_dir / "f.bin", segments=segments)
        assert task.id == 1
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(victim) == victim_sha
    destination = out_dir / "f.bin"
    assert stat.S_ISREG(os.lstat(destination).st_mode)
    assert sha256_file(destination) == file.sha256


@pytest.mark.parametrize("segments", [None, 4])
async def test_a_link_swapped_in_for_a_suspended_partial_is_not_followed(
    server: TestServer, state_dir: Path, tmp_path: Path, out_dir: Path, segments: int | None
) -> None:
    victim, victim_sha = victim_file(tmp_path)
    file = server.add_file("/f.bin", size=4 * 1024 * 1024, seed="swapped")
    server.set_faults(file.path, Faults(hold_after=512 * 1024), times=4)
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin", segments=segments)
        await wait_for_bytes(task, 512 * 1024)
        task.suspend()
        partial = session.directory / "partials" / f"{task.id}.part"
        partial.unlink()
        partial.symlink_to(victim)
        server.release(file.path)
        task.resume()
        events = await collect(task.events())
    assert isinstance(events[-1], FinishedEvent | ErrorEvent)
    assert sha256_file(victim) == victim_sha
    destination = out_dir / "f.bin"
    if isinstance(events[-1], FinishedEvent):
        assert sha256_file(destination) == file.sha256
    else:
        assert not destination.exists()
    assert not destination.is_symlink()


def old_copy_name(partial: Path, destination: Path) -> Path:
    """Where a copy across file systems was written before: predictable."""
    tag = hashlib.sha256(str(partial).encode()).hexdigest()[:16]
    return destination.parent / f".{destination.name}.{tag}.bgtransfer-tmp"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_link_planted_at_a_predictable_copy_name_is_not_followed(
    server: TestServer, state_dir: Path, tmp_path: Path, other_fs: Path, kind: str
) -> None:
    victim, victim_sha = victim_file(tmp_path)
    file = server.add_file("/f.bin", size=64 * 1024, seed="copy")
    destination = other_fs / "f.bin"
    async with open_session(kind, state_dir) as session:
        partial = session.directory / "partials" / "1.part"
        planted = [
            old_copy_name(partial, destination),
            other_fs / ".f.bin.bgtransfer-tmp",
            other_fs / ".f.bin.0.bgtransfer-tmp",
        ]
        for link in planted:
            link.symlink_to(victim)
        result = await (await session.download(server.url(file.path), destination)).wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(victim) == victim_sha
    assert stat.S_ISREG(os.lstat(destination).st_mode)
    assert sha256_file(destination) == file.sha256
    for link in planted:  # links are left alone, never followed
        assert link.is_symlink()
        assert os.readlink(link) == str(victim)


async def test_a_copy_to_a_destination_with_a_long_name(
    server: TestServer, state_dir: Path, other_fs: Path
) -> None:
    """The temporary copy's name stays a possible one when the destination's name
    is near the limit (255 bytes)."""
    file = server.add_file("/f.bin", size=64 * 1024, seed="long")
    destination = other_fs / ("é" * 125 + ".bin")  # 254 bytes in UTF-8
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        result = await (await session.download(server.url(file.path), destination)).wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(destination) == file.sha256
    assert [p.name for p in other_fs.iterdir()] == [destination.name]


async def test_a_copy_cut_short_is_removed_by_the_recovering_move(
    tmp_path: Path, other_fs: Path
) -> None:
    """After a crash during a copy across file systems, the next process moves the
    partial file again (``recovering``): copies of it cut short are removed by
    their name's prefix, regular files only; a link by such a name is left alone
    and never followed."""
    victim, victim_sha = victim_file(tmp_path)
    partial = tmp_path / "7.part"
    partial.write_bytes(b"the whole body" * 1000)
    destination = other_fs / "f.bin"
    tag = hashlib.sha256(str(partial).encode()).hexdigest()[:16]
    leftover = other_fs / f".f.bin.{tag}.5f3a9c0e1d2b4a68.bgtransfer-tmp"
    leftover.write_bytes(b"half a copy")
    planted = other_fs / f".f.bin.{tag}.0000000000000000.bgtransfer-tmp"
    planted.symlink_to(victim)
    unrelated = other_fs / ".f.bin.0123456789abcdef.5f3a9c0e1d2b4a68.bgtransfer-tmp"
    unrelated.write_bytes(b"another partial's copy")
    await files.move_into_place(partial, destination, recovering=True)
    assert destination.read_bytes() == b"the whole body" * 1000
    assert not partial.exists()
    assert not leftover.exists()
    assert planted.is_symlink()
    assert sha256_file(victim) == victim_sha
    assert unrelated.read_bytes() == b"another partial's copy"


@pytest.mark.parametrize("kind", KINDS)
async def test_the_state_directories_refuse_links_and_keep_their_mode(
    state_dir: Path, tmp_path: Path, kind: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    os.chmod(elsewhere, 0o755)
    state_dir.mkdir()
    if kind == "background":
        (state_dir / ID).mkdir(mode=0o700)
        (state_dir / ID / "partials").symlink_to(elsewhere, target_is_directory=True)
    else:
        state_dir.rmdir()
        state_dir.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OSError, match="symbolic link"):
        async with open_session(kind, state_dir):
            pass
    assert stat.S_IMODE(os.stat(elsewhere).st_mode) == 0o755
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_directory_of_another_user_is_refused(state_dir: Path, kind: str) -> None:
    # A background session makes state_dir/<identifier>; an ephemeral one, state_dir.
    made = state_dir / ID if kind == "background" else state_dir
    made.mkdir(parents=True, mode=0o700)
    os.chown(made, 12345, 12345)
    with pytest.raises(OSError, match="owned by user 12345"):
        async with open_session(kind, state_dir):
            pass
    assert list(made.iterdir()) == []
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


async def test_a_link_at_the_lock_file_is_not_followed(state_dir: Path, tmp_path: Path) -> None:
    victim, victim_sha = victim_file(tmp_path)
    (state_dir / ID).mkdir(parents=True, mode=0o700)
    (state_dir / ID / "lock").symlink_to(victim)
    mode = stat.S_IMODE(victim.stat().st_mode)
    with pytest.raises(OSError, match="symbolic link"):
        async with Session(ID, state_dir=state_dir):
            pass
    assert sha256_file(victim) == victim_sha
    assert stat.S_IMODE(victim.stat().st_mode) == mode


# --------------------------------------------------------------------------------------
# Item 10: values a path cannot hold are refused at the call
# --------------------------------------------------------------------------------------

BAD_PATHS: dict[str, Callable[[Path], str | Path]] = {
    "empty": lambda out: "",
    "a NUL byte in the name": lambda out: str(out / "a\0b.bin"),
    "a NUL byte in a directory": lambda out: out / "a\0b" / "f.bin",
    "a lone surrogate": lambda out: str(out / "a\ud800b.bin"),
    "a name too long": lambda out: out / ("x" * 300 + ".bin"),
}


@pytest.mark.parametrize("bad", list(BAD_PATHS))
@pytest.mark.parametrize("entry", ["download", "download_many", "download_with_resume_data"])
async def test_a_destination_a_path_cannot_hold_is_refused_at_the_call(
    server: TestServer, state_dir: Path, out_dir: Path, entry: str, bad: str
) -> None:
    file = server.add_file("/f.bin", size=200_000, seed="bad")
    server.set_faults(file.path, Faults(hold_after=50_000), times=1)
    destination = BAD_PATHS[bad](out_dir)
    url = server.url(file.path)
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        resume_data = None
        if entry == "download_with_resume_data":
            task = await session.download(url, out_dir / "first.bin")
            await wait_for_bytes(task, 50_000)
            resume_data = await task.cancel_with_resume_data()
            assert resume_data is not None
        before = len(session.tasks())
        with pytest.raises(InvalidDestinationError) as refused:
            await call(session, entry, url, destination, resume_data)
        assert url in str(refused.value)
        assert len(session.tasks()) == before
        if resume_data is not None:  # still usable: nothing was taken over
            resumed = await session.download_with_resume_data(resume_data, out_dir / "r.bin")
            assert isinstance(await resumed.wait(), FinishedEvent)
            assert sha256_file(out_dir / "r.bin") == file.sha256
    # Reopened: the journal holds nothing of the refused call.
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        assert all(task.state is TaskState.COMPLETED for task in session.tasks())
    assert sorted(p.name for p in out_dir.iterdir()) == (
        ["r.bin"] if entry == "download_with_resume_data" else []
    )
