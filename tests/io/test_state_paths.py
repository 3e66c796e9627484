"""Every state that drives the engine is a state of a table, and every path through it.

The record's stage changes only through ``STAGES`` (``record.advance``), its
runner only through ``RUNNER_PHASES``: no side flag (a resume while the runner
winds down, a journal failure) decides behaviour beside them. Here each public
command is tried in each state a task can be in, on a real session and a
loopback server, and the suspend / resume / cancel / requeue / journal-failure
paths are followed to their ends.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest

from _helpers import sha256_file
from bgtransfer import (
    CancelledEvent,
    Configuration,
    ErrorEvent,
    FinishedEvent,
    JournalError,
    JournalWriteError,
    ProgressEvent,
    TaskState,
)
from bgtransfer._core.journal import Phase, TaskEntry
from bgtransfer._core.naming import parse_url
from bgtransfer._core.states import (
    STAGES,
    TRANSITIONS,
    Input,
    InvalidTransition,
    RunnerPhase,
    Signal,
    Stage,
)
from bgtransfer._engine.engine import Engine
from bgtransfer._engine.job import Job
from bgtransfer._engine.local import LocalBackend
from bgtransfer._engine.record import TaskRecord
from bgtransfer._engine.startup import open_backend
from bgtransfer._io import journal_commit as journal_module
from bgtransfer.testing import Faults, TestServer

ID = "states"
CONFIG = Configuration(progress_interval=0, max_concurrent_transfers=1)
EVENTS: list[Input | Signal] = [*Input, *Signal]


# -- the record: one way to change its stage -------------------------------------------


def _record() -> TaskRecord:
    url, origin = parse_url("http://127.0.0.1:1/f", {})
    return TaskRecord(
        task_id=1,
        url=url,
        origin=origin,
        destination=Path("/nonexistent/f"),
        description=None,
        headers={},
        request_headers=(),
        progress_interval=0,
        job=lambda record: cast(Job, None),
    )


@pytest.mark.parametrize(
    ("stage", "event"), list(itertools.product(Stage, EVENTS)), ids=lambda v: v.value
)
def test_every_stage_and_input_follows_the_table_or_is_refused(
    stage: Stage, event: Input | Signal
) -> None:
    record = _record()
    record.stage = stage
    if (stage, event) in STAGES:
        assert record.advance(event) is stage
        assert record.stage is STAGES[(stage, event)]
    else:
        with pytest.raises(InvalidTransition, match=f"{event.value!r} is not allowed"):
            record.advance(event)
        assert record.stage is stage  # refused: nothing changed


def test_the_public_state_cannot_be_set() -> None:
    record = _record()
    with pytest.raises(AttributeError):
        record.state = TaskState.SUSPENDED  # type: ignore[misc]


@pytest.mark.asyncio
async def test_a_runner_goes_through_its_table() -> None:
    record = _record()
    assert not record.running
    with pytest.raises(InvalidTransition, match="'stop' is not allowed in runner phase 'idle'"):
        record.stop()
    record.grant()
    record.interrupt()  # not in its scope yet: it reads the stage when it enters
    assert record.runner is RunnerPhase.GRANTED
    with anyio.CancelScope() as scope:
        record.enter(scope)
        record.interrupt()
        await anyio.lowlevel.checkpoint()  # cancelled here
    assert scope.cancelled_caught
    assert record.stop() is RunnerPhase.STOPPING
    assert (record.runner, record.scope, record.running) == (RunnerPhase.IDLE, None, False)


# -- a session on a loopback server --------------------------------------------------------


async def _until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds (checked at each scheduling point)."""
    with anyio.fail_after(10):
        while not condition():
            await anyio.lowlevel.checkpoint()


async def _bytes(engine: Engine, record: TaskRecord, count: int) -> None:
    """Return once the task has written ``count`` bytes (from its events)."""
    with anyio.fail_after(10):
        async with engine.subscribe(record.id) as stream:
            async for event in stream:
                if isinstance(event, ProgressEvent) and event.total_bytes_written >= count:
                    return
    raise AssertionError(f"task {record.id} ended before {count} bytes")


async def _end(engine: Engine, record: TaskRecord) -> object:
    with anyio.fail_after(10):
        await record.done.wait()
    await engine.flush()
    return record.terminal


class Setup:
    def __init__(self, server: TestServer, backend: LocalBackend, out_dir: Path) -> None:
        self.server = server
        self.engine = backend.engine
        self.out_dir = out_dir
        self.file = server.add_file("/held.bin", size=200_000)
        server.set_faults(self.file.path, Faults(hold_after=50_000))

    def submit(self, name: str, path: str | None = None) -> TaskRecord:
        url = self.server.url(path or self.file.path)
        return self.engine.submit(
            url, self.out_dir / name, description=None, headers=(), segments=None
        )

    async def active(self) -> TaskRecord:
        """A task whose runner is transferring (held by the server)."""
        record = self.submit("active.bin")
        await _bytes(self.engine, record, 50_000)
        assert (record.stage, record.runner) == (Stage.RUNNING, RunnerPhase.ACTIVE)
        return record


@contextlib.asynccontextmanager
async def _session(server: TestServer, state_dir: Path, out_dir: Path) -> AsyncIterator[Setup]:
    """A background session's engine, and a file the server holds after 50,000 bytes."""
    async with open_backend(ID, state_dir=state_dir, config=CONFIG) as backend:
        assert isinstance(backend, LocalBackend)
        try:
            yield Setup(server, backend, out_dir)
        finally:
            server.release("/held.bin")


COMMANDS: dict[str, Input | Signal] = {
    "suspend": Input.SUSPEND,
    "resume": Input.RESUME,
    "cancel": Input.CANCEL,
    "cancel_keeping": Signal.CANCEL_KEEPING,
}


async def _in(setup: Setup, where: str) -> TaskRecord:
    """A task in the state ``where`` names."""
    engine = setup.engine
    if where == "completed":
        small = setup.server.add_file("/small.bin", size=1000)
        record = setup.submit("small.bin", small.path)
        assert isinstance(await _end(engine, record), FinishedEvent)
        return record
    active = await setup.active()
    if where == "running":
        return active
    if where == "queued":  # one transfer at a time: the second waits for a slot
        record = setup.submit("queued.bin")
        await engine.flush()
        assert (record.stage, record.runner) == (Stage.RUNNING, RunnerPhase.IDLE)
        return record
    if where == "suspended":
        engine.suspend(active.id)
        await _until(lambda: not active.running)
        return active
    assert where == "canceling"
    engine.cancel(active.id)  # its runner winds down: canceling until then
    return active


@pytest.mark.asyncio
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("where", ["running", "queued", "suspended", "canceling", "completed"])
async def test_each_command_in_each_state_does_what_the_table_says(
    server: TestServer, state_dir: Path, out_dir: Path, where: str, command: str
) -> None:
    async with _session(server, state_dir, out_dir) as setup:
        engine = setup.engine
        record = await _in(setup, where)
        stage, shown = record.stage, record.state
        event = COMMANDS[command]
        if command == "suspend":
            engine.suspend(record.id)
        elif command == "resume":
            engine.resume(record.id)
        else:
            engine.cancel(record.id, resume_data=command == "cancel_keeping")
        public = Input.CANCEL if event is Signal.CANCEL_KEEPING else event
        assert isinstance(public, Input)
        expected, expected_stage = TRANSITIONS[(shown, public)], STAGES[(stage, event)]
        if expected is TaskState.CANCELING and not record.running and record.terminal:
            # No runner to wind down: the engine ended it in the same call.
            expected = TRANSITIONS[(expected, Input.CANCELLED)]
            expected_stage = STAGES[(expected_stage, Input.CANCELLED)]
            assert isinstance(record.terminal, CancelledEvent)
        assert record.state is expected
        assert record.stage is expected_stage


# -- the paths, to their ends ------------------------------------------------------------


def _requests(setup: Setup) -> list[dict[str, str]]:
    return [dict(request.headers) for request in setup.server.requests]


@pytest.mark.asyncio
async def test_a_suspend_then_resume_while_the_runner_winds_down_queues_it_again(
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
) -> None:
    """The old ``requeue`` flag: the runner stops ``STOPPING`` with the stage
    back at ``RUNNING``; it queues again and finishes from the bytes on disk."""
    async with _session(server, state_dir, out_dir) as setup:
        engine = setup.engine
        record = await setup.active()
        engine.suspend(record.id)
        engine.resume(record.id)  # before the runner has wound down
        assert (record.stage, record.runner) == (Stage.RUNNING, RunnerPhase.STOPPING)
        setup.server.release(setup.file.path)
        outcome = await _end(engine, record)
        assert isinstance(outcome, FinishedEvent), outcome
        assert (record.stage, record.runner) == (Stage.COMPLETED, RunnerPhase.IDLE)
        assert sha256_file(setup.out_dir / "active.bin") == setup.file.sha256
        ranges = [headers.get("Range") for headers in _requests(setup)]
        assert len(ranges) == 2
        assert ranges[0] is None
        assert ranges[1] is not None


@pytest.mark.asyncio
async def test_a_suspended_task_rests_and_a_resume_finishes_it(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    async with _session(server, state_dir, out_dir) as setup:
        engine = setup.engine
        record = await setup.active()
        engine.suspend(record.id)
        await _until(lambda: not record.running)
        assert (record.stage, record.state) == (Stage.SUSPENDED, TaskState.SUSPENDED)
        assert record.job.entry().phase is Phase.SUSPENDED
        setup.server.release(setup.file.path)
        engine.resume(record.id)
        assert isinstance(await _end(engine, record), FinishedEvent)
        assert sha256_file(setup.out_dir / "active.bin") == setup.file.sha256


@pytest.mark.asyncio
@pytest.mark.parametrize("keeping", [False, True], ids=["cancel", "cancel_keeping"])
async def test_a_cancel_ends_through_canceling(
    server: TestServer, state_dir: Path, out_dir: Path, keeping: bool
) -> None:
    async with _session(server, state_dir, out_dir) as setup:
        engine = setup.engine
        record = await setup.active()
        engine.cancel(record.id, resume_data=keeping)
        assert record.stage is (Stage.CANCELING_KEEPING if keeping else Stage.CANCELING)
        assert record.runner is RunnerPhase.STOPPING
        outcome = await _end(engine, record)
        assert isinstance(outcome, CancelledEvent)
        assert (outcome.resume_data is not None) is keeping
        assert record.stage is Stage.COMPLETED
        assert not (setup.out_dir / "active.bin").exists()


def _unstorable(monkeypatch: pytest.MonkeyPatch, task_id: int) -> None:
    """From now on the journal cannot store task ``task_id``'s rows."""
    original = journal_module.entry_to_row

    def entry_to_row(entry: TaskEntry) -> tuple[Any, ...]:
        if entry.id == task_id:
            raise TypeError("unstorable")
        return original(entry)

    monkeypatch.setattr(journal_module, "entry_to_row", entry_to_row)


@pytest.mark.asyncio
async def test_a_running_task_the_journal_fails_ends_failing(
    server: TestServer, state_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _session(server, state_dir, out_dir) as setup:
        engine = setup.engine
        record = await setup.active()
        _unstorable(monkeypatch, record.id)
        engine.suspend(record.id)  # a put the journal rejects (on its next commit)
        engine.resume(record.id)
        await engine.flush()
        assert record.stage in (Stage.FAILING, Stage.COMPLETED)
        outcome = await _end(engine, record)
        assert isinstance(outcome, ErrorEvent), outcome
        assert isinstance(outcome.error, JournalWriteError)
        assert record.failure is outcome.error
        assert (record.stage, record.runner) == (Stage.COMPLETED, RunnerPhase.IDLE)
        assert not (setup.out_dir / "active.bin").exists()


@pytest.mark.asyncio
async def test_a_suspended_task_the_journal_fails_ends_with_the_error(
    server: TestServer, state_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _session(server, state_dir, out_dir) as setup:
        engine = setup.engine
        record = await _in(setup, "suspended")
        _unstorable(monkeypatch, record.id)
        engine.resume(record.id)
        engine.suspend(record.id)
        await engine.flush()  # rejected: failing, shown as what it was
        assert record.stage in (Stage.FAILING_SUSPENDED, Stage.COMPLETED)
        outcome = await _end(engine, record)
        assert isinstance(outcome, ErrorEvent), outcome
        assert isinstance(outcome.error, JournalWriteError)
        assert record.stage is Stage.COMPLETED


@pytest.mark.asyncio
async def test_a_cancel_after_a_journal_failure_still_cancels(
    server: TestServer, state_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing task takes a cancel as a running one does: it ends cancelled."""
    async with _session(server, state_dir, out_dir) as setup:
        engine = setup.engine
        record = await _in(setup, "suspended")
        _unstorable(monkeypatch, record.id)
        record.journal_failed(JournalWriteError("cannot record", url=record.url))
        assert (record.stage, record.state) == (Stage.FAILING_SUSPENDED, TaskState.SUSPENDED)
        engine.cancel(record.id)
        assert record.stage is Stage.CANCELING
        assert isinstance(await _end(engine, record), CancelledEvent)


@pytest.mark.asyncio
async def test_a_journal_that_fails_for_good_as_a_task_ends_only_logs_it(
    server: TestServer, state_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task ending (completed, its terminal event not out yet) publishes its
    held-back progress, whose put the failed journal rejects at once: that is
    logged, never fed to the table (``completed`` takes no ``journal_failed``)."""
    config = Configuration(progress_interval=3600, checkpoint_interval=0)
    file = server.add_file("/held.bin", size=400_000)
    server.set_faults(file.path, Faults(hold_after=300_000))
    async with open_backend(ID, state_dir=state_dir, config=config) as backend:
        assert isinstance(backend, LocalBackend)
        engine = backend.engine
        record = engine.submit(
            server.url(file.path), out_dir / "f.bin", description=None, headers=(), segments=None
        )
        await _until(lambda: record.bytes_received >= 300_000)

        def broken(entry: TaskEntry) -> tuple[Any, ...]:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(journal_module, "entry_to_row", broken)
        with pytest.raises(JournalError):
            await engine.journal_running()  # the journal fails for good
        with anyio.fail_after(10):
            await record.done.wait()  # (flush() raises now: the journal has failed)
        outcome = record.terminal
        server.release(file.path)
    assert isinstance(outcome, ErrorEvent), outcome
    assert isinstance(outcome.error, JournalWriteError), repr(outcome.error)
    assert "disk I/O error" in str(outcome.error)
    assert record.stage is Stage.COMPLETED
    assert not (out_dir / "f.bin").exists()


@pytest.mark.asyncio
async def test_a_cancel_while_a_failing_task_clears_its_partial_cancels_it_once(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """A suspended task the journal rejects is ended by the engine (no runner):
    its partial goes first. A cancel that comes meanwhile wins, as it does
    before; the task ends once, cancelled, and the session goes on."""
    async with _session(server, state_dir, out_dir) as setup:
        engine = setup.engine
        record = await _in(setup, "suspended")
        partial = state_dir / ID / "partials" / f"{record.id}.part"
        assert partial.exists()
        engine._journal_rejected(record.id, JournalError(str(partial), "cannot record"))
        assert record.stage is Stage.FAILING_SUSPENDED
        await anyio.lowlevel.checkpoint()  # _fail_unrecorded: the partial's removal starts
        engine.cancel(record.id)
        assert record.stage is Stage.CANCELING
        outcome = await _end(engine, record)
        assert isinstance(outcome, CancelledEvent), outcome
        assert not partial.exists()
        small = server.add_file("/after.bin", size=1000)  # the engine is still alive
        after = setup.submit("after.bin", small.path)
        assert isinstance(await _end(engine, after), FinishedEvent)
