"""A task's record, and the sink that judges one attempt's response for it.

The record is the engine's whole knowledge of a task: what was asked, where its
bytes are, what the server promised about them (validator, length, coding), and
its events. :class:`AttemptSink` is the glue between one HTTP attempt and the
sans-IO rules (``check_response``, ``judge_resumed_response``, ``SpeedWatch``):
it decides where the body goes and keeps the record's counters honest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .._core.events import ProgressEvent, ResumedEvent, TaskEvent, TerminalEvent
from .._core.journal import OneStepMove, Phase, TaskEntry, public_headers
from .._core.naming import Origin
from .._core.progress import ProgressThrottle
from .._core.ranges import Verdict, judge_resumed_response, strong_validator
from .._core.response import check_response
from .._core.resume_data import ResumeData
from .._core.retry import ResumeMark, SpeedWatch
from .._core.secrets import DEFAULT_SECRETS, SecretHeaders
from .._core.segments import Segment, contiguous_prefix, plan_segments, splittable
from .._core.states import TaskState
from .._exceptions import JournalWriteError, TransferTimeoutError
from .._io.progress import count as count_progress
from .._io.transfer import BodyPlan

if TYPE_CHECKING:
    from .._core.config import Configuration

__all__ = ["AttemptSink", "RestartFromZero", "SegmentSink", "TaskRecord"]

_PHASES = {
    TaskState.RUNNING: Phase.RUNNING,
    TaskState.SUSPENDED: Phase.SUSPENDED,
    TaskState.CANCELING: Phase.CANCELING,
    TaskState.COMPLETED: Phase.ENDED,
}


class TaskRecord:
    """Everything the engine knows about one task. Mutated only by the engine."""

    __slots__ = (
        "_done",
        "_ended",
        "_public_headers",
        "acked",
        "active_time",
        "announce_resume",
        "announced",
        "body_start",
        "bytes_expected",
        "bytes_received",
        "description",
        "destination",
        "destination_key",
        "encoding",
        "end_generation",
        "headers",
        "id",
        "journal_error",
        "journaled_offset",
        "last_end",
        "last_progress",
        "may_have_partial",
        "moved",
        "moving",
        "next_checkpoint",
        "one_step",
        "origin",
        "partial",
        "replayed",
        "request_headers",
        "requeue",
        "restarted",
        "resume_mark",
        "running",
        "scope",
        "secrets",
        "segments",
        "segments_wanted",
        "state",
        "successor",
        "takeover",
        "terminal",
        "throttle",
        "too_slow",
        "url",
        "validator",
        "want_resume_data",
    )

    def __init__(
        self,
        *,
        task_id: int,
        url: str,
        origin: Origin,
        destination: Path,
        partial: Path,
        description: str | None,
        headers: Mapping[str, str],
        request_headers: tuple[tuple[str, str], ...],
        progress_interval: float,
        offset: int = 0,
        validator: str | None = None,
        total: int | None = None,
        encoding: str = "identity",
        secrets: SecretHeaders = DEFAULT_SECRETS,
    ) -> None:
        self.id = task_id
        self.url = url
        self.origin = origin
        self.destination = destination
        self.destination_key = str(destination)  # the journal's text and the claims' key
        self.partial = partial
        self.description = description
        self.headers = headers  # what is sent: session defaults merged with the task's
        self.request_headers = request_headers  # the task's own, as given (journaled)
        self.secrets = secrets  # which headers are never stored or shown
        self._public_headers = public_headers(request_headers, secrets)  # (every entry has them)
        self.state = TaskState.RUNNING
        self.bytes_received = offset  # bytes in the partial file, all confirmed
        # The body's length once something vouched for it (Content-Length, a
        # Content-Range, chunked framing's end, a 416): a finished task whose
        # total is None has an unverified length (FinishedEvent.length_verified).
        self.bytes_expected = total
        self.validator = validator  # for If-Range; None: cannot resume safely
        # A complete length some response announced, with its validator: a
        # close-delimited body that disagrees with it was cut (judge_unframed_end).
        self.announced: tuple[str, int] | None = (
            None if validator is None or total is None else (validator, total)
        )
        self.last_end: tuple[str, int] | None = None  # the last close-delimited end
        self.body_start = offset  # where the current attempt's body began
        self.encoding = encoding
        self.announce_resume = offset > 0  # send ResumedEvent before the next body
        self.want_resume_data = False
        # What renews the retry budget (RetryPolicy): bytes past resume_mark, by an
        # attempt that did not start over (restarted) nor trickle (too_slow).
        self.resume_mark = ResumeMark(validator, offset)
        self.restarted = False
        self.too_slow = False
        self.active_time = 0.0  # seconds spent running, for resource_timeout
        self.running = False  # a runner coroutine exists for it
        self.successor: TaskRecord | None = None  # granted on release; its runner goes on with it
        self.requeue = False  # resumed while its runner was winding down
        self.moving = False  # the body is whole; the move into place is under way
        self.one_step: OneStepMove | None = None  # moving: the last write moves it
        self.moved = False  # the file is at its destination: the task has finished
        self.may_have_partial = offset > 0  # False: no partial file was ever made
        self.journaled_offset = 0  # the offset the journal's newest entry vouches for
        self.next_checkpoint = 0.0  # clock time after which progress is journaled again
        self.replayed = False  # ended before this process reattached
        self.segments_wanted = 1  # connections asked for (segments=N)
        self.segments: list[Segment] | None = None  # set once the file is split
        self.takeover: str | None = None  # resume data's partial, until taken over
        # The journal could not record the task: it ends with this error.
        self.journal_error: JournalWriteError | None = None
        self.acked = False  # a consumer has seen its terminal event
        self.last_progress: ProgressEvent | None = None
        self.terminal: TerminalEvent | None = None
        self.end_generation = 0  # the journal's generation once the terminal entry was put
        self._done: anyio.Event | None = None  # made when somebody waits (most never do)
        self._ended = False
        self.scope: anyio.CancelScope | None = None
        self.throttle = ProgressThrottle(
            task_id, interval=progress_interval, total=offset, expected=total
        )

    def resume_data(self) -> ResumeData | None:
        """What ``cancel_with_resume_data()`` hands out, or None if resuming is unsafe."""
        offset = self.bytes_received if self.segments is None else contiguous_prefix(self.segments)
        if self.validator is None or offset == 0:
            return None
        return ResumeData(
            url=self.url,
            partial=str(self.partial),
            offset=offset,
            validator=self.validator,
            total=self.bytes_expected,
            encoding=self.encoding,
            destination=self.destination_key,
            description=self.description,
            headers=public_headers(tuple(self.headers.items()), self.secrets),
        )

    @property
    def done(self) -> anyio.Event:
        """Set once the task has ended (or the session closed under it)."""
        if self._done is None:
            self._done = anyio.Event()
            if self._ended:
                self._done.set()
        return self._done

    def set_done(self) -> None:
        self._ended = True
        if self._done is not None:
            self._done.set()

    def entry(self) -> TaskEntry:
        """The record as the journal stores it now."""
        phase = Phase.MOVING if self.moving and self.terminal is None else _PHASES[self.state]
        return TaskEntry(
            id=self.id,
            url=self.url,
            destination=self.destination_key,
            description=self.description,
            headers=self._public_headers,
            phase=phase,
            keep_partial=self.want_resume_data,
            offset=self.bytes_received,
            total=self.bytes_expected,
            validator=self.validator,
            encoding=self.encoding,
            outcome=self.terminal if phase is Phase.ENDED else None,
            segments=None
            if self.segments is None
            else tuple((seg.start, seg.end, seg.done) for seg in self.segments),
            takeover=self.takeover,
            one_step=self.one_step if phase is Phase.MOVING else None,
        )


class _SpeedCheck:
    """``Configuration.min_speed`` for one connection: raises when it trickles
    (and marks the record: such an attempt never renews the retry budget)."""

    def __init__(
        self, config: Configuration, clock: Callable[[], float], record: TaskRecord
    ) -> None:
        self._clock = clock
        self._record = record
        self._limit = config.min_speed
        self._window = config.min_speed_window
        self._watch = (
            SpeedWatch(limit=config.min_speed, window=config.min_speed_window, start=clock())
            if config.min_speed is not None
            else None
        )

    def feed(self, nbytes: int) -> None:
        if self._watch is not None and self._watch.feed(nbytes, self._clock()):
            self._record.too_slow = True
            raise TransferTimeoutError(
                f"slower than {self._limit} bytes/s for {self._window} seconds (min_speed)",
                url=self._record.url,
            )


def _count_written(
    record: TaskRecord,
    segment: Segment | None,
    nbytes: int,
    clock: Callable[[], float],
    publish: Callable[[TaskEvent], None],
) -> None:
    """Bytes reached the file: count them (and into their segment), maybe report."""
    if segment is not None:
        segment.done += nbytes
    record.bytes_received += nbytes
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
    """Judges one attempt's response and counts its bytes into the record."""

    def __init__(
        self,
        record: TaskRecord,
        *,
        offset: int,
        ranged: bool,
        config: Configuration,
        clock: Callable[[], float],
        publish: Callable[[TaskEvent], None],
        before_write: Callable[[TaskRecord], Awaitable[None]],
        finish_into: Callable[[TaskRecord, int], Awaitable[Path | None]],
        on_split: Callable[[TaskRecord], Awaitable[None]] | None = None,
    ) -> None:
        self._record = record
        self._before_write = before_write
        self._finish_into = finish_into
        self._on_split = on_split
        self._segment: Segment | None = None  # the first segment, once split
        self._offset = offset
        self._ranged = ranged
        self._clock = clock
        self._publish = publish
        self._speed = _SpeedCheck(config, clock, record)
        self._framed = False  # a full body whose end its framing vouches for (chunked)

    def judge(self, status: int, reason: str, headers: Mapping[str, str]) -> BodyPlan | None:
        record = self._record
        if self._ranged:
            assert record.validator is not None
            resumption = judge_resumed_response(
                url=record.url,
                offset=self._offset,
                validator=record.validator,
                total=record.bytes_expected,
                encoding=record.encoding,
                status=status,
                reason=reason,
                headers=headers,
            )
            if resumption.verdict is Verdict.COMPLETE:
                record.bytes_expected = self._offset  # confirmed: the length is vouched for
                record.announced = (record.validator, self._offset)
                return None
            if resumption.verdict is Verdict.RETRY_FROM_ZERO:
                raise RestartFromZero(resumption.reason)
            if resumption.verdict is Verdict.APPEND:
                if resumption.total is not None:
                    record.announced = (record.validator, resumption.total)
                self._begin(self._offset, resumption.total)
                remaining = None if resumption.total is None else resumption.total - self._offset
                return BodyPlan(self._offset, remaining)
            # Verdict.RESTART: a full 200 body; judged below like a fresh answer.
        info = check_response(record.url, status, reason, headers)
        record.validator = strong_validator(headers)
        if record.validator is not None and info.expected_length is not None:
            record.announced = (record.validator, info.expected_length)
        self._framed = info.expected_length is not None or (
            "chunked" in headers.get("transfer-encoding", "").lower()
        )
        record.encoding = info.content_encoding
        record.segments = None
        self._begin(0, info.expected_length)
        total = info.expected_length
        if (
            self._on_split is not None
            and total is not None
            and splittable(
                wanted=record.segments_wanted,
                total=total,
                validator=record.validator,
                headers=headers,
            )
        ):
            segments = plan_segments(total, record.segments_wanted)
            if len(segments) > 1:
                # This response serves the first segment; the others get their own.
                record.segments = segments
                self._segment = segments[0]
                return BodyPlan(0, segments[0].length, truncate=False)
        return BodyPlan(0, total)

    def _begin(self, offset: int, total: int | None) -> None:
        record = self._record
        if offset == 0 and record.bytes_received > 0:
            record.restarted = True  # the bytes on disk are given up: not progress
        record.body_start = offset
        record.bytes_received = offset
        record.bytes_expected = total
        record.throttle.restart(offset)
        record.throttle.set_expected(total)
        if record.announce_resume:
            record.announce_resume = False
            self._publish(ResumedEvent(task_id=record.id, offset=offset, expected_total=total))

    @property
    def split(self) -> bool:
        """The answer was split into segments; this one served the first."""
        return self._segment is not None

    async def prepare(self, plan: BodyPlan) -> None:
        await self._before_write(self._record)
        if self._segment is not None:
            assert self._on_split is not None
            await self._on_split(self._record)  # preallocates, starts the other segments

    def chunk_received(self, nbytes: int) -> None:
        self._speed.feed(nbytes)

    def bytes_written(self, nbytes: int) -> None:
        _count_written(self._record, self._segment, nbytes, self._clock, self._publish)

    async def finishing(self, size: int) -> Path | None:
        assert self._segment is None  # a split answer's plan does not truncate
        record = self._record
        if record.bytes_expected is None:
            if not self._framed:
                # Ended by the connection closing: nothing says it is whole. The
                # file stays partial; the engine judges the end (judge_unframed_end).
                return None
            record.bytes_expected = size  # chunked framing's end vouches for it
        return await self._finish_into(record, size)

    def moved(self) -> None:
        self._record.moved = True


class SegmentSink:
    """Judges the answer to one segment's range request and counts its bytes."""

    def __init__(
        self,
        record: TaskRecord,
        segment: Segment,
        *,
        config: Configuration,
        clock: Callable[[], float],
        publish: Callable[[TaskEvent], None],
    ) -> None:
        self._record = record
        self._segment = segment
        self._offset = segment.next_offset
        self._clock = clock
        self._publish = publish
        self._speed = _SpeedCheck(config, clock, record)

    def judge(self, status: int, reason: str, headers: Mapping[str, str]) -> BodyPlan | None:
        record, segment = self._record, self._segment
        assert record.validator is not None
        resumption = judge_resumed_response(
            url=record.url,
            offset=self._offset,
            validator=record.validator,
            total=record.bytes_expected,
            encoding=record.encoding,
            status=status,
            reason=reason,
            headers=headers,
            end=segment.end,
        )
        if resumption.verdict is not Verdict.APPEND:
            # A 200 (the file changed, or ranges are ignored) or an unusable 206:
            # segments cannot go on; the whole task starts again from zero.
            ignored = status == 200 and strong_validator(headers) == record.validator
            raise RestartFromZero(
                f"segment at {self._offset}: {resumption.reason}", ranges_unsupported=ignored
            )
        return BodyPlan(self._offset, segment.end - self._offset, truncate=False)

    async def prepare(self, plan: BodyPlan) -> None:
        return None  # writes land above what the journal vouches for this segment

    def chunk_received(self, nbytes: int) -> None:
        self._speed.feed(nbytes)

    def bytes_written(self, nbytes: int) -> None:
        _count_written(self._record, self._segment, nbytes, self._clock, self._publish)

    async def finishing(self, size: int) -> Path | None:
        raise AssertionError("a segment's plan does not truncate: never whole by itself")

    def moved(self) -> None:
        raise AssertionError("a segment is never moved by itself")
