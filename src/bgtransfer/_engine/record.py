"""A task's record: what every task has, whatever its job.

The record is what the scheduler and the commands know of a task: what was
asked, its state, its progress counters, its events, its runner. The work and
the work's own state are its :attr:`TaskRecord.job` (:mod:`.job`); a download
is a :class:`~.download_job.DownloadJob` (its partial file, validator, coding,
segments, the move into place).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .._core.events import FinishedEvent, ProgressEvent, TerminalEvent
from .._core.journal import public_headers
from .._core.metrics import TaskMetricsLog
from .._core.naming import Origin
from .._core.progress import ProgressThrottle
from .._core.secrets import DEFAULT_SECRETS, SecretHeaders
from .._core.states import (
    FAILING,
    PUBLIC,
    Input,
    RunnerInput,
    RunnerPhase,
    Signal,
    Stage,
    TaskState,
    advance,
    runner_to,
)
from .._exceptions import JournalWriteError

if TYPE_CHECKING:
    from .job import Job

__all__ = ["TaskRecord"]


class TaskRecord:
    """What the engine knows of one task, whatever its job. Mutated only by the engine."""

    __slots__ = (
        "_done",
        "_ended",
        "acked",
        "bytes_expected",
        "bytes_moved",
        "bytes_received",
        "description",
        "destination",
        "destination_key",
        "end_generation",
        "failure",
        "headers",
        "id",
        "job",
        "kind",
        "last_progress",
        "metrics",
        "origin",
        "progress_due",
        "public_headers",
        "replayed",
        "request_headers",
        "runner",
        "scope",
        "secrets",
        "segments_wanted",
        "source",
        "stage",
        "terminal",
        "throttle",
        "url",
    )

    def __init__(
        self,
        *,
        task_id: int,
        url: str,
        origin: Origin,
        destination: Path,
        description: str | None,
        headers: Mapping[str, str],
        request_headers: tuple[tuple[str, str], ...],
        progress_interval: float,
        job: Callable[[TaskRecord], Job],
        offset: int = 0,
        total: int | None = None,
        secrets: SecretHeaders = DEFAULT_SECRETS,
        source: Path | None = None,
    ) -> None:
        """``job`` makes the task's work for this record (a download's or an
        upload's); ``offset`` and ``total`` say where its bytes stand.
        ``source``: the file an upload sends (None: a download)."""
        self.id = task_id
        self.kind = "download" if source is None else "upload"
        self.source = source
        self.url = url
        self.origin = origin
        self.destination = destination
        self.destination_key = str(destination)  # the journal's text and the claims' key
        self.description = description
        self.headers = headers  # what is sent: session defaults merged with the task's
        self.request_headers = request_headers  # the task's own, as given (journaled)
        self.secrets = secrets  # which headers are never stored or shown
        # (every entry has them; most tasks have no headers of their own)
        self.public_headers = public_headers(request_headers, secrets) if request_headers else ()
        self.segments_wanted = 1  # connections asked for (segments=N)
        self.stage = Stage.RUNNING  # its state, as the engine keeps it (task.state: PUBLIC)
        self.bytes_received = offset  # bytes of the work done and kept, all confirmed
        # The body's length once something vouched for it (Content-Length, a
        # Content-Range, chunked framing's end, a 416): a finished task whose
        # total is None has an unverified length (FinishedEvent.length_verified).
        self.bytes_expected = total
        # Every body byte this process moved for it, every attempt (metrics).
        self.bytes_moved = 0
        self.metrics: TaskMetricsLog | None = None  # its attempts, once it made one
        self.runner = RunnerPhase.IDLE  # whether a runner holds it (RUNNER_PHASES)
        self.progress_due = 0.0  # clock time after which progress is journaled again
        self.replayed = False  # ended before this process reattached
        # What a FAILING task ends with: why the journal could not record it.
        self.failure: JournalWriteError | None = None
        self.acked = False  # a consumer has seen its terminal event
        self.last_progress: ProgressEvent | None = None
        self.terminal: TerminalEvent | None = None
        self.end_generation = 0  # the journal's generation once the terminal entry was put
        self._done: anyio.Event | None = None  # made when somebody waits (most never do)
        self._ended = False
        self.scope: anyio.CancelScope | None = None  # its runner's, while ACTIVE or STOPPING
        self.throttle = ProgressThrottle(
            task_id, interval=progress_interval, total=offset, expected=total
        )
        self.job: Job = job(self)

    @property
    def claims_destination(self) -> bool:
        """Whether the task writes its destination (a download's file, an
        upload's ``reply_to``), which no other live task may then claim; an
        upload without one only reads its source, which others may read too."""
        source = self.source  # (an upload without reply_to: the same Path object)
        return source is None or (self.destination is not source and self.destination != source)

    @property
    def state(self) -> TaskState:
        """The task's public state (``PUBLIC[stage]``; read-only: :meth:`advance`)."""
        return PUBLIC[self.stage]

    def advance(self, event: Input | Signal) -> Stage:
        """Feed the state machine (``STAGES``): the one way a task's state
        changes. Returns the stage it was in; an input the stage does not take
        raises :class:`~bgtransfer._core.states.InvalidTransition` (a bug)."""
        previous = self.stage
        self.stage = advance(previous, event)
        return previous

    def journal_failed(self, error: JournalWriteError) -> Stage:
        """The journal cannot record the task (``JOURNAL_FAILED``): unless a cancel
        came first, it is ``FAILING`` now and ends with ``error``. Returns the
        stage it was in."""
        previous = self.advance(Signal.JOURNAL_FAILED)
        if self.stage in FAILING and self.failure is None:
            self.failure = error
        return previous

    @property
    def failing(self) -> bool:
        """It ends with the journal's error (:attr:`failure`)."""
        return self.stage in FAILING

    # -- its runner (RUNNER_PHASES) -------------------------------------------------

    @property
    def running(self) -> bool:
        """A runner holds it (granted, running its job, or winding down)."""
        return self.runner is not RunnerPhase.IDLE

    def grant(self) -> None:
        """A slot was granted: a runner is spawned for it, or handed it."""
        self.runner = runner_to(self.runner, RunnerInput.GRANT)

    def enter(self, scope: anyio.CancelScope) -> None:
        """Its runner runs the job in ``scope``."""
        self.runner = runner_to(self.runner, RunnerInput.ENTER)
        self.scope = scope

    def interrupt(self) -> None:
        """Stop its runner's run; the runner's ``finally`` reads the stage.
        (A runner not in its scope yet reads it when it enters.)"""
        self.runner = runner_to(self.runner, RunnerInput.INTERRUPT)
        if self.scope is not None:
            self.scope.cancel()

    def stop(self) -> RunnerPhase:
        """Its runner has wound down; returns the phase it stopped in (``STOPPING``:
        a command stopped it)."""
        previous = self.runner
        self.runner = runner_to(previous, RunnerInput.STOP)
        self.scope = None
        return previous

    @property
    def done(self) -> anyio.Event:
        """Set once the task has ended (or the session closed under it)."""
        if self._done is None:
            self._done = anyio.Event()
            if self._ended:
                self._done.set()
        return self._done

    def set_done(self) -> None:
        self._ended = True
        if self._done is not None:
            self._done.set()

    def end_replayed(self, outcome: TerminalEvent) -> None:
        """End a task restored from the journal with the outcome the journal
        holds: replayed to the application, which has not acknowledged it; a
        finished one counts its bytes as a live one does."""
        if isinstance(outcome, FinishedEvent):
            total = self.bytes_received = self.bytes_expected = outcome.total_bytes
            self.last_progress = ProgressEvent(
                task_id=self.id,
                bytes_written=total,
                total_bytes_written=total,
                total_bytes_expected=total,
            )
        self.terminal = outcome
        self.replayed = True
        self.set_done()
