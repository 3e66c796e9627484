"""Helpers shared by the tests that drive sessions."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from bgtransfer import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    ProgressEvent,
    TaskEvent,
)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def collect(stream: AsyncIterator[TaskEvent]) -> list[TaskEvent]:
    """Every event of a stream until it ends."""
    return [event async for event in stream]


def check_task_stream(events: Sequence[TaskEvent], task_id: int) -> TaskEvent:
    """Assert the invariants of one task's stream; return its terminal event.

    Progress events only, with non-decreasing totals whose deltas add up, then
    exactly one terminal event, last.
    """
    assert events, "a task stream must not be empty"
    assert all(event.task_id == task_id for event in events)
    *progress, terminal = events
    assert isinstance(terminal, FinishedEvent | ErrorEvent | CancelledEvent), terminal
    assert all(isinstance(event, ProgressEvent) for event in progress), progress
    running = 0
    previous = 0
    for event in progress:
        assert isinstance(event, ProgressEvent)
        running += event.bytes_written
        assert event.total_bytes_written == running
        assert event.total_bytes_written >= previous
        previous = event.total_bytes_written
    if isinstance(terminal, FinishedEvent):
        assert previous == terminal.total_bytes
    return terminal
