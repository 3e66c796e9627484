"""The final write moves the file into place, through sessions against the loopback server.

A body's last write also closes the partial file and renames it to the task's
destination, in one worker-thread call: a small file costs one hop from its
response to its destination. These tests count the hops, interrupt the step
(cancel, suspend, the session closing, an error after it) and make it fail (a
rename error, another file system).

Worker-thread calls are counted at every door into a thread: the file thread
(``threads.submit_file_io``), the event loop's ``run_in_executor`` (which
``start_blocking`` and ``run_blocking`` use), a thread of its own
(``threads.start_thread``, the pump) and ``anyio.to_thread.run_sync``.
The step is held by a ``threading.Event`` the worker call waits on; the test
learns it is held from another event the call sets, waited for in a thread,
never by sleeping.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs
import pytest

from _helpers import check_task_stream, collect, sha256_file
from bgtransfer import (
    Configuration,
    ErrorEvent,
    FinishedEvent,
    IncompleteBodyError,
    LocalFileError,
    ProtocolError,
    Session,
    TaskState,
    TransferError,
)
from bgtransfer._engine import download
from bgtransfer._engine.record import TaskRecord
from bgtransfer._engine.scheduler import Scheduler
from bgtransfer._engine.sinks import AttemptSink
from bgtransfer._io import body_writer, files, pump, threads
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

KINDS = ["ephemeral", "background"]
SMALL = 16 * 1024

# A progress checkpoint of a background session is committed by the journal's
# writer (in a worker thread) once per checkpoint_interval; a long interval keeps
# that hop, which has nothing to do with the file, out of the counts.
QUIET_JOURNAL = Configuration(checkpoint_interval=600.0)


def open_session(kind: str, state_dir: Path, config: Configuration | None = None) -> Session:
    """A background session, or an ephemeral one whose directory is under ``state_dir``."""
    identifier = "com.example.one-step" if kind == "background" else None
    return Session(identifier, state_dir=state_dir, config=config)


def other_file_system(tmp_path: Path) -> Path:
    """A new directory on another file system than ``tmp_path`` (skip if there is none)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary directory")
    return Path(tempfile.mkdtemp(dir=shm, prefix="bgtransfer-one-step-"))


# --------------------------------------------------------------------------------------
# Counting worker-thread calls
# --------------------------------------------------------------------------------------


@attrs.frozen
class Hop:
    """One call into another thread: the function's name and its arguments."""

    name: str
    args: tuple[object, ...]
    inline: bool = False  # run on the loop: no hop at all


@attrs.define
class Hops:
    """The hops made once the first response of any task arrived (its status judged)."""

    arrived: bool = False
    calls: list[Hop] = attrs.Factory(list)

    def note(
        self, func: Callable[..., object], args: tuple[object, ...], *, inline: bool = False
    ) -> None:
        if self.arrived:
            self.calls.append(Hop(getattr(func, "__name__", repr(func)), args, inline))


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Hops:
    """Every call into another thread once a response arrived, whoever makes it.

    A small body's first bytes wait at most FIRST_WRITE_DELAY for the rest; on a
    loaded machine the rest may come later, and the early write is a hop of its
    own (tested in test_body_writer.py). Here the wait is long enough for any
    small body, so the counts are about the step alone.
    """
    monkeypatch.setattr(body_writer, "FIRST_WRITE_DELAY", 60.0)
    counted = Hops()
    in_executor = asyncio.BaseEventLoop.run_in_executor
    own_thread = threads.start_thread
    file_io = threads.submit_file_io
    to_thread = anyio.to_thread.run_sync
    judge = AttemptSink.judge

    def run_in_executor(
        loop: asyncio.BaseEventLoop, executor: object, func: Callable[..., object], *args: object
    ) -> object:
        counted.note(func, args)
        return in_executor(loop, executor, func, *args)  # type: ignore[arg-type]

    def start_thread(func: Callable[..., object], *args: object, name: str) -> object:
        counted.note(func, args)
        return own_thread(func, *args, name=name)

    def submit_file_io(
        on_done: Callable[..., object],
        func: Callable[..., object],
        *args: object,
        inline: bool = False,
    ) -> None:
        counted.note(func, args, inline=inline)  # (never paused in tests: conftest.py)
        file_io(on_done, func, *args, inline=inline)

    def run_sync(func: Callable[..., object], *args: object, **kwargs: object) -> object:
        counted.note(func, args)
        return to_thread(func, *args, **kwargs)  # type: ignore[arg-type]

    def judging(self: AttemptSink, *args: object) -> object:
        counted.arrived = True
        return judge(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio.BaseEventLoop, "run_in_executor", run_in_executor)
    monkeypatch.setattr(threads, "start_thread", start_thread)
    monkeypatch.setattr(threads, "submit_file_io", submit_file_io)
    monkeypatch.setattr(body_writer, "submit_file_io", submit_file_io)
    monkeypatch.setattr(pump, "start_thread", start_thread)
    monkeypatch.setattr(anyio.to_thread, "run_sync", run_sync)
    monkeypatch.setattr(AttemptSink, "judge", judging)
    return counted


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "file-thread"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_small_file_costs_one_call_from_response_to_destination(
    monkeypatch: pytest.MonkeyPatch,
    hops: Hops,
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    *,
    kind: str,
    inline: bool,
) -> None:
    """From the response to the FinishedEvent, a small file costs one call: the
    one that opens, writes, closes and renames it, on the loop (no hop at all),
    or in the file thread when inline calls are off. No separate move. The file
    is at its destination byte-exact and private; no partial is left."""
    if not inline:
        monkeypatch.setattr(body_writer, "INLINE_BYTES", -1)
    file = server.add_file("/small.bin", size=SMALL)
    destination = out_dir / "small.bin"
    async with open_session(kind, state_dir, QUIET_JOURNAL) as session:
        task = await session.download(server.url(file.path), destination)
        events = await collect(task.events())
        calls = list(hops.calls)
        partials = list((session.directory / "partials").iterdir())

    terminal = check_task_stream(events, task.id)
    assert terminal == FinishedEvent(task_id=task.id, location=destination, total_bytes=file.size)
    assert sha256_file(destination) == file.sha256
    assert destination.stat().st_mode & 0o777 == files.finished_file_mode()
    assert [(hop.name, hop.inline) for hop in calls] == [("write_chunks", inline)], calls
    assert calls[0].args[-1] == destination  # move_to: the same call renames it
    assert partials == []
    assert os.listdir(out_dir) == ["small.bin"]


async def test_with_fsync_durability_the_move_is_a_step_of_its_own(
    hops: Hops, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """durability="fsync" keeps the classic order: the last write only closes the
    file, and the engine moves it afterwards (once, durably) with the journal
    told first."""
    file = server.add_file("/synced.bin", size=SMALL)
    destination = out_dir / "synced.bin"
    config = attrs.evolve(QUIET_JOURNAL, durability="fsync")
    async with open_session("background", state_dir, config) as session:
        task = await session.download(server.url(file.path), destination)
        events = await collect(task.events())
        calls = list(hops.calls)
        partials = list((session.directory / "partials").iterdir())

    terminal = check_task_stream(events, task.id)
    assert terminal == FinishedEvent(task_id=task.id, location=destination, total_bytes=file.size)
    assert sha256_file(destination) == file.sha256
    names = [hop.name for hop in calls]
    writes = [hop for hop in calls if hop.name == "write_chunks"]
    assert [hop.args[-1] for hop in writes] == [None]  # no move_to
    assert names.count("_move_sync") == 1, names
    assert names.index("_move_sync") > names.index("write_chunks")
    move = calls[names.index("_move_sync")]
    assert move.args[1:3] == (destination, True)  # durable
    assert partials == []


@pytest.mark.parametrize("kind", KINDS)
async def test_an_existing_destination_is_replaced_byte_exact(
    server: TestServer, state_dir: Path, out_dir: Path, kind: str
) -> None:
    """An existing, longer file at the destination is replaced by the download
    whole: the new bytes only, in a new file (the old one's content is gone, not
    overwritten in place), and nothing else is left beside it."""
    file = server.add_file("/new.bin", size=SMALL)
    destination = out_dir / "file.bin"
    old = b"old contents " * 5_000
    destination.write_bytes(old)
    old_inode = destination.stat().st_ino
    async with open_session(kind, state_dir) as session:
        task = await session.download(server.url(file.path), destination)
        result = await task.wait()
        partials = list((session.directory / "partials").iterdir())

    assert result == FinishedEvent(task_id=task.id, location=destination, total_bytes=file.size)
    assert destination.stat().st_size == file.size
    assert sha256_file(destination) == file.sha256
    assert destination.stat().st_ino != old_inode
    assert os.listdir(out_dir) == ["file.bin"]
    assert partials == []


# --------------------------------------------------------------------------------------
# Interrupting the step
# --------------------------------------------------------------------------------------


@attrs.define
class StepGate:
    """Holds the one step (a ``_write_chunks`` call with a ``move_to``) until opened."""

    entered: threading.Event = attrs.Factory(threading.Event)
    gate: threading.Event = attrs.Factory(threading.Event)

    async def wait_held(self) -> bool:
        return await anyio.to_thread.run_sync(self.entered.wait, 5)

    def open(self) -> None:
        self.gate.set()


@pytest.fixture
def step_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[StepGate]:
    held = StepGate()
    real = body_writer.write_chunks

    def gated(*args: object) -> body_writer.WriteOutcome:
        if args[-1] is not None:  # move_to: the one step
            held.entered.set()
            assert held.gate.wait(timeout=30), "the test never opened the step gate"
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(body_writer, "write_chunks", gated)
    monkeypatch.setattr(body_writer, "INLINE_BYTES", -1)  # held in a thread, not on the loop
    try:
        yield held
    finally:
        held.open()  # never leave a worker thread blocked behind a failed test


def await_after_the_fetch(monkeypatch: pytest.MonkeyPatch, then: Callable[[], object]) -> None:
    """Make the engine's fetch await ``then()`` after fetch_to_file returned.

    With today's aiohttp nothing after the last write is a checkpoint, so a
    cancellation issued during the step finds no place to arrive before the
    task has its FinishedEvent. Releasing a connection may await (aiohttp waits
    for its request writer), and a failure may be raised there: this stands in
    for that tail, so the engine's handling of a late cancel or error is tested.
    """
    real = download.fetch_to_file

    async def fetch_then(*args: object, **kwargs: object) -> object:
        plan = await real(*args, **kwargs)  # type: ignore[arg-type]
        outcome = then()
        if isinstance(outcome, Awaitable):
            await outcome
        return plan

    monkeypatch.setattr(download, "fetch_to_file", fetch_then)


@pytest.mark.parametrize("tail", ["nothing", "a checkpoint"])
@pytest.mark.parametrize("command", ["cancel", "suspend"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_cancel_or_suspend_during_the_step_comes_too_late(
    monkeypatch: pytest.MonkeyPatch,
    step_gate: StepGate,
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    *,
    kind: str,
    command: str,
    tail: str,
) -> None:
    """cancel() or suspend() issued while the last write is renaming the file into
    place is too late: the task ends with its FinishedEvent (the only terminal
    event of its stream), the file is at its destination byte-exact, and no
    partial is left; also when the cancellation is delivered after the step (at
    a checkpoint in the transfer's tail). The reverse (a CancelledEvent with the
    file in place) would tell the application the download did not happen."""
    if tail == "a checkpoint":
        await_after_the_fetch(monkeypatch, anyio.lowlevel.checkpoint)
    file = server.add_file("/late.bin", size=SMALL)
    destination = out_dir / "late.bin"
    async with open_session(kind, state_dir) as session:
        task = await session.download(server.url(file.path), destination)
        stream = task.events()
        try:
            held = await step_gate.wait_held()
            async with anyio.create_task_group() as tg:
                if command == "cancel":
                    tg.start_soon(task.cancel)  # returns once the task has ended
                else:
                    task.suspend()
                await anyio.wait_all_tasks_blocked()
                state_while_held = task.state
                step_gate.open()
        finally:
            step_gate.open()
        events = await collect(stream)
        partials = list((session.directory / "partials").iterdir())
        assert task.state is TaskState.COMPLETED

    assert held
    expected = TaskState.CANCELING if command == "cancel" else TaskState.SUSPENDED
    assert state_while_held is expected  # the command took effect while the step was held
    terminal = check_task_stream(events, task.id)
    assert terminal == FinishedEvent(task_id=task.id, location=destination, total_bytes=file.size)
    assert task.result == terminal
    assert sha256_file(destination) == file.sha256
    assert partials == []
    assert os.listdir(out_dir) == ["late.bin"]
    assert server.statistics().requests == 1


@pytest.mark.parametrize("command", ["cancel", "suspend"])
async def test_a_cancel_or_suspend_during_the_moving_commit_comes_too_late(
    monkeypatch: pytest.MonkeyPatch,
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    *,
    command: str,
) -> None:
    """A background session commits ``moving`` before the one step, once the
    engine has said where the file goes; cancel() or suspend() issued while that
    commit is awaited is too late as well: the step still runs, and the task
    ends with its FinishedEvent, the file byte-exact at its destination."""
    held = anyio.Event()
    release = anyio.Event()
    real = Scheduler._flush_for

    async def flush_for(self: Scheduler, record: TaskRecord, *, shielded: bool = False) -> None:
        if shielded and not held.is_set():  # the moving entry's commit (the first shielded one)
            held.set()
            await release.wait()
        await real(self, record, shielded=shielded)

    monkeypatch.setattr(Scheduler, "_flush_for", flush_for)
    file = server.add_file("/moving.bin", size=SMALL)
    destination = out_dir / "moving.bin"
    async with open_session("background", state_dir) as session:
        task = await session.download(server.url(file.path), destination)
        stream = task.events()
        try:
            await held.wait()
            async with anyio.create_task_group() as tg:
                if command == "cancel":
                    tg.start_soon(task.cancel)  # returns once the task has ended
                else:
                    task.suspend()
                await anyio.wait_all_tasks_blocked()
                state_while_held = task.state
                release.set()
        finally:
            release.set()
        events = await collect(stream)
        partials = list((session.directory / "partials").iterdir())

    expected = TaskState.CANCELING if command == "cancel" else TaskState.SUSPENDED
    assert state_while_held is expected  # the command took effect while the commit was held
    terminal = check_task_stream(events, task.id)
    assert terminal == FinishedEvent(task_id=task.id, location=destination, total_bytes=file.size)
    assert sha256_file(destination) == file.sha256
    assert partials == []
    assert os.listdir(out_dir) == ["moving.bin"]


def late_error(url: str, kind: str) -> TransferError:
    if kind == "transient":
        return IncompleteBodyError("the connection failed as it was released", url=url)
    return ProtocolError("a malformed trailer", url=url)


@pytest.mark.parametrize("error", ["transient", "final"])
@pytest.mark.parametrize("kind", KINDS)
async def test_an_error_after_the_step_is_moot(
    monkeypatch: pytest.MonkeyPatch,
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    *,
    kind: str,
    error: str,
) -> None:
    """A TransferError raised after the last write moved the file into place (in
    the transfer's tail) neither fails the task nor retries it: the file is in
    place, so the task ends with its FinishedEvent after one request, and no
    RetryEvent."""
    file = server.add_file("/moot.bin", size=SMALL)
    url = server.url(file.path)
    destination = out_dir / "moot.bin"

    def fail() -> None:
        raise late_error(url, error)

    await_after_the_fetch(monkeypatch, fail)
    async with open_session(kind, state_dir) as session:
        task = await session.download(url, destination)
        events = await collect(task.events())
        partials = list((session.directory / "partials").iterdir())

    terminal = check_task_stream(events, task.id)  # progress, then one terminal event
    assert terminal == FinishedEvent(task_id=task.id, location=destination, total_bytes=file.size)
    assert sha256_file(destination) == file.sha256
    assert server.statistics().requests == 1
    assert partials == []
    assert os.listdir(out_dir) == ["moot.bin"]


@pytest.mark.parametrize("tail", ["nothing", "a checkpoint"])
@pytest.mark.parametrize("kind", KINDS)
async def test_closing_the_session_during_the_step_still_finishes_the_task(
    monkeypatch: pytest.MonkeyPatch,
    step_gate: StepGate,
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    *,
    kind: str,
    tail: str,
) -> None:
    """Leaving the session's block while the step is held (an ephemeral session
    cancels its unfinished tasks, a background one stops them to continue in the
    next process): the exit waits for the step, and the task ends finished, also
    when the stop is delivered after the step. A background session's next
    process finds it finished and fetches nothing."""
    if tail == "a checkpoint":
        await_after_the_fetch(monkeypatch, anyio.lowlevel.checkpoint)
    file = server.add_file("/closing.bin", size=SMALL)
    destination = out_dir / "closing.bin"
    seen: list[tuple[TaskState, object]] = []  # (state, result) when the gate opened

    async def open_once_the_exit_waits() -> None:
        await anyio.wait_all_tasks_blocked()  # the session's exit waits for the runner
        seen.append((task.state, task.result))
        step_gate.open()

    async with anyio.create_task_group() as tg, open_session(kind, state_dir) as session:
        task = await session.download(server.url(file.path), destination)
        held = await step_gate.wait_held()
        tg.start_soon(open_once_the_exit_waits)

    assert held
    if kind == "ephemeral":
        assert seen == [(TaskState.CANCELING, None)]  # the exit's cancel came first
    else:
        assert seen == [(TaskState.RUNNING, None)]
    finished = FinishedEvent(task_id=task.id, location=destination, total_bytes=file.size)
    assert task.result == finished
    assert sha256_file(destination) == file.sha256
    assert os.listdir(out_dir) == ["closing.bin"]
    if kind == "background":
        async with open_session(kind, state_dir) as session:
            (again,) = session.tasks()
            assert again.result == finished
            assert await again.wait() == finished
            assert list((session.directory / "partials").iterdir()) == []
    assert server.statistics().requests == 1


# --------------------------------------------------------------------------------------
# The step failing
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("obstacle", ["a directory", "no parent"])
@pytest.mark.parametrize("kind", KINDS)
async def test_a_failed_rename_ends_the_task_with_a_local_file_error(
    server: TestServer, state_dir: Path, out_dir: Path, kind: str, obstacle: str
) -> None:
    """The destination became a directory, or its directory went away, while the
    body was arriving: the task ends with ErrorEvent(LocalFileError) naming the
    destination, after one request (not retried), and leaves nothing behind: no
    partial file in the session, nothing at or beside the destination."""
    file = server.add_file("/f.bin", size=SMALL)
    server.set_faults(file.path, Faults(hold_after=SMALL // 2))
    parent = out_dir / "sub"
    parent.mkdir()
    destination = parent / "f.bin"
    url = server.url(file.path)
    async with open_session(kind, state_dir) as session:
        task = await session.download(url, destination)
        stream = task.events()
        await server.wait_held(file.path)
        if obstacle == "a directory":
            destination.mkdir()
            code, cause = errno.EISDIR, "is a directory"
        else:
            parent.rmdir()
            code, cause = errno.ENOENT, "no such file or directory"
        server.release(file.path)
        events = await collect(stream)
        partials = list((session.directory / "partials").iterdir())

    terminal = check_task_stream(events, task.id)
    assert isinstance(terminal, ErrorEvent)
    error = terminal.error
    assert isinstance(error, LocalFileError)
    assert str(error) == f"{url}: cannot move the file to {destination}: {cause}"
    assert error.url == url
    assert error.errno == code
    assert error.filename == str(destination)
    assert server.statistics().requests == 1
    assert partials == []
    if obstacle == "a directory":
        assert list(destination.iterdir()) == []
        assert os.listdir(out_dir) == ["sub"]
    else:
        assert os.listdir(out_dir) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_destination_on_another_file_system_is_copied_over(
    hops: Hops, server: TestServer, state_dir: Path, tmp_path: Path, kind: str
) -> None:
    """The step's rename fails with EXDEV when the destination is on another file
    system: the file stays at the partial path and the engine copies it over (its
    own move, a second hop). The task finishes byte-exact, with no temporary copy
    beside the destination and no partial left."""
    out = other_file_system(tmp_path)
    try:
        file = server.add_file("/far.bin", size=SMALL)
        destination = out / "far.bin"
        async with open_session(kind, state_dir, QUIET_JOURNAL) as session:
            task = await session.download(server.url(file.path), destination)
            events = await collect(task.events())
            calls = list(hops.calls)
            partials = list((session.directory / "partials").iterdir())

        terminal = check_task_stream(events, task.id)
        assert terminal == FinishedEvent(
            task_id=task.id, location=destination, total_bytes=file.size
        )
        assert sha256_file(destination) == file.sha256
        assert destination.stat().st_mode & 0o777 == files.finished_file_mode()
        assert [(hop.name, hop.inline) for hop in calls] == [
            ("write_chunks", True),
            ("_move_sync", False),
        ], calls
        assert calls[0].args[-1] == destination  # the step tried first
        assert os.listdir(out) == ["far.bin"]
        assert partials == []
    finally:
        shutil.rmtree(out, ignore_errors=True)


async def test_the_end_is_committed_before_a_consumer_sees_the_finished_event(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """A consumer may move the file away as soon as it sees ``FinishedEvent``; if the
    journal still said ``moving`` then, a process killed next would find neither the
    partial nor the file and fetch it again. So the end is committed first."""
    import sqlite3  # noqa: PLC0415 - only this test reads the journal directly

    files = [server.add_file(f"/end/{i}.bin", size=20_000 + i) for i in range(6)]
    journal = state_dir / "ends" / "journal.sqlite3"

    def phase(task_id: int) -> str | None:
        connection = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            row = connection.execute("SELECT phase FROM tasks WHERE id = ?", (task_id,))
            found = row.fetchone()
            return None if found is None else str(found[0])
        finally:
            connection.close()

    async with Session("ends", state_dir=state_dir) as session:
        tasks = [
            await session.download(server.url(f.path), out_dir / f"{i}.bin")
            for i, f in enumerate(files)
        ]
        for task, file in zip(tasks[3:], files[3:], strict=True):
            result = await task.wait()
            # Ended, or already deleted after wait() acknowledged it; never "moving".
            assert phase(task.id) in ("ended", None)
            assert sha256_file(result.location) == file.sha256
        for task, file in zip(tasks[:3], files[:3], strict=True):
            async with task.events() as stream:
                async for event in stream:
                    if isinstance(event, FinishedEvent):
                        assert phase(task.id) == "ended"
                        moved = event.location.with_suffix(".mine")
                        event.location.rename(moved)  # what an application may do at once
                        assert sha256_file(moved) == file.sha256
                        break
