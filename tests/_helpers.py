"""Helpers shared by the tests that drive sessions."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import random
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bgtransfer import (
    CancelledEvent,
    DownloadTask,
    ErrorEvent,
    FinishedEvent,
    ProgressEvent,
    ResumeData,
    ResumedEvent,
    RetryEvent,
    TaskEvent,
)
from bgtransfer._core.resume_data import sign
from bgtransfer._daemon import connection as client
from bgtransfer._daemon.attachment import Attachment
from bgtransfer._daemon.control import _lock_free, daemon_status
from bgtransfer._io.resume_key import load_key

PROC_FDS = Path("/proc/self/fd")
EXIT_TIMEOUT = 30.0  # seconds a process may take to exit once told (or killed)
LINE_TIMEOUT = 60.0  # seconds a child process may stay silent before the test fails


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seeded_bytes(size: int, seed: str) -> bytes:
    """``size`` pseudo-random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def open_fds(pid: int | None = None) -> frozenset[tuple[str, str]]:
    """The open file descriptors of this process (or of process ``pid``), each
    as its number and what it points to (``pipe:[inode]``, a path...): empty
    without /proc. Compared with :func:`fds_opened_since`, not by count:
    descriptors another test left for the collector may close meanwhile, and a
    number freed so and taken again points elsewhere."""
    directory = PROC_FDS if pid is None else Path(f"/proc/{pid}/fd")
    if not directory.is_dir():
        return frozenset()
    found = set()
    for fd in os.listdir(directory):
        with contextlib.suppress(FileNotFoundError):  # (closed since the listing)
            found.add((fd, os.readlink(directory / fd)))
    return frozenset(found)


def fds_opened_since(before: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """The descriptors open now that were not open at ``before`` (:func:`open_fds`)."""
    return open_fds() - before


async def collect(stream: AsyncIterator[TaskEvent]) -> list[TaskEvent]:
    """Every event of a stream until it ends."""
    return [event async for event in stream]


def check_task_stream(events: Sequence[TaskEvent], task_id: int) -> TaskEvent:
    """Assert the invariants of one task's stream; return its terminal event.

    Progress events only, with non-decreasing totals whose deltas add up, then
    exactly one terminal event, last.
    """
    assert events, "a task stream must not be empty"
    assert all(event.task_id == task_id for event in events)
    *progress, terminal = events
    assert isinstance(terminal, FinishedEvent | ErrorEvent | CancelledEvent), terminal
    assert all(isinstance(event, ProgressEvent) for event in progress), progress
    running = 0
    previous = 0
    for event in progress:
        assert isinstance(event, ProgressEvent)
        running += event.bytes_written
        assert event.total_bytes_written == running
        assert event.total_bytes_written >= previous
        previous = event.total_bytes_written
    if isinstance(terminal, FinishedEvent):
        assert previous == terminal.total_bytes
    return terminal


def check_resumable_stream(events: Sequence[TaskEvent], task_id: int) -> TaskEvent:
    """Like :func:`check_task_stream`, for tasks that retry or resume.

    A ``ResumedEvent`` sets the running total to its offset (0: a fresh start);
    progress deltas add up from there; ``RetryEvent``s may come between attempts;
    exactly one terminal event, last.
    """
    assert events, "a task stream must not be empty"
    assert all(event.task_id == task_id for event in events)
    *body, terminal = events
    assert isinstance(terminal, FinishedEvent | ErrorEvent | CancelledEvent), terminal
    running = None  # unknown until the first progress or resumed event
    for event in body:
        if isinstance(event, ResumedEvent):
            running = event.offset
        elif isinstance(event, ProgressEvent):
            running = (running or 0) + event.bytes_written
            assert event.total_bytes_written == running, (event, running)
        else:
            assert isinstance(event, RetryEvent), event
    if isinstance(terminal, FinishedEvent) and running is not None:
        assert running == terminal.total_bytes
    return terminal


async def wait_for_bytes(task: DownloadTask, count: int) -> None:
    """Return once the task has written at least ``count`` bytes (event-driven)."""
    async with task.events() as stream:
        async for event in stream:
            if isinstance(event, ProgressEvent) and event.total_bytes_written >= count:
                return
    raise AssertionError(f"task {task.id} ended before writing {count} bytes")


def planted_partial(state_dir: Path, name: str = "900.part") -> Path:
    """Where a partial file of an earlier session of ``state_dir`` would be (its
    directory made): resume data must name a file there."""
    directory = state_dir / "earlier" / "partials"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def signed(state_dir: Path, data: ResumeData) -> ResumeData:
    """``data`` signed with ``state_dir``'s key, as a session there would hand it out."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return sign(data, load_key(state_dir))


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon serving ``state_dir`` (from its lock file), if one runs."""
    try:
        fd = os.open(state_dir / "daemon.lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 64).decode().strip()
        return int(text) if text else None
    finally:
        os.close(fd)
    return None


def kill_daemon(state_dir: Path) -> None:
    """SIGKILL the daemon serving ``state_dir``, if any, and reap the daemons
    this process launched."""
    pid = daemon_pid(state_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for child in list(client._children):
        if child.pid == pid:  # killed just now: reaped at once
            with contextlib.suppress(Exception):
                child.wait(timeout=10)
            client._children.remove(child)
        elif child.poll() is not None:  # one that exited by itself ("already running")
            client._children.remove(child)
        # (a daemon of another state dir still running is left to its own test)


def kill_daemon_at_post(
    monkeypatch: pytest.MonkeyPatch, state_dir: Path, path: str, *, answer_lost: bool
) -> list[str]:
    """The daemon client's first POST of ``path`` SIGKILLs the daemon: after the
    daemon made what it asked for (``answer_lost``: its answer never comes) or
    before it reached it; the client sees the connection dropped. The list
    returned holds ``path`` once the kill happened."""
    post = Attachment.post
    killed: list[str] = []

    async def dying(self: Attachment, posted: str, body: dict[str, Any] | None) -> Any:
        if posted != path or killed:
            return await post(self, posted, body)
        killed.append(posted)
        if answer_lost:
            await post(self, posted, body)  # made, and journaled: its answer is lost
        kill_daemon(state_dir)
        raise aiohttp.ServerDisconnectedError()

    monkeypatch.setattr(Attachment, "post", dying)
    return killed


async def wait_exited(pid: int) -> None:
    """Until process ``pid`` (a child or not) has ended: its pidfd turns readable
    (no polling), within ``EXIT_TIMEOUT``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        async with asyncio.timeout(EXIT_TIMEOUT):
            await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def wait_daemon_gone(state_dir: Path) -> None:
    """Until the daemon holding the state dir's lock has exited."""
    pid = daemon_pid(state_dir)
    if pid is not None:
        await wait_exited(pid)
    assert _lock_free(state_dir)


class Child:
    """A real child process running a test script: JSON arguments in ``argv[1]``,
    one JSON object per line on stdout (read on demand), stderr kept in a file
    for the failure message. The crash tests synchronise on its lines, never on
    sleeps."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, script: Path, args: dict[str, Any], stderr: Path) -> Child:
        with stderr.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                json.dumps(args),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        return cls(process, stderr)

    def describe(self) -> str:
        text = "\n".join(json.dumps(line) for line in self.lines)
        return f"rc {self.process.returncode}\n{text}\n{self.stderr.read_text(errors='replace')}"

    async def wait_line(
        self, predicate: Callable[[dict[str, Any]], bool] = lambda line: True
    ) -> dict[str, Any]:
        """The next line for which ``predicate`` is true (every line read is kept)."""
        assert self.process.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.process.stdout.readline(), LINE_TIMEOUT)
            assert raw, f"the child ended first:\n{self.describe()}"
            line = json.loads(raw)
            self.lines.append(line)
            if predicate(line):
                return line

    def kill(self) -> None:
        """SIGKILL the child unless it is known to have exited.

        Not ``process.kill()``: ``Popen.send_signal`` polls first, and that reaps a
        child that just died under asyncio's child watcher, which then reports 255
        instead of the real status. The watcher is the only one to reap, and the pid
        is not reused before it has (a zombie keeps it), so ``os.kill`` is safe
        until ``returncode`` is set."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    async def finish(self) -> int:
        """Its exit status, once it has exited; the lines it printed last are kept."""
        assert self.process.stdout is not None
        rest = await asyncio.wait_for(self.process.stdout.read(), LINE_TIMEOUT)
        self.lines.extend(json.loads(raw) for raw in rest.splitlines() if raw.strip())
        return await asyncio.wait_for(self.process.wait(), LINE_TIMEOUT)

    async def killed(self) -> list[dict[str, Any]]:
        """SIGKILL it (unless it has exited), reap it, check that the kill is what
        ended it, and return its lines."""
        self.kill()
        returncode = await self.finish()
        assert returncode == -signal.SIGKILL, self.describe()
        return self.lines


@contextlib.asynccontextmanager
async def child(script: Path, args: dict[str, Any], stderr: Path) -> AsyncIterator[Child]:
    """A :class:`Child` that is always killed and reaped when the block ends."""
    running = await Child.start(script, args, stderr)
    try:
        yield running
    finally:
        running.kill()
        with contextlib.suppress(Exception):
            await running.finish()


def journal_task_ids(state_dir: Path, identifier: str) -> list[int]:
    """Task ids committed in a session's journal, read by a connection of its own."""
    path = state_dir / identifier / "journal.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return [row[0] for row in db.execute("SELECT id FROM tasks ORDER BY id")]


async def wait_status(
    state_dir: Path, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Until the daemon's status (``bgtransfer status --json``) satisfies
    ``predicate``; return it. (Another process's: read as a script would, a
    few times a second, bounded.)"""
    async with asyncio.timeout(60):
        while True:
            status = await daemon_status(state_dir)
            if status is not None and predicate(status):
                return status
            await asyncio.sleep(0.02)


async def bgtransfer_status(state_dir: Path) -> str:
    """``bgtransfer status``'s text, from a process of its own."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bgtransfer",
        "status",
        "--state-dir",
        str(state_dir),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    return out.decode()
