"""The task backend: the one seam between the front and whatever runs the tasks.

``Session`` and ``DownloadTask`` talk to nothing else. The in-process engine
(:class:`~bgtransfer._engine.local.LocalBackend`) is the first implementation;
the daemon's client (a later release) is the second; ``tests/test_backend_protocol.py``
drives the front with a third, in memory. As with httpcore's one
``handle_async_request``, a caller cannot tell them apart.

Every argument and result is a plain value (ids, :class:`DownloadRequest`,
:class:`ResumeData`, frozen :class:`TaskSnapshot` and events), so each call can
be carried over a socket: no live record and no synchronisation primitive
crosses the seam. A call that can block (on the journal, on a socket) is
async; the few that cannot are sync (``suspend``/``resume`` are sync in the
public API: a socket client sends them without waiting for the answer, the
state table in ``_core`` tells it the new state).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from .._core.config import HeaderPairs
from .._core.events import FinishedEvent, TerminalEvent
from .._core.metrics import SessionMetrics, TaskMetrics
from .._core.resume_data import ResumeData
from .._core.states import TaskState
from .._core.supervisor import SupervisorStatistics

if TYPE_CHECKING:
    import os
    from types import TracebackType

    from .._core.fetch import FetchResponse
    from .._core.request import DownloadRequest
    from .._core.upload import UploadRequest
    from .hub import EventStream

__all__ = ["DataTasks", "GivenBackend", "TaskBackend", "TaskSnapshot"]


@attrs.frozen(kw_only=True)
class TaskSnapshot:
    """One task as its backend sees it at one moment: a value, never updated.

    What a :class:`~bgtransfer.DownloadTask` reads its attributes from. A
    backend answers :meth:`TaskBackend.task` with the current one: the
    in-process engine builds it from its record when asked (nothing is paid per
    progress event), the daemon's client from the copy its event subscription
    keeps current."""

    id: int
    url: str
    description: str | None
    destination: Path
    state: TaskState
    bytes_received: int  # in the partial file, confirmed
    bytes_expected: int | None  # the body's length once something vouched for it
    terminal: TerminalEvent | None  # the terminal event once the task has ended
    kind: str = "download"  # or "upload"
    source: Path | None = None  # an upload's file (its destination: reply_to, else this)

    @property
    def length_verified(self) -> bool | None:
        """Once finished, whether its length was vouched for; else None."""
        terminal = self.terminal
        return terminal.length_verified if isinstance(terminal, FinishedEvent) else None


@runtime_checkable
class TaskBackend(Protocol):
    """What runs a session's tasks. See the module docstring for the rules."""

    @property
    def directory(self) -> Path:
        """The session's own directory (its partials, ``downloads/``...)."""
        ...

    # -- commands ---------------------------------------------------------------

    async def submit(self, request: DownloadRequest) -> TaskSnapshot:
        """Validate one request, queue it; return once the journal holds it.
        Wrong requests raise at once (``InvalidRequestError``, ``TypeError``)."""
        ...

    async def submit_many(self, requests: Sequence[DownloadRequest]) -> list[TaskSnapshot]:
        """:meth:`submit` for each, all or none (an error names the request's
        index); one journal commit for the batch."""
        ...

    async def submit_upload(self, request: UploadRequest) -> TaskSnapshot:
        """Validate one upload (its source file, its ``reply_to``), queue it;
        return once the journal holds it. Wrong requests raise at once
        (``InvalidSourceError``, ``InvalidDestinationError``, ``TypeError``)."""
        ...

    async def submit_uploads(self, requests: Sequence[UploadRequest]) -> list[TaskSnapshot]:
        """:meth:`submit_upload` for each, all or none (an error names the
        request's index); one journal commit for the batch."""
        ...

    async def submit_resumed(
        self,
        data: ResumeData,
        destination: str | os.PathLike[str] | None,
        *,
        headers: HeaderPairs,
    ) -> TaskSnapshot:
        """A new task continuing from resume data (checked first:
        ``InvalidResumeDataError``); it takes the partial file over."""
        ...

    async def cancel(
        self, task_id: int, *, resume_data: bool = False, wait: bool = True
    ) -> TaskSnapshot:
        """Ask the task to stop; with ``wait``, return once it has ended and the
        journal agrees. With ``resume_data`` the partial file is kept when
        resuming is safe: the terminal ``CancelledEvent`` carries the data, and
        handing it out acknowledges it (``acknowledge="auto"``). A task that has
        ended is left alone."""
        ...

    def suspend(self, task_id: int) -> TaskSnapshot:
        """Pause a running task in place (idempotent; nothing for an ended one)."""
        ...

    def resume(self, task_id: int) -> TaskSnapshot:
        """Continue a suspended task (idempotent; nothing for an ended one)."""
        ...

    async def acknowledge(self, task_ids: Sequence[int]) -> None:
        """The application has seen these tasks' terminal events: return once the
        journal has forgotten them (one commit). Ids of tasks that have not
        ended, or are gone, are left alone."""
        ...

    def invalidate(self) -> None:
        """Accept no new task from now on."""
        ...

    # -- waiting and events -------------------------------------------------------

    async def wait(
        self, task_id: int, *, hand_out: bool = True, stop_when_suspended: bool = True
    ) -> TaskSnapshot:
        """Return the task's snapshot once it has ended, or (``stop_when_suspended``)
        once it is suspended, at the call or later: a suspended task ends only when
        somebody resumes or cancels it. With ``hand_out`` the terminal event is
        about to reach the application: it is journaled first and, under
        ``acknowledge="auto"``, counts as delivered. Raises
        ``SessionClosedError`` when the backend closes first."""
        ...

    def subscribe(
        self, task_id: int | None, *, follow: bool = True, since: int | None = None
    ) -> EventStream[Any]:
        """A new stream of one task's events (or every task's, with None),
        starting with what a late subscriber missed. Subscribing acknowledges
        nothing; under ``acknowledge="auto"`` a terminal event counts as delivered
        once the stream has handed it out.

        ``since`` (the session's stream of a background session): start after
        that event-log number: the logged events after it, the progress of each
        running task, ``EventsDeliveredEvent(cursor=...)``; or ``EventsGapEvent``
        and every task's condensed state when the log cannot answer it.
        ``InvalidRequestError`` for an ephemeral session (it has no log)."""
        ...

    async def wait_events_delivered(self) -> None:
        """Return once every terminal event replayed from the journal is acknowledged."""
        ...

    # -- queries ------------------------------------------------------------------

    def task(self, task_id: int) -> TaskSnapshot:
        """The task as it is now (``KeyError`` for an id the backend never had)."""
        ...

    def tasks(self) -> list[TaskSnapshot]:
        """Every task, in creation order."""
        ...

    def statistics(self) -> SupervisorStatistics:
        """Tasks transferring and waiting for a slot, in total and per origin."""
        ...

    async def task_metrics(self, task_id: int) -> TaskMetrics:
        """What the task's attempts did so far, the running one included
        (``KeyError`` for an id the backend does not have)."""
        ...

    async def metrics(self) -> SessionMetrics:
        """The session's ended attempts, added up."""
        ...

    async def flush(self) -> None:
        """Return once the journal holds everything done so far."""
        ...


@runtime_checkable
class DataTasks(Protocol):
    """A backend that can run data tasks (``Session.fetch``): the in-process
    engine of an ephemeral session (a body in memory cannot cross to a daemon,
    nor outlive the process)."""

    async def fetch(
        self, url: str, *, method: str, headers: HeaderPairs, max_bytes: int | None
    ) -> FetchResponse:
        """The answer to one request, its body in memory (at most ``max_bytes``)."""
        ...


class GivenBackend:
    """A backend made elsewhere, as the context manager a ``Session`` enters
    (``Session._with_backend``): entering and leaving it open and close nothing."""

    def __init__(self, backend: TaskBackend) -> None:
        self._backend = backend

    async def __aenter__(self) -> TaskBackend:
        return self._backend

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None
