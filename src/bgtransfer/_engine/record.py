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

from .._core.events import ProgressEvent, TerminalEvent
from .._core.journal import public_headers
from .._core.naming import Origin
from .._core.progress import ProgressThrottle
from .._core.secrets import DEFAULT_SECRETS, SecretHeaders
from .._core.states import PUBLIC, Input, Signal, Stage, TaskState, advance
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
        "bytes_received",
        "description",
        "destination",
        "destination_key",
        "end_generation",
        "headers",
        "id",
        "job",
        "journal_error",
        "last_progress",
        "origin",
        "progress_due",
        "public_headers",
        "replayed",
        "request_headers",
        "requeue",
        "running",
        "scope",
        "secrets",
        "segments_wanted",
        "stage",
        "successor",
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
    ) -> None:
        """``job`` makes the task's work for this record (a download's, for
        every task today); ``offset`` and ``total`` say where its bytes stand."""
        self.id = task_id
        self.url = url
        self.origin = origin
        self.destination = destination
        self.destination_key = str(destination)  # the journal's text and the claims' key
        self.description = description
        self.headers = headers  # what is sent: session defaults merged with the task's
        self.request_headers = request_headers  # the task's own, as given (journaled)
        self.secrets = secrets  # which headers are never stored or shown
        self.public_headers = public_headers(request_headers, secrets)  # (every entry has them)
        self.segments_wanted = 1  # connections asked for (segments=N)
        self.stage = Stage.RUNNING  # its state, as the engine keeps it (task.state: PUBLIC)
        self.bytes_received = offset  # bytes of the work done and kept, all confirmed
        # The body's length once something vouched for it (Content-Length, a
        # Content-Range, chunked framing's end, a 416): a finished task whose
        # total is None has an unverified length (FinishedEvent.length_verified).
        self.bytes_expected = total
        self.running = False  # a runner coroutine exists for it
        self.successor: TaskRecord | None = None  # granted on release; its runner goes on with it
        self.requeue = False  # resumed while its runner was winding down
        self.progress_due = 0.0  # clock time after which progress is journaled again
        self.replayed = False  # ended before this process reattached
        # The journal could not record the task: it ends with this error.
        self.journal_error: JournalWriteError | None = None
        self.acked = False  # a consumer has seen its terminal event
        self.last_progress: ProgressEvent | None = None
        self.terminal: TerminalEvent | None = None
        self.end_generation = 0  # the journal's generation once the terminal entry was put
        self._done: anyio.Event | None = None  # made when somebody waits (most never do)
        self._ended = False
        self.scope: anyio.CancelScope | None = None
        self.throttle = ProgressThrottle(
            task_id, interval=progress_interval, total=offset, expected=total
        )
        self.job: Job = job(self)

    @property
    def state(self) -> TaskState:
        """The task's public state (``PUBLIC[stage]``)."""
        return PUBLIC[self.stage]

    @state.setter
    def state(self, state: TaskState) -> None:
        # For callers that still step the public table (``transition``): it
        # projects STAGES exactly, so the stage is the one that state stands for
        # (a canceling stage stays as it was: the first cancel decided).
        if PUBLIC[self.stage] is not state:
            self.stage = Stage[state.name]

    def advance(self, event: Input | Signal) -> None:
        """Feed the state machine (``STAGES``): the one way a task's state changes."""
        self.stage = advance(self.stage, event)

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
