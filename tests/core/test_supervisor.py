"""The supervisor: per-origin and total limits, creation order, holds, statistics."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from bgtransfer._core.supervisor import (
    DESCRIPTORS_PER_SLOT,
    RESERVED_DESCRIPTORS,
    Supervisor,
    SupervisorStatistics,
    slots_for_descriptors,
)

A, B, C = "a", "b", "c"


def _sup(per_host: int = 2, total: int = 10) -> Supervisor:
    return Supervisor(per_host_limit=per_host, total_limit=total)


# -- construction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("per_host", "total"), [(0, 1), (1, 0), (-1, 5), (5, -1), (0, 0)])
def test_limits_must_be_positive(per_host: int, total: int) -> None:
    with pytest.raises(ValueError, match="limits must be at least 1"):
        Supervisor(per_host_limit=per_host, total_limit=total)


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        Supervisor(1, 1)  # type: ignore[misc]


def test_empty_statistics() -> None:
    assert _sup().statistics() == SupervisorStatistics(
        active=0, queued=0, active_by_origin={}, queued_by_origin={}, total_limit=10
    )
    assert _sup().next_hold_expiry() is None


# -- limits ---------------------------------------------------------------------------------------


def test_first_task_starts_immediately() -> None:
    sup = _sup()
    assert sup.enqueue(1, A) == [1]
    assert sup.is_active(1)
    assert not sup.is_queued(1)


def test_per_origin_limit() -> None:
    sup = _sup(per_host=2)
    assert sup.enqueue(1, A) == [1]
    assert sup.enqueue(2, A) == [2]
    assert sup.enqueue(3, A) == []
    assert sup.enqueue(4, A) == []
    assert sup.is_queued(3)
    assert sup.is_queued(4)
    assert sup.statistics() == SupervisorStatistics(
        active=2, queued=2, active_by_origin={A: 2}, queued_by_origin={A: 2}, total_limit=10
    )


def test_total_limit() -> None:
    sup = _sup(per_host=5, total=3)
    assert sup.enqueue(1, A) == [1]
    assert sup.enqueue(2, B) == [2]
    assert sup.enqueue(3, C) == [3]
    assert sup.enqueue(4, A) == []
    assert sup.enqueue(5, B) == []
    stats = sup.statistics()
    assert stats.active == 3
    assert stats.queued == 2


def test_full_origin_does_not_block_other_origins() -> None:
    sup = _sup(per_host=1, total=10)
    assert sup.enqueue(1, A) == [1]
    assert sup.enqueue(2, A) == []
    assert sup.enqueue(3, A) == []
    assert sup.enqueue(4, B) == [4]  # later id, other origin: starts although 2 and 3 wait
    assert sup.enqueue(5, C) == [5]
    assert sup.enqueue(6, B) == []


def test_release_starts_next_of_same_origin_in_order() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    sup.enqueue(2, A)
    sup.enqueue(3, A)
    assert sup.release(1) == [2]
    assert not sup.is_active(1)
    assert sup.release(2) == [3]
    assert sup.release(3) == []
    assert sup.statistics().active == 0


def test_fifo_across_origins_when_total_is_the_limit() -> None:
    sup = _sup(per_host=5, total=1)
    assert sup.enqueue(1, A) == [1]
    for task_id, origin in [(2, C), (3, B), (4, A), (5, C)]:
        assert sup.enqueue(task_id, origin) == []
    assert sup.release(1) == [2]
    assert sup.release(2) == [3]
    assert sup.release(3) == [4]
    assert sup.release(4) == [5]
    assert sup.release(5) == []


def test_enqueue_out_of_order_ids_starts_lowest_first() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(10, A)
    sup.enqueue(30, A)
    sup.enqueue(20, A)
    assert sup.release(10) == [20]
    assert sup.release(20) == [30]


def test_release_skips_full_origin_for_later_task_of_free_origin() -> None:
    sup = _sup(per_host=1, total=2)
    sup.enqueue(1, A)
    sup.enqueue(2, B)
    sup.enqueue(3, A)  # waits: A full, total full
    sup.enqueue(4, B)  # waits
    sup.enqueue(5, C)  # waits: total full
    # B's slot frees: 3 is older but A is still full; 4 (B) is older than 5 (C).
    assert sup.release(2) == [4]
    assert sup.release(4) == [5]
    assert sup.release(1) == [3]


def test_release_of_several_slots_returns_increasing_ids() -> None:
    sup = _sup(per_host=1, total=10)
    sup.enqueue(1, A)
    sup.hold(B, 100.0)
    sup.hold(C, 100.0)
    sup.enqueue(2, C)
    sup.enqueue(3, B)
    sup.enqueue(4, C)
    assert sup.poll(100.0) == [2, 3]


@pytest.mark.parametrize("task_id", [1, 2])
def test_enqueue_twice_rejected(task_id: int) -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    sup.enqueue(2, A)  # queued
    with pytest.raises(ValueError, match=f"task {task_id} is already scheduled"):
        sup.enqueue(task_id, B)
    assert sup.statistics().active == 1
    assert sup.statistics().queued == 1


def test_release_of_unknown_or_queued_task_is_key_error() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    sup.enqueue(2, A)
    with pytest.raises(KeyError):
        sup.release(99)
    with pytest.raises(KeyError):
        sup.release(2)
    assert sup.is_queued(2)


# -- remove ---------------------------------------------------------------------------------------


def test_remove_queued_task() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    sup.enqueue(2, A)
    sup.enqueue(3, A)
    assert sup.remove(2) == []
    assert not sup.is_queued(2)
    assert not sup.is_active(2)
    assert sup.statistics().queued_by_origin == {A: 1}
    assert sup.release(1) == [3]  # the removed one never starts


def test_remove_active_task_starts_next() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    sup.enqueue(2, A)
    assert sup.remove(1) == [2]
    assert not sup.is_active(1)
    assert sup.is_active(2)


def test_remove_unknown_task_is_ignored() -> None:
    sup = _sup()
    sup.enqueue(1, A)
    assert sup.remove(42) == []
    assert sup.is_active(1)


def test_remove_all_queued_then_release() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    for task_id in range(2, 10):
        sup.enqueue(task_id, A)
    for task_id in range(2, 10):
        sup.remove(task_id)
    assert sup.release(1) == []
    assert sup.statistics() == SupervisorStatistics(
        active=0, queued=0, active_by_origin={}, queued_by_origin={}, total_limit=10
    )


def test_reenqueue_after_remove_keeps_id_order() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    sup.enqueue(2, A)
    sup.enqueue(3, A)
    sup.enqueue(4, A)
    sup.remove(2)  # e.g. suspended while queued
    sup.enqueue(2, A)  # resumed: goes back to its place, not to the end
    assert sup.release(1) == [2]
    assert sup.release(2) == [3]
    assert sup.release(3) == [4]
    assert sup.release(4) == []


def test_reenqueue_of_active_task_after_suspend_keeps_id_order() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    sup.enqueue(2, A)
    sup.enqueue(3, A)
    assert sup.release(1) == [2]  # 1 suspended
    assert sup.enqueue(1, A) == []  # 1 resumed: queued ahead of 3
    assert sup.release(2) == [1]
    assert sup.release(1) == [3]


def test_reenqueue_under_another_origin() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    sup.enqueue(2, A)
    sup.remove(2)
    assert sup.enqueue(2, B) == [2]  # the stale entry in A's queue is ignored
    assert sup.release(1) == []
    assert sup.statistics().active_by_origin == {B: 1}


def test_repeated_remove_and_reenqueue_starts_task_once() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    for _ in range(5):
        sup.enqueue(2, A)
        sup.remove(2)
    sup.enqueue(2, A)
    sup.enqueue(3, A)
    assert sup.release(1) == [2]
    assert sup.release(2) == [3]
    assert sup.release(3) == []


# -- hold / poll ----------------------------------------------------------------------------------


def test_hold_keeps_tasks_queued_until_time() -> None:
    sup = _sup(per_host=2)
    sup.hold(A, 10.0)
    assert sup.enqueue(1, A, now=5.0) == []
    assert sup.enqueue(2, B, now=5.0) == [2]  # other origins unaffected
    assert sup.next_hold_expiry() == 10.0
    assert sup.poll(9.999) == []
    assert sup.is_queued(1)
    assert sup.poll(10.0) == [1]
    assert sup.next_hold_expiry() is None


def test_hold_expires_on_any_command_with_late_now() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, B)
    sup.hold(A, 10.0)
    sup.enqueue(2, A, now=1.0)
    assert sup.release(1, now=11.0) == [2]


def test_hold_is_extended_never_shortened() -> None:
    sup = _sup()
    sup.hold(A, 20.0)
    sup.hold(A, 10.0)  # an earlier Retry-After does not shorten the hold
    sup.enqueue(1, A, now=0.0)
    assert sup.next_hold_expiry() == 20.0
    assert sup.poll(15.0) == []
    sup.hold(A, 30.0)
    assert sup.next_hold_expiry() == 30.0
    assert sup.poll(25.0) == []
    assert sup.poll(30.0) == [1]


def test_hold_of_active_origin_does_not_stop_running_tasks_but_blocks_new() -> None:
    sup = _sup(per_host=2)
    assert sup.enqueue(1, A) == [1]
    sup.hold(A, 5.0)
    assert sup.is_active(1)
    assert sup.enqueue(2, A, now=1.0) == []
    assert sup.release(1, now=2.0) == []  # free slot, but held
    assert sup.poll(5.0) == [2]


def test_held_origin_does_not_block_total_for_others() -> None:
    sup = _sup(per_host=1, total=1)
    sup.hold(A, 5.0)
    sup.enqueue(1, A, now=0.0)
    assert sup.enqueue(2, B, now=0.0) == [2]
    assert sup.release(2, now=6.0) == [1]


def test_next_hold_expiry_ignores_origins_without_queued_tasks() -> None:
    sup = _sup()
    sup.hold(A, 5.0)
    sup.hold(B, 7.0)
    assert sup.next_hold_expiry() is None
    sup.enqueue(1, B, now=0.0)
    assert sup.next_hold_expiry() == 7.0
    sup.enqueue(2, A, now=0.0)
    assert sup.next_hold_expiry() == 5.0
    sup.remove(2, now=0.0)
    assert sup.next_hold_expiry() == 7.0
    sup.remove(1, now=0.0)
    assert sup.next_hold_expiry() is None


def test_poll_without_holds_starts_nothing_new() -> None:
    sup = _sup(per_host=1)
    sup.enqueue(1, A)
    sup.enqueue(2, A)
    assert sup.poll(1000.0) == []


def test_held_tasks_start_in_id_order_across_origins() -> None:
    sup = _sup(per_host=1, total=2)
    sup.hold(A, 5.0)
    sup.hold(B, 5.0)
    sup.enqueue(3, B, now=0.0)
    sup.enqueue(1, A, now=0.0)
    sup.enqueue(2, A, now=0.0)
    sup.enqueue(4, B, now=0.0)
    assert sup.poll(5.0) == [1, 3]
    assert sup.release(1, now=5.0) == [2]


# -- statistics -----------------------------------------------------------------------------------


def test_statistics_by_origin() -> None:
    sup = _sup(per_host=1, total=10)
    sup.enqueue(1, A)
    sup.enqueue(2, A)
    sup.enqueue(3, B)
    sup.enqueue(4, A)
    assert sup.statistics() == SupervisorStatistics(
        active=2, queued=2, active_by_origin={A: 1, B: 1}, queued_by_origin={A: 2}, total_limit=10
    )
    sup.release(3)
    stats = sup.statistics()
    assert stats.active_by_origin == {A: 1}  # origins with no active task are left out
    assert stats.active == 1


def test_statistics_is_a_snapshot() -> None:
    sup = _sup()
    sup.enqueue(1, A)
    snapshot = sup.statistics()
    sup.enqueue(2, B)
    assert snapshot.active == 1
    assert snapshot.active_by_origin == {A: 1}


def test_many_queued_tasks() -> None:
    sup = _sup(per_host=6, total=32)
    started = []
    for task_id in range(1, 10_001):
        started += sup.enqueue(task_id, A if task_id % 2 else B)
    assert started == list(range(1, 13))
    for task_id in range(13, 10_001, 3):
        sup.remove(task_id)
    assert sup.statistics().queued == 10_000 - 12 - len(range(13, 10_001, 3))
    assert sup.release(1) == [15]  # 13 (odd, A) removed; 15 next for A


# -- stateful: random enqueue / release / remove / hold / time ------------------------------------

ORIGINS = (A, B, C)


def test_borrow_lends_free_slots_of_the_origin_within_both_limits() -> None:
    sup = Supervisor(per_host_limit=4, total_limit=6)
    assert sup.enqueue(1, "a") == [1]
    assert sup.borrow(1, 5) == 3  # the origin has 3 more slots
    assert sup.borrow(1, 1) == 0
    stats = sup.statistics()
    assert (stats.active, stats.borrowed, stats.active_by_origin) == (1, 3, {"a": 4})
    assert sup.enqueue(2, "b") == [2]
    assert sup.borrow(2, 4) == 1  # the session has 1 more slot
    assert sup.enqueue(3, "c") == []  # all 6 slots in use
    assert sup.give_back(1, 2) == [3]  # a returned slot goes to the queued task
    assert sup.statistics().borrowed == 2


def test_borrow_nothing_while_held_and_release_returns_borrowed_slots() -> None:
    sup = Supervisor(per_host_limit=3, total_limit=3)
    assert sup.enqueue(1, "a") == [1]
    sup.hold("a", until=10)
    assert sup.borrow(1, 2) == 0
    assert sup.poll(10) == []
    assert sup.borrow(1, 2) == 2
    assert sup.enqueue(2, "a") == []
    assert sup.release(1) == [2]  # its own slot and both borrowed ones come back
    assert sup.borrow(2, 3) == 2
    with pytest.raises(ValueError, match="holds 2 borrowed slots, cannot return 3"):
        sup.give_back(2, 3)
    with pytest.raises(ValueError, match="cannot return 0"):
        sup.give_back(2, 0)


class SupervisorMachine(RuleBasedStateMachine):
    """Drives a Supervisor and a straightforward reference model side by side."""

    created = Bundle("created")

    def __init__(self) -> None:
        super().__init__()
        self.sup = Supervisor(per_host_limit=1, total_limit=1)
        self.per_host = 1
        self.total = 1
        self.next_id = 1
        self.now = 0.0
        self.queued: dict[int, str] = {}
        self.active: dict[int, str] = {}
        self.idle: dict[int, str] = {}  # created, then released or removed
        self.holds: dict[str, float] = {}
        self.borrowed: dict[int, int] = {}  # active task -> extra slots it holds

    @initialize(per_host=st.integers(1, 3), total=st.integers(1, 4))
    def setup(self, per_host: int, total: int) -> None:
        self.sup = Supervisor(per_host_limit=per_host, total_limit=total)
        self.per_host = per_host
        self.total = total

    # the reference model --------------------------------------------------------------

    def _active_in(self, origin: str) -> int:
        """Slots in use for ``origin``: its active tasks and what they borrowed."""
        return sum(1 + self.borrowed.get(t, 0) for t, o in self.active.items() if o == origin)

    def _in_use(self) -> int:
        return len(self.active) + sum(self.borrowed.values())

    def _expected_starts(self, now: float) -> list[int]:
        for origin, until in list(self.holds.items()):
            if until <= now:
                del self.holds[origin]
        started: list[int] = []
        while self._in_use() < self.total:
            eligible = [
                task_id
                for task_id, origin in self.queued.items()
                if origin not in self.holds and self._active_in(origin) < self.per_host
            ]
            if not eligible:
                break
            task_id = min(eligible)
            self.active[task_id] = self.queued.pop(task_id)
            started.append(task_id)
        return started

    # rules ----------------------------------------------------------------------------

    @rule(target=created, origin=st.sampled_from(ORIGINS))
    def enqueue_new(self, origin: str) -> int:
        task_id = self.next_id
        self.next_id += 1
        started = self.sup.enqueue(task_id, origin, now=self.now)
        self.queued[task_id] = origin
        assert started == self._expected_starts(self.now)
        return task_id

    @rule(task_id=created, origin=st.sampled_from(ORIGINS))
    def reenqueue(self, task_id: int, origin: str) -> None:
        if task_id in self.queued or task_id in self.active:
            with pytest.raises(ValueError, match="already scheduled"):
                self.sup.enqueue(task_id, origin, now=self.now)
            return
        self.idle.pop(task_id, None)
        started = self.sup.enqueue(task_id, origin, now=self.now)
        self.queued[task_id] = origin
        assert started == self._expected_starts(self.now)

    @precondition(lambda self: bool(self.active))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.active)))
        started = self.sup.release(task_id, now=self.now)
        self.idle[task_id] = self.active.pop(task_id)
        self.borrowed.pop(task_id, None)
        assert started == self._expected_starts(self.now)

    @precondition(lambda self: bool(self.active))
    @rule(data=st.data(), want=st.integers(0, 4))
    def borrow(self, data: st.DataObject, want: int) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.active)))
        origin = self.active[task_id]
        held = origin in self.holds and self.holds[origin] > self.now
        expected = 0
        if want >= 1 and not held:
            free = min(self.per_host - self._active_in(origin), self.total - self._in_use())
            expected = max(0, min(want, free))
        assert self.sup.borrow(task_id, want) == expected
        if expected:
            self.borrowed[task_id] = self.borrowed.get(task_id, 0) + expected

    @precondition(lambda self: bool(self.borrowed))
    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.borrowed)))
        count = data.draw(st.integers(1, self.borrowed[task_id]))
        with pytest.raises(ValueError, match="cannot return"):
            self.sup.give_back(task_id, self.borrowed[task_id] + 1, now=self.now)
        started = self.sup.give_back(task_id, count, now=self.now)
        self.borrowed[task_id] -= count
        if not self.borrowed[task_id]:
            del self.borrowed[task_id]
        assert started == self._expected_starts(self.now)

    @rule(task_id=created)
    def remove(self, task_id: int) -> None:
        started = self.sup.remove(task_id, now=self.now)
        for where in (self.queued, self.active):
            if task_id in where:
                self.idle[task_id] = where.pop(task_id)
        self.borrowed.pop(task_id, None)
        assert started == self._expected_starts(self.now)

    @rule(task_id=consumes(created))
    def forget(self, task_id: int) -> None:
        # a task that ends for good: removed wherever it is and never used again
        started = self.sup.remove(task_id, now=self.now)
        self.queued.pop(task_id, None)
        self.active.pop(task_id, None)
        self.idle.pop(task_id, None)
        self.borrowed.pop(task_id, None)
        assert started == self._expected_starts(self.now)

    @rule(origin=st.sampled_from(ORIGINS), delay=st.integers(1, 5))
    def hold(self, origin: str, delay: int) -> None:
        until = self.now + delay
        self.sup.hold(origin, until)
        self.holds[origin] = max(until, self.holds.get(origin, until))

    @rule(step=st.integers(0, 4))
    def advance_time(self, step: int) -> None:
        self.now += step
        started = self.sup.poll(self.now)
        assert started == self._expected_starts(self.now)

    # invariants -----------------------------------------------------------------------

    @invariant()
    def limits_respected(self) -> None:
        stats = self.sup.statistics()
        assert stats.active + stats.borrowed <= self.total
        assert all(n <= self.per_host for n in stats.active_by_origin.values())

    @invariant()
    def matches_model(self) -> None:
        stats = self.sup.statistics()
        assert stats.active == len(self.active)
        assert stats.borrowed == sum(self.borrowed.values())
        assert stats.queued == len(self.queued)
        model_active = {o: self._active_in(o) for o in ORIGINS if self._active_in(o)}
        model_queued: dict[str, int] = {}
        for origin in self.queued.values():
            model_queued[origin] = model_queued.get(origin, 0) + 1
        assert stats.active_by_origin == model_active
        assert stats.queued_by_origin == model_queued
        for task_id in range(1, self.next_id):
            assert self.sup.is_active(task_id) == (task_id in self.active)
            assert self.sup.is_queued(task_id) == (task_id in self.queued)

    @invariant()
    def never_both_queued_and_active(self) -> None:
        for task_id in range(1, self.next_id):
            assert not (self.sup.is_active(task_id) and self.sup.is_queued(task_id))

    @invariant()
    def holds_are_in_the_future(self) -> None:
        assert all(until > self.now for until in self.holds.values())

    @invariant()
    def work_conserving(self) -> None:
        stats = self.sup.statistics()
        if stats.active + stats.borrowed >= self.total:
            return
        for origin, waiting in stats.queued_by_origin.items():
            held = origin in self.holds and self.holds[origin] > self.now
            free = stats.active_by_origin.get(origin, 0) < self.per_host
            assert not (waiting and free and not held), (
                f"origin {origin} has {waiting} queued, a free slot and no hold, "
                "but nothing was started"
            )

    @invariant()
    def next_hold_expiry_matches(self) -> None:
        waiting = set(self.queued.values())
        times = [until for origin, until in self.holds.items() if origin in waiting]
        assert self.sup.next_hold_expiry() == (min(times) if times else None)


SupervisorMachine.TestCase.settings = settings(
    max_examples=75, stateful_step_count=25, deadline=None
)
test_supervisor_state_machine = SupervisorMachine.TestCase


# -- the descriptor budget (issue 18, item 7) ------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "soft", "slots"),
    [
        (32, None, 32),  # no limit
        (32, -1, 32),  # RLIM_INFINITY
        (32, 1024, 32),  # plenty
        (300, 256, (256 - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_SLOT),
        (300, RESERVED_DESCRIPTORS + 3 * DESCRIPTORS_PER_SLOT, 3),
        (300, RESERVED_DESCRIPTORS + 3 * DESCRIPTORS_PER_SLOT + DESCRIPTORS_PER_SLOT - 1, 3),
        (300, 16, 1),  # never fewer than one
        (1, 8, 1),
    ],
)
def test_slots_for_descriptors(wanted: int, soft: int | None, slots: int) -> None:
    assert slots_for_descriptors(wanted, soft) == slots


def test_statistics_say_the_total_limit() -> None:
    assert _sup(total=7).statistics().total_limit == 7
