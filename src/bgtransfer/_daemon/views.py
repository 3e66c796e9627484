"""What the daemon shows of a served session: its status, and its events as stream lines."""

from __future__ import annotations

import time
from typing import Any

from .._core.events import EventsDeliveredEvent, EventsGapEvent, ProgressEvent, SessionEvent
from .._core.states import TaskState
from .._core.wire import encode_event, encode_snapshot
from .._core.wire_stats import encode_statistics
from .._engine.backend import TaskSnapshot
from .sessions import Served

__all__ = ["event_line", "session_status", "task_line"]


def session_status(served: Served) -> dict[str, Any]:
    """One session in ``GET /v1/status`` (``bgtransfer status``)."""
    backend = served.backend
    records = {record.id: record for record in backend.engine.records()}
    now = backend.engine.clock()
    credentials = served.credentials
    waiting: dict[int, str | None] = {}
    if credentials is not None:
        # Only a running task waits: one just suspended or cancelled withdraws its
        # question when its runner next runs, which a status between the two
        # must not show as waiting.
        waiting = {
            s.id: credentials.waiting_for(s.id)
            for s in backend.tasks()
            if s.state is TaskState.RUNNING
        }
    return {
        "identifier": served.identifier,
        "attached": served.lease is not None,
        "client_pid": served.client_pid,
        "statistics": encode_statistics(backend.statistics()),
        "launches": _launches(served),
        "tasks": [
            {
                **encode_snapshot(s),
                "activity": _activity(s.state, records.get(s.id), waiting.get(s.id)),
                "waiting_for": waiting.get(s.id),
                "rate": _rate(records.get(s.id), now),
            }
            for s in backend.tasks()
        ],
    }


def _launches(served: Served) -> dict[str, Any] | None:
    """The session's launch status (``LaunchPolicy.to_json``), with when the next
    launch is due and why, for ``bgtransfer status``; None without a launch_command."""
    if served.launch is None:
        return None
    status = served.launch.status
    return {**status.to_json(), "due": status.due, "explain": status.explain(time.time())}


def event_line(served: Served, event: SessionEvent) -> dict[str, Any]:
    """An event for a client's stream; one that changes a task carries its new
    snapshot, and the statistics."""
    line: dict[str, Any] = {"type": "event", "event": encode_event(event)}
    if not isinstance(event, ProgressEvent | EventsDeliveredEvent | EventsGapEvent):
        backend = served.backend
        try:
            snapshot = backend.task(event.task_id)
        except KeyError:  # (forgotten already: the event alone)
            pass
        else:
            line["task"] = encode_snapshot(snapshot)
        line["statistics"] = encode_statistics(backend.statistics())
    return line


def _rate(record: Any, now: float) -> float | None:
    """Bytes per second lately, for a task transferring (else None)."""
    if record is None or not record.running or record.terminal is not None:
        return None
    rate: float | None = record.throttle.rate(now)
    return rate


def task_line(snapshot: TaskSnapshot, record: Any) -> dict[str, Any]:
    """A task of the attach stream's backlog, with its progress so far."""
    last = record.last_progress if record is not None else None
    line: dict[str, Any] = {"type": "task", "task": encode_snapshot(snapshot)}
    if last is not None:
        line["progress"] = [last.total_bytes_written, last.total_bytes_expected]
    if record is not None and record.replayed:
        line["replayed"] = True
    return line


def _activity(state: TaskState, record: Any, waiting_for: str | None = None) -> str:
    """What a task is doing, for ``bgtransfer status`` (``waiting_for``: what it
    waits for the application for, such as credentials)."""
    if state is TaskState.RUNNING and waiting_for is not None:
        return f"waiting for the app: {waiting_for}"
    if state is TaskState.RUNNING:
        if record is None or not record.running:
            return "waiting for a slot"
        until = getattr(record.job, "backing_off_until", None)
        if until is not None:
            stamp = time.strftime("%H:%M:%S", time.localtime(until))
            return f"backing off until {stamp} (after a failed attempt)"
        return "transferring"
    return {
        TaskState.SUSPENDED: "suspended",
        TaskState.CANCELING: "cancelling",
        TaskState.COMPLETED: "ended",
    }[state]
