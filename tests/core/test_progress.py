"""Progress throttling and per-subscriber event buffers (time is passed in)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bgtransfer
from bgtransfer._core.events import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    ProgressEvent,
    TaskEvent,
    is_terminal,
)
from bgtransfer._core.progress import BufferStatistics, EventBuffer, ProgressThrottle


def _p(task_id: int, written: int, total: int, expected: int | None = None) -> ProgressEvent:
    return ProgressEvent(
        task_id=task_id,
        bytes_written=written,
        total_bytes_written=total,
        total_bytes_expected=expected,
    )


def _finished(task_id: int, total: int = 0) -> FinishedEvent:
    return FinishedEvent(task_id=task_id, location=Path(f"/tmp/{task_id}"), total_bytes=total)


def _error(task_id: int) -> ErrorEvent:
    return ErrorEvent(task_id=task_id, error=bgtransfer.NetworkError("reset", url="http://h/x"))


# -- ProgressThrottle -----------------------------------------------------------------------------


def test_first_feed_emits() -> None:
    throttle = ProgressThrottle(7, interval=1.0)
    assert throttle.feed(10, now=100.0) == _p(7, 10, 10)
    assert throttle.total == 10


def test_feeds_within_interval_are_held_back() -> None:
    throttle = ProgressThrottle(1, interval=1.0)
    assert throttle.feed(10, now=0.0) is not None
    assert throttle.feed(5, now=0.25) is None
    assert throttle.feed(5, now=0.5) is None
    assert throttle.feed(5, now=0.75) is None
    assert throttle.total == 25
    assert throttle.feed(1, now=1.0) == _p(1, 16, 26)  # the interval has passed: all pending


def test_interval_is_measured_from_the_last_emission() -> None:
    throttle = ProgressThrottle(1, interval=1.0)
    emitted = [throttle.feed(1, now=t) is not None for t in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.5)]
    assert emitted == [True, False, True, False, True, False, True]


def test_flush_emits_remainder_exactly_once() -> None:
    throttle = ProgressThrottle(3, interval=10.0, expected=30)
    assert throttle.feed(10, now=0.0) == _p(3, 10, 10, 30)
    assert throttle.feed(20, now=1.0) is None
    assert throttle.flush() == _p(3, 20, 30, 30)
    assert throttle.flush() is None
    assert throttle.flush() is None


def test_flush_without_pending_bytes_is_none() -> None:
    throttle = ProgressThrottle(1, interval=1.0)
    assert throttle.flush() is None
    throttle.feed(5, now=0.0)
    assert throttle.flush() is None


def test_flush_then_feed_continues_counting() -> None:
    throttle = ProgressThrottle(1, interval=1.0)
    throttle.feed(1, now=0.0)
    throttle.feed(2, now=0.1)
    assert throttle.flush() == _p(1, 2, 3)
    assert throttle.feed(4, now=0.2) is None  # still within the interval of the last emit
    assert throttle.flush() == _p(1, 4, 7)


def test_interval_zero_emits_every_feed() -> None:
    throttle = ProgressThrottle(2, interval=0)
    events = [throttle.feed(n, now=0.0) for n in (1, 2, 3)]
    assert events == [_p(2, 1, 1), _p(2, 2, 3), _p(2, 3, 6)]
    assert throttle.flush() is None


def test_expected_length_is_carried_and_can_change() -> None:
    throttle = ProgressThrottle(1, interval=0, expected=100)
    first = throttle.feed(10, now=0.0)
    assert first is not None
    assert first.total_bytes_expected == 100
    throttle.set_expected(None)
    second = throttle.feed(10, now=0.0)
    assert second is not None
    assert second.total_bytes_expected is None
    throttle.set_expected(500)
    third = throttle.feed(10, now=0.0)
    assert third is not None
    assert third.total_bytes_expected == 500


def test_initial_total_counts_in_totals_not_in_deltas() -> None:
    throttle = ProgressThrottle(1, interval=0, total=1000)
    assert throttle.total == 1000
    assert throttle.feed(24, now=0.0) == _p(1, 24, 1024)


@settings(max_examples=100, deadline=None)
@given(
    interval=st.sampled_from([0, 0.5, 1.0, 3.0]),
    feeds=st.lists(
        st.tuples(st.integers(0, 1000), st.sampled_from([0, 0.25, 0.5, 1.0, 2.0])), max_size=40
    ),
)
def test_throttle_accounts_for_every_byte(interval: float, feeds: list[tuple[int, float]]) -> None:
    throttle = ProgressThrottle(5, interval=interval, expected=None)
    now = 0.0
    emitted: list[tuple[float, ProgressEvent]] = []
    for nbytes, step in feeds:
        now += step
        event = throttle.feed(nbytes, now=now)
        if event is not None:
            emitted.append((now, event))
    tail = throttle.flush()
    events = [e for _, e in emitted] + ([tail] if tail is not None else [])
    total = sum(n for n, _ in feeds)
    assert sum(e.bytes_written for e in events) == total
    assert throttle.total == total
    if feeds:
        assert emitted[0][0] == feeds[0][1]  # the first feed always emits
    totals = [e.total_bytes_written for e in events]
    assert totals == sorted(totals)
    if events:
        assert events[-1].total_bytes_written == total
    for (t0, _), (t1, _) in itertools.pairwise(emitted):
        assert t1 - t0 >= interval
    assert throttle.flush() is None


# -- ProgressThrottle: held-back bytes (wakeup, tick) ---------------------------------------------


def test_a_feed_reported_at_once_asks_for_no_wakeup() -> None:
    throttle = ProgressThrottle(1, interval=1.0)
    assert throttle.feed(10, now=0.0) is not None
    assert throttle.wakeup() is None  # nothing held back: no timer (a small file's case)


def test_held_back_bytes_ask_for_one_wakeup_at_their_due_time() -> None:
    throttle = ProgressThrottle(1, interval=1.0)
    throttle.feed(10, now=5.0)
    assert throttle.feed(20, now=5.25) is None
    assert throttle.wakeup() == 6.0  # the last event's time plus the interval
    assert throttle.feed(30, now=5.5) is None
    assert throttle.wakeup() is None  # one timer at a time
    assert throttle.tick(now=6.0) == _p(1, 50, 60)  # no more bytes came: reported anyway
    assert throttle.wakeup() is None
    assert throttle.flush() is None


def test_a_tick_before_the_due_time_asks_again() -> None:
    throttle = ProgressThrottle(1, interval=1.0)
    throttle.feed(1, now=0.0)
    throttle.feed(2, now=0.5)
    assert throttle.wakeup() == 1.0
    assert throttle.tick(now=0.75) is None  # a clock that ran early
    assert throttle.wakeup() == 1.0
    assert throttle.tick(now=1.0) == _p(1, 2, 3)


def test_a_tick_after_the_bytes_were_reported_is_nothing() -> None:
    throttle = ProgressThrottle(1, interval=1.0)
    throttle.feed(1, now=0.0)
    throttle.feed(2, now=0.5)
    assert throttle.wakeup() == 1.0
    assert throttle.feed(3, now=1.2) == _p(1, 5, 6)  # more bytes came first
    assert throttle.tick(now=1.2) is None
    assert throttle.feed(4, now=1.5) is None
    assert throttle.wakeup() == 2.2  # measured from the last event
    assert throttle.flush() == _p(1, 4, 10)  # the task ended: its tick will find nothing
    assert throttle.tick(now=2.2) is None
    assert throttle.wakeup() is None


def test_the_interval_restarts_at_a_ticked_event() -> None:
    throttle = ProgressThrottle(1, interval=1.0)
    throttle.feed(1, now=0.0)
    throttle.feed(1, now=0.1)
    throttle.wakeup()
    assert throttle.tick(now=1.5) == _p(1, 1, 2)
    assert throttle.feed(1, now=2.0) is None
    assert throttle.wakeup() == 2.5


def test_interval_zero_never_holds_back() -> None:
    throttle = ProgressThrottle(1, interval=0)
    for now in (0.0, 0.0, 0.0):
        assert throttle.feed(1, now=now) is not None
        assert throttle.wakeup() is None


@settings(max_examples=200, deadline=None)
@given(
    interval=st.sampled_from([0, 0.5, 1.0, 3.0]),
    feeds=st.lists(
        st.tuples(st.integers(1, 1000), st.sampled_from([0, 0.25, 0.5, 1.0, 2.0])), max_size=40
    ),
)
def test_with_its_timer_the_throttle_reports_every_byte_within_the_interval(
    interval: float, feeds: list[tuple[int, float]]
) -> None:
    """A driver like the loop's: feed, arm the one timer asked for, tick it when due.
    Every byte is reported without a flush, at most ``interval`` after it came, and
    events stay at least ``interval`` apart."""
    throttle = ProgressThrottle(5, interval=interval)
    timer: float | None = None
    emitted: list[tuple[float, ProgressEvent]] = []
    unreported: list[float] = []  # when each byte count not yet reported came

    def record(now: float, event: ProgressEvent | None) -> None:
        if event is not None:
            emitted.append((now, event))
            assert all(now - came <= interval for came in unreported)
            unreported.clear()

    def ask() -> None:
        nonlocal timer
        due = throttle.wakeup()
        if due is not None:
            assert timer is None  # at most one timer
            timer = due

    def run_timer_until(now: float) -> None:
        nonlocal timer
        while timer is not None and timer <= now:
            due, timer = timer, None
            record(due, throttle.tick(due))
            ask()

    now = 0.0
    for nbytes, step in feeds:
        run_timer_until(now + step)
        now += step
        unreported.append(now)
        record(now, throttle.feed(nbytes, now=now))
        ask()
    run_timer_until(float("inf"))
    assert throttle.flush() is None  # the timer reported everything
    assert timer is None
    assert sum(event.bytes_written for _, event in emitted) == sum(n for n, _ in feeds)
    for (t0, _), (t1, _) in itertools.pairwise(emitted):
        assert t1 - t0 >= interval


# -- EventBuffer ----------------------------------------------------------------------------------


def test_empty_buffer() -> None:
    buffer = EventBuffer()
    assert len(buffer) == 0
    with pytest.raises(IndexError):
        buffer.pop()
    assert buffer.statistics() == BufferStatistics(
        buffered=0, max_buffered=0, coalesced=0, delivered=0
    )


def test_fifo_order() -> None:
    buffer = EventBuffer()
    events: list[TaskEvent] = [_p(1, 1, 1), _p(2, 1, 1), _finished(3), CancelledEvent(task_id=4)]
    for event in events:
        buffer.push(event)
    assert len(buffer) == 4
    assert [buffer.pop() for _ in range(4)] == events
    assert len(buffer) == 0
    with pytest.raises(IndexError):
        buffer.pop()


def test_progress_of_one_task_coalesces() -> None:
    buffer = EventBuffer()
    buffer.push(_p(1, 10, 10, 100))
    buffer.push(_p(1, 5, 15, 100))
    buffer.push(_p(1, 7, 22, 200))
    assert len(buffer) == 1
    assert buffer.pop() == _p(1, 22, 22, 200)
    assert buffer.statistics() == BufferStatistics(
        buffered=0, max_buffered=1, coalesced=2, delivered=1
    )


def test_coalescing_skips_over_other_tasks_events() -> None:
    buffer = EventBuffer()
    buffer.push(_p(1, 1, 1))
    buffer.push(_p(2, 1, 1))
    buffer.push(_p(1, 2, 3))  # merges into task 1's slot, which stays first
    assert [buffer.pop() for _ in range(2)] == [_p(1, 3, 3), _p(2, 1, 1)]


def test_different_tasks_are_never_merged() -> None:
    buffer = EventBuffer()
    for task_id in (1, 2, 3):
        buffer.push(_p(task_id, task_id, task_id))
    assert len(buffer) == 3
    assert buffer.statistics().coalesced == 0
    assert [e.task_id for e in (buffer.pop(), buffer.pop(), buffer.pop())] == [1, 2, 3]


def test_progress_after_terminal_is_appended_not_merged() -> None:
    buffer = EventBuffer()
    buffer.push(_p(1, 1, 1))
    buffer.push(_finished(1, 1))
    buffer.push(_p(1, 1, 2))
    assert len(buffer) == 3
    assert buffer.statistics().coalesced == 0
    assert [buffer.pop() for _ in range(3)] == [_p(1, 1, 1), _finished(1, 1), _p(1, 1, 2)]


@pytest.mark.parametrize(
    "other", [_finished(1), _error(1), CancelledEvent(task_id=1)], ids=lambda e: type(e).__name__
)
def test_progress_after_any_non_progress_event_is_appended(other: TaskEvent) -> None:
    buffer = EventBuffer()
    buffer.push(other)
    buffer.push(_p(1, 4, 4))
    buffer.push(_p(1, 4, 8))  # merges with the progress after `other`, not across it
    assert [buffer.pop() for _ in range(2)] == [other, _p(1, 8, 8)]


def test_no_merge_into_an_already_popped_event() -> None:
    buffer = EventBuffer()
    buffer.push(_p(1, 5, 5))
    assert buffer.pop() == _p(1, 5, 5)
    buffer.push(_p(1, 3, 8))
    assert buffer.pop() == _p(1, 3, 8)  # delta since what the reader saw


def test_no_merge_into_popped_slot_when_older_events_remain() -> None:
    buffer = EventBuffer()
    buffer.push(_p(1, 1, 1))
    buffer.push(_p(2, 1, 1))
    buffer.push(_p(1, 1, 2))  # merged into the first slot
    assert buffer.pop() == _p(1, 2, 2)
    buffer.push(_p(1, 3, 5))  # task 1 has nothing buffered any more: new slot
    assert [buffer.pop() for _ in range(2)] == [_p(2, 1, 1), _p(1, 3, 5)]


@pytest.mark.parametrize(
    "terminal",
    [_finished(1, 10), _error(1), CancelledEvent(task_id=1)],
    ids=lambda e: type(e).__name__,
)
def test_terminal_events_are_never_dropped_or_merged(terminal: TaskEvent) -> None:
    buffer = EventBuffer()
    buffer.push(_p(1, 10, 10))
    buffer.push(terminal)
    buffer.push(terminal)
    assert [buffer.pop() for _ in range(3)] == [_p(1, 10, 10), terminal, terminal]


def test_statistics() -> None:
    buffer = EventBuffer()
    buffer.push(_p(1, 1, 1))
    buffer.push(_p(1, 1, 2))  # coalesced
    buffer.push(_p(2, 1, 1))
    buffer.push(_finished(1, 2))
    assert buffer.statistics() == BufferStatistics(
        buffered=3, max_buffered=3, coalesced=1, delivered=0
    )
    buffer.pop()
    buffer.pop()
    buffer.push(_p(3, 1, 1))
    assert buffer.statistics() == BufferStatistics(
        buffered=2, max_buffered=3, coalesced=1, delivered=2
    )
    buffer.pop()
    buffer.pop()
    with pytest.raises(IndexError):
        buffer.pop()
    assert buffer.statistics() == BufferStatistics(
        buffered=0, max_buffered=3, coalesced=1, delivered=4
    )


def test_statistics_is_public_name() -> None:
    assert bgtransfer.BufferStatistics is BufferStatistics


# -- the property: random interleavings with random pops ------------------------------------------

_TERMINALS = ("finished", "error", "cancelled")


def _terminal(kind: str, task_id: int, total: int) -> TaskEvent:
    if kind == "finished":
        return _finished(task_id, total)
    if kind == "error":
        return _error(task_id)
    return CancelledEvent(task_id=task_id)


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(st.lists(st.integers(0, 100), max_size=8), min_size=1, max_size=4),
    data=st.data(),
)
def test_buffer_property(chunks: list[list[int]], data: st.DataObject) -> None:
    n_tasks = len(chunks)
    # each task's stream: progress events with growing totals, then one terminal
    streams: dict[int, list[TaskEvent]] = {}
    for task_id, sizes in enumerate(chunks, start=1):
        total = 0
        stream: list[TaskEvent] = []
        for size in sizes:
            total += size
            stream.append(_p(task_id, size, total, expected=sum(sizes)))
        stream.append(_terminal(data.draw(st.sampled_from(_TERMINALS)), task_id, total))
        streams[task_id] = stream

    buffer = EventBuffer()
    popped: list[TaskEvent] = []
    cursors = dict.fromkeys(streams, 0)
    pushed = 0
    while any(cursors[t] < len(streams[t]) for t in streams):
        live = [t for t in streams if cursors[t] < len(streams[t])]
        task_id = data.draw(st.sampled_from(live))
        buffer.push(streams[task_id][cursors[task_id]])
        cursors[task_id] += 1
        pushed += 1
        assert len(buffer) <= n_tasks * 2
        for _ in range(data.draw(st.integers(0, 2))):
            if len(buffer):
                popped.append(buffer.pop())
    while len(buffer):
        popped.append(buffer.pop())

    stats = buffer.statistics()
    assert stats.buffered == 0
    assert stats.delivered == len(popped)
    assert stats.delivered + stats.coalesced == pushed
    assert stats.max_buffered <= n_tasks * 2

    for task_id, stream in streams.items():
        mine = [e for e in popped if e.task_id == task_id]
        assert mine
        assert is_terminal(mine[-1])
        assert mine[-1] == stream[-1]
        assert sum(1 for e in mine if is_terminal(e)) == 1
        progress = [e for e in mine if isinstance(e, ProgressEvent)]
        totals = [e.total_bytes_written for e in progress]
        assert totals == sorted(totals)
        expected_total = sum(chunks[task_id - 1])
        assert sum(e.bytes_written for e in progress) == expected_total
        if progress:
            assert progress[-1].total_bytes_written == expected_total
            # deltas are exactly the differences between successive totals
            previous = 0
            for event in progress:
                assert event.bytes_written == event.total_bytes_written - previous
                previous = event.total_bytes_written


def test_the_rate_is_measured_between_reports_and_drops_when_they_stop() -> None:
    throttle = ProgressThrottle(1, interval=0.5)
    assert throttle.rate(0.0) is None
    assert throttle.feed(1000, 0.0) is not None  # the first report: nothing to measure yet
    assert throttle.rate(0.1) is None
    assert throttle.feed(4000, 0.3) is None  # held back
    assert throttle.feed(1000, 1.0) is not None  # 5,000 bytes in 1 s
    assert throttle.rate(1.0) == 5000.0
    assert throttle.feed(3000, 2.0) is not None  # 3,000 in 1 s: smoothed
    assert throttle.rate(2.0) == 4000.0
    assert throttle.rate(2.0 + 2.0) == 4000.0
    assert throttle.rate(2.0 + 2.1) == 0.0  # nothing reported for over 2 s: stalled
    throttle.restart(0)
    assert throttle.rate(5.0) is None
