"""The event log's rules without the database: numbering, replay, retention, gaps."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgtransfer._core.codec import decode_logged, encode_logged
from bgtransfer._core.eventlog import EventLog
from bgtransfer._core.events import (
    CancelledEvent,
    FinishedEvent,
    LoggedEvent,
    ResumedEvent,
    RetryEvent,
)
from bgtransfer._exceptions import NetworkError


def _finished(task_id: int) -> FinishedEvent:
    return FinishedEvent(task_id=task_id, location=Path(f"/out/{task_id}"), total_bytes=1)


def test_numbers_start_above_everything_known() -> None:
    log = EventLog(next_seq=10, earliest=4)
    assert log.append(_finished(1)).seq == 10
    assert log.append(_finished(2)).seq == 11
    assert log.latest == 11
    assert EventLog().latest is None
    assert EventLog(earliest=7).append(_finished(1)).seq == 8


def test_replay_after_a_cursor_and_gaps() -> None:
    log = EventLog()
    events = [log.append(_finished(task)) for task in (1, 2, 3)]
    assert log.replay(0) == events
    assert log.replay(1) == events[1:]
    assert log.replay(3) == []
    assert log.replay(4) is None  # newer than the newest: not this log's cursor


def test_retention_keeps_the_newest_and_every_unacknowledged_task() -> None:
    log = EventLog(keep=2)
    for task in (1, 2, 3, 4):
        log.append(_finished(task))
    assert log.trim() == []  # nothing acknowledged: nothing may go
    assert len(log) == 4
    log.release(2)
    log.release(3)
    assert log.trim() == [2, 3]  # the oldest released ones, down to keep
    assert log.earliest == 3
    assert log.replay(2) is None  # 3 is gone: a gap
    assert [e.task_id for e in log.replay(3) or []] == [4]
    log.release(1)
    log.release(4)
    assert log.trim() == []  # at keep already


def test_a_task_with_several_events_is_held_until_released() -> None:
    log = EventLog(keep=1)
    log.append(ResumedEvent(task_id=1, offset=5, expected_total=9))
    log.append(_finished(2))
    log.append(CancelledEvent(task_id=1))
    log.release(2)
    assert log.trim() == [2]
    assert [e.seq for e in log.replay(2) or []] == [3]
    log.release(1)
    assert log.trim() == [1]


@pytest.mark.parametrize(
    "event",
    [
        ResumedEvent(task_id=3, offset=10, expected_total=None),
        RetryEvent(task_id=3, attempt=2, error=NetworkError("reset", url="http://h/x"), delay=0.5),
        _finished(3),
        CancelledEvent(task_id=3),
    ],
)
def test_logged_events_round_trip_through_the_codec(event: LoggedEvent) -> None:
    back = decode_logged(3, 42, encode_logged(event))
    assert back.seq == 42
    assert type(back) is type(event)
    if isinstance(event, RetryEvent):
        assert isinstance(back, RetryEvent)
        assert (back.attempt, back.delay, str(back.error), back.error.url) == (
            2,
            0.5,
            "http://h/x: reset",
            "http://h/x",
        )
    else:
        assert back == event
