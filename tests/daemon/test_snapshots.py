"""The daemon client's copy of its tasks after a re-attachment (``Snapshots``):
what the streams missed, and the tasks a lost submission made. No socket."""

from __future__ import annotations

from pathlib import Path

import attrs

from bgtransfer import FinishedEvent, ProgressEvent, ResumedEvent, TaskState
from bgtransfer._core.wire import encode_event, encode_snapshot
from bgtransfer._daemon.snapshots import Snapshots
from bgtransfer._engine.backend import TaskSnapshot


def snapshot(task_id: int, received: int, *, end: int | None = None, url: str = "") -> TaskSnapshot:
    terminal = None
    if end is not None:
        terminal = FinishedEvent(
            task_id=task_id, location=Path(f"/o/{task_id}"), total_bytes=received, seq=end
        )
    return TaskSnapshot(
        id=task_id,
        url=url or f"http://h/{task_id}",
        description=None,
        destination=Path(f"/o/{task_id}"),
        state=TaskState.RUNNING if terminal is None else TaskState.COMPLETED,
        bytes_received=received,
        bytes_expected=1000,
        terminal=terminal,
    )


def test_merge_says_what_the_streams_missed_in_the_logs_order() -> None:
    book = Snapshots()
    for task_id, received in [(1, 300), (2, 500), (3, 100), (4, 1000)]:
        book.take(snapshot(task_id, received), None)
    book.tasks[4] = snapshot(4, 1000, end=7)  # its end was heard of
    backlog = [
        snapshot(1, 1000, end=12),  # ended meanwhile, after 2's end
        snapshot(2, 1000, end=11),
        snapshot(3, 50),  # the new daemon went on from fewer bytes
        attrs.evolve(snapshot(4, 0), terminal=None),  # an older view: the end stays
        snapshot(5, 0),  # made by a submission whose answer was lost
    ]
    missed = book.merge([(s, None) for s in backlog])
    assert missed == [
        ProgressEvent(
            task_id=1, bytes_written=700, total_bytes_written=1000, total_bytes_expected=1000
        ),
        ProgressEvent(
            task_id=2, bytes_written=500, total_bytes_written=1000, total_bytes_expected=1000
        ),
        ResumedEvent(task_id=3, offset=50, expected_total=1000),
        book.tasks[2].terminal,
        book.tasks[1].terminal,
    ]
    assert [getattr(e, "seq", None) for e in missed[-2:]] == [11, 12]
    assert book.tasks[4].terminal is not None
    assert book.tasks[3].bytes_received == 50
    assert sorted(book.tasks) == [1, 2, 3, 4, 5]


def test_claim_takes_new_unowned_tasks_in_order() -> None:
    book = Snapshots()
    book.take(snapshot(1, 0, url="http://h/a"), None)  # known before: never claimed
    mark = book.mark()
    book.own(book.update(snapshot(2, 0, url="http://h/a")))  # another call's answer
    book.merge([(snapshot(3, 0, url="http://h/a"), None), (snapshot(4, 0, url="http://h/b"), None)])
    keys = [("http://h/a", None, None), ("http://h/b", None, "/o/4"), ("http://h/c", None, None)]
    found = book.claim(keys, mark)
    assert [s.id if s else None for s in found] == [3, 4, None]
    assert book.claim([("http://h/a", None, None)], mark) == [None]  # claimed once


def test_an_event_line_s_snapshot_ends_with_the_event_itself() -> None:
    """The terminal event is decoded once: the snapshot the line carries ends
    with the very event published (equal to what its own copy says)."""
    book = Snapshots()
    book.take(snapshot(1, 300), None)
    book.take(snapshot(2, 300), None)
    ended = snapshot(1, 1000, end=9)
    assert ended.terminal is not None
    line = {"event": encode_event(ended.terminal), "task": encode_snapshot(ended)}
    event = book.apply(line)
    assert event == ended.terminal
    assert book.tasks[1].terminal is event
    assert book.tasks[1] == ended
    # A line whose snapshot has not ended (another task's, or a progress) keeps its own.
    progress = ProgressEvent(
        task_id=2, bytes_written=10, total_bytes_written=310, total_bytes_expected=1000
    )
    book.apply({"event": encode_event(progress), "task": encode_snapshot(snapshot(2, 310))})
    assert book.tasks[2].terminal is None
    assert book.tasks[2].bytes_received == 310
