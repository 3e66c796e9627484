"""The journal's SQLite shell on real files: create, reopen, batch, refuse what is broken."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from bgtransfer import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    HTTPStatusError,
    JournalError,
    LocalFileError,
    ResumeData,
)
from bgtransfer._core.codec import encode_terminal
from bgtransfer._core.journal import (
    COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    FinalWrite,
    Phase,
    TaskEntry,
    entry_to_row,
)
from bgtransfer._io import journal as journal_module
from bgtransfer._io import journal_writer
from bgtransfer._io.journal import JOURNAL_NAME, Journal
from bgtransfer._io.journal_commit import MULTI_ROW_MAX
from bgtransfer._io.journal_writer import INLINE_ROWS, WAL_CHECKPOINT_COMMITS

pytestmark = pytest.mark.asyncio

URL = "https://example.com/d\u00e9j\u00e0/file.bin"


def _entry(task_id: int, phase: Phase = Phase.RUNNING, **changes: Any) -> TaskEntry:
    fields: dict[str, Any] = {
        "id": task_id,
        "url": f"{URL}?n={task_id}",
        "destination": f"/home/u/T\u00e9l\u00e9chargements/{task_id}.bin",
        "description": f"task \U0001f4e6 {task_id}",
        "headers": (("User-Agent", "demo/1.0"), ("X-Empty", "")),
        "phase": phase,
        "offset": 10 * task_id,
        "total": 1000 * task_id,
        "validator": f'"v{task_id}"',
    }
    fields.update(changes)
    return TaskEntry(**fields)


def _every_kind_of_entry() -> list[TaskEntry]:
    resume = ResumeData(url=URL, partial="/p/9.part", offset=5, validator='"v"', total=None)
    return [
        _entry(1),
        _entry(2, Phase.SUSPENDED, description=None, total=None, validator=None, encoding="gzip"),
        _entry(3, Phase.CANCELING, keep_partial=True, offset=0, headers=()),
        _entry(4, Phase.MOVING, offset=4000, total=4000),
        _entry(
            5, Phase.ENDED, outcome=FinishedEvent(task_id=5, location=Path("/f"), total_bytes=9)
        ),
        _entry(
            6,
            Phase.ENDED,
            outcome=ErrorEvent(task_id=6, error=HTTPStatusError(503, url=URL, retry_after="60")),
        ),
        _entry(
            7,
            Phase.ENDED,
            outcome=ErrorEvent(
                task_id=7, error=LocalFileError("disk full", url=URL, errno=28, filename="/x")
            ),
        ),
        _entry(8, Phase.ENDED, outcome=CancelledEvent(task_id=8)),
        _entry(9, Phase.ENDED, outcome=CancelledEvent(task_id=9, resume_data=resume)),
        _entry(2**40, offset=2**50, total=2**60),
    ]


def _comparable(entry: TaskEntry) -> tuple[TaskEntry, object]:
    """Errors compare by identity: compare outcomes through their encoded form."""
    outcome = entry.outcome
    return (
        attrs.evolve(entry, outcome=None),
        None if outcome is None else (type(outcome), outcome.task_id, encode_terminal(outcome)),
    )


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)


def _rows(path: Path) -> dict[int, tuple[Any, ...]]:
    """The task rows as a separate, read-only connection sees them."""
    connection = _read_only(path)
    try:
        rows = connection.execute(f"SELECT {', '.join(COLUMNS)} FROM tasks").fetchall()
    finally:
        connection.close()
    return {row[0]: tuple(row) for row in rows}


def _user_version(path: Path) -> int:
    connection = _read_only(path)
    try:
        version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    finally:
        connection.close()
    return version


def _execute(path: Path, *statements: str) -> None:
    """Change the database behind the journal's back (another connection)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _make(path: Path, entries: Sequence[TaskEntry], **options: Any) -> None:
    """A closed journal holding ``entries``."""
    journal = await Journal.open(path, **options)
    async with journal:
        for entry in entries:
            journal.put(entry)
        await journal.flush()


async def _reopen(path: Path, **options: Any) -> Journal:
    journal = await Journal.open(path, **options)
    async with journal:
        pass
    return journal


# -- creating and reopening ------------------------------------------------------------------------


async def test_new_journal_is_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "state" / JOURNAL_NAME
    path.parent.mkdir()
    previous = os.umask(0)
    try:
        journal = await Journal.open(path)
        assert path.is_file()
        assert _mode(path) == 0o600
        async with journal:
            journal.put(_entry(1), urgent=True)
            await journal.flush()
            wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
            assert wal.is_file()
            assert shm.is_file()
            assert _mode(wal) == 0o600
            assert _mode(shm) == 0o600
            assert _mode(path) == 0o600
    finally:
        os.umask(previous)
    assert sorted(p.name for p in path.parent.iterdir()) == [JOURNAL_NAME]
    assert _mode(path) == 0o600


async def test_new_journal_has_the_schema_version_and_nothing_in_it(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path)
    assert journal.path == path
    assert journal.entries == []
    assert journal.next_id == 1
    async with journal:
        pass
    assert _user_version(path) == SCHEMA_VERSION
    assert _rows(path) == {}
    reopened = await _reopen(path)
    assert reopened.entries == []
    assert reopened.next_id == 1


async def test_a_journal_in_a_missing_directory_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / JOURNAL_NAME
    with pytest.raises(JournalError) as info:
        await Journal.open(path)
    assert info.value.path == str(path)
    assert "cannot open" in str(info.value)
    assert list(tmp_path.iterdir()) == []


async def test_reopening_gives_back_every_entry_exactly(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    entries = _every_kind_of_entry()
    await _make(path, entries)
    reopened = await _reopen(path)
    assert [_comparable(e) for e in reopened.entries] == [_comparable(e) for e in entries]
    assert reopened.next_id == 2**40 + 1
    error = reopened.entries[5].outcome
    assert isinstance(error, ErrorEvent)
    assert isinstance(error.error, HTTPStatusError)
    assert (error.error.status, error.error.retry_after) == (503, "60")


async def test_the_newest_put_of_a_task_wins(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path)
    async with journal:
        journal.put(_entry(1, offset=10))
        await journal.flush()
        journal.put(_entry(1, offset=20))
        journal.put(_entry(1, Phase.SUSPENDED, offset=30))
    assert [_comparable(e) for e in (await _reopen(path)).entries] == [
        _comparable(_entry(1, Phase.SUSPENDED, offset=30))
    ]


async def test_next_id_is_never_reused_even_after_forget(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path)
    async with journal:
        for task_id in (1, 2, 3, 41):
            journal.put(_entry(task_id))
        assert journal.next_id == 42
        await journal.flush()
        for task_id in (1, 2, 3, 41):
            journal.forget(task_id, urgent=True)
        await journal.flush()
        assert _rows(path) == {}
    reopened = await _reopen(path)
    assert reopened.entries == []
    assert reopened.next_id == 42
    journal = await Journal.open(path)
    async with journal:
        journal.put(_entry(42))
        journal.forget(42)
    assert (await _reopen(path)).next_id == 43


async def test_forgetting_many_tasks_in_one_commit_and_then_the_newest_keeps_the_next_id(
    tmp_path: Path,
) -> None:
    """Many deletions in one commit (more ids than one statement could list), and
    the next id is stored only when it changed: deleting the newest task's row
    afterwards (without storing it again) must still leave the right next id."""
    path = tmp_path / JOURNAL_NAME
    count = 1035
    journal = await Journal.open(path, interval=3600)
    async with journal:
        for task_id in range(1, count + 1):
            journal.put(_entry(task_id))
        await journal.flush()
        for task_id in range(1, count - 9):
            journal.forget(task_id, urgent=True)
        await journal.flush()
        assert sorted(_rows(path)) == list(range(count - 9, count + 1))
        journal.forget(count, urgent=True)  # the newest: its row bounded the ids
        await journal.flush()
        assert sorted(_rows(path)) == list(range(count - 9, count))
    reopened = await _reopen(path)
    assert [entry.id for entry in reopened.entries] == list(range(count - 9, count))
    assert reopened.next_id == count + 1
    journal = await Journal.open(path)
    async with journal:
        for task_id in range(count - 9, count):
            journal.forget(task_id)
        journal.put(_entry(count + 1))
        await journal.flush()
        journal.forget(count + 1)
    reopened = await _reopen(path)
    assert reopened.entries == []
    assert reopened.next_id == count + 2


# -- batching --------------------------------------------------------------------------------------


async def test_progress_puts_are_batched(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    async with journal:
        journal.put(_entry(1, offset=0), urgent=True)
        await journal.flush()
        base = journal.statistics().commits
        assert base >= 1
        for offset in range(1, 1001):
            journal.put(_entry(1, offset=offset, total=None))
            await anyio.lowlevel.checkpoint()  # give the writer every chance to run
        # At most one commit can slip in (a writer woken by the urgent put may still
        # be on its way to the lock); then nothing until the interval is up.
        assert journal.statistics().commits - base <= 1
        assert journal.statistics().pending <= 1
        await journal.flush()
        assert journal.statistics().commits - base <= 2
        assert journal.statistics().pending == 0
        assert _rows(path)[1] == entry_to_row(_entry(1, offset=1000, total=None))


async def test_a_deferred_entry_is_committed_by_its_timer_and_a_lazy_flush_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deferred entry (a task's end) starts no commit of its own at once (the
    loop may run rounds meanwhile); a lazy flush starts none either and returns
    once the timer, DEFERRED_DELAY later, has committed it: one commit."""
    # Longer than the real 5 ms, which a loaded machine can spend between two of
    # the loop's rounds below: the timer would then rightly have committed it.
    delay = 0.25
    monkeypatch.setattr(journal_module, "DEFERRED_DELAY", delay)
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    async with journal:
        base = journal.statistics().commits
        entry = _entry(1, offset=5, total=None)
        put_at = time.monotonic()  # (the timer is armed after this)
        journal.put(entry, deferred=True)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        if journal.statistics().commits != base:  # only the timer may have committed it
            assert time.monotonic() - put_at >= delay - 1e-6  # (the loop clock's resolution)
        else:  # an urgent put would be committed now
            assert 1 not in _rows(path)
        with anyio.fail_after(5):
            await journal.flush(lazy=True)
        assert journal.statistics().commits == base + 1
        assert _rows(path)[1] == entry_to_row(entry)


async def test_a_deferred_entry_rides_along_with_the_next_commit(tmp_path: Path) -> None:
    """Ends of tasks put deferred share the commit another caller starts; a lazy
    flush for them, up to the generation after they were put, has nothing left
    to wait for, and their timer finds nothing to commit."""
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    async with journal:
        base = journal.statistics().commits
        ends = [_entry(task_id, offset=task_id, total=None) for task_id in (1, 2, 3)]
        for entry in ends:
            journal.put(entry, deferred=True)
        upto = journal.generation
        journal.put(_entry(4), urgent=True)
        await journal.flush()
        assert journal.statistics().commits == base + 1
        assert {task_id: _rows(path)[task_id] for task_id in (1, 2, 3)} == {
            entry.id: entry_to_row(entry) for entry in ends
        }
        await journal.flush(lazy=True, upto=upto)  # returns at once: nothing to wait for
        with anyio.fail_after(5):
            journal.put(_entry(5), deferred=True)  # the next deferred entry: a timer again
            await journal.flush(lazy=True)
        assert journal.statistics().commits == base + 2


async def test_a_lazy_flush_waits_only_for_what_was_put_up_to_its_generation(
    tmp_path: Path,
) -> None:
    """A reader waits for its task's end, not for entries put after it: with
    later entries still pending (not due for an hour), it returns once its own
    are committed."""
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    async with journal:
        journal.put(_entry(1, offset=1, total=None), deferred=True)
        upto = journal.generation
        with anyio.fail_after(5):
            await journal.flush(lazy=True, upto=upto)
        journal.put(_entry(2))  # due at the writer's round, an hour from now
        await journal.flush(lazy=True, upto=upto)
        assert 1 in _rows(path)
        assert 2 not in _rows(path)
        assert journal.statistics().pending == 1


async def test_a_lazy_flush_waiting_when_the_journal_closes_returns_once_exit_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "DEFERRED_DELAY", 3600.0)  # only the exit commits
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    returned: list[bool] = []

    async def reader() -> None:
        await journal.flush(lazy=True)
        returned.append(1 in _rows(path))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group, journal:
            journal.put(_entry(1), deferred=True)
            group.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            assert returned == []
    assert returned == [True]


async def test_flush_makes_everything_put_so_far_durable(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    async with journal:
        entries = _every_kind_of_entry()
        for entry in entries:
            journal.put(entry)
        await journal.flush()
        assert _rows(path) == {entry.id: entry_to_row(entry) for entry in entries}
        assert journal.statistics().pending == 0
        commits = journal.statistics().commits
        await journal.flush()  # nothing new: no commit
        assert journal.statistics().commits == commits


async def test_concurrent_flushes_share_commits(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path)
    flushed: list[int] = []

    async def put_and_flush(task_id: int) -> None:
        journal.put(_entry(task_id))
        await journal.flush()
        assert task_id in _rows(path)
        flushed.append(task_id)

    async with journal:
        base = journal.statistics().commits
        async with anyio.create_task_group() as group:
            for task_id in range(1, 101):
                group.start_soon(put_and_flush, task_id)
        commits = journal.statistics().commits - base
    assert sorted(flushed) == list(range(1, 101))
    assert 1 <= commits <= 10
    assert sorted(_rows(path)) == list(range(1, 101))


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every function the journal runs in a worker thread once open, in order."""
    calls: list[object] = []
    real = journal_module.run_blocking

    async def counting(func: Any, *args: Any) -> Any:
        if func is not journal_module._open_sync:
            calls.append(func)
        return await real(func, *args)

    monkeypatch.setattr(journal_module, "run_blocking", counting)
    monkeypatch.setattr(journal_writer, "run_blocking", counting)
    return calls


async def test_small_flushes_commit_on_the_loop_and_large_ones_in_a_thread(
    tmp_path: Path, hops: list[object]
) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    async with journal:
        journal.put(_entry(1))
        await journal.flush()
        assert hops == []  # one row, no fsync: committed without a thread hop
        assert _rows(path)[1] == entry_to_row(_entry(1))
        many = [_entry(task_id) for task_id in range(2, 3 + INLINE_ROWS)]
        for entry in many:
            journal.put(entry)
        await journal.flush()
        assert len(hops) == 1  # more than INLINE_ROWS rows: a worker thread
        assert sorted(_rows(path)) == list(range(1, 3 + INLINE_ROWS))
    hops.clear()
    journal = await Journal.open(path, interval=3600, fsync=True)
    async with journal:
        journal.put(_entry(1, offset=5))
        await journal.flush()
        assert len(hops) == 1  # an fsync never runs on the loop
        assert _rows(path)[1] == entry_to_row(_entry(1, offset=5))


async def test_urgent_entries_commit_on_the_loop_together_without_waiting_for_a_flush(
    tmp_path: Path, hops: list[object]
) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)  # the writer's round never comes
    async with journal:
        await anyio.lowlevel.checkpoint()  # the writer starts, finds nothing, sleeps
        base = journal.statistics().commits
        for task_id in (1, 2, 3):
            journal.put(_entry(task_id), urgent=True)  # put together: one commit
        assert 1 not in _rows(path)
        await anyio.lowlevel.checkpoint()  # no flush(): the loop gets to it
        assert sorted(_rows(path)) == [1, 2, 3]
        assert journal.statistics().commits == base + 1
        journal.put(_entry(4, offset=9), urgent=True)
        await journal.flush()  # the flush after an urgent put finds it committed
        assert _rows(path)[4] == entry_to_row(_entry(4, offset=9))
        assert journal.statistics().commits == base + 2
        assert hops == []  # small and without fsync: no thread hop for any of it
    hops.clear()
    journal = await Journal.open(path, interval=3600, fsync=True)
    async with journal:
        journal.put(_entry(5), urgent=True)
        await journal.flush()
        assert len(hops) == 1  # with fsync, urgent or not, a worker thread
        assert 5 in _rows(path)


async def test_the_writer_checkpoints_the_wal_so_it_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    wal = path.with_name(path.name + "-wal")
    journal = await Journal.open(path, interval=3600)
    rounds = 5 * WAL_CHECKPOINT_COMMITS
    async with journal:
        for offset in range(rounds):
            journal.put(_entry(1, offset=offset, total=None))
            await journal.flush()  # one commit each, on the loop
        with anyio.fail_after(10):
            while journal.statistics().wal_checkpoints < 4:
                await anyio.lowlevel.checkpoint()
        # Each commit appends at least one 4 KiB page to the WAL: without
        # checkpoints it would hold them all; with them it starts over.
        assert wal.stat().st_size < rounds * 4096 // 2
    assert _rows(path)[1] == entry_to_row(_entry(1, offset=rounds - 1, total=None))


async def test_leaving_commits_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    async with journal:
        journal.put(_entry(1, offset=10), urgent=True)
        await journal.flush()
        journal.put(_entry(1, offset=500))
        journal.put(_entry(2))
        journal.forget(3)
        assert journal.statistics().pending == 3
        assert _rows(path) == {1: entry_to_row(_entry(1, offset=10))}
    assert journal.statistics().pending == 0
    assert _rows(path) == {1: entry_to_row(_entry(1, offset=500)), 2: entry_to_row(_entry(2))}
    reopened = await _reopen(path)
    assert [_comparable(e) for e in reopened.entries] == [
        _comparable(_entry(1, offset=500)),
        _comparable(_entry(2)),
    ]


async def test_flush_on_a_closed_journal_with_something_pending_raises(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path)
    async with journal:
        pass
    journal.put(_entry(1))
    with pytest.raises(JournalError) as info:
        await journal.flush()
    assert info.value.path == str(path)
    assert "closed" in str(info.value)


# -- forget ----------------------------------------------------------------------------------------


async def test_an_urgent_forget_deletes_the_row_with_the_next_commit(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    async with journal:
        journal.put(_entry(1))
        journal.put(_entry(2))
        await journal.flush()
        assert sorted(_rows(path)) == [1, 2]
        journal.forget(1, urgent=True)
        await journal.flush()
        assert sorted(_rows(path)) == [2]
        journal.forget(99, urgent=True)  # never there: nothing happens
        await journal.flush()
        assert sorted(_rows(path)) == [2]
    assert [e.id for e in (await _reopen(path)).entries] == [2]


async def test_an_acknowledgement_is_deleted_by_the_writers_round_not_by_flushes(
    tmp_path: Path,
) -> None:
    """A plain forget (an acknowledged event) rides on no commit that callers wait
    for, however many come, but the writer deletes it within its interval."""
    path = tmp_path / JOURNAL_NAME
    interval = 0.2
    journal = await Journal.open(path, interval=interval)
    async with journal:
        journal.put(_entry(1))
        await journal.flush()
        asked = time.monotonic()  # (before the forget: its interval starts after this)
        journal.forget(1)
        for offset in range(1, 6):
            journal.put(_entry(2, offset=offset), urgent=True)
            await journal.flush()
            if 1 not in _rows(path):
                # The writer's round came during these flushes (a loaded machine
                # can take an interval for them): allowed once the interval has
                # passed, never before; a flush's commit never takes the deletion.
                assert time.monotonic() - asked >= interval, offset
                break
        else:  # committed without the deletion every time
            flushed = journal.statistics().commits
            with anyio.fail_after(10):
                # The writer's round, in its time: the next commit (pending is 0 as
                # soon as it takes the batch, while its thread still writes it).
                while journal.statistics().commits == flushed:
                    await anyio.lowlevel.checkpoint()
        assert journal.statistics().pending == 0
        assert time.monotonic() - asked >= interval * 0.9
        assert sorted(_rows(path)) == [2]
        journal.forget(2)
        assert 2 in _rows(path)
    assert _rows(path) == {}  # the exit commits deletions too


@pytest.mark.parametrize("count", [1, 2, MULTI_ROW_MAX, MULTI_ROW_MAX + 1])
async def test_a_batch_of_entries_is_one_commit_whatever_its_size(
    tmp_path: Path, count: int
) -> None:
    """Small batches are one multi-row INSERT, larger ones a transaction of many."""
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    entries = [_entry(task_id, offset=task_id * 3) for task_id in range(1, count + 1)]
    async with journal:
        journal.put(_entry(1))
        await journal.flush()
        base = journal.statistics().commits
        for entry in entries:
            journal.put(entry)
        await journal.flush()
        assert journal.statistics().commits == base + 1
        assert _rows(path) == {entry.id: entry_to_row(entry) for entry in entries}


@pytest.mark.parametrize("count", [1, 3, MULTI_ROW_MAX, 40])
async def test_rows_with_empty_columns_are_stored_exactly_whatever_their_mix(
    tmp_path: Path, count: int
) -> None:
    """Rows of one shape are written with their NULLs in the statement: each row
    reads back as it was put, a column emptied by a later put included, whether
    the batch's rows share their empty columns or not."""
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path, interval=3600)
    full = [_entry(task_id) for task_id in range(1, count + 1)]
    empty = {"description": None, "total": None, "validator": None}
    emptied = [_entry(task_id, **empty) for task_id in range(1, count + 1)]
    mixed = [(full if task_id % 3 else emptied)[task_id - 1] for task_id in range(1, count + 1)]
    async with journal:
        for batch in (full, emptied, mixed, full):
            for entry in batch:
                journal.put(entry)
            await journal.flush()
            assert _rows(path) == {entry.id: entry_to_row(entry) for entry in batch}
    assert [_comparable(e) for e in (await _reopen(path)).entries] == [_comparable(e) for e in full]


async def test_put_then_forget_leaves_no_row(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path)
    async with journal:
        journal.put(_entry(1))
        journal.put(_entry(2))
        journal.forget(1)
        await journal.flush()
        assert sorted(_rows(path)) == [2]
        journal.put(_entry(2, offset=99))
        journal.forget(2)
    assert _rows(path) == {}
    assert (await _reopen(path)).next_id == 3


# -- durability ------------------------------------------------------------------------------------


async def test_fsync_journal_round_trip(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    part = tmp_path / "1.part"
    part.write_bytes(b"x" * 10)
    entries = _every_kind_of_entry()
    journal = await Journal.open(path, fsync=True)
    async with journal:
        for entry in entries:
            journal.put(entry, data_file=part)
        journal.put(_entry(50), urgent=True, data_file=tmp_path / "gone.part")
        await journal.flush()
        assert sorted(_rows(path)) == sorted([*(e.id for e in entries), 50])
    reopened = await _reopen(path, fsync=True)
    assert [_comparable(e) for e in reopened.entries] == [
        _comparable(e) for e in sorted([*entries, _entry(50)], key=lambda e: e.id)
    ]
    assert part.read_bytes() == b"x" * 10


# -- secrets ---------------------------------------------------------------------------------------


async def test_credentials_never_reach_the_files(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    wal = Path(f"{path}-wal")
    headers = (
        ("Authorization", "Bearer s3cret-token"),
        ("X-Harmless", "harmless-value"),
        ("Cookie", "id=s3cret-cookie"),
        ("proxy-AUTHORIZATION", "Basic s3cret-proxy"),
    )
    journal = await Journal.open(path)
    async with journal:
        journal.put(_entry(1, headers=headers))
        await journal.flush()
        raw = path.read_bytes() + wal.read_bytes()
        assert b"harmless-value" in raw
        for secret in (b"s3cret-token", b"s3cret-cookie", b"s3cret-proxy", b"s3cret"):
            assert secret not in raw
    raw = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert b"harmless-value" in raw
    assert b"s3cret" not in raw
    assert (await _reopen(path)).entries[0].headers == (("X-Harmless", "harmless-value"),)


# -- broken journals -------------------------------------------------------------------------------


def _snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with the sha256 of its bytes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _neighbours(directory: Path) -> None:
    """Files a session keeps beside its journal, which a refused journal must not touch."""
    (directory / "partials").mkdir()
    (directory / "partials" / "3.part").write_bytes(b"partial bytes" * 100)
    (directory / "lock").write_text("12345\n")


async def _refused(path: Path, *needles: str) -> JournalError:
    """Open ``path``: a JournalError naming the path and ``needles``, and nothing changed."""
    _neighbours(path.parent)
    before = _snapshot(path.parent)
    with pytest.raises(JournalError) as info:
        await Journal.open(path)
    error = info.value
    assert error.path == str(path)
    assert str(error).startswith(f"journal {path}: ")
    for needle in needles:
        assert needle in error.problem
    assert _snapshot(path.parent) == before
    return error


async def _real_journal(directory: Path, count: int = 5) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / JOURNAL_NAME
    await _make(path, [_entry(task_id) for task_id in range(1, count + 1)])
    assert sorted(p.name for p in directory.iterdir()) == [JOURNAL_NAME]
    return path


async def test_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(b"this is not a database, just some text\n" * 200)
    await _refused(path, "not a readable journal database", "not a database")


async def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(bytes(range(256)) * 64)
    await _refused(path, "not a readable journal database")


async def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(b"")
    await _refused(path, "empty")
    assert path.read_bytes() == b""


async def test_a_journal_truncated_to_half_is_refused(tmp_path: Path) -> None:
    path = await _real_journal(tmp_path)
    size = path.stat().st_size
    assert size % 4096 == 0
    assert size >= 4 * 4096
    os.truncate(path, size // 2 // 4096 * 4096)  # half, on a page boundary
    error = await _refused(path)
    assert "malformed" in error.problem or "damaged" in error.problem


@pytest.mark.parametrize(
    "cut",
    [100, 4096, 4096 + 2000, -4096, -4096 + 1, -3000, -500],
    ids=lambda cut: f"keep{cut}" if cut > 0 else f"drop{-cut}",
)
async def test_a_journal_cut_inside_its_pages_is_refused(tmp_path: Path, cut: int) -> None:
    path = await _real_journal(tmp_path)
    size = path.stat().st_size
    os.truncate(path, cut if cut > 0 else size + cut)
    error = await _refused(path)
    assert any(word in error.problem for word in ("malformed", "damaged", "truncated"))


@pytest.mark.parametrize("dropped", [1, 8])
async def test_a_journal_missing_the_last_bytes_of_its_last_page_is_refused(
    tmp_path: Path, dropped: int
) -> None:
    # SQLite reads a short last page as zeros and PRAGMA quick_check does not look
    # inside text values, so without a size check a journal missing the last few bytes
    # would open "fine" and hand back a task whose encoding is "identit\x00". A SQLite
    # file is always a whole number of pages: the size alone shows the damage.
    path = await _real_journal(tmp_path)
    size = path.stat().st_size
    os.truncate(path, size - dropped)
    error = await _refused(path)
    assert "truncated" in error.problem


async def test_a_newer_journal_is_refused_with_advice(tmp_path: Path) -> None:
    path = await _real_journal(tmp_path)
    _execute(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    error = await _refused(path, "newer", "upgrade", f"schema version {SCHEMA_VERSION + 1}")
    assert str(SCHEMA_VERSION) in error.problem


async def test_a_plain_sqlite_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    # Regression: switching to WAL before reading user_version rewrote a database that
    # is not a journal (bytes 18 and 19 of its header went from 1 to 2) before refusing
    # it. The read-only checks now come first.
    path = tmp_path / JOURNAL_NAME
    _execute(path, "CREATE TABLE things (x)", "INSERT INTO things VALUES (1)")
    assert _user_version(path) == 0
    await _refused(path, "not a bgtransfer journal")


async def test_a_plain_wal_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    _execute(path, "PRAGMA journal_mode = WAL", "CREATE TABLE tasks (x)")
    await _refused(path, "not a bgtransfer journal")


async def test_a_journal_with_a_corrupt_row_is_refused_naming_the_task(tmp_path: Path) -> None:
    path = await _real_journal(tmp_path)
    _execute(path, "UPDATE tasks SET phase = 'bogus' WHERE id = 4")
    error = await _refused(path, "task 4", "'bogus'")
    assert "damaged task record" in error.problem


async def test_a_journal_with_an_impossible_offset_is_refused_naming_the_task(
    tmp_path: Path,
) -> None:
    path = await _real_journal(tmp_path)
    _execute(path, "UPDATE tasks SET offset = -5 WHERE id = 2")
    await _refused(path, "task 2", "offset")


async def test_a_journal_without_its_next_id_is_refused(tmp_path: Path) -> None:
    path = await _real_journal(tmp_path)
    _execute(path, "DELETE FROM meta")
    await _refused(path, "next task id")


async def test_a_refused_journal_is_refused_again_and_kept(tmp_path: Path) -> None:
    path = await _real_journal(tmp_path)
    _execute(path, "UPDATE tasks SET phase = 'bogus' WHERE id = 4")
    first = await _refused(path, "task 4")
    with pytest.raises(JournalError) as info:
        await Journal.open(path)
    assert info.value.problem == first.problem


# -- migrations ------------------------------------------------------------------------------------

BASE = list(MIGRATIONS)  # this bgtransfer's schema, all steps
EXTRA = ("ALTER TABLE tasks ADD COLUMN note TEXT", "CREATE TABLE extra (x INTEGER)")
N = len(MIGRATIONS)


def _tables(path: Path) -> set[str]:
    connection = _read_only(path)
    try:
        return {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    finally:
        connection.close()


async def test_migrating_keeps_the_rows(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    await _make(path, [_entry(1), _entry(2, Phase.SUSPENDED)], migrations=BASE)
    assert _user_version(path) == N
    migrated = await _reopen(path, migrations=[*BASE, EXTRA])
    assert [_comparable(e) for e in migrated.entries] == [
        _comparable(_entry(1)),
        _comparable(_entry(2, Phase.SUSPENDED)),
    ]
    assert migrated.next_id == 3
    assert _user_version(path) == N + 1
    assert "extra" in _tables(path)
    connection = _read_only(path)
    try:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(tasks)")]
    finally:
        connection.close()
    assert columns == [*COLUMNS, "note"]
    # The next version works as a journal, and this bgtransfer now calls it newer.
    journal = await Journal.open(path, migrations=[*BASE, EXTRA])
    async with journal:
        journal.put(_entry(3))
    assert sorted(_rows(path)) == [1, 2, 3]
    with pytest.raises(JournalError, match="newer"):
        await Journal.open(path)


async def test_a_version_1_journal_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    """A journal written before segmented downloads (schema 1) opens with its tasks."""
    path = tmp_path / JOURNAL_NAME
    connection = sqlite3.connect(path)
    try:
        for statement in MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO tasks VALUES (7, 'http://example.com/a.bin', '/tmp/a.bin', 'A', '[]',"
            " 'running', 0, 1000, 5000, '\"v1\"', 'identity', NULL)"
        )
        connection.execute("UPDATE meta SET value = '8' WHERE key = 'next_id'")
        connection.execute("PRAGMA user_version = 1")
        connection.commit()
    finally:
        connection.close()
    journal = await Journal.open(path)
    async with journal:
        [entry] = journal.entries
    assert (entry.id, entry.offset, entry.validator, entry.segments) == (7, 1000, '"v1"', None)
    assert journal.next_id == 8
    assert _user_version(path) == SCHEMA_VERSION


async def test_a_version_2_journal_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    """A journal written before one-step moves (schema 2) opens with its tasks: a
    classic ``moving`` entry stays classic (no ``final_write``), and one-step entries
    can be written and read back afterwards."""
    path = tmp_path / JOURNAL_NAME
    connection = sqlite3.connect(path)
    try:
        for step in MIGRATIONS[:2]:
            for statement in step:
                connection.execute(statement)
        connection.execute(
            "INSERT INTO tasks VALUES (7, 'http://example.com/a.bin', '/tmp/a.bin', 'A', '[]',"
            " 'moving', 0, 5000, 5000, '\"v1\"', 'identity', NULL, NULL, NULL)"
        )
        connection.execute("PRAGMA user_version = 2")
        connection.commit()
    finally:
        connection.close()
    journal = await Journal.open(path)
    async with journal:
        [entry] = journal.entries
        assert (entry.id, entry.phase, entry.offset) == (7, Phase.MOVING, 5000)
        assert entry.final_write is None
        final_write = attrs.evolve(
            entry, id=8, offset=100, final_write=FinalWrite(size=5000, replaces=(1, 2, 3, 4))
        )
        journal.put(final_write, urgent=True)
        await journal.flush()
    assert _user_version(path) == SCHEMA_VERSION
    reopened = await _reopen(path)
    assert reopened.entries == [entry, final_write]


async def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    await _make(path, [_entry(1)], migrations=BASE)
    broken = ("CREATE TABLE extra (x INTEGER)", "THIS IS NOT SQL")
    before = _snapshot(tmp_path)
    with pytest.raises(JournalError) as info:
        await Journal.open(path, migrations=[*BASE, broken])
    assert _snapshot(tmp_path) == before
    assert info.value.path == str(path)
    assert f"from schema {N} to {N + 1}" in info.value.problem
    assert "failed" in info.value.problem
    assert _user_version(path) == N
    assert "extra" not in _tables(path)
    assert sorted(_rows(path)) == [1]
    assert [e.id for e in (await _reopen(path, migrations=BASE)).entries] == [1]


async def test_a_new_journal_whose_migration_fails_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    with pytest.raises(JournalError) as info:
        await Journal.open(path, migrations=[("THIS IS NOT SQL",)])
    assert info.value.path == str(path)
    assert "from schema 0 to 1" in info.value.problem
    assert not path.exists()
    journal = await _reopen(path)
    assert journal.entries == []
    assert _user_version(path) == SCHEMA_VERSION


# -- write failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sabotage", "cause"),
    [
        (
            "CREATE TRIGGER refuse BEFORE INSERT ON tasks "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END",
            "disk on fire",
        ),
        ("DROP TABLE tasks", "no such table"),
    ],
    ids=["trigger", "dropped-table"],
)
async def test_a_failed_commit_makes_flush_raise(tmp_path: Path, sabotage: str, cause: str) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = await Journal.open(path)
    async with journal:
        journal.put(_entry(1), urgent=True)
        await journal.flush()
        _execute(path, sabotage)
        journal.put(_entry(2))
        with pytest.raises(JournalError) as info:
            await journal.flush()
        error = info.value
        assert error.path == str(path)
        assert str(error).startswith(f"journal {path}: cannot write: ")
        assert cause in str(error)
        journal.put(_entry(3))
        with pytest.raises(JournalError) as again:
            await journal.flush()
        assert again.value is error
