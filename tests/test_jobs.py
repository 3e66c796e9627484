"""The scheduler runs any job: a counting job (no network, no file) proves it.

The engine's scheduling (the supervisor's limits, runners, cancel scopes,
endings, publishing, journaling) asks a task's work only through the
:class:`~bgtransfer._engine.job.Job` protocol. :class:`CountingJob`
"transfers" by counting to a number, one step each time its gate lets it; it
is queued under the limits, cancelled, suspended and resumed, fails, and ends
with exactly one terminal event, as a download does.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.lowlevel
import pytest

from bgtransfer import Configuration, TaskState
from bgtransfer._core.eventlog import EventLog
from bgtransfer._core.events import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    LoggedEvent,
    TaskEvent,
    TerminalEvent,
    is_terminal,
)
from bgtransfer._core.journal import Phase, TaskEntry
from bgtransfer._core.naming import parse_url
from bgtransfer._core.states import Stage
from bgtransfer._engine.engine import Engine
from bgtransfer._engine.job import Job
from bgtransfer._engine.record import TaskRecord
from bgtransfer._exceptions import JournalError, TransferError

L = TypeVar("L", bound=LoggedEvent)

SCHEDULER = Path(__file__).parent.parent / "src" / "bgtransfer" / "_engine" / "scheduler.py"

_PHASES = {
    TaskState.RUNNING: Phase.RUNNING,
    TaskState.SUSPENDED: Phase.SUSPENDED,
    TaskState.CANCELING: Phase.CANCELING,
    TaskState.COMPLETED: Phase.ENDED,
}


class CountingJob:
    """Counts to ``steps``, one step per ``gate`` release; ``fail_at``: raises there."""

    def __init__(self, record: TaskRecord, *, steps: int, fail_at: int | None = None) -> None:
        self.record = record
        self.steps = steps
        self.fail_at = fail_at
        self.count = 0
        self.runs = 0
        self.pauses = 0
        self.discards = 0
        self.kept: bool | None = None  # cancelled: whether it was asked for resume data
        self.running = anyio.Event()  # set on each run's start
        self._steps = anyio.Semaphore(0)  # one step per release

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self._steps.release()

    async def run(self) -> FinishedEvent:
        self.runs += 1
        self.running.set()
        while self.count < self.steps:
            await self._steps.acquire()
            if self.count == self.fail_at:
                raise TransferError("counted into a wall", url=self.record.url)
            self.count += 1
            self.record.bytes_received = self.count
        return FinishedEvent(
            task_id=self.record.id,
            location=self.record.destination,
            total_bytes=self.count,
            length_verified=True,
        )

    def entry(self) -> TaskEntry:
        record = self.record
        phase = _PHASES[record.state]
        return TaskEntry(
            id=record.id,
            url=record.url,
            destination=record.destination_key,
            description=record.description,
            headers=record.public_headers,
            phase=phase,
            offset=self.count,
            outcome=record.terminal if phase is Phase.ENDED else None,
        )

    @property
    def data_file(self) -> Path | None:
        return None

    def paused(self) -> None:
        self.pauses += 1

    def done_anyway(self) -> FinishedEvent | None:
        return None

    def cancel_outcome(self) -> CancelledEvent:
        self.kept = self.record.stage is Stage.CANCELING_KEEPING
        return CancelledEvent(task_id=self.record.id)

    def error_outcome(self, error: TransferError) -> ErrorEvent:
        return ErrorEvent(task_id=self.record.id, error=error)

    @property
    def has_leftovers(self) -> bool:
        return self.runs > 0

    async def discard(self) -> None:
        self.discards += 1


class Entries:
    """A journal (the engine's TaskJournal port) that keeps every entry put."""

    def __init__(self) -> None:
        self.entries: list[TaskEntry] = []
        self.forgotten: list[int] = []
        self.on_rejected: Callable[[int, JournalError], None] | None = None
        self.event_log = EventLog()

    def log(self, event: L) -> L:
        return self.event_log.append(event)

    async def logged(self, seq: int) -> None:
        await anyio.lowlevel.checkpoint()

    def put(
        self,
        entry: TaskEntry,
        *,
        urgent: bool = False,
        deferred: bool = False,
        data_file: Path | None = None,
    ) -> None:
        assert data_file is None  # a counting job has no data file
        self.entries.append(entry)

    def forget(self, task_id: int, *, urgent: bool = False) -> None:
        self.forgotten.append(task_id)

    @property
    def generation(self) -> int:
        return len(self.entries)

    async def flush(
        self,
        *,
        shielded: bool = False,
        lazy: bool = False,
        upto: int | None = None,
        at_once: bool = False,
    ) -> None:
        await anyio.lowlevel.checkpoint()

    def phases(self, task_id: int) -> list[Phase]:
        return [entry.phase for entry in self.entries if entry.id == task_id]


def count_job(engine: Engine, tmp_path: Path, name: str, *, steps: int, **kw: int) -> CountingJob:
    """Queue a task whose job is a CountingJob (as ``submit`` does a download's)."""
    url, origin = parse_url(f"http://counting.invalid/{name}")
    record = TaskRecord(
        task_id=engine._next_id,
        url=url,
        origin=origin,
        destination=tmp_path / name,
        description=name,
        headers={},
        request_headers=(),
        progress_interval=0.0,
        job=lambda record: CountingJob(record, steps=steps, **kw),
    )
    job = record.job
    assert isinstance(job, CountingJob)
    engine._next_id += 1
    engine._admit(record)
    return job


def state(job: CountingJob) -> TaskState:
    return job.record.state


@contextlib.asynccontextmanager
async def open_engine(tmp_path: Path) -> AsyncIterator[Engine]:
    config = Configuration(max_connections_per_host=1, progress_interval=0)
    async with Engine(
        config=config,
        downloads_dir=tmp_path,
        partials_dir=tmp_path,
        resume_key=b"k" * 32,
        journal=None,
    ) as engine:
        yield engine


async def terminals(engine: Engine, task_id: int) -> list[TerminalEvent]:
    """Every terminal event the task's stream delivers (the stream ends after one)."""
    events: list[TaskEvent] = [event async for event in engine.subscribe(task_id)]
    found = [event for event in events if is_terminal(event)]
    assert events[-1] == found[-1]  # nothing after the terminal event
    return found  # type: ignore[return-value]


def test_a_counting_job_is_a_job() -> None:
    def check(job: Job) -> None: ...  # mypy checks CountingJob against the protocol

    record = TaskRecord(
        task_id=1,
        url="http://counting.invalid/x",
        origin=parse_url("http://counting.invalid/x")[1],
        destination=Path("/x"),
        description=None,
        headers={},
        request_headers=(),
        progress_interval=0.0,
        job=lambda record: CountingJob(record, steps=1),
    )
    check(record.job)


def test_the_scheduler_knows_no_download() -> None:
    """The scheduler imports nothing of the download and names no part of it."""
    tree = ast.parse(SCHEDULER.read_text())
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    download_parts = {
        "download",
        "download_job",
        "segments",
        "sinks",
        "_io.partials",
        "_io.transfer",
        "_io.files",
    }
    assert not {name.lstrip(".") for name in imported} & download_parts
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not names & {"partial", "validator", "segments", "moved", "moving", "range"}


@pytest.mark.asyncio
async def test_jobs_queue_under_the_connection_limit(tmp_path: Path) -> None:
    """Two jobs for one host with one connection per host: the second runs only
    once the first has ended; each ends with one FinishedEvent."""
    async with open_engine(tmp_path) as engine:
        first = count_job(engine, tmp_path, "a", steps=3)
        second = count_job(engine, tmp_path, "b", steps=2)
        await first.running.wait()
        assert second.runs == 0  # queued
        assert (
            second.record.state is TaskState.RUNNING
        )  # (waiting for a slot is running, as on iOS)
        first.step(3)
        second.step(2)
        [done_a] = await terminals(engine, first.record.id)
        [done_b] = await terminals(engine, second.record.id)
        assert done_a == FinishedEvent(
            task_id=first.record.id, location=tmp_path / "a", total_bytes=3, length_verified=True
        )
        assert isinstance(done_b, FinishedEvent)
        assert done_b.total_bytes == 2
        assert (first.runs, second.runs) == (1, 1)
        assert (first.discards, second.discards) == (0, 0)
        assert state(first) is state(second) is TaskState.COMPLETED


@pytest.mark.asyncio
async def test_a_running_job_is_cancelled(tmp_path: Path) -> None:
    async with open_engine(tmp_path) as engine:
        job = count_job(engine, tmp_path, "a", steps=5)
        queued = count_job(engine, tmp_path, "b", steps=1)
        await job.running.wait()
        job.step(2)
        stream = engine.subscribe(job.record.id)
        engine.cancel(job.record.id)
        assert state(job) is TaskState.CANCELING
        await job.record.done.wait()
        events = [event async for event in stream]
        assert [event for event in events if is_terminal(event)] == [
            CancelledEvent(task_id=job.record.id)
        ]
        assert state(job) is TaskState.COMPLETED
        assert job.discards == 1  # ended without resume data: its leftovers go
        assert job.kept is False
        await queued.running.wait()  # the slot went to the queued job
        queued.step()
        [finished] = await terminals(engine, queued.record.id)
        assert isinstance(finished, FinishedEvent)


@pytest.mark.asyncio
async def test_a_queued_job_is_cancelled_without_running(tmp_path: Path) -> None:
    async with open_engine(tmp_path) as engine:
        running = count_job(engine, tmp_path, "a", steps=1)
        queued = count_job(engine, tmp_path, "b", steps=1)
        await running.running.wait()
        engine.cancel(queued.record.id)
        assert await terminals(engine, queued.record.id) == [
            CancelledEvent(task_id=queued.record.id)
        ]
        assert (queued.runs, queued.discards) == (0, 0)  # nothing to clear away
        running.step()
        [finished] = await terminals(engine, running.record.id)
        assert isinstance(finished, FinishedEvent)


@pytest.mark.asyncio
async def test_a_job_is_suspended_and_resumed(tmp_path: Path) -> None:
    """Suspended, the job's run is stopped and its slot freed (the next job
    runs); resumed, it runs again from what it kept, and ends once."""
    async with open_engine(tmp_path) as engine:
        job = count_job(engine, tmp_path, "a", steps=4)
        other = count_job(engine, tmp_path, "b", steps=1)
        stream = engine.subscribe(job.record.id)
        await job.running.wait()
        job.step(2)
        while job.count < 2:
            await anyio.lowlevel.checkpoint()
        engine.suspend(job.record.id)
        assert state(job) is TaskState.SUSPENDED
        await other.running.wait()  # its slot was freed
        assert job.pauses == 1
        other.step()
        await other.record.done.wait()
        job.running = anyio.Event()
        engine.resume(job.record.id)
        await job.running.wait()
        assert job.runs == 2
        assert job.count == 2
        job.step(2)
        events = [event async for event in stream]
        assert [event for event in events if is_terminal(event)] == [
            FinishedEvent(
                task_id=job.record.id, location=tmp_path / "a", total_bytes=4, length_verified=True
            )
        ]
        assert job.discards == 0


@pytest.mark.asyncio
async def test_a_failing_job_ends_with_its_error(tmp_path: Path) -> None:
    async with open_engine(tmp_path) as engine:
        job = count_job(engine, tmp_path, "a", steps=3, fail_at=1)
        job.step(2)
        [outcome] = await terminals(engine, job.record.id)
        assert isinstance(outcome, ErrorEvent)
        assert "counted into a wall" in str(outcome.error)
        assert state(job) is TaskState.COMPLETED
        assert job.discards == 1


@pytest.mark.asyncio
async def test_a_job_is_journaled_through_its_entry(tmp_path: Path) -> None:
    """Every state change is journaled as the job describes it; a session
    closing leaves a running job running in the journal (for the next process)."""
    journal = Entries()
    config = Configuration(max_connections_per_host=1, progress_interval=0)
    async with Engine(
        config=config,
        downloads_dir=tmp_path,
        partials_dir=tmp_path,
        resume_key=b"k" * 32,
        journal=journal,
    ) as engine:
        done = count_job(engine, tmp_path, "a", steps=1)
        left = count_job(engine, tmp_path, "b", steps=5)
        paused = count_job(engine, tmp_path, "c", steps=5)
        engine.suspend(paused.record.id)
        done.step()
        assert await terminals(engine, done.record.id) == [done.record.terminal]
        await left.running.wait()
        left.step(2)
        while left.count < 2:
            await anyio.lowlevel.checkpoint()
    assert journal.phases(done.record.id)[0] is Phase.RUNNING
    assert journal.phases(done.record.id)[-1] is Phase.ENDED
    assert journal.phases(paused.record.id)[-1] is Phase.SUSPENDED
    last = [entry for entry in journal.entries if entry.id == left.record.id][-1]
    assert (last.phase, last.offset) == (Phase.RUNNING, 2)
    assert left.record.terminal is None
    assert left.discards == 0


@pytest.mark.asyncio
async def test_a_cancel_asking_for_resume_data_is_a_stage_the_job_reads(tmp_path: Path) -> None:
    """cancel(resume_data=True) is the CANCELING_KEEPING stage (public: canceling),
    which the job's ending reads, live and in the journal's entry."""
    journal = Entries()
    config = Configuration(max_connections_per_host=1, progress_interval=0)
    async with Engine(
        config=config,
        downloads_dir=tmp_path,
        partials_dir=tmp_path,
        resume_key=b"k" * 32,
        journal=journal,
    ) as engine:
        job = count_job(engine, tmp_path, "a", steps=5)
        await job.running.wait()
        engine.cancel(job.record.id, resume_data=True)
        assert job.record.stage is Stage.CANCELING_KEEPING
        assert state(job) is TaskState.CANCELING
        engine.cancel(job.record.id)  # the first cancel decided
        assert job.record.stage is Stage.CANCELING_KEEPING
        assert await terminals(engine, job.record.id) == [CancelledEvent(task_id=job.record.id)]
        assert job.kept is True
        assert journal.phases(job.record.id)[-2:] == [Phase.CANCELING, Phase.ENDED]
