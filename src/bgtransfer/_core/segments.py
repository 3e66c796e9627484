"""Segmented downloads: one file fetched as several byte ranges at once. Pure.

A task asking for ``segments=N`` starts with an ordinary GET. If the answer
allows it (a known length of at least two minimum segments, a strong validator,
``Accept-Ranges: bytes``, no content coding), :func:`plan_segments` splits the
file into at most N contiguous ranges: the first is served by the response
already arriving, the others by ``Range: bytes=a-b`` requests with ``If-Range``,
each written in place into one partial file (no merge step). Each segment's
progress is journaled, so a restart resumes every segment where it stopped.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Final

import attrs

__all__ = [
    "MAX_SEGMENTS",
    "MIN_SEGMENT_SIZE",
    "Segment",
    "contiguous_prefix",
    "plan_segments",
    "segments_from_json",
    "segments_to_json",
    "splittable",
]

MIN_SEGMENT_SIZE: Final = 1024 * 1024
"""No segment is planned smaller than this: below it a second connection costs
more than it brings."""

MAX_SEGMENTS: Final = 16


@attrs.define(kw_only=True)
class Segment:
    """Bytes ``[start, end)`` of the file; the first ``done`` of them are on disk."""

    start: int
    end: int
    done: int = 0

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def complete(self) -> bool:
        return self.done >= self.length

    @property
    def next_offset(self) -> int:
        return self.start + self.done


def splittable(
    *, wanted: int, total: int | None, validator: str | None, headers: Mapping[str, str]
) -> bool:
    """Whether a fresh 200 answer (lower-cased ``headers``) may be fetched in segments."""
    coding = headers.get("content-encoding", "identity").strip().lower() or "identity"
    return (
        wanted > 1
        and total is not None
        and total >= 2 * MIN_SEGMENT_SIZE
        and validator is not None
        and headers.get("accept-ranges", "").strip().lower() == "bytes"
        and coding == "identity"
    )


def plan_segments(total: int, wanted: int) -> list[Segment]:
    """Split ``[0, total)`` into at most ``wanted`` nearly equal contiguous segments,
    none smaller than :data:`MIN_SEGMENT_SIZE` (so possibly just one)."""
    if total < 0 or wanted < 1:
        raise ValueError(f"cannot split {total} bytes into {wanted} segments")
    count = max(1, min(wanted, MAX_SEGMENTS, total // MIN_SEGMENT_SIZE))
    bounds = [total * i // count for i in range(count + 1)]
    return [Segment(start=a, end=b) for a, b in itertools.pairwise(bounds)]


def contiguous_prefix(segments: Sequence[Segment]) -> int:
    """Bytes on disk from offset 0 without a gap (what plain resume data can use)."""
    prefix = 0
    for segment in segments:
        if segment.start != prefix:
            break
        prefix += segment.done
        if not segment.complete:
            break
    return prefix


def segments_to_json(segments: Sequence[Segment]) -> list[list[int]]:
    return [[s.start, s.end, s.done] for s in segments]


def segments_from_json(value: object, total: int | None) -> list[Segment]:
    """Segments as :func:`segments_to_json` wrote them; :class:`ValueError` says what
    is wrong (they must tile ``[0, total)`` in order, with ``0 <= done <= length``)."""
    if total is None:
        raise ValueError("segments without a known total")
    if not isinstance(value, list) or not value:
        raise ValueError("segments must be a non-empty list")
    segments: list[Segment] = []
    expected_start = 0
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)
        ):
            raise ValueError(f"segment {item!r} is not [start, end, done]")
        start, end, done = item
        if start != expected_start or end <= start or not 0 <= done <= end - start:
            raise ValueError(f"segment {item!r} does not follow on from {expected_start}")
        segments.append(Segment(start=start, end=end, done=done))
        expected_start = end
    if expected_start != total:
        raise ValueError(f"segments cover {expected_start} bytes of {total}")
    return segments
