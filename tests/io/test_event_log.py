"""The persisted, numbered event log and ``Session.events(since=...)`` (issue 20).

Real loopback server, real SQLite, real files. What is pinned: every task event
but progress is numbered in a background session, the numbers only grow across
reopenings and trimming, a cursor replays what came after it (acknowledged or
not), a cursor the log cannot answer gets an explicit ``EventsGapEvent`` and a
snapshot, an ephemeral session refuses a cursor, and a journal of the previous
schema opens and gets the log. Each runs in this process and through the
daemon (the ``background`` fixture): a cursor crosses its socket unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from _helpers import sha256_file, wait_for_bytes
from bgtransfer import (
    Configuration,
    EventsDeliveredEvent,
    EventsGapEvent,
    FinishedEvent,
    InvalidRequestError,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
    RetryPolicy,
    Session,
    SessionEvent,
)
from bgtransfer._core.journal import MIGRATIONS
from bgtransfer._io.journal import JOURNAL_NAME, Journal
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

ID = "com.example.eventlog"
Background = Callable[..., Session]  # tests/conftest.py: in this process, or the daemon
CONFIG = Configuration(progress_interval=0.0, retry=RetryPolicy(initial_delay=0.01, jitter=0))


async def _drain(session: Session, since: int | None = None) -> list[SessionEvent]:
    """What ``events(since=..., follow=False)`` gives, progress left out."""
    async with session.events(follow=False, since=since) as stream:
        return [event async for event in stream if not isinstance(event, ProgressEvent)]


async def _finish(session: Session, server: TestServer, out_dir: Path, names: list[str]) -> None:
    for name in names:
        served = server.add_file(f"/{name}", size=20_000)
        task = await session.download(server.url(served.path), out_dir / name)
        await task.wait()
        assert sha256_file(out_dir / name) == served.sha256


def _seqs(events: list[SessionEvent]) -> list[int]:
    return [e.seq for e in events if isinstance(e, FinishedEvent) and e.seq is not None]


async def test_numbers_grow_across_reopening_and_trimming(
    background: Background, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    config = CONFIG.replace(event_log_size=2)
    async with background(ID, state_dir=state_dir, config=config) as session:
        await _finish(session, server, out_dir, ["a", "b", "c"])
        first = await _drain(session, since=0)
    # Trimming rides with the commit that forgets acknowledged tasks (here: the exit).
    assert _seqs(first) == [1, 2, 3]
    delivered = first[-1]
    assert isinstance(delivered, EventsDeliveredEvent)
    assert delivered.cursor == 3
    old_cursor = delivered.cursor
    with sqlite3.connect(state_dir / ID / JOURNAL_NAME) as db:
        kept = [row[0] for row in db.execute("SELECT seq FROM events ORDER BY seq")]
    assert kept == [2, 3]  # the newest 2 (all acknowledged)

    async with background(ID, state_dir=state_dir, config=config) as session:
        gap = (await _drain(session, since=0))[0]
        assert gap == EventsGapEvent(since=0, earliest=1, latest=3)
        await _finish(session, server, out_dir, ["d", "e"])
        events = await _drain(session, since=old_cursor)
    later = _seqs(events)
    assert len(later) == 2
    assert min(later) > old_cursor  # never given twice, though the old ones were trimmed
    assert later == sorted(later)


async def test_a_cursor_replays_what_came_after_it(
    background: Background, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    async with background(ID, state_dir=state_dir, config=CONFIG) as session:
        await _finish(session, server, out_dir, ["a", "b", "c"])
        everything = await _drain(session, since=0)
        ends = [e for e in everything if isinstance(e, FinishedEvent)]
        assert [e.location.name for e in ends] == ["a", "b", "c"]
        cursor = ends[0].seq
        assert cursor is not None
        after = await _drain(session, since=cursor)
    # Acknowledged (auto) or not, the log replays them in order, then says where it ends.
    assert [e.location.name for e in after if isinstance(e, FinishedEvent)] == ["b", "c"]
    assert after[-1] == EventsDeliveredEvent(replayed=2)
    assert isinstance(after[-1], EventsDeliveredEvent)
    assert after[-1].cursor == ends[-1].seq


async def test_a_retry_and_a_resume_are_logged_with_the_end(
    background: Background, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    served = server.add_file("/cut.bin", size=200_000)
    server.set_faults(served.path, Faults(close_after=50_000), times=1)
    async with background(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(served.path), out_dir / "cut.bin")
        await task.wait()
        logged = await _drain(session, since=0)
    assert sha256_file(out_dir / "cut.bin") == served.sha256
    kinds = [type(e) for e in logged]
    assert kinds == [RetryEvent, ResumedEvent, FinishedEvent, EventsDeliveredEvent]
    seqs = [e.seq for e in logged[:3] if not isinstance(e, EventsDeliveredEvent)]
    assert seqs == [1, 2, 3]


async def test_a_cursor_newer_than_the_log_is_a_gap_with_a_snapshot(
    background: Background, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    config = CONFIG.replace(acknowledge="explicit")
    async with background(ID, state_dir=state_dir, config=config) as session:
        await _finish(session, server, out_dir, ["a"])
        events = await _drain(session, since=99)
    gap = events[0]
    assert gap == EventsGapEvent(since=99, earliest=0, latest=1)
    # The snapshot a cursor-less stream gives: the task's end, then the delivered mark.
    assert [type(e) for e in events[1:]] == [FinishedEvent, EventsDeliveredEvent]


async def test_a_trimmed_cursor_is_a_gap_never_a_silent_loss(
    background: Background, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    config = CONFIG.replace(event_log_size=1, acknowledge="explicit")
    async with background(ID, state_dir=state_dir, config=config) as session:
        await _finish(session, server, out_dir, ["a", "b", "c"])
        # Not acknowledged: nothing may be trimmed, the log answers 0.
        assert len(_seqs(await _drain(session, since=0))) == 3
        await session.acknowledge(*[task.id for task in session.tasks()][:2])
    async with background(ID, state_dir=state_dir, config=config) as session:
        events = await _drain(session, since=0)
        assert isinstance(events[0], EventsGapEvent)
        assert events[0].earliest == 2
        # Every task the session still has, as it stands: c's end.
        assert [e.location.name for e in events if isinstance(e, FinishedEvent)] == ["c"]
        # From the floor on, the log answers again.
        assert [
            e.location.name for e in await _drain(session, since=2) if isinstance(e, FinishedEvent)
        ] == ["c"]


async def test_an_ephemeral_session_refuses_a_cursor() -> None:
    async with Session() as session:
        with pytest.raises(InvalidRequestError, match="ephemeral session keeps no event log"):
            session.events(since=0)
        events = await _drain(session)
        assert events == [EventsDeliveredEvent(replayed=0)]
        assert isinstance(events[0], EventsDeliveredEvent)
        assert events[0].cursor is None


async def test_a_wrong_cursor_is_refused(background: Background, state_dir: Path) -> None:
    async with background(ID, state_dir=state_dir) as session:
        with pytest.raises(TypeError, match="since must be an int"):
            session.events(since="3")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError, match="since must be 0"):
            session.events(since=-1)


async def test_a_journal_of_the_previous_schema_opens_and_gets_the_log(
    background: Background, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """A journal written by the previous version (schema 3: no event log) with a
    task ended but not acknowledged: it migrates, and its end starts the log."""
    config = CONFIG.replace(acknowledge="explicit")
    async with background(ID, state_dir=state_dir, config=config) as session:
        await _finish(session, server, out_dir, ["a"])
    path = state_dir / ID / JOURNAL_NAME
    current = await Journal.open(path)
    async with current:
        entries = current.entries
    old_path = path.with_name("old.sqlite3")
    # The old code's schema, with the columns today's writer writes (schemas 5
    # and 6's), which are dropped again once the rows are in.
    old = await Journal.open(old_path, migrations=[*MIGRATIONS[:3], MIGRATIONS[4], MIGRATIONS[5]])
    async with old:
        for entry in entries:
            old.put(entry)
    db = sqlite3.connect(old_path)
    try:  # (closed, so that its WAL is checkpointed into the file moved below)
        db.execute("ALTER TABLE tasks DROP COLUMN kind")
        db.execute("ALTER TABLE tasks DROP COLUMN upload")
        db.execute("ALTER TABLE tasks DROP COLUMN integrity")
        db.execute("PRAGMA user_version = 3")
        db.commit()
    finally:
        db.close()
    with sqlite3.connect(old_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "events" not in tables
    old_path.replace(path)

    async with background(ID, state_dir=state_dir, config=config) as session:
        events = await _drain(session, since=0)
        (task,) = session.tasks()
        assert isinstance(task.result, FinishedEvent)
        assert task.result.seq == 1
    assert [type(e) for e in events] == [FinishedEvent, EventsDeliveredEvent]
    assert events[0].seq == 1  # type: ignore[union-attr]
    assert sha256_file(out_dir / "a") == server.file("/a").sha256


async def test_a_cursor_gets_running_tasks_progress_then_live_events(
    background: Background, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    done = server.add_file("/done.bin", size=20_000)
    slow = server.add_file("/slow.bin", size=200_000)
    server.set_faults(slow.path, Faults(hold_after=50_000))
    async with background(ID, state_dir=state_dir, config=CONFIG) as session:
        first = await session.download(server.url(done.path), out_dir / "done.bin")
        await first.wait()
        running = await session.download(server.url(slow.path), out_dir / "slow.bin")
        await server.wait_held(slow.path)
        await wait_for_bytes(running, 50_000)
        async with session.events(since=0) as stream:
            backlog = [await anext(stream) for _ in range(3)]
            assert backlog == [
                FinishedEvent(task_id=first.id, location=out_dir / "done.bin", total_bytes=20_000),
                ProgressEvent(
                    task_id=running.id,
                    bytes_written=50_000,
                    total_bytes_written=50_000,
                    total_bytes_expected=200_000,
                ),
                EventsDeliveredEvent(replayed=1),
            ]
            assert backlog[0].seq == 1  # type: ignore[union-attr]
            assert backlog[2].cursor == 1  # type: ignore[union-attr]
            server.release(slow.path)
            async for event in stream:  # live from here on, numbered as they come
                if isinstance(event, FinishedEvent):
                    assert event.seq == 2
                    break
    assert sha256_file(out_dir / "slow.bin") == slow.sha256


async def test_numbers_continue_above_a_trimmed_newest_entry(
    background: Background, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """Retention may drop the newest entry (its task acknowledged, an older one
    not): the floor stored with the deletion keeps its number from coming back."""
    config = CONFIG.replace(event_log_size=1, acknowledge="explicit")
    async with background(ID, state_dir=state_dir, config=config) as session:
        await _finish(session, server, out_dir, ["a", "b"])
        _, second = session.tasks()
        await session.acknowledge(second.id)
    with sqlite3.connect(state_dir / ID / JOURNAL_NAME) as db:
        assert [row[0] for row in db.execute("SELECT seq FROM events")] == [1]
    async with background(ID, state_dir=state_dir, config=config) as session:
        await _finish(session, server, out_dir, ["c"])
        events = await _drain(session, since=2)
    assert _seqs(events) == [3]


async def test_a_reader_sees_a_number_only_once_the_database_holds_it(
    background: Background, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """So a process killed after its reader saw event N never leaves N to be
    given again: checked on every numbered event of a live stream, read from the
    database by a separate connection the moment the stream hands it out."""
    served = server.add_file("/cut.bin", size=200_000)
    server.set_faults(served.path, Faults(close_after=50_000), times=2)
    async with background(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(served.path), out_dir / "cut.bin")
        seen = []
        with sqlite3.connect(state_dir / ID / JOURNAL_NAME) as db:
            async with task.events() as stream:
                async for event in stream:
                    if isinstance(event, ProgressEvent):
                        continue
                    assert event.seq is not None
                    stored = db.execute("SELECT task_id FROM events WHERE seq = ?", (event.seq,))
                    assert stored.fetchall() == [(task.id,)], event
                    seen.append(type(event))
    assert seen == [RetryEvent, ResumedEvent, RetryEvent, ResumedEvent, FinishedEvent]
    assert sha256_file(out_dir / "cut.bin") == served.sha256
