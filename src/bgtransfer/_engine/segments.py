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
from .download_job import DownloadJob
from .journaling import JournalTask
from .sinks import AttemptSink, RestartFromZero, SegmentSink

__all__ = ["Segments", "segment_group"]

Fetch = Callable[[DownloadJob, Mapping[str, str], AttemptSink | SegmentSink], Awaitable[None]]
"""One request of a task, its body handed to the sink."""


class Segments:
    """Runs the segments of an engine's tasks. ``start``: what the engine calls
    with the task ids the supervisor grants (a returned slot may start another
    task); ``journal_task``: journal a record now."""

    def __init__(
        self,
        *,
        config: Configuration,
        clock: Callable[[], float],
        supervisor: Supervisor,
        start: Callable[[list[int]], None],
        journal_task: JournalTask,
        publish: Callable[[TaskEvent], None],
        fetch: Fetch,
        request_headers: Callable[[DownloadJob, Mapping[str, str]], Awaitable[dict[str, str]]],
    ) -> None:
        self.config = config
        self.clock = clock
        self._supervisor = supervisor
        self._start = start
        self._journal_task = journal_task
        self._publish = publish
        self._fetch = fetch
        self._request_headers = request_headers

    async def start_segments(
        self, job: DownloadJob, group: anyio.abc.TaskGroup, queue: deque[Segment]
    ) -> None:
        """The first answer was split: make room for the whole file, journal the
        segments, and start a worker per slot the supervisor can lend."""
        assert job.segments is not None
        assert job.record.bytes_expected is not None
        try:
            await run_blocking(preallocate, job.partial, job.record.bytes_expected)
        except OSError as exc:
            raise file_error(
                exc, url=job.record.url, action="reserve space for", path=job.partial
            ) from exc
        self._journal_task(job.record, urgent=True)
        queue.extend(job.segments[1:])
        for _ in range(self._supervisor.borrow(job.record.id, len(queue))):
            group.start_soon(self.worker, job, queue, True)

    async def resume_segments(self, job: DownloadJob) -> None:
        """Continue every unfinished segment, as many at once as slots allow."""
        assert job.segments is not None
        queue = deque(segment for segment in job.segments if not segment.complete)
        job.record.throttle.restart(job.record.bytes_received)
        if job.announce_resume:
            job.announce_resume = False
            self._publish(
                ResumedEvent(
                    task_id=job.record.id,
                    offset=job.record.bytes_received,
                    expected_total=job.record.bytes_expected,
                )
            )
        if not queue:
            return
        async with segment_group() as group:
            for _ in range(self._supervisor.borrow(job.record.id, len(queue) - 1)):
                group.start_soon(self.worker, job, queue, True)
            await self.worker(job, queue, borrowed=False)

    async def worker(self, job: DownloadJob, queue: deque[Segment], borrowed: bool) -> None:
        """Fetch segments from the queue until it is empty; a borrowed slot goes back."""
        try:
            while queue:
                segment = queue.popleft()
                if segment.complete:
                    continue
                assert job.validator is not None
                headers = await self._request_headers(
                    job,
                    {
                        "Range": f"bytes={segment.next_offset}-{segment.end - 1}",
                        "If-Range": job.validator,
                    },
                )
                sink = SegmentSink(
                    job, segment, config=self.config, clock=self.clock, publish=self._publish
                )
                await self._fetch(job, headers, sink)
        finally:
            if borrowed:
                self._start(self._supervisor.give_back(job.record.id, 1, now=self.clock()))


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
