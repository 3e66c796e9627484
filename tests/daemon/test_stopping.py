"""A stopping daemon (SIGTERM, ``bgtransfer daemon --stop``) takes no new work:
it answers a hello, an attach or a command with 503 "the daemon is stopping",
and the client waits for it to exit and reaches a new daemon, as when none
answered. The old daemon is a real process (``_slow_stop.py``) whose stop
waits for the test, so the test can act while it stops."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from _helpers import daemon_pid, sha256_file, wait_for_bytes
from bgtransfer import FinishedEvent, Session
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

TIMEOUT = 60
CHILD = Path(__file__).with_name("_slow_stop.py")


async def _word(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
    return line.decode().strip()


@pytest_asyncio.fixture
async def slow_daemon(
    daemon_state: Path, tmp_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The state dir's daemon, its stop gated (stdin); released and reaped at the end."""
    with (tmp_path / "slow-daemon.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            str(daemon_state),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert await _word(process) == "listening"
        assert daemon_pid(daemon_state) == process.pid
        yield process
    finally:
        assert process.stdin is not None
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        process.stdin.close()  # (end of its stdin: the gate opens)
        await asyncio.wait_for(process.wait(), TIMEOUT)


def _release_once_refused(process: asyncio.subprocess.Process) -> asyncio.Task[str]:
    """Once the stopping daemon refused a request, let its stop go on."""

    async def release() -> str:
        word = await _word(process)
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        return word

    return asyncio.create_task(release())


async def test_a_client_attaching_while_the_daemon_stops_attaches_to_a_new_one(
    server: TestServer, daemon_state: Path, out_dir: Path, slow_daemon: asyncio.subprocess.Process
) -> None:
    file = server.add_file("/a.bin", size=100_000)
    slow_daemon.send_signal(signal.SIGTERM)
    assert await _word(slow_daemon) == "stopping"
    released = _release_once_refused(slow_daemon)
    async with asyncio.timeout(TIMEOUT):
        async with Session("late", state_dir=daemon_state, daemon=True) as session:
            # Refused by the stopping daemon, attached only once a new one answered.
            assert released.done()
            assert released.result() == "refused"
            assert daemon_pid(daemon_state) not in (None, slow_daemon.pid)
            task = await session.download(server.url(file.path), out_dir / "a.bin")
            assert isinstance(await task.wait(), FinishedEvent)
        assert await slow_daemon.wait() == 0
    assert sha256_file(out_dir / "a.bin") == file.sha256


async def test_an_attached_client_whose_daemon_stops_goes_on_with_a_new_one(
    server: TestServer, daemon_state: Path, out_dir: Path, slow_daemon: asyncio.subprocess.Process
) -> None:
    """A submission made while the daemon stops is refused unread, then made
    once by the next daemon; the running task goes on there."""
    held = server.add_file("/held.bin", size=300_000)
    server.set_faults(held.path, Faults(hold_after=100_000), times=1)
    late = server.add_file("/late.bin", size=50_000)
    async with asyncio.timeout(TIMEOUT):
        async with Session("going", state_dir=daemon_state, daemon=True) as session:
            task = await session.download(server.url(held.path), out_dir / "held.bin")
            await wait_for_bytes(task, 100_000)
            slow_daemon.send_signal(signal.SIGTERM)
            assert await _word(slow_daemon) == "stopping"
            released = _release_once_refused(slow_daemon)
            second = await session.download(server.url(late.path), out_dir / "late.bin")
            assert released.done()
            assert released.result() == "refused"
            assert daemon_pid(daemon_state) not in (None, slow_daemon.pid)
            server.release(held.path)
            assert isinstance(await task.wait(), FinishedEvent)
            assert isinstance(await second.wait(), FinishedEvent)
            assert len(session.tasks()) == 2
        assert await slow_daemon.wait() == 0
    assert sha256_file(out_dir / "held.bin") == held.sha256
    assert sha256_file(out_dir / "late.bin") == late.sha256
    assert [r.path for r in server.requests].count(late.path) == 1


async def test_an_event_stream_asked_for_while_the_daemon_stops_is_served_by_the_next(
    server: TestServer, daemon_state: Path, out_dir: Path, slow_daemon: asyncio.subprocess.Process
) -> None:
    file = server.add_file("/e.bin", size=100_000)
    async with asyncio.timeout(TIMEOUT):
        async with Session("streams", state_dir=daemon_state, daemon=True) as session:
            task = await session.download(server.url(file.path), out_dir / "e.bin")
            assert isinstance(await task.wait(), FinishedEvent)
            slow_daemon.send_signal(signal.SIGTERM)
            assert await _word(slow_daemon) == "stopping"
            released = _release_once_refused(slow_daemon)
            ends = []
            async with session.events(since=0) as stream:
                async for event in stream:
                    if isinstance(event, FinishedEvent):
                        ends.append(event.task_id)
                        break
            assert ends == [task.id]
            assert released.done()
            assert released.result() == "refused"
            assert daemon_pid(daemon_state) not in (None, slow_daemon.pid)
        assert await slow_daemon.wait() == 0
