"""The sinks that judge one download attempt's response for its job.

:class:`AttemptSink` is the glue between one HTTP attempt and the sans-IO rules
(``check_response``, ``judge_resumed_response``, ``SpeedWatch``): it decides
where the body goes and keeps the task's counters and the download job's
facts (validator, coding, segments, announced length) honest.
:class:`SegmentSink` does the same for one segment's range request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .._core.digests import parse_digest_field
from .._core.events import ResumedEvent, TaskEvent
from .._core.ranges import Verdict, judge_resumed_response, strong_validator
from .._core.response import check_response
from .._core.retry import SpeedWatch
from .._core.segments import Segment, plan_segments, splittable
from .._core.states import MoveInput
from .._exceptions import IntegrityError, TransferTimeoutError
from .._io.digest import RunningDigest
from .._io.progress import count as count_progress
from .._io.transfer import BodyPlan

if TYPE_CHECKING:
    from .._core.config import Configuration
    from .download_job import DownloadJob

__all__ = ["AttemptSink", "RestartFromZero", "SegmentSink"]

logger = logging.getLogger("bgtransfer")


def _served_digests(job: DownloadJob, headers: Mapping[str, str], *, whole_response: bool) -> None:
    """Note the digests of the whole file a response states (RFC 9530): its
    ``Repr-Digest``, and for a 200 its ``Content-Digest`` (the body as stored:
    bodies are kept content-coded, never decoded). A 206's ``Content-Digest``
    covers its range only and is not used. A field that does not parse is
    ignored (logged at DEBUG), as RFC 8941 says of a malformed field."""
    names = ("repr-digest", "content-digest") if whole_response else ("repr-digest",)
    for name in names:
        value = headers.get(name)
        if value is None:
            continue
        digests = parse_digest_field(value)
        if digests is None:
            logger.debug("task %d: ignoring a malformed %s field", job.record.id, name)
            continue
        source = "Repr-Digest" if name == "repr-digest" else "Content-Digest"
        for algorithm, digest in digests.items():
            job.served_digests[algorithm] = (digest, source)


def _running_digest(job: DownloadJob, offset: int) -> RunningDigest | None:
    """What the body's writes hash as they land, when the task is to be checked:
    a new digest for a body from byte 0, the same one for a body that continues
    exactly where it stopped (in this process), else None (the file is then
    read again before the move)."""
    if offset == 0:
        algorithms = set(job.served_digests)
        if job.integrity is not None and job.integrity.checksum is not None:
            algorithms.add(job.integrity.checksum.algorithm)
        job.running = RunningDigest(algorithms)
    elif job.running is not None and (job.running.broken or job.running.offset != offset):
        job.running = None
    return job.running


def _check_announced_size(job: DownloadJob, total: int | None) -> None:
    """``expected_size=`` against the length the server announced: fails before the body."""
    integrity = job.integrity
    assert integrity is not None
    if integrity.expected_size is None or total is None:
        return
    if total != integrity.expected_size:
        raise IntegrityError(
            f"the server announced {total} bytes, expected_size is {integrity.expected_size}",
            url=job.record.url,
            algorithm="size",
            expected=str(integrity.expected_size),
            actual=str(total),
        )


class _SpeedCheck:
    """``Configuration.min_speed`` for one connection: raises when it trickles
    (and marks the job: such an attempt never renews the retry budget)."""

    def __init__(self, config: Configuration, clock: Callable[[], float], job: DownloadJob) -> None:
        self._clock = clock
        self._job = job
        self._limit = config.min_speed
        self._window = config.min_speed_window
        self._watch = (
            SpeedWatch(limit=config.min_speed, window=config.min_speed_window, start=clock())
            if config.min_speed is not None
            else None
        )

    def feed(self, nbytes: int) -> None:
        if self._watch is not None and self._watch.feed(nbytes, self._clock()):
            self._job.too_slow = True
            raise TransferTimeoutError(
                f"slower than {self._limit} bytes/s for {self._window} seconds (min_speed)",
                url=self._job.record.url,
            )

    def hold(self, seconds: float) -> None:
        if self._watch is not None:
            self._watch.hold(seconds)


def _count_written(
    job: DownloadJob,
    segment: Segment | None,
    nbytes: int,
    clock: Callable[[], float],
    publish: Callable[[TaskEvent], None],
) -> None:
    """Bytes reached the file: count them (and into their segment), maybe report."""
    if segment is not None:
        segment.done += nbytes
    record = job.record
    record.bytes_received += nbytes
    record.bytes_moved += nbytes  # (every attempt's: the metrics)
    count_progress(record.throttle, nbytes, clock, publish)  # publish sets last_progress


class RestartFromZero(Exception):
    """The answer to a range request cannot be used; fetch the whole file again.

    ``ranges_unsupported``: the server answered a segment's range with the whole,
    unchanged file; the task goes on over one connection.
    """

    def __init__(self, reason: str, *, ranges_unsupported: bool = False) -> None:
        super().__init__(reason)
        self.ranges_unsupported = ranges_unsupported


class AttemptSink:
    """Judges one attempt's response and counts its bytes into the task."""

    def __init__(
        self,
        job: DownloadJob,
        *,
        offset: int,
        ranged: bool,
        config: Configuration,
        clock: Callable[[], float],
        publish: Callable[[TaskEvent], None],
        before_write: Callable[[DownloadJob], Awaitable[None]],
        finish_into: Callable[[DownloadJob, int], Awaitable[Path | None]],
        on_split: Callable[[DownloadJob], Awaitable[None]] | None = None,
    ) -> None:
        self._job = job
        self._before_write = before_write
        self._finish_into = finish_into
        self._on_split = on_split
        self._segment: Segment | None = None  # the first segment, once split
        self._offset = offset
        self._ranged = ranged
        self._clock = clock
        self._publish = publish
        self._speed = _SpeedCheck(config, clock, job)
        self._framed = False  # a full body whose end its framing vouches for (chunked)
        self.status: int | None = None  # the response's, once judged (for the log)

    def judge(self, status: int, reason: str, headers: Mapping[str, str]) -> BodyPlan | None:
        self.status = status
        job = self._job
        record = job.record
        if self._ranged:
            assert job.validator is not None
            resumption = judge_resumed_response(
                url=record.url,
                offset=self._offset,
                validator=job.validator,
                total=record.bytes_expected,
                encoding=job.encoding,
                status=status,
                reason=reason,
                headers=headers,
            )
            if resumption.verdict is Verdict.COMPLETE:
                record.bytes_expected = self._offset  # confirmed: the length is vouched for
                job.announced = (job.validator, self._offset)
                return None
            if resumption.verdict is Verdict.RETRY_FROM_ZERO:
                raise RestartFromZero(resumption.reason)
            if resumption.verdict is Verdict.APPEND:
                if job.integrity is not None:
                    _check_announced_size(job, resumption.total)
                _served_digests(job, headers, whole_response=False)
                if resumption.total is not None:
                    job.announced = (job.validator, resumption.total)
                self._begin(self._offset, resumption.total)
                remaining = None if resumption.total is None else resumption.total - self._offset
                checked = job.integrity is not None or job.served_digests
                digest = _running_digest(job, self._offset) if checked else None
                return BodyPlan(self._offset, remaining, digest=digest)
            # Verdict.RESTART: a full 200 body; judged below like a fresh answer.
        info = check_response(record.url, status, reason, headers)
        if job.integrity is not None:
            _check_announced_size(job, info.expected_length)
        if job.served_digests:
            job.served_digests.clear()  # a whole new answer: what earlier ones said is moot
        _served_digests(job, headers, whole_response=True)
        job.validator = strong_validator(headers)
        if job.validator is not None and info.expected_length is not None:
            job.announced = (job.validator, info.expected_length)
        self._framed = info.expected_length is not None or (
            "chunked" in headers.get("transfer-encoding", "").lower()
        )
        job.encoding = info.content_encoding
        job.segments = None
        self._begin(0, info.expected_length)
        total = info.expected_length
        if (
            self._on_split is not None
            and total is not None
            and splittable(
                wanted=record.segments_wanted,
                total=total,
                validator=job.validator,
                headers=headers,
            )
        ):
            segments = plan_segments(total, record.segments_wanted)
            if len(segments) > 1:
                # This response serves the first segment; the others get their own.
                job.running = None  # (written in several places: read again at the end)
                job.segments = segments
                self._segment = segments[0]
                return BodyPlan(0, segments[0].length, truncate=False)
        if job.integrity is None and not job.served_digests:
            return BodyPlan(0, total)  # (nothing to check: nothing hashed)
        return BodyPlan(0, total, digest=_running_digest(job, 0))

    def _begin(self, offset: int, total: int | None) -> None:
        job = self._job
        record = job.record
        if offset == 0 and record.bytes_received > 0:
            job.restarted = True  # the bytes on disk are given up: not progress
        job.body_start = offset
        record.bytes_received = offset
        record.bytes_expected = total
        record.throttle.restart(offset)
        record.throttle.set_expected(total)
        if job.announce_resume:
            job.announce_resume = False
            self._publish(ResumedEvent(task_id=record.id, offset=offset, expected_total=total))

    @property
    def split(self) -> bool:
        """The answer was split into segments; this one served the first."""
        return self._segment is not None

    async def prepare(self, plan: BodyPlan) -> None:
        await self._before_write(self._job)
        if self._segment is not None:
            assert self._on_split is not None
            await self._on_split(self._job)  # preallocates, starts the other segments

    def chunk_received(self, nbytes: int) -> None:
        self._speed.feed(nbytes)

    def held(self, seconds: float) -> None:
        self._speed.hold(seconds)

    def bytes_written(self, nbytes: int) -> None:
        _count_written(self._job, self._segment, nbytes, self._clock, self._publish)

    async def finishing(self, size: int) -> Path | None:
        assert self._segment is None  # a split answer's plan does not truncate
        job = self._job
        record = job.record
        if record.bytes_expected is None:
            if not self._framed:
                # Ended by the connection closing: nothing says it is whole. The
                # file stays partial; the engine judges the end (judge_unframed_end).
                return None
            record.bytes_expected = size  # chunked framing's end vouches for it
        return await self._finish_into(job, size)

    def moved(self) -> None:
        self._job.move_on(MoveInput.PLACED)


class SegmentSink:
    """Judges the answer to one segment's range request and counts its bytes."""

    def __init__(
        self,
        job: DownloadJob,
        segment: Segment,
        *,
        config: Configuration,
        clock: Callable[[], float],
        publish: Callable[[TaskEvent], None],
    ) -> None:
        self._job = job
        self._segment = segment
        self._offset = segment.next_offset
        self._clock = clock
        self._publish = publish
        self._speed = _SpeedCheck(config, clock, job)
        self.status: int | None = None  # the response's, once judged (for the log)

    def judge(self, status: int, reason: str, headers: Mapping[str, str]) -> BodyPlan | None:
        self.status = status
        job, segment = self._job, self._segment
        record = job.record
        assert job.validator is not None
        resumption = judge_resumed_response(
            url=record.url,
            offset=self._offset,
            validator=job.validator,
            total=record.bytes_expected,
            encoding=job.encoding,
            status=status,
            reason=reason,
            headers=headers,
            end=segment.end,
        )
        if resumption.verdict is not Verdict.APPEND:
            # A 200 (the file changed, or ranges are ignored) or an unusable 206:
            # segments cannot go on; the whole task starts again from zero.
            ignored = status == 200 and strong_validator(headers) == job.validator
            raise RestartFromZero(
                f"segment at {self._offset}: {resumption.reason}", ranges_unsupported=ignored
            )
        return BodyPlan(self._offset, segment.end - self._offset, truncate=False)

    async def prepare(self, plan: BodyPlan) -> None:
        return None  # writes land above what the journal vouches for this segment

    def chunk_received(self, nbytes: int) -> None:
        self._speed.feed(nbytes)

    def held(self, seconds: float) -> None:
        self._speed.hold(seconds)

    def bytes_written(self, nbytes: int) -> None:
        _count_written(self._job, self._segment, nbytes, self._clock, self._publish)

    async def finishing(self, size: int) -> Path | None:
        raise AssertionError("a segment's plan does not truncate: never whole by itself")

    def moved(self) -> None:
        raise AssertionError("a segment is never moved by itself")
