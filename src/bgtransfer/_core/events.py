"""Task events: frozen, slotted, keyword-built values forming one closed union.

A consumer can ``match`` on them exhaustively::

    match event:
        case ProgressEvent(total_bytes_written=n): ...
        case FinishedEvent(location=path): ...
        case ErrorEvent(error=exc): ...
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

__all__ = [
    "TERMINAL_EVENTS",
    "CancelledEvent",
    "ErrorEvent",
    "FinishedEvent",
    "ProgressEvent",
    "TaskEvent",
    "TerminalEvent",
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
class FinishedEvent:
    """The body arrived whole and the file is at ``location``. Terminal."""

    task_id: int
    location: Path
    total_bytes: int


@final
@attrs.frozen(kw_only=True)
class ErrorEvent:
    """The task failed for good; ``error`` says why and names the URL. Terminal."""

    task_id: int
    error: TransferError


@final
@attrs.frozen(kw_only=True)
class CancelledEvent:
    """The task was cancelled. Terminal.

    ``resume_data`` is always ``None`` in this release; pausing with resume data
    (``cancel_with_resume_data()``) fills it with a ``ResumeData`` value.
    """

    task_id: int
    resume_data: None = None


TaskEvent: TypeAlias = ProgressEvent | FinishedEvent | ErrorEvent | CancelledEvent
TerminalEvent: TypeAlias = FinishedEvent | ErrorEvent | CancelledEvent
TERMINAL_EVENTS: Final = (FinishedEvent, ErrorEvent, CancelledEvent)


def is_terminal(event: TaskEvent) -> bool:
    """True for the events that end a task's stream."""
    return isinstance(event, TERMINAL_EVENTS)


def merge_progress(older: ProgressEvent, newer: ProgressEvent) -> ProgressEvent:
    """Coalesce two progress events of one task: totals from ``newer``, deltas added."""
    if older.task_id != newer.task_id:
        raise ValueError("cannot merge progress of different tasks")
    return attrs.evolve(newer, bytes_written=older.bytes_written + newer.bytes_written)
