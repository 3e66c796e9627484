"""``DownloadTask`` and ``UploadTask``: the handles an application holds for one
transfer. Both read the backend's snapshots of their task; what is the same
(states, events, waiting, suspend/resume/cancel, acknowledgement) is their
common base, ``TransferTask``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, final

from ._core.events import CancelledEvent, ErrorEvent, FinishedEvent, TaskEvent
from ._core.metrics import TaskMetrics
from ._core.resume_data import ResumeData
from ._core.states import TaskState
from ._exceptions import TaskSuspendedError

if TYPE_CHECKING:
    from ._engine.backend import TaskBackend, TaskSnapshot
    from ._engine.hub import EventStream

__all__ = ["DownloadTask", "TransferTask", "UploadTask", "task_handle"]


class TransferTask:
    """What a download's and an upload's handles share (never made directly).

    Attributes read the current state of the task; they never block.
    """

    # A handle holds its backend, never the engine's record: it reads frozen
    # snapshots (the backend's current one; the last one seen once the backend
    # has forgotten the task), like a Future that only reads its state.
    __slots__ = ("_backend", "_snapshot")

    def __init__(self, backend: TaskBackend, snapshot: TaskSnapshot) -> None:
        self._backend = backend
        self._snapshot = snapshot

    def _current(self) -> TaskSnapshot:
        if self._snapshot.terminal is None:
            with contextlib.suppress(KeyError):  # forgotten: the last one seen
                self._snapshot = self._backend.task(self._snapshot.id)
        return self._snapshot

    @property
    def id(self) -> int:
        """Unique within the session; grows with creation order."""
        return self._snapshot.id

    @property
    def url(self) -> str:
        return self._snapshot.url

    @property
    def description(self) -> str | None:
        """The application's label for the task (``taskDescription``)."""
        return self._snapshot.description

    @property
    def destination(self) -> Path:
        """Where the file will be (and, once finished, is)."""
        return self._snapshot.destination

    @property
    def state(self) -> TaskState:
        return self._current().state

    @property
    def bytes_received(self) -> int:
        """Bytes written to the partial file so far (``countOfBytesReceived``)."""
        return self._current().bytes_received

    @property
    def bytes_expected(self) -> int | None:
        """The body's length once known, else None (``countOfBytesExpectedToReceive``)."""
        return self._current().bytes_expected

    @property
    def length_verified(self) -> bool | None:
        """Once the task has finished, whether its length was vouched for (see
        :attr:`FinishedEvent.length_verified <bgtransfer.FinishedEvent>`); None
        before, or when it did not finish."""
        return self._current().length_verified

    @property
    def result(self) -> FinishedEvent | ErrorEvent | CancelledEvent | None:
        """The terminal event once the task has ended, else None."""
        return self._current().terminal

    async def metrics(self) -> TaskMetrics:
        """What the task's attempts did on the network so far, the running one
        included (``URLSessionTaskMetrics``): per attempt the times of DNS,
        connect, request and first byte, its bytes, status, connection reuse,
        proxy, redirects and outcome; the latest redirect chain; totals.

        Kept in memory, in the process that ran the attempts (the daemon's, for a
        daemon session): a task reattached by a new process shows only the
        attempts made since. A task its session no longer has raises ``KeyError``.
        See docs/metrics.md.
        """
        return await self._backend.task_metrics(self._snapshot.id)

    def events(self) -> EventStream[TaskEvent]:
        """A new async iterator over this task's events, ending after its terminal event.

        Each call is an independent subscriber with its own bounded buffer. A late
        subscriber first receives one progress event with the total so far and,
        if the task has already ended, its terminal event. Returning the terminal
        event acknowledges it, unless the session acknowledges explicitly
        (``Configuration(acknowledge="explicit")``).
        """
        stream: EventStream[TaskEvent] = self._backend.subscribe(self._snapshot.id)
        return stream

    async def wait(self) -> FinishedEvent | CancelledEvent:
        """Wait until the task ends; return its Finished/Cancelled event or raise its error.

        A failed task raises its :class:`~bgtransfer.TransferError` (naming the URL
        and the cause). Cancellation is an outcome, not an error: a cancelled task
        returns its :class:`CancelledEvent`. Returning (or raising) acknowledges
        the terminal event, unless the session acknowledges explicitly
        (``Configuration(acknowledge="explicit")``: then call :meth:`acknowledge`).
        Raises :class:`~bgtransfer.SessionClosedError` if the session closed first
        (a background task then continues in the next session), and
        :class:`~bgtransfer.TaskSuspendedError` if the task is suspended, at the
        call or while waiting: nothing would end it until somebody calls
        :meth:`resume` or :meth:`cancel`, so waiting would hang.
        """
        snapshot = self._snapshot = await self._backend.wait(self._snapshot.id)
        terminal = snapshot.terminal
        if terminal is None:  # the backend returns early only for a suspended task
            raise TaskSuspendedError(snapshot.id, snapshot.url)
        if isinstance(terminal, ErrorEvent):
            raise terminal.error
        return terminal

    async def acknowledge(self) -> None:
        """Mark the task's terminal event as delivered; return once the journal has
        forgotten the task, so no later process delivers the event again.

        The way to acknowledge in a session opened with
        ``Configuration(acknowledge="explicit")`` (at-least-once delivery), once
        the application has done what the event asks for. With the default
        ``"auto"``, needed only by applications that read :attr:`result` rather
        than an event stream or :meth:`wait`. Does nothing before the task has
        ended; acknowledging twice is harmless. Raises
        :class:`~bgtransfer.SessionClosedError` once the session has closed (the
        event is then delivered again by the next session).
        """
        await self._backend.acknowledge((self._snapshot.id,))

    def suspend(self) -> None:
        """Pause the task in place (``RUNNING`` -> ``SUSPENDED``); idempotent.

        Its connection slot is released at once and its partial file kept;
        :meth:`resume` continues from the bytes already on disk. Suspending a task
        that has ended, or is being cancelled, does nothing.
        """
        self._snapshot = self._backend.suspend(self._snapshot.id)

    def resume(self) -> None:
        """Continue a suspended task (``SUSPENDED`` -> ``RUNNING``); idempotent.

        The task queues for a slot like any other, then asks the server for the
        rest with ``Range`` and ``If-Range``; a ``ResumedEvent`` tells the offset it
        continued from (0 when the server's answer forced a fresh start).
        """
        self._snapshot = self._backend.resume(self._snapshot.id)

    async def cancel_with_resume_data(self) -> ResumeData | None:
        """Cancel the task keeping what it downloaded; return the data to resume it.

        The task ends with ``CancelledEvent(resume_data=...)``. The result is None,
        and the partial file removed, when the server gave no strong validator (no
        safe way to resume) or no byte arrived yet. A task that has already ended
        returns None and is unchanged. Pass the data to
        :meth:`Session.download_with_resume_data`. Returning acknowledges the
        task's ``CancelledEvent`` (a later process does not deliver it again),
        unless the session acknowledges explicitly: then the event, with its
        resume data, is delivered again until :meth:`acknowledge`.

        The data of an ephemeral session dies with it: the session removes its
        partial files when it closes, so the data is good only while it is open
        (without a ``state_dir``, only in that session). To resume later, or in
        another process, download in a background session.
        """
        if self._current().state is TaskState.COMPLETED:
            return None
        snapshot = self._snapshot = await self._backend.cancel(self._snapshot.id, resume_data=True)
        terminal = snapshot.terminal
        return terminal.resume_data if isinstance(terminal, CancelledEvent) else None

    async def cancel(self) -> None:
        """Stop the task and wait until it has ended.

        The task ends with a ``CancelledEvent`` and its partial file is removed.
        Cancelling a task that has already ended does nothing (a finished file stays
        finished, even when the finish won a race with this call).
        """
        self._snapshot = await self._backend.cancel(self._snapshot.id)

    def __repr__(self) -> str:
        label = f" {self.description!r}" if self.description else ""
        return f"<{type(self).__name__} {self.id}{label} {self.state.value} {self.url}>"


@final
class DownloadTask(TransferTask):
    """One download in a session. Made by :meth:`Session.download`, never directly.

    Attributes read the current state of the task; they never block.
    """

    __slots__ = ()


@final
class UploadTask(TransferTask):
    """One upload in a session. Made by :meth:`Session.upload`, never directly.

    The life of a :class:`DownloadTask`: the same states, :meth:`events`,
    :meth:`wait`, :meth:`suspend`/:meth:`resume`, :meth:`cancel` and
    acknowledgement. :attr:`bytes_sent` counts the file's bytes sent in the
    current attempt (a plain upload that is retried, resumed or reattached
    starts again from its first byte); :attr:`bytes_expected` is the file's
    size. ``wait()`` returns a :class:`~bgtransfer.FinishedEvent` whose
    ``reply`` holds the server's answer. :meth:`cancel_with_resume_data` returns
    resume data for a resumable upload the server holds (for
    :meth:`Session.upload_with_resume_data`), None for a plain one.
    """

    __slots__ = ()

    @property
    def source(self) -> Path:
        """The file being sent (absolute, links resolved)."""
        source = self._snapshot.source
        assert source is not None, "an upload's snapshot names its source"
        return source

    @property
    def bytes_sent(self) -> int:
        """Bytes of the file sent so far in this attempt (``countOfBytesSent``)."""
        return self._current().bytes_received

    @property
    def reply_to(self) -> Path | None:
        """Where the response body is saved, if the upload was given ``reply_to``."""
        snapshot = self._snapshot
        return None if snapshot.destination == snapshot.source else snapshot.destination


def task_handle(backend: TaskBackend, snapshot: TaskSnapshot) -> DownloadTask | UploadTask:
    """The handle for a task of either kind."""
    if snapshot.kind == "upload":
        return UploadTask(backend, snapshot)
    return DownloadTask(backend, snapshot)
