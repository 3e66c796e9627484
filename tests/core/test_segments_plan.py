"""The pure rules of segmented downloads: when to split, how, and what to trust."""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgtransfer._core.journal import Phase, TaskEntry
from bgtransfer._core.reattach import Action, plan_reattach
from bgtransfer._core.segments import (
    MAX_SEGMENTS,
    MIN_SEGMENT_SIZE,
    Segment,
    contiguous_prefix,
    plan_segments,
    segments_from_json,
    segments_to_json,
    splittable,
)
from bgtransfer._core.states import TaskState

MiB = MIN_SEGMENT_SIZE
RANGED = {"accept-ranges": "bytes"}


@settings(derandomize=True, max_examples=200)
@given(total=st.integers(0, 64 * MiB), wanted=st.integers(1, 40))
def test_plan_tiles_the_file_with_at_most_the_wanted_segments(total: int, wanted: int) -> None:
    segments = plan_segments(total, wanted)
    assert segments[0].start == 0
    assert segments[-1].end == total
    assert all(a.end == b.start for a, b in itertools.pairwise(segments))
    assert 1 <= len(segments) <= min(wanted, MAX_SEGMENTS)
    if len(segments) > 1:
        assert min(s.length for s in segments) >= MIN_SEGMENT_SIZE
        assert max(s.length for s in segments) - min(s.length for s in segments) <= 1
    if total:
        assert segments_from_json(segments_to_json(segments), total) == segments


def test_plan_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="cannot split"):
        plan_segments(10, 0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, True),
        ({"wanted": 1}, False),
        ({"total": None}, False),
        ({"total": 2 * MiB - 1}, False),
        ({"validator": None}, False),
        ({"headers": {}}, False),
        ({"headers": {"accept-ranges": "none"}}, False),
        ({"headers": {**RANGED, "content-encoding": "gzip"}}, False),
        ({"headers": {"accept-ranges": " Bytes "}}, True),
    ],
)
def test_splittable_needs_length_validator_ranges_and_identity(
    kwargs: dict[str, object], expected: bool
) -> None:
    arguments: dict[str, object] = {
        "wanted": 4,
        "total": 2 * MiB,
        "validator": '"v"',
        "headers": RANGED,
        **kwargs,
    }
    assert splittable(**arguments) is expected  # type: ignore[arg-type]


def test_contiguous_prefix_stops_at_the_first_gap() -> None:
    segments = [Segment(start=0, end=10, done=10), Segment(start=10, end=20, done=4)]
    assert contiguous_prefix(segments) == 14
    segments[0].done = 9
    assert contiguous_prefix(segments) == 9
    assert contiguous_prefix([]) == 0


@pytest.mark.parametrize(
    ("value", "total", "problem"),
    [
        ([[0, 10, 0]], None, "without a known total"),
        ([], 10, "non-empty list"),
        ("[[0, 10, 0]]", 10, "non-empty list"),
        ([[0, 10]], 10, "not \\[start, end, done\\]"),
        ([[0, 10, True]], 10, "not \\[start, end, done\\]"),
        ([[1, 10, 0]], 10, "does not follow on from 0"),
        ([[0, 5, 0], [6, 10, 0]], 10, "does not follow on from 5"),
        ([[0, 10, 11]], 10, "does not follow on"),
        ([[0, 10, -1]], 10, "does not follow on"),
        ([[0, 5, 0]], 10, "cover 5 bytes of 10"),
    ],
)
def test_segments_from_json_rejects_what_does_not_tile(
    value: object, total: int | None, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        segments_from_json(value, total)


def _entry(phase: Phase, segments: tuple[tuple[int, int, int], ...]) -> TaskEntry:
    return TaskEntry(
        id=3,
        url="http://example.com/f.bin",
        destination="/tmp/f.bin",
        description=None,
        headers=(),
        phase=phase,
        offset=sum(d for _, _, d in segments),
        total=segments[-1][1],
        validator='"v"',
        segments=segments,
    )


SEGS = ((0, 100, 100), (100, 200, 30), (200, 300, 0))


@pytest.mark.parametrize("phase", [Phase.RUNNING, Phase.SUSPENDED])
def test_reattach_continues_every_segment_when_the_file_has_its_full_size(phase: Phase) -> None:
    plan = plan_reattach(
        _entry(phase, SEGS), partial="/p/3.part", partial_size=300, destination_exists=False
    )
    assert plan.action is Action.CONTINUE
    assert plan.segments == SEGS
    assert plan.offset == 130
    assert plan.state is (TaskState.SUSPENDED if phase is Phase.SUSPENDED else TaskState.RUNNING)


@pytest.mark.parametrize("size", [None, 0, 299, 301])
def test_reattach_starts_over_when_the_file_is_not_the_segments_file(size: int | None) -> None:
    plan = plan_reattach(
        _entry(Phase.RUNNING, SEGS),
        partial="/p/3.part",
        partial_size=size,
        destination_exists=False,
    )
    assert plan.action is Action.CONTINUE
    assert (plan.segments, plan.offset, plan.validator, plan.restarted) == (None, 0, None, True)


def test_cancel_with_resume_data_of_a_segmented_task_offers_its_contiguous_prefix() -> None:
    entry = attrs.evolve(_entry(Phase.CANCELING, SEGS), keep_partial=True)
    plan = plan_reattach(entry, partial="/p/3.part", partial_size=300, destination_exists=False)
    assert plan.action is Action.END
    assert plan.outcome is not None
    data = plan.outcome.resume_data  # type: ignore[union-attr]
    assert data is not None
    assert data.offset == 130
    assert plan.remove_partial is False
