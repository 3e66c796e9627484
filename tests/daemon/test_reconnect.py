"""The daemon dies under an attached client (issue 20): the same ``Session``
object reconnects, launching a new daemon, and its waits, streams and commands
go on; a submission whose answer was lost makes exactly one task; a daemon that
cannot come back, or a session another client took meanwhile, ends the session
with a clear error."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_end_to_end import wait_vouched

from _helpers import (
    check_resumable_stream,
    daemon_pid,
    kill_daemon,
    kill_daemon_at_post,
    sha256_file,
    wait_daemon_gone,
    wait_for_bytes,
)
from bgtransfer import (
    CancelledEvent,
    Configuration,
    DaemonError,
    FinishedEvent,
    Session,
    SessionClosedError,
    SessionInUseError,
    TaskEvent,
    TaskState,
)
from bgtransfer._daemon import attachment
from bgtransfer._daemon.attachment import Attachment
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

FAST = {"checkpoint_interval": 0.05, "progress_interval": 0.0}
TIMEOUT = 60


async def collect_task(stream: AsyncIterator[TaskEvent]) -> list[TaskEvent]:
    return [event async for event in stream]


@contextlib.asynccontextmanager
async def gated_reconnection(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """The client's reconnection waits at ``reach`` until ``gate.open.set()``;
    ``gate.reached`` is set when it got there."""

    class Gate:
        reached = asyncio.Event()
        open = asyncio.Event()

    gate = Gate()
    real = attachment.reach

    async def gated(*args: Any, **kwargs: Any) -> Any:
        gate.reached.set()
        await gate.open.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(attachment, "reach", gated)
    try:
        yield gate
    finally:
        gate.open.set()


async def test_the_same_session_goes_on_after_the_daemon_is_sigkilled(
    server: TestServer, daemon_state: Path, out_dir: Path
) -> None:
    size, enough = 1_500_000, 200_000
    files = [server.add_file(f"/r{n}.bin", size=size) for n in range(3)]
    for file in files:  # throttled, then held: still running at the kill; the first request only
        server.set_faults(
            file.path, Faults(drip=(16_384, 0.02), hold_after=enough + 300_000), times=1
        )
    config = Configuration(**FAST)
    async with Session("rc", state_dir=daemon_state, config=config, daemon=True) as session:
        tasks = [
            await session.download(server.url(f.path), out_dir / f"r{n}.bin")
            for n, f in enumerate(files)
        ]
        streams = [asyncio.create_task(collect_task(t.events())) for t in tasks]
        session_ends: list[TaskEvent] = []

        async def session_stream() -> None:
            async with session.events() as stream:
                async for event in stream:
                    if isinstance(event, FinishedEvent):
                        session_ends.append(event)
                        if len(session_ends) == len(tasks):
                            return

        watcher = asyncio.create_task(session_stream())
        logged: set[int] = set()

        async def cursor_stream() -> None:  # from the event log's start, through the kill
            async with session.events(since=0) as stream:
                async for event in stream:
                    if isinstance(event, FinishedEvent):
                        logged.add(event.task_id)
                        if len(logged) == len(tasks):
                            return

        from_cursor = asyncio.create_task(cursor_stream())
        journal = session.directory / "journal.sqlite3"
        vouched = [await wait_vouched(journal, t.id, enough) for t in tasks]
        pid = daemon_pid(daemon_state)
        assert pid is not None
        kill_daemon(daemon_state)  # SIGKILL mid-transfer
        ends = await asyncio.wait_for(asyncio.gather(*(t.wait() for t in tasks)), TIMEOUT)
        assert all(isinstance(end, FinishedEvent) for end in ends)
        assert daemon_pid(daemon_state) not in (None, pid)  # a new daemon, launched by the client
        events = await asyncio.wait_for(asyncio.gather(*streams), TIMEOUT)
        for task, seen in zip(tasks, events, strict=True):
            assert isinstance(check_resumable_stream(seen, task.id), FinishedEvent)
        await asyncio.wait_for(watcher, TIMEOUT)
        assert sorted(e.task_id for e in session_ends) == [t.id for t in tasks]
        await asyncio.wait_for(from_cursor, TIMEOUT)
        assert sorted(logged) == [t.id for t in tasks]
    for n, file in enumerate(files):
        assert sha256_file(out_dir / f"r{n}.bin") == file.sha256
        ranges = [r.headers.get("Range") for r in server.requests if r.path == file.path]
        assert ranges[0] is None
        assert len(ranges) == 2, ranges  # one more request, from where the journal stood
        start = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
        assert vouched[n] <= start < size  # nothing the journal vouched for fetched twice


async def test_the_same_session_goes_on_after_the_daemon_stops(
    server: TestServer, daemon_state: Path, out_dir: Path
) -> None:
    """SIGTERM (as ``bgtransfer daemon --stop``): the daemon journals and exits,
    taking its time; the client launches the next one once it is gone."""
    file = server.add_file("/t.bin", size=600_000)
    server.set_faults(file.path, Faults(drip=(16_384, 0.01)), times=1)
    async with Session(
        "stop", state_dir=daemon_state, config=Configuration(**FAST), daemon=True
    ) as s:
        task = await s.download(server.url(file.path), out_dir / "t.bin")
        await asyncio.wait_for(wait_for_bytes(task, 100_000), TIMEOUT)
        pid = daemon_pid(daemon_state)
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        finished = await asyncio.wait_for(task.wait(), TIMEOUT)
        assert isinstance(finished, FinishedEvent)
    assert sha256_file(out_dir / "t.bin") == file.sha256


async def test_commands_issued_while_the_daemon_is_down_succeed_after_the_reconnect(
    server: TestServer, daemon_state: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = server.add_file("/held.bin", size=400_000)
    server.set_faults(held.path, Faults(hold_after=100_000))
    later = server.add_file("/later.bin", size=50_000)
    async with (
        Session("down", state_dir=daemon_state, config=Configuration(**FAST), daemon=True) as s,
        gated_reconnection(monkeypatch) as gate,
    ):
        task = await s.download(server.url(held.path), out_dir / "held.bin")
        await asyncio.wait_for(wait_for_bytes(task, 100_000), TIMEOUT)
        kill_daemon(daemon_state)
        await wait_daemon_gone(daemon_state)
        await asyncio.wait_for(gate.reached.wait(), TIMEOUT)  # the client noticed
        assert daemon_pid(daemon_state) is None  # nothing answers now
        download = asyncio.create_task(s.download(server.url(later.path), out_dir / "later.bin"))
        cancel = asyncio.create_task(task.cancel())
        waiting = asyncio.create_task(task.wait())
        gate.open.set()
        new = await asyncio.wait_for(download, TIMEOUT)
        await asyncio.wait_for(cancel, TIMEOUT)
        assert isinstance(await asyncio.wait_for(new.wait(), TIMEOUT), FinishedEvent)
        assert [t.id for t in s.tasks()] == [task.id, new.id]
        assert isinstance(await asyncio.wait_for(waiting, TIMEOUT), CancelledEvent)
        assert task.state is TaskState.COMPLETED
    assert sha256_file(out_dir / "later.bin") == later.sha256


@pytest.mark.parametrize("lost", ["after", "before"])
async def test_a_submission_whose_answer_was_lost_makes_exactly_one_task(
    server: TestServer,
    daemon_state: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    lost: str,
) -> None:
    """The daemon dies with a submission on its way: made before it died
    (``after``: the answer lost) or not (``before``), it is one task."""
    files = [server.add_file(f"/s{n}.bin", size=20_000 + n) for n in range(3)]
    killed = kill_daemon_at_post(monkeypatch, daemon_state, "/tasks", answer_lost=lost == "after")
    async with Session("one", state_dir=daemon_state, daemon=True) as session:
        made = await asyncio.wait_for(
            asyncio.gather(
                *(
                    session.download(server.url(f.path), out_dir / f"s{n}.bin")
                    for n, f in enumerate(files)
                )
            ),
            TIMEOUT,
        )
        assert killed
        assert [t.id for t in session.tasks()] == [t.id for t in made] == [1, 2, 3]
        ends = await asyncio.wait_for(asyncio.gather(*(t.wait() for t in made)), TIMEOUT)
    assert all(isinstance(end, FinishedEvent) for end in ends)
    for n, file in enumerate(files):
        assert sha256_file(out_dir / f"s{n}.bin") == file.sha256


async def test_a_session_taken_meanwhile_fails_the_reconnection_with_session_in_use(
    server: TestServer,
    daemon_state: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_app: Callable[[dict[str, Any]], Awaitable[Any]],
) -> None:
    held = server.add_file("/h.bin", size=300_000)
    server.set_faults(held.path, Faults(hold_after=100_000))
    async with (
        Session("taken", state_dir=daemon_state, daemon=True) as session,
        gated_reconnection(monkeypatch) as gate,
    ):
        task = await session.download(server.url(held.path), out_dir / "h.bin")
        await asyncio.wait_for(wait_for_bytes(task, 100_000), TIMEOUT)
        stream = task.events()
        kill_daemon(daemon_state)
        await asyncio.wait_for(gate.reached.wait(), TIMEOUT)
        waiting = asyncio.create_task(task.wait())
        other = await run_app(
            {"identifier": "taken", "state_dir": str(daemon_state), "mode": "hold"}
        )
        holder = (await other.until("attached"))["attached"]
        gate.open.set()
        with pytest.raises(SessionInUseError) as caught:
            await asyncio.wait_for(waiting, TIMEOUT)
        assert caught.value.pid == holder != os.getpid()
        with pytest.raises(SessionInUseError):
            async for _ in stream:
                pass
        with pytest.raises(SessionInUseError):
            await session.download(server.url(held.path), out_dir / "again.bin")
    assert not (out_dir / "again.bin").exists()


async def test_a_daemon_that_cannot_come_back_ends_the_session_naming_the_cause(
    server: TestServer, daemon_state: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = server.add_file("/n.bin", size=300_000)
    server.set_faults(held.path, Faults(hold_after=100_000))
    async with (
        Session("gone", state_dir=daemon_state, daemon=True) as session,
        gated_reconnection(monkeypatch) as gate,
    ):
        task = await session.download(server.url(held.path), out_dir / "n.bin")
        await asyncio.wait_for(wait_for_bytes(task, 100_000), TIMEOUT)
        stream = session.events()
        kill_daemon(daemon_state)
        await wait_daemon_gone(daemon_state)
        await asyncio.wait_for(gate.reached.wait(), TIMEOUT)
        # The daemon cannot be launched: its log is a link (never followed).
        log = daemon_state / "daemon.log"
        log.unlink()
        log.symlink_to(out_dir / "elsewhere.log")
        waiting = asyncio.create_task(task.wait())
        gate.open.set()
        with pytest.raises(SessionClosedError, match="cannot launch") as caught:
            await asyncio.wait_for(waiting, TIMEOUT)
        assert isinstance(caught.value.__cause__, DaemonError)
        with pytest.raises(SessionClosedError, match="cannot launch"):
            async for _ in stream:
                pass
        with pytest.raises(SessionClosedError, match="cannot launch"):
            task.suspend()
    assert not (out_dir / "elsewhere.log").exists()


async def test_a_cancel_whose_answer_was_lost_is_sent_again(
    server: TestServer, daemon_state: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idempotent: the new daemon finds the task cancelled (journaled by the
    old one) or cancels it; either way one CancelledEvent, no error."""
    held = server.add_file("/c.bin", size=300_000)
    server.set_faults(held.path, Faults(hold_after=100_000))
    post = Attachment.post
    sent: list[str] = []

    async def dying(self: Attachment, path: str, body: dict[str, Any] | None) -> Any:
        sent.append(path)
        if not path.endswith("/cancel") or sent.count(path) > 1:
            return await post(self, path, body)
        await post(self, path, body)  # cancelled, journaled: the answer is lost
        kill_daemon(daemon_state)
        raise aiohttp.ServerDisconnectedError()

    monkeypatch.setattr(Attachment, "post", dying)
    async with Session("cancel", state_dir=daemon_state, daemon=True) as session:
        task = await session.download(server.url(held.path), out_dir / "c.bin")
        await asyncio.wait_for(wait_for_bytes(task, 100_000), TIMEOUT)
        pid = daemon_pid(daemon_state)
        await asyncio.wait_for(task.cancel(), TIMEOUT)
        assert daemon_pid(daemon_state) not in (None, pid)
        assert sent.count(f"/tasks/{task.id}/cancel") == 2
        assert isinstance(await asyncio.wait_for(task.wait(), TIMEOUT), CancelledEvent)
    assert not (out_dir / "c.bin").exists()


async def test_an_invalidated_session_never_reconnects(
    server: TestServer, daemon_state: Path, out_dir: Path
) -> None:
    held = server.add_file("/i.bin", size=300_000)
    server.set_faults(held.path, Faults(hold_after=100_000))
    async with Session("inv", state_dir=daemon_state, daemon=True) as session:
        task = await session.download(server.url(held.path), out_dir / "i.bin")
        await asyncio.wait_for(wait_for_bytes(task, 100_000), TIMEOUT)
        # (its first step, the invalidation, runs before the reader sees the end)
        finishing = asyncio.create_task(session.finish_tasks_and_invalidate())
        kill_daemon(daemon_state)
        with pytest.raises(SessionClosedError):
            await asyncio.wait_for(finishing, TIMEOUT)
        assert task.state is TaskState.RUNNING  # as last heard of
        assert daemon_pid(daemon_state) is None  # nobody launched another


async def test_a_daemon_still_exiting_is_waited_for_then_replaced(
    server: TestServer, daemon_state: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the old daemon still holds its lock (it is journaling on its way
    out), the daemon the client launches says "already running" and exits 0;
    once the lock is free, the client launches another."""
    file = server.add_file("/x.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000), times=1)
    async with (
        Session("exiting", state_dir=daemon_state, daemon=True) as session,
        gated_reconnection(monkeypatch) as gate,
    ):
        task = await session.download(server.url(file.path), out_dir / "x.bin")
        await asyncio.wait_for(wait_for_bytes(task, 100_000), TIMEOUT)
        kill_daemon(daemon_state)
        await wait_daemon_gone(daemon_state)
        await asyncio.wait_for(gate.reached.wait(), TIMEOUT)
        log = daemon_state / "daemon.log"
        fd = os.open(daemon_state / "daemon.lock", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # as a daemon on its way out holds it
            said = log.read_text().count("already running")
            gate.open.set()
            async with asyncio.timeout(TIMEOUT):
                while True:
                    if log.read_text().count("already running") > said:
                        break
                    await asyncio.sleep(0.02)  # another process's file, read as a script would
        finally:
            os.close(fd)  # the old daemon is gone
        server.release(file.path)
        finished = await asyncio.wait_for(task.wait(), TIMEOUT)
        assert isinstance(finished, FinishedEvent)
    assert sha256_file(out_dir / "x.bin") == file.sha256
