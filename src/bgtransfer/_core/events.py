"""Task events: frozen, slotted, keyword-built values forming one closed union.

A consumer can ``match`` on them exhaustively::

    match event:
        case ProgressEvent(total_bytes_written=n): ...
        case ResumedEvent(offset=n): ...
        case RetryEvent(attempt=n, error=exc, delay=seconds): ...
        case FinishedEvent(location=path): ...
        case ErrorEvent(error=exc, resume_data=data): ...
        case CancelledEvent(resume_data=data): ...

Nobody subclasses them (each is ``@final``); :data:`TaskEvent` is the union and
:data:`TERMINAL_EVENTS` the three that end a task's stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias, final

import attrs

if TYPE_CHECKING:
    from .._exceptions import TransferError
    from .resume_data import ResumeData

__all__ = [
    "TERMINAL_EVENTS",
    "CancelledEvent",
    "ErrorEvent",
    "EventsDeliveredEvent",
    "EventsGapEvent",
    "FinishedEvent",
    "LoggedEvent",
    "ProgressEvent",
    "ResumedEvent",
    "RetryEvent",
    "SessionEvent",
    "TaskEvent",
    "TerminalEvent",
    "UploadReply",
    "is_terminal",
    "merge_progress",
]


@final
@attrs.frozen(kw_only=True)
class ProgressEvent:
    """Bytes arrived. Rate-limited to one per ``Configuration.progress_interval``.

    ``bytes_written`` counts the bytes since the previous progress event *this
    subscriber* saw (coalesced events add up), so summing it over a stream gives
    ``total_bytes_written``.
    """

    task_id: int
    bytes_written: int
    total_bytes_written: int
    total_bytes_expected: int | None  # None when the server sent no length


@final
@attrs.frozen(kw_only=True)
class ResumedEvent:
    """The transfer (re)starts at ``offset`` (the ``didResumeAtOffset`` analog).

    Sent before the first progress event of every attempt that does not begin a
    fresh task: after a retry, ``resume()``, or ``download_with_resume_data()``.
    ``offset`` is where the bytes now continue; **0 means the download restarted
    from the beginning** (the server ignored the range, the file changed, or the
    server gave no validator to resume safely) and the totals start over.
    """

    task_id: int
    offset: int
    expected_total: int | None
    seq: int | None = attrs.field(default=None, eq=False)
    """Its number in the session's event log (background sessions); None in an
    ephemeral session. See ``Session.events(since=...)``. Where the event sits in
    the log, not what happened: equality ignores it."""


@final
@attrs.frozen(kw_only=True)
class RetryEvent:
    """An attempt failed with a transient error; the task tries again after ``delay``.

    ``attempt`` is the number of the attempt about to be made (2 for the first
    retry; it counts attempts since the last one that made kept progress, see
    :class:`~bgtransfer.RetryPolicy`). Not
    terminal: the terminal ``ErrorEvent`` comes only when retries are exhausted
    or the error is permanent.
    """

    task_id: int
    attempt: int
    error: TransferError
    delay: float
    seq: int | None = attrs.field(default=None, eq=False)
    """Its number in the session's event log (background sessions); None in an
    ephemeral session. See ``Session.events(since=...)``. Where the event sits in
    the log, not what happened: equality ignores it."""


@final
@attrs.frozen(kw_only=True)
class UploadReply:
    """What the server answered an upload (``FinishedEvent.reply``).

    ``headers`` leave out secret ones (``Set-Cookie``, ``Authorization``, any
    name the session's secret-header rule names). ``body`` is the first
    ``Configuration.upload_reply_max_bytes`` bytes of the response body;
    ``truncated`` says the server sent more. With ``reply_to=`` the whole body
    was written to that file instead (``saved_to``), and ``body`` is empty.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    truncated: bool = False
    saved_to: Path | None = None


@final
@attrs.frozen(kw_only=True)
class FinishedEvent:
    """The body arrived whole and the file is at ``location``. Terminal.

    For an upload: the server accepted the whole file; ``location`` is the
    ``reply_to`` file the response body was saved to, else the source file;
    ``total_bytes`` counts the bytes sent and ``reply`` holds the answer.

    ``length_verified`` says whether something vouched that ``total_bytes`` is the
    whole file: a ``Content-Length``, a ``Content-Range`` complete length, the end
    of chunked framing, or (for a body the server ended by closing the
    connection) a later range request confirming it. False only when the server
    sent none of these and gave no strong validator to ask with: the file may
    have been cut short and nothing can tell.
    """

    task_id: int
    location: Path
    total_bytes: int
    length_verified: bool = True
    reply: UploadReply | None = None
    """An upload's answer from the server (None for a download)."""
    seq: int | None = attrs.field(default=None, eq=False)
    """Its number in the session's event log (background sessions); None in an
    ephemeral session. See ``Session.events(since=...)``. Where the event sits in
    the log, not what happened: equality ignores it."""


@final
@attrs.frozen(kw_only=True)
class ErrorEvent:
    """The task failed for good; ``error`` says why and names the URL. Terminal.

    ``resume_data`` is set when the disk ran out of space (a
    :class:`~bgtransfer.LocalFileError` with ``errno`` ``ENOSPC``, ``EDQUOT`` or
    ``EFBIG``) after bytes that can be resumed safely were written: the partial
    file is kept, and once space is freed ``Session.download_with_resume_data()``
    continues from those bytes (the iOS model: the error carries the resume data).
    """

    task_id: int
    error: TransferError
    resume_data: ResumeData | None = None
    seq: int | None = attrs.field(default=None, eq=False)
    """Its number in the session's event log (background sessions); None in an
    ephemeral session. See ``Session.events(since=...)``. Where the event sits in
    the log, not what happened: equality ignores it."""


@final
@attrs.frozen(kw_only=True)
class CancelledEvent:
    """The task was cancelled. Terminal.

    ``resume_data`` is set when the task was ended by ``cancel_with_resume_data()``
    and the server allows resuming safely; pass it to
    ``Session.download_with_resume_data()`` to continue.
    """

    task_id: int
    resume_data: ResumeData | None = None
    seq: int | None = attrs.field(default=None, eq=False)
    """Its number in the session's event log (background sessions); None in an
    ephemeral session. See ``Session.events(since=...)``. Where the event sits in
    the log, not what happened: equality ignores it."""


@final
@attrs.frozen(kw_only=True)
class EventsDeliveredEvent:
    """The session stream has delivered its backlog; what follows happens live.

    The ``URLSessionDidFinishEventsForBackgroundURLSession`` analog. Every
    ``Session.events()`` stream yields it exactly once, right after the events of
    what happened before the stream was opened (per task: the progress so far and
    the terminal event if it ended). In a background session reattached by a new
    process, that backlog includes the terminal events the previous process never
    delivered; ``replayed`` counts them. Opened with ``since=N``, the backlog is
    the logged events after ``N`` and ``replayed`` counts those.

    ``cursor`` is the number of the newest event in the session's event log when
    the stream was opened (None in an ephemeral session, or while the log is
    empty): keep it, and the next ``Session.events(since=cursor)`` starts after
    it. (Every logged event carries its own number too, ``event.seq``.)
    """

    replayed: int
    cursor: int | None = attrs.field(default=None, eq=False)  # (a position: equality ignores it)


@final
@attrs.frozen(kw_only=True)
class EventsGapEvent:
    """The event log no longer holds everything after the cursor asked for.

    ``Session.events(since=N)`` yields it first when ``N`` is older than what the
    log still keeps (it is bounded: ``Configuration.event_log_size``) or newer
    than its newest event (a cursor of another session, or of a journal that was
    replaced). Never a silent loss: what follows is a snapshot of every task, as
    ``Session.events()`` without a cursor gives it (per task: the progress so far
    and its terminal event if it has ended), then ``EventsDeliveredEvent``.
    """

    since: int
    """The cursor that was asked for."""
    earliest: int
    """The oldest cursor the log can still answer without a gap."""
    latest: int | None
    """The newest event's number (None: the log is empty)."""


TaskEvent: TypeAlias = (
    ProgressEvent | ResumedEvent | RetryEvent | FinishedEvent | ErrorEvent | CancelledEvent
)
SessionEvent: TypeAlias = TaskEvent | EventsDeliveredEvent | EventsGapEvent
"""What ``Session.events()`` yields: every task's events, one ``EventsDeliveredEvent``,
and (``since=N`` only) an ``EventsGapEvent`` first when the log cannot answer ``N``."""
LoggedEvent: TypeAlias = ResumedEvent | RetryEvent | FinishedEvent | ErrorEvent | CancelledEvent
"""The events a background session's event log keeps (every task event but progress)."""
TerminalEvent: TypeAlias = FinishedEvent | ErrorEvent | CancelledEvent
TERMINAL_EVENTS: Final = (FinishedEvent, ErrorEvent, CancelledEvent)


def is_terminal(event: SessionEvent) -> bool:
    """True for the events that end a task's stream."""
    return isinstance(event, TERMINAL_EVENTS)


def merge_progress(older: ProgressEvent, newer: ProgressEvent) -> ProgressEvent:
    """Coalesce two progress events of one task: totals from ``newer``, deltas added."""
    if older.task_id != newer.task_id:
        raise ValueError("cannot merge progress of different tasks")
    return attrs.evolve(newer, bytes_written=older.bytes_written + newer.bytes_written)
