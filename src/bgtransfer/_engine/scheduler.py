"""The scheduler: runners for the tasks the supervisor grants, and how tasks end.

The half of the engine that runs tasks: it starts a runner when the
supervisor grants a slot (or hands the task to the runner that freed one),
runs the task's job (:mod:`.job`: it asks nothing else of the work), and
ends every task with exactly one terminal event (``_complete``), whether a
runner ends it or a command does (a task without a runner:
``_remove_then_complete``, ``_fail_unrecorded``). It also journals records
(``_journal_task``) and publishes their events.
:class:`~bgtransfer._engine.engine.Engine` adds the commands, the queries and
the lifecycle on top, and sets the state declared here.

Concurrency shape: one anyio task group for the engine's life; a runner task is
spawned only when the supervisor grants a slot, so queued tasks cost a record,
not a coroutine. Every runner ends in ``finally`` by publishing exactly one
terminal event and releasing its slot, whatever happened to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc

from .._core.config import Configuration
from .._core.events import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    ProgressEvent,
    TaskEvent,
    TerminalEvent,
)
from .._core.naming import Origin
from .._core.states import Input, RunnerPhase, Stage, TaskState
from .._core.supervisor import Supervisor
from .._exceptions import JournalError, TransferError
from .._io.errors import journal_write_error
from .hub import EventHub
from .journaling import TaskJournal
from .record import TaskRecord

__all__ = ["Scheduler"]

logger = logging.getLogger("bgtransfer")


class Scheduler:
    """Runs and ends an engine's tasks (the state is the engine's: set by it)."""

    config: Configuration
    clock: Callable[[], float]
    _supervisor: Supervisor
    _hub: EventHub
    _records: dict[int, TaskRecord]
    _claims: dict[str, int]
    _journal: TaskJournal | None
    _task_group: anyio.abc.TaskGroup | None
    _draining: bool  # going down: start nothing more
    _slot_waiters: dict[int, anyio.Event]  # fetches queued for a slot, by their id

    def _journal_rejected(self, task_id: int, problem: JournalError) -> None:
        """The journal could not record the task, and never will: it ends with
        a :class:`~bgtransfer.JournalWriteError` (a task whose state no later
        process can learn must not look as if all were well). Called on the
        loop, possibly from inside an engine method: a task without a runner is
        ended from a callback of its own."""
        record = self._records.get(task_id)
        if record is None or record.stage is Stage.COMPLETED:
            # (ended: possibly a put from inside _complete, before its terminal is set)
            logger.error("task %d: its end was not recorded: %s", task_id, problem)
            return
        error = journal_write_error(problem, url=record.url)
        error.__cause__ = problem
        previous = record.journal_failed(error)
        if previous is record.stage or not record.failing:
            return  # failing already, or a cancel decided first
        logger.error("task %d: %s; the task fails", task_id, error)
        if record.running:
            record.interrupt()  # its runner ends it (_stopped_outcome)
        else:
            asyncio.get_running_loop().call_soon(self._fail_unrecorded, record)

    def _fail_unrecorded(self, record: TaskRecord) -> None:
        """End a task the journal could not record that has no runner."""
        if not record.failing:
            return  # ended, or cancelled, meanwhile
        if record.running:
            record.interrupt()  # resumed and granted meanwhile: its runner ends it
            return
        if self._task_group is None or self._draining:
            return  # closing: the journal keeps what it last recorded (and it was logged)
        assert record.failure is not None
        self._start(self._supervisor.remove(record.id, now=self.clock()))
        outcome = ErrorEvent(task_id=record.id, error=record.failure)
        if record.job.has_leftovers:
            self._spawn(self._remove_then_complete, record, outcome)
        else:
            self._complete(record, outcome)

    async def _flush_for(self, record: TaskRecord, *, shielded: bool = False) -> None:
        """Commit what the journal holds of ``record`` before going on; a journal
        that cannot record it fails the task (:class:`~bgtransfer.JournalWriteError`)."""
        assert self._journal is not None
        try:
            await self._journal.flush(shielded=shielded)
        except JournalError as exc:
            raise journal_write_error(exc, url=record.url) from exc
        if record.failure is not None and record.failing:
            raise record.failure

    async def _remove_then_complete(self, record: TaskRecord, outcome: TerminalEvent) -> None:
        """End a cancelled (or failing) task that has no runner once its job's
        leftovers (a partial file) are gone, as a runner does: before the
        terminal event, so nobody can acknowledge it (and the journal forget
        the task) while the file is still there. A failing task may be
        cancelled meanwhile (the table lets a cancel win): then the cancel's
        own ending is the one."""
        try:
            await record.job.discard()
        finally:
            if not isinstance(outcome, ErrorEvent) or record.failing:
                self._complete(record, outcome)
            # else: a failing task cancelled meanwhile; the cancel's own path ends it

    def _journal_task(
        self,
        record: TaskRecord,
        *,
        urgent: bool = False,
        deferred: bool = False,
        data: bool = False,
    ) -> None:
        """Journal the record as it is now (``data``: its job's data file's bytes count)."""
        if self._journal is None:
            return
        job = record.job
        self._journal.put(
            job.entry(), urgent=urgent, deferred=deferred, data_file=job.data_file if data else None
        )
        record.progress_due = self.clock() + self.config.checkpoint_interval

    def _spawn(self, func: Callable[..., Coroutine[Any, Any, object]], *args: object) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(func, *args)

    def _start(self, task_ids: list[int], *, handoff: list[TaskRecord] | None = None) -> None:
        """Start the granted tasks. ``handoff``: the list of the runner that
        released the slot; the first granted task goes there, for that runner
        to go on with, the others get runners of their own."""
        if not task_ids or self._draining:
            return  # going down: granted tasks stay queued (and journaled as running)
        assert self._task_group is not None, "the supervisor started a task after close"
        for task_id in task_ids:
            waiter = self._slot_waiters.pop(task_id, None)
            if waiter is not None:  # a fetch: its caller goes on (it releases the slot)
                waiter.set()
                continue
            record = self._records[task_id]
            record.grant()
            if handoff is not None and not handoff:
                handoff.append(record)
            else:
                self._spawn_runner(record)

    async def _run(self, record: TaskRecord) -> None:
        """A runner: its task, then each task the supervisor grants it on release.

        Going on with the next task in the same coroutine saves spawning one per
        transfer, and the loop iteration before it starts: with thousands of small
        files, that was a measurable part of each. If the runner is stopped
        (cancelled with the session), the task it was handed gets a runner of its
        own, which sees the same cancellation a spawned one would.
        """
        current: TaskRecord | None = record
        while current is not None:
            handoff: list[TaskRecord] = []  # the task granted the slot it frees
            try:
                await self._run_task(current, handoff)
            except BaseException:
                for successor in handoff:
                    self._spawn_runner(successor)
                raise
            current = handoff[0] if handoff else None

    def _spawn_runner(self, record: TaskRecord) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(self._run, record, name=f"bgtransfer-{record.id}")

    async def _run_task(self, record: TaskRecord, handoff: list[TaskRecord]) -> None:
        """One task: its job's run, until it ends or is suspended (``handoff``
        gets the task granted the slot it frees, see :meth:`_start`)."""
        outcome: TerminalEvent | None = None
        log_end = logger.isEnabledFor(logging.INFO)
        started = self.clock() if log_end else 0.0
        try:
            with anyio.CancelScope() as scope:
                record.enter(scope)
                if record.stage is not Stage.RUNNING or self._draining:
                    record.interrupt()  # suspended, cancelled, failing or closing already
                outcome = await record.job.run()
        except TransferError as exc:
            outcome = record.job.error_outcome(exc)
        except Exception as exc:  # a bug must not take the other tasks down with it
            logger.exception("internal error in task %d (%s)", record.id, record.url)
            error = TransferError(f"internal error: {exc!r}", url=record.url)
            error.__cause__ = exc
            outcome = ErrorEvent(task_id=record.id, error=error)
        finally:
            # Reached on success, failure, cancel(), suspend(), and the session's
            # own cancellation. Exactly one terminal event unless suspended.
            stopped = record.stop()
            outcome = self._stopped_outcome(record, outcome, stopped=stopped)
            keep_leftovers = outcome is None or (
                isinstance(outcome, CancelledEvent | ErrorEvent) and outcome.resume_data is not None
            )
            if not keep_leftovers and not isinstance(outcome, FinishedEvent):
                with anyio.CancelScope(shield=True):
                    await record.job.discard()
                if record.state is TaskState.CANCELING and isinstance(outcome, ErrorEvent):
                    outcome = CancelledEvent(task_id=record.id)  # cancel() came meanwhile
            # From here on nothing awaits: commands see a consistent record.
            # (remove, not release: a task that gave its slot back while the
            # app answered a challenge may be queued for one, or hold none.)
            self._start(self._supervisor.remove(record.id, now=self.clock()), handoff=handoff)
            if outcome is not None:
                self._complete(record, outcome)
                if log_end:
                    _log_end(record, outcome, self.clock() - started)
            else:
                self._flush_progress(record)
                self._journal_task(record, urgent=True, data=True)
                if record.stage is Stage.RUNNING and not self._draining:
                    # resumed while winding down (_stopped_outcome)
                    self._start(
                        self._supervisor.enqueue(record.id, record.origin, now=self.clock())
                    )

    def _stopped_outcome(
        self, record: TaskRecord, outcome: TerminalEvent | None, *, stopped: RunnerPhase
    ) -> TerminalEvent | None:
        """What a runner that stopped (in phase ``stopped``) ends its task with
        (None: nothing, it goes on). A task back at ``RUNNING`` whose runner a
        command stopped was suspended and resumed meanwhile: it queues again."""
        if isinstance(outcome, FinishedEvent):
            return outcome
        finished = record.job.done_anyway()
        if finished is not None:  # (a file in place): a cancel or a failure came too late
            return finished
        if record.state is TaskState.CANCELING:
            return record.job.cancel_outcome()
        if record.failing:
            assert record.failure is not None
            return ErrorEvent(task_id=record.id, error=record.failure)
        resumed = stopped is RunnerPhase.STOPPING and not self._draining
        if outcome is None and record.stage is Stage.RUNNING and not resumed:
            # Stopped from outside: the session is closing, or the task hosting
            # it is cancelled. Start nothing more. Persistent: the task stays
            # running in the journal and the next process continues it.
            self._draining = True
            if self._journal is None:
                record.advance(Input.CANCEL)
                return CancelledEvent(task_id=record.id)
        return outcome

    def _hold_origin(self, record: TaskRecord, seconds: float) -> None:
        """Retry-After on 429/503: start no task for that origin until it has passed."""
        self._hold(record.origin, seconds)

    def _hold(self, origin: Origin, seconds: float) -> None:
        self._supervisor.hold(origin, self.clock() + seconds)

        async def wake() -> None:
            await anyio.sleep(seconds)
            self._start(self._supervisor.poll(self.clock()))

        self._spawn(wake)

    def _publish(self, event: TaskEvent) -> None:
        if isinstance(event, ProgressEvent):
            record = self._records[event.task_id]
            record.last_progress = event
            if self._journal is not None and self.clock() >= record.progress_due:
                self._journal_task(record, data=True)
        elif self._journal is not None:
            event = self._journal.log(event)  # numbered: in the session's event log
        self._hub.publish(event)

    def _flush_progress(self, record: TaskRecord) -> None:
        tail = record.throttle.flush()
        if tail is not None:
            self._publish(tail)

    def _complete(self, record: TaskRecord, outcome: TerminalEvent) -> None:
        """Publish the last progress and the one terminal event; free the destination."""
        if isinstance(outcome, FinishedEvent):
            signal = Input.FINISH
        elif isinstance(outcome, ErrorEvent):
            signal = Input.FAIL
        else:
            signal = Input.CANCELLED
        record.advance(signal)
        self._flush_progress(record)
        if self._journal is not None:  # in the event log, committed with the task's end
            outcome = self._journal.log(outcome)
        record.terminal = outcome
        # Committed before a consumer can see the event and move the file away (a
        # later process would then find neither the partial nor the file, and
        # fetch it again or report it lost): readers wait for it (durable()).
        # Deferred: the slot is free already, nothing else waits on this commit,
        # and in a busy session it rides along with another task's (one commit
        # per task end fewer on the loop; see docs/design.md, "Statements per commit").
        self._journal_task(record, deferred=True)
        if self._journal is not None:
            record.end_generation = self._journal.generation
        if self._claims.get(record.destination_key) == record.id:
            del self._claims[record.destination_key]
        self._hub.publish(outcome)
        record.set_done()


def _log_end(record: TaskRecord, outcome: TerminalEvent, seconds: float) -> None:
    """INFO: how a task ended (its URL as errors show it: userinfo is refused)."""
    if isinstance(outcome, FinishedEvent):
        logger.info(
            "task %d finished: %d bytes in %.3f s (%s)",
            record.id,
            outcome.total_bytes,
            seconds,
            record.url,
        )
    elif isinstance(outcome, ErrorEvent):
        logger.info(
            "task %d failed after %.3f s, %d bytes received: %s",
            record.id,
            seconds,
            record.bytes_received,
            outcome.error,
        )
    else:
        logger.info(
            "task %d cancelled after %.3f s, %d bytes received (%s)",
            record.id,
            seconds,
            record.bytes_received,
            record.url,
        )
