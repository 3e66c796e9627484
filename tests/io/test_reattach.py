"""A background session reopened after the previous one closed: nothing is lost.

These run both sessions in the test process, one after the other, against the
loopback server; the SIGKILL cases are in ``tests/crash``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import anyio
import pytest

from _helpers import check_resumable_stream, collect, sha256_file, wait_for_bytes
from bgtransfer import (
    CancelledEvent,
    Configuration,
    ErrorEvent,
    EventsDeliveredEvent,
    FinishedEvent,
    HTTPStatusError,
    JournalError,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
    Session,
    SessionClosedError,
    SessionInUseError,
    TaskState,
    TransferError,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

ID = "com.example.reattach"
CONFIG = Configuration(progress_interval=0)
EXPLICIT = Configuration(progress_interval=0, acknowledge="explicit")


def _ranges(server: TestServer, path: str) -> list[str | None]:
    return [r.headers.get("Range") for r in server.requests if r.path == path]


async def _read_terminal_without_acknowledging(session: Session, task_id: int) -> None:
    """Read the task's stream up to its terminal event (in a session that
    acknowledges explicitly)."""
    assert session.config.acknowledge == "explicit"
    stream = session.tasks()[task_id - 1].events()
    async for event in stream:
        if isinstance(event, FinishedEvent | ErrorEvent | CancelledEvent):
            return  # explicit acknowledgement: not acknowledged
    raise AssertionError("stream ended without a terminal event")


async def test_running_task_continues_from_the_bytes_on_disk(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/big.bin", size=1_000_000)
    server.set_faults(file.path, Faults(hold_after=300_000))
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "big.bin", description="A")
        await wait_for_bytes(task, 300_000)
    # Leaving the block checkpointed the task instead of cancelling it.
    assert task.state is TaskState.RUNNING
    assert task.result is None
    with pytest.raises(SessionClosedError, match=f"task {task.id}"):
        await task.wait()
    assert (state_dir / ID / "partials" / f"{task.id}.part").stat().st_size == 300_000
    assert not (out_dir / "big.bin").exists()

    server.set_faults(file.path, Faults())
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        [again] = session.tasks()
        assert (again.id, again.url, again.description) == (task.id, task.url, "A")
        assert again.destination == out_dir / "big.bin"
        events = await collect(again.events())
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert events[:2] == [  # what the journal vouches for, then the live resume
        ProgressEvent(
            task_id=task.id,
            bytes_written=300_000,
            total_bytes_written=300_000,
            total_bytes_expected=1_000_000,
        ),
        ResumedEvent(task_id=task.id, offset=300_000, expected_total=1_000_000),
    ]
    assert _ranges(server, file.path) == [None, "bytes=300000-"]
    assert sha256_file(out_dir / "big.bin") == file.sha256
    assert list((state_dir / ID / "partials").iterdir()) == []


async def test_suspended_task_stays_suspended(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/s.bin", size=400_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "s.bin")
        await wait_for_bytes(task, 100_000)
        task.suspend()
    server.set_faults(file.path, Faults())
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        [again] = session.tasks()
        assert again.state is TaskState.SUSPENDED
        assert again.bytes_received == 100_000
        assert session.statistics().active == 0
        assert len(server.requests) == 1  # nothing was asked for while suspended
        again.resume()
        assert isinstance(await again.wait(), FinishedEvent)
    assert _ranges(server, file.path) == [None, "bytes=100000-"]
    assert sha256_file(out_dir / "s.bin") == file.sha256


async def test_unacknowledged_terminal_event_is_replayed_then_forgotten(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    ok = server.add_file("/ok.bin", size=20_000)
    missing = server.url("/missing.bin")
    async with Session(ID, state_dir=state_dir, config=EXPLICIT) as session:
        good = await session.download(server.url(ok.path), out_dir / "ok.bin", description="ok")
        bad = await session.download(missing, out_dir / "missing.bin", description="bad")
        for task in (good, bad):
            await _read_terminal_without_acknowledging(session, task.id)
    requests_before = len(server.requests)

    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        tasks = session.tasks()
        assert [(t.id, t.description, t.state) for t in tasks] == [
            (good.id, "ok", TaskState.COMPLETED),
            (bad.id, "bad", TaskState.COMPLETED),
        ]
        assert tasks[0].result == good.result
        error = tasks[1].result
        assert isinstance(error, ErrorEvent)
        assert isinstance(error.error, HTTPStatusError)
        assert (error.error.status, error.error.url) == (404, missing)
        async with session.events() as stream:
            # A late subscriber's backlog: the finished task's bytes, then each
            # terminal event, then the marker.
            replay = [await anext(stream) for _ in range(4)]
            assert replay == [
                ProgressEvent(
                    task_id=good.id,
                    bytes_written=20_000,
                    total_bytes_written=20_000,
                    total_bytes_expected=20_000,
                ),
                good.result,
                tasks[1].result,
                EventsDeliveredEvent(replayed=2),
            ]
            with anyio.fail_after(10):
                await session.wait_events_delivered()  # handing them out acknowledged both
    assert len(server.requests) == requests_before  # nothing was downloaded again
    assert sha256_file(out_dir / "ok.bin") == ok.sha256

    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        assert session.tasks() == []
        async with session.events() as stream:
            assert await anext(stream) == EventsDeliveredEvent(replayed=0)
        new = await session.download(server.url(ok.path), out_dir / "ok2.bin")
        assert new.id == bad.id + 1  # ids never collide with old ones


@pytest.mark.parametrize("how", ["wait", "acknowledge", "stream", "break"])
async def test_each_way_of_acknowledging(
    how: str, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    config = EXPLICIT if how == "acknowledge" else CONFIG
    async with Session(ID, state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        if how == "wait":
            await task.wait()
        elif how == "acknowledge":
            await _read_terminal_without_acknowledging(session, task.id)
            await task.acknowledge()
        elif how == "stream":
            await collect(task.events())
        else:  # handed out, even to a reader that stops there
            async for event in task.events():
                if isinstance(event, FinishedEvent):
                    break
    async with Session(ID, state_dir=state_dir) as session:
        assert session.tasks() == []


async def test_a_reader_that_fails_does_not_acknowledge_explicitly(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """At-least-once: a reader that fails on the terminal event gets it again in
    the next session. (By default it was handed out, so it counts as delivered.)"""
    file = server.add_file("/f.bin", size=10_000)
    async with Session(ID, state_dir=state_dir, config=EXPLICIT) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")

        async def consume() -> None:
            async with task.events() as stream:
                async for event in stream:
                    if event == task.result:  # the terminal event
                        raise ValueError("consumer crashed")

        with pytest.raises(ValueError, match="consumer crashed"):
            await consume()
    async with Session(ID, state_dir=state_dir) as session:
        [again] = session.tasks()
        assert again.result == task.result
        assert await again.wait() == task.result


async def test_cancel_with_resume_data_survives_and_resumes_in_the_next_session(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/r.bin", size=500_000)
    server.set_faults(file.path, Faults(hold_after=200_000))
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "r.bin")
        await wait_for_bytes(task, 200_000)
        data = await task.cancel_with_resume_data()
    assert data is not None
    assert data.offset == 200_000
    server.set_faults(file.path, Faults())
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        assert session.tasks() == []  # returning the data acknowledged the cancel
        resumed = await session.download_with_resume_data(data)
        assert resumed.id == task.id + 1
        assert isinstance(await resumed.wait(), FinishedEvent)
    assert _ranges(server, file.path) == [None, "bytes=200000-"]
    assert sha256_file(out_dir / "r.bin") == file.sha256


async def test_invalidate_and_cancel_ends_the_tasks_for_good(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/c.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=50_000))
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        running = await session.download(server.url(file.path), out_dir / "c.bin")
        await wait_for_bytes(running, 50_000)
        queued = await session.download(server.url(file.path), out_dir / "c2.bin")
        queued.suspend()
        await session.invalidate_and_cancel()
    async with Session(ID, state_dir=state_dir) as session:
        tasks = session.tasks()
        assert [t.result for t in tasks] == [
            CancelledEvent(task_id=running.id),
            CancelledEvent(task_id=queued.id),
        ]
        for task in tasks:
            await task.acknowledge()
    assert list((state_dir / ID / "partials").iterdir()) == []
    async with Session(ID, state_dir=state_dir) as session:
        assert session.tasks() == []


async def test_cancelling_the_host_checkpoints_rather_than_cancels(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/h.bin", size=400_000)
    server.set_faults(file.path, Faults(hold_after=150_000))
    with anyio.CancelScope() as host:
        async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
            task = await session.download(server.url(file.path), out_dir / "h.bin")
            await wait_for_bytes(task, 150_000)
            host.cancel()
            await anyio.sleep_forever()
    assert host.cancelled_caught
    server.set_faults(file.path, Faults())
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        [again] = session.tasks()
        assert again.state is TaskState.RUNNING
        assert isinstance(await again.wait(), FinishedEvent)
    assert _ranges(server, file.path) == [None, "bytes=150000-"]
    assert sha256_file(out_dir / "h.bin") == file.sha256


async def test_missing_partial_file_restarts_from_zero(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/m.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "m.bin")
        await wait_for_bytes(task, 100_000)
    (state_dir / ID / "partials" / f"{task.id}.part").unlink()
    server.set_faults(file.path, Faults())
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        [again] = session.tasks()
        assert again.bytes_received == 0
        events = await collect(again.events())
    assert events[0] == ResumedEvent(task_id=task.id, offset=0, expected_total=300_000)
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert _ranges(server, file.path) == [None, None]
    assert sha256_file(out_dir / "m.bin") == file.sha256


async def test_the_partial_of_a_task_found_ended_is_gone_once_the_session_is_open(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """A task the previous process was cancelling ends cancelled, and its partial
    file is removed before the session's ``__aenter__`` returns: before its
    terminal event can be acknowledged and the task forgotten by the journal (a
    process killed after that used to leave the file to nobody)."""
    file = server.add_file("/x.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "x.bin")
        await wait_for_bytes(task, 100_000)
    partial = state_dir / ID / "partials" / f"{task.id}.part"
    assert partial.stat().st_size >= 100_000
    journal = sqlite3.connect(state_dir / ID / "journal.sqlite3")
    try:  # as a process killed during cancel() leaves it
        journal.execute("UPDATE tasks SET phase = 'canceling' WHERE id = ?", (task.id,))
        journal.commit()
    finally:
        journal.close()
    session = Session(ID, state_dir=state_dir, config=CONFIG)
    async with session:
        assert not partial.exists(), "the partial was still there when the session opened"
        [again] = session.tasks()
        assert again.result == CancelledEvent(task_id=task.id)
    assert os.listdir(state_dir / ID / "partials") == []


async def test_partial_file_longer_than_the_checkpoint_is_cut_back(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """Bytes past the last checkpoint were never vouched for: they are fetched again."""
    file = server.add_file("/l.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "l.bin")
        await wait_for_bytes(task, 100_000)
    with (state_dir / ID / "partials" / f"{task.id}.part").open("ab") as partial:
        partial.write(b"\0" * 12_345)  # e.g. written after the checkpoint, then a crash
    server.set_faults(file.path, Faults())
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        [again] = session.tasks()
        assert again.bytes_received == 100_000
        assert isinstance(await again.wait(), FinishedEvent)
    assert _ranges(server, file.path) == [None, "bytes=100000-"]
    assert sha256_file(out_dir / "l.bin") == file.sha256


async def test_a_second_session_for_the_identifier_is_refused(state_dir: Path) -> None:
    async with Session(ID, state_dir=state_dir):
        with pytest.raises(SessionInUseError, match=f"'{ID}' is in use by process {os.getpid()}"):
            async with Session(ID, state_dir=state_dir):
                pass
        async with Session("another.identifier", state_dir=state_dir):
            pass  # other identifiers are independent
    async with Session(ID, state_dir=state_dir):
        pass  # released when the owner closed


async def test_a_broken_journal_fails_the_open_and_keeps_every_file(
    state_dir: Path, out_dir: Path
) -> None:
    directory = state_dir / ID
    async with Session(ID, state_dir=state_dir):
        pass
    journal = directory / "journal.sqlite3"
    journal.write_bytes(b"this is not a database, it was overwritten" * 100)
    partial = directory / "partials" / "7.part"
    partial.write_bytes(b"precious bytes")
    with pytest.raises(JournalError, match="not a readable journal") as caught:
        async with Session(ID, state_dir=state_dir):
            pass
    assert caught.value.path == str(journal)
    assert partial.read_bytes() == b"precious bytes"
    assert journal.read_bytes().startswith(b"this is not a database")
    journal.unlink()  # the user moves it away: the lock was released, a new one opens
    async with Session(ID, state_dir=state_dir) as session:
        assert session.tasks() == []


async def test_credentials_are_not_journaled_and_come_back_from_the_provider(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/auth.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    secret = "Bearer s3cret-token-xyz"
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(
            server.url(file.path),
            out_dir / "auth.bin",
            headers={"Authorization": secret, "X-Trace": "kept"},
        )
        await wait_for_bytes(task, 100_000)
    for name in ("journal.sqlite3", "journal.sqlite3-wal"):
        path = state_dir / ID / name
        if path.exists():
            assert b"s3cret" not in path.read_bytes()
    with sqlite3.connect(state_dir / ID / "journal.sqlite3") as db:
        [(headers,)] = db.execute("SELECT headers FROM tasks").fetchall()
    assert headers == '[["X-Trace", "kept"]]'

    asked: list[str] = []

    async def provide(url: str) -> dict[str, str]:
        asked.append(url)
        return {"authorization": secret}

    server.set_faults(file.path, Faults())
    config = Configuration(progress_interval=0, headers_provider=provide)
    async with Session(ID, state_dir=state_dir, config=config) as session:
        [again] = session.tasks()
        assert isinstance(await again.wait(), FinishedEvent)
    assert asked == [server.url(file.path)]
    first, second = [r for r in server.requests if r.path == file.path]
    assert first.headers["Authorization"] == secret
    assert second.headers.getall("Authorization") == [secret]  # once, whatever the case
    assert second.headers["X-Trace"] == "kept"
    assert sha256_file(out_dir / "auth.bin") == file.sha256


async def test_a_failing_headers_provider_fails_the_task_with_its_cause(
    server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/p.bin", size=1_000)

    def provide(url: str) -> dict[str, str]:
        raise LookupError("no token for this host")

    async with Session(config=Configuration(headers_provider=provide)) as session:
        task = await session.download(server.url(file.path), out_dir / "p.bin")
        with pytest.raises(TransferError, match=r"headers_provider failed.*no token") as caught:
            await task.wait()
    assert caught.value.url == server.url(file.path)
    assert isinstance(caught.value.__cause__, LookupError)
    assert server.requests == ()
    assert not (out_dir / "p.bin").exists()


async def test_fsync_durability_downloads_and_reattaches(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/d.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    config = Configuration(progress_interval=0, durability="fsync")
    async with Session(ID, state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "d.bin")
        await wait_for_bytes(task, 100_000)
    server.set_faults(file.path, Faults())
    async with Session(ID, state_dir=state_dir, config=config) as session:
        [again] = session.tasks()
        assert isinstance(await again.wait(), FinishedEvent)
    assert _ranges(server, file.path) == [None, "bytes=100000-"]
    assert sha256_file(out_dir / "d.bin") == file.sha256


@pytest.mark.parametrize("identifier", [ID, None], ids=["background", "ephemeral"])
async def test_closing_does_not_wait_for_a_retry_after_hold(
    identifier: str | None, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/busy.bin", size=1_000)
    server.set_faults(file.path, Faults(status=503, retry_after="300"))
    with anyio.fail_after(20):  # the hold (and the backoff) are 300 s
        async with Session(identifier, state_dir=state_dir) as session:
            stream = session.events()  # subscribed first: the retry may come at once
            task = await session.download(server.url(file.path), out_dir / "busy.bin")
            async for event in stream:
                if isinstance(event, RetryEvent):
                    assert event.delay == 300
                    break
    assert task.state is (TaskState.RUNNING if identifier else TaskState.COMPLETED)


@pytest.mark.parametrize("suspended", [False, True], ids=["running", "suspended"])
async def test_a_late_subscriber_first_learns_the_bytes_on_disk(
    server: TestServer, state_dir: Path, out_dir: Path, suspended: bool
) -> None:
    """A reattached task's backlog starts with one progress event saying the
    bytes the journal vouches for, as a live task's does (no live progress has
    come yet in this process)."""
    file = server.add_file("/slow.bin", size=600_000)
    server.set_faults(file.path, Faults(drip=(10_000, 0.005)))  # throttled
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "slow.bin")
        await wait_for_bytes(task, 100_000)
        if suspended:
            task.suspend()
    on_disk = (state_dir / ID / "partials" / f"{task.id}.part").stat().st_size
    assert 100_000 <= on_disk < file.size

    server.set_faults(file.path, Faults(hold_after=0))  # the rest waits
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        [again] = session.tasks()
        assert again.bytes_received == on_disk
        async with again.events() as stream:
            with anyio.fail_after(10):
                first = await stream.__anext__()
        assert first == ProgressEvent(
            task_id=task.id,
            bytes_written=on_disk,
            total_bytes_written=on_disk,
            total_bytes_expected=file.size,
        )
        async with session.events(follow=False) as stream:
            backlog = [event async for event in stream]
        assert backlog[0] == first
        assert isinstance(backlog[-1], EventsDeliveredEvent)
        server.release(file.path)
        if suspended:
            again.resume()
        events = await collect(again.events())
    assert events[0] == first
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "slow.bin") == file.sha256
