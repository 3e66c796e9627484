"""Segmented downloads: one task's body fetched over several connections at once.

The first answer of a task that wants segments may be split (``AttemptSink``
decides, from ``plan_segments``); then :class:`Segments` makes room for the
whole file, journals the segments and runs workers, one per connection slot the
supervisor lends the task. A resumed task continues its unfinished segments the
same way. The requests themselves are the download's (``fetch``,
``request_headers``): this module only decides who fetches which range.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import anyio
import anyio.abc

from .._core.config import Configuration
from .._core.events import ResumedEvent, TaskEvent
from .._core.segments import Segment
from .._core.supervisor import Supervisor
from .._exceptions import TransferError
from .._io.errors import file_error
from .._io.partials import preallocate
from .._io.threads import run_blocking
from .journaling import Checkpoint
from .record import AttemptSink, RestartFromZero, SegmentSink, TaskRecord

__all__ = ["Segments", "segment_group"]

Fetch = Callable[[TaskRecord, Mapping[str, str], AttemptSink | SegmentSink], Awaitable[None]]
"""One request of a task, its body handed to the sink."""


class Segments:
    """Runs the segments of an engine's tasks. ``start``: what the engine calls
    with the task ids the supervisor grants (a returned slot may start another
    task); ``checkpoint``: journal a record now."""

    def __init__(
        self,
        *,
        config: Configuration,
        clock: Callable[[], float],
        supervisor: Supervisor,
        start: Callable[[list[int]], None],
        checkpoint: Checkpoint,
        publish: Callable[[TaskEvent], None],
        fetch: Fetch,
        request_headers: Callable[[TaskRecord, Mapping[str, str]], Awaitable[dict[str, str]]],
    ) -> None:
        self.config = config
        self.clock = clock
        self._supervisor = supervisor
        self._start = start
        self._checkpoint = checkpoint
        self._publish = publish
        self._fetch = fetch
        self._request_headers = request_headers

    async def start_segments(
        self, record: TaskRecord, group: anyio.abc.TaskGroup, queue: deque[Segment]
    ) -> None:
        """The first answer was split: make room for the whole file, journal the
        segments, and start a worker per slot the supervisor can lend."""
        assert record.segments is not None
        assert record.bytes_expected is not None
        try:
            await run_blocking(preallocate, record.partial, record.bytes_expected)
        except OSError as exc:
            raise file_error(
                exc, url=record.url, action="reserve space for", path=record.partial
            ) from exc
        self._checkpoint(record, urgent=True)
        queue.extend(record.segments[1:])
        for _ in range(self._supervisor.borrow(record.id, len(queue))):
            group.start_soon(self.worker, record, queue, True)

    async def resume_segments(self, record: TaskRecord) -> None:
        """Continue every unfinished segment, as many at once as slots allow."""
        assert record.segments is not None
        queue = deque(segment for segment in record.segments if not segment.complete)
        record.throttle.restart(record.bytes_received)
        if record.announce_resume:
            record.announce_resume = False
            self._publish(
                ResumedEvent(
                    task_id=record.id,
                    offset=record.bytes_received,
                    expected_total=record.bytes_expected,
                )
            )
        if not queue:
            return
        async with segment_group() as group:
            for _ in range(self._supervisor.borrow(record.id, len(queue) - 1)):
                group.start_soon(self.worker, record, queue, True)
            await self.worker(record, queue, borrowed=False)

    async def worker(self, record: TaskRecord, queue: deque[Segment], borrowed: bool) -> None:
        """Fetch segments from the queue until it is empty; a borrowed slot goes back."""
        try:
            while queue:
                segment = queue.popleft()
                if segment.complete:
                    continue
                assert record.validator is not None
                headers = await self._request_headers(
                    record,
                    {
                        "Range": f"bytes={segment.next_offset}-{segment.end - 1}",
                        "If-Range": record.validator,
                    },
                )
                sink = SegmentSink(
                    record, segment, config=self.config, clock=self.clock, publish=self._publish
                )
                await self._fetch(record, headers, sink)
        finally:
            if borrowed:
                self._start(self._supervisor.give_back(record.id, 1, now=self.clock()))


@contextlib.asynccontextmanager
async def segment_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """A task group for segment workers that raises one error, not a group: a
    restart signal first (the file changed), else the first transfer error."""
    try:
        async with anyio.create_task_group() as group:
            yield group
    except BaseExceptionGroup as caught:
        leaves = list(_leaves(caught))
        for kind in (RestartFromZero, TransferError):
            for leaf in leaves:
                if isinstance(leaf, kind):
                    raise leaf from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            yield from _leaves(inner)
        else:
            yield inner
