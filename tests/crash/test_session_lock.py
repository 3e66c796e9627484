"""One owner per identifier (issue #4).

A second ``Session("id")``, in another process or in this one, raises
``SessionInUseError`` at ``__aenter__`` naming the identifier and the owner's pid.
The lock is an advisory ``flock`` that the kernel drops when its owner dies, even
by SIGKILL, so a new process can take the identifier at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _helpers import fds_opened_since, open_fds
from bgtransfer import Session, SessionInUseError

pytestmark = pytest.mark.asyncio

IDENTIFIER = "com.example.lock"
LINE_TIMEOUT = 60.0

# A process that opens the session when told to (one line on stdin), says whether
# it won, and, having won, keeps the session open until it is killed. With
# "pause": true it stops right after taking the flock, before writing its pid
# into the lock file (the first os.ftruncate of the lock), until told to go on.
CONTENDER = r"""
import asyncio, json, os, sys

from bgtransfer import Session, SessionInUseError

def say(**fact):
    sys.stdout.write(json.dumps(fact) + "\n")
    sys.stdout.flush()

async def main(args):
    if args.get("pause"):
        real_ftruncate = os.ftruncate
        def paused(fd, length):
            os.ftruncate = real_ftruncate
            say(locked=os.getpid())
            sys.stdin.readline()
            real_ftruncate(fd, length)
        os.ftruncate = paused
    say(ready=os.getpid())
    sys.stdin.readline()  # the barrier: every contender is told to go at once
    session = Session(args["identifier"], state_dir=args["state_dir"])
    try:
        await session.__aenter__()
    except SessionInUseError as error:
        say(lost=os.getpid(), owner=error.pid, identifier=error.identifier, message=str(error))
        return
    say(won=os.getpid())
    sys.stdin.readline()  # hold the session (blocking the loop on purpose) until killed

asyncio.run(main(json.loads(sys.argv[1])))
"""


class Contender:
    """One contender process; always reaped (see :meth:`close`)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, state_dir: Path, **options: Any) -> Contender:
        args = {"identifier": IDENTIFIER, "state_dir": str(state_dir), **options}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CONTENDER,
            json.dumps(args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), LINE_TIMEOUT)
        assert raw, f"contender {self.pid} exited without saying why"
        fact: dict[str, Any] = json.loads(raw)
        return fact

    def tell(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    def sigkill(self) -> None:
        # os.kill rather than process.kill(): Popen.send_signal polls first, which
        # could reap the child behind asyncio's watcher (that then reports 255).
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def wait(self) -> int:
        return await asyncio.wait_for(self.process.wait(), LINE_TIMEOUT)

    async def close(self) -> None:
        self.sigkill()
        if self.process.stdin is not None:
            self.process.stdin.close()
        assert self.process.stdout is not None
        await asyncio.wait_for(self.process.stdout.read(), LINE_TIMEOUT)
        await self.wait()


@contextlib.asynccontextmanager
async def contenders(state_dir: Path, count: int, **options: Any) -> Any:
    started: list[Contender] = []
    try:
        for _ in range(count):
            started.append(await Contender.start(state_dir, **options))
        yield started
    finally:
        for contender in started:
            await contender.close()


@pytest.mark.parametrize("round_", range(3))
async def test_two_processes_racing_exactly_one_wins(round_: int, state_dir: Path) -> None:
    async with contenders(state_dir, 2) as pair:
        for contender in pair:
            assert "ready" in await contender.line()
        for contender in pair:  # both are waiting on stdin: they go together
            contender.tell()
        first, second = [await contender.line() for contender in pair]
        outcomes = {"won" in first, "won" in second}
        assert outcomes == {True, False}, (first, second)
        winner, loser = (pair[0], second) if "won" in first else (pair[1], first)
        assert loser["identifier"] == IDENTIFIER
        assert IDENTIFIER in loser["message"]
        # The winner's pid; None only if the loser came in the microseconds between
        # the winner's flock and its writing the pid (documented: "could not be
        # read"; that window is pinned down by the next test).
        assert loser["owner"] in (winner.pid, None), loser
        if loser["owner"] is not None:
            assert str(winner.pid) in loser["message"]
        # The winner dies by SIGKILL: the identifier is free at once.
        winner.sigkill()
        assert await winner.wait() == -signal.SIGKILL
        async with Session(IDENTIFIER, state_dir=state_dir) as session:
            assert session.tasks() == []


async def test_the_lock_names_the_live_owner_not_a_dead_one(state_dir: Path) -> None:
    """The lock file still holds the pid of an owner killed by SIGKILL. While the
    next owner is between taking the flock and writing its own pid there, a loser
    must not name the dead process (the owner's pid, or None: "could not be read")."""
    async with contenders(state_dir, 1) as (dead,):
        assert "ready" in await dead.line()
        dead.tell()
        assert "won" in await dead.line()
        dead.sigkill()
        await dead.wait()
    assert (state_dir / IDENTIFIER / "lock").read_text().strip() == str(dead.pid)
    async with contenders(state_dir, 1, pause=True) as (owner,):
        assert "ready" in await owner.line()
        owner.tell()
        assert await owner.line() == {"locked": owner.pid}  # holds the flock, paused
        with pytest.raises(SessionInUseError) as caught:
            await Session(IDENTIFIER, state_dir=state_dir).__aenter__()
        owner.tell()
        assert "won" in await owner.line()
        assert caught.value.pid != dead.pid, f"names process {dead.pid}, killed earlier"
        assert caught.value.pid in (owner.pid, None)


async def test_the_lock_does_not_name_a_killed_owner_not_yet_reaped(state_dir: Path) -> None:
    """As above, but the killed owner is a zombie: dead (its flock released), not
    yet reaped by its parent. Signalling it still succeeds, yet it owns nothing."""
    args = json.dumps({"identifier": IDENTIFIER, "state_dir": str(state_dir)})
    # subprocess, not asyncio: asyncio's child watcher would reap it at once.
    dead = subprocess.Popen(  # noqa: ASYNC220 - on purpose, see above
        [sys.executable, "-c", CONTENDER, args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert dead.stdin is not None
        assert dead.stdout is not None
        readline = dead.stdout.readline
        assert "ready" in json.loads(await asyncio.wait_for(asyncio.to_thread(readline), 60))
        dead.stdin.write(b"go\n")
        dead.stdin.flush()
        assert "won" in json.loads(await asyncio.wait_for(asyncio.to_thread(readline), 60))
        os.kill(dead.pid, signal.SIGKILL)
        # Wait until it has exited, without reaping it (WNOWAIT): a zombie now.
        waited = asyncio.to_thread(os.waitid, os.P_PID, dead.pid, os.WEXITED | os.WNOWAIT)
        await asyncio.wait_for(waited, 60)
        async with contenders(state_dir, 1, pause=True) as (owner,):
            assert "ready" in await owner.line()
            owner.tell()
            assert await owner.line() == {"locked": owner.pid}  # holds the flock, paused
            with pytest.raises(SessionInUseError) as caught:
                await Session(IDENTIFIER, state_dir=state_dir).__aenter__()
            owner.tell()
            assert "won" in await owner.line()
        assert caught.value.pid != dead.pid, f"names process {dead.pid}, killed earlier"
        assert caught.value.pid in (owner.pid, None)
    finally:
        with contextlib.suppress(ProcessLookupError):
            dead.kill()
        dead.communicate(timeout=60)


async def test_a_second_session_in_the_same_process_is_refused(state_dir: Path) -> None:
    async with Session(IDENTIFIER, state_dir=state_dir) as first:
        lock = state_dir / IDENTIFIER / "lock"
        assert lock.read_text().strip() == str(os.getpid())
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        fds = open_fds()
        for _ in range(3):
            with pytest.raises(SessionInUseError) as caught:
                await Session(IDENTIFIER, state_dir=state_dir).__aenter__()
            assert caught.value.pid == os.getpid()
            assert caught.value.identifier == IDENTIFIER
            assert IDENTIFIER in str(caught.value)
            assert str(os.getpid()) in str(caught.value)
        assert not fds_opened_since(fds), "a refused Session leaked a file descriptor"
        assert first.tasks() == []  # the owner is unaffected
        assert lock.read_text().strip() == str(os.getpid())
    assert lock.exists(), "the lock file is never deleted"
    async with Session(IDENTIFIER, state_dir=state_dir) as again:
        assert again.tasks() == []


async def test_looking_for_the_owner_of_a_refused_lock_runs_off_the_event_loop(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused, the session looks a few times (up to 0.1 s) for a live owner to
    name: in a worker thread, so the loop goes on meanwhile."""
    import threading  # noqa: PLC0415 - only this test needs it

    from bgtransfer._engine import startup  # noqa: PLC0415 - the hook is the point

    threads: list[str] = []
    real = startup.owner_pid

    def owner_pid(path: Path) -> int | None:
        threads.append(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(startup, "owner_pid", owner_pid)
    async with Session(IDENTIFIER, state_dir=state_dir):
        with pytest.raises(SessionInUseError) as caught:
            await Session(IDENTIFIER, state_dir=state_dir).__aenter__()
    assert caught.value.pid == os.getpid()
    assert len(threads) == 1
    assert threads[0] != threading.current_thread().name


async def test_a_refused_open_cancelled_while_looking_for_the_owner_leaks_nothing(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled (by a plain ``Task.cancel()``) while it looks for the owner's pid
    in a worker thread, a refused open holds no descriptor and no lock: the
    owner goes on, and once it closes the identifier is free."""
    import threading  # noqa: PLC0415 - only this test needs it

    from bgtransfer._engine import startup  # noqa: PLC0415 - the hook is the point

    asked = threading.Event()
    release = threading.Event()
    looked = threading.Event()
    real = startup.owner_pid

    def owner_pid(path: Path) -> int | None:
        asked.set()
        assert release.wait(LINE_TIMEOUT)
        try:
            return real(path)
        finally:
            looked.set()

    monkeypatch.setattr(startup, "owner_pid", owner_pid)
    async with Session(IDENTIFIER, state_dir=state_dir) as first:
        fds = open_fds()
        opening = asyncio.ensure_future(Session(IDENTIFIER, state_dir=state_dir).__aenter__())
        assert await asyncio.to_thread(asked.wait, LINE_TIMEOUT)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        release.set()  # the lookup finishes on its own, closing what it opened
        assert await asyncio.to_thread(looked.wait, LINE_TIMEOUT)
        assert not fds_opened_since(fds), "the cancelled open kept a descriptor"
        assert first.tasks() == []
    async with Session(IDENTIFIER, state_dir=state_dir) as again:
        assert again.tasks() == []
