"""What a late subscriber missed: the backlog a new event stream starts with.

Two answers, chosen by the subscriber: without a cursor, each task's condensed
story (one progress event with the total so far, and the terminal event once it
has ended); with a cursor (``since``, a background session's stream only), every
logged event numbered after it, then the progress of each task still running,
or, when the log cannot answer that cursor, an ``EventsGapEvent`` followed by
the condensed story, never a silent loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .._core.events import EventsGapEvent, TaskEvent
from .._exceptions import InvalidRequestError
from .hub import snapshot_progress

if TYPE_CHECKING:
    from .._core.eventlog import EventLog
    from .record import TaskRecord

__all__ = ["check_cursor", "what_was_missed"]


def what_was_missed(
    records: Mapping[int, TaskRecord],
    log: EventLog | None,
    task_id: int | None,
    since: int | None,
) -> tuple[list[TaskEvent | EventsGapEvent], int]:
    """The backlog for a new stream of one task (or every task, with None), and
    how many terminal events it replays."""
    backlog: list[TaskEvent | EventsGapEvent] = []
    if since is not None:
        check_cursor(since, task_id, persistent=log is not None)
        assert log is not None
        events = log.replay(since)
        if events is not None:
            backlog.extend(events)
            for record in records.values():
                if record.terminal is None:
                    backlog.extend(snapshot_progress(record.last_progress))
            return backlog, len(events)
        backlog.append(EventsGapEvent(since=since, earliest=log.earliest, latest=log.latest))
    chosen = [records[task_id]] if task_id is not None else records.values()
    replayed = 0
    for record in chosen:
        backlog.extend(snapshot_progress(record.last_progress))
        if record.terminal is not None:
            backlog.append(record.terminal)
            replayed += record.replayed
    return backlog, replayed


def check_cursor(since: object, task_id: int | None, *, persistent: bool) -> None:
    """A cursor is a log number (an int >= 0) for the session's stream of a
    background session (an ephemeral one keeps no event log)."""
    if isinstance(since, bool) or not isinstance(since, int):
        raise TypeError(f"since must be an int (an event's seq), not {type(since).__name__}")
    if since < 0:
        raise InvalidRequestError(f"since must be 0 or an event's seq, not {since}")
    if task_id is not None:
        raise InvalidRequestError("since applies to the session's stream, not a task's")
    if not persistent:
        raise InvalidRequestError(
            "events(since=...) needs a background session: an ephemeral session "
            "keeps no event log (open Session('<identifier>') to get one)"
        )
