"""One download's work: attempts with retries until its body is whole, then the move.

:class:`Downloader` does the work of every :class:`~.download_job.DownloadJob`
of an engine (the job holds one download's state, this the shared client, rules
and helpers): the transfer of a task the engine has started, and how a stopped
one ends (``cancel_outcome``, ``error_outcome``). It asks the engine only for
what the engine owns: journaling a record (``journal_task``, ``flush_for``),
publishing its events, and holding an origin back (Retry-After).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from .._core.config import Configuration
from .._core.events import CancelledEvent, ErrorEvent, FinishedEvent, TaskEvent
from .._core.journal import FinalWrite
from .._core.ranges import EndVerdict, ResumePlan, judge_unframed_end, plan_resume
from .._core.redirects import RedirectRule
from .._core.resume_data import sign
from .._core.retry import decide_retry, kept_progress
from .._core.secrets import SecretHeaders
from .._core.segments import Segment
from .._core.states import MoveInput, Stage
from .._core.supervisor import Supervisor
from .._exceptions import (
    IncompleteBodyError,
    LocalFileError,
    ProtocolError,
    ResourceTimeoutError,
    TransferError,
)
from .._io.errors import file_error
from .._io.files import OUT_OF_SPACE, file_identity, move_into_place
from .._io.pacing import pacer_for
from .._io.partials import partial_size
from .._io.transfer import fetch_to_file
from .admission import provided_headers
from .auth import Authenticator, AuthState, redirect_check, task_info
from .download_job import DownloadJob
from .hub import EventHub
from .journaling import FlushFor, JournalTask, TaskJournal
from .metering import Metering, recorder_of
from .retrying import back_off
from .segments import Segments, segment_group
from .sinks import AttemptSink, RestartFromZero, SegmentSink
from .verify import verify

if TYPE_CHECKING:
    import aiohttp

    from .record import TaskRecord

__all__ = ["Downloader"]

logger = logging.getLogger("bgtransfer")


class Downloader:
    """Downloads the tasks of one engine; ``client`` is set once the engine is entered."""

    def __init__(
        self,
        *,
        config: Configuration,
        clock: Callable[[], float],
        journal: TaskJournal | None,
        resume_key: bytes,
        secrets: SecretHeaders,
        hub: EventHub,
        supervisor: Supervisor,
        start: Callable[[list[int]], None],
        journal_task: JournalTask,
        flush_for: FlushFor,
        publish: Callable[[TaskEvent], None],
        hold_origin: Callable[[TaskRecord, float], None],
        auth: Authenticator | None = None,
        metering: Metering | None = None,
    ) -> None:
        self.config = config
        self.metering = Metering() if metering is None else metering
        self.clock = clock
        self.client: aiohttp.ClientSession | None = None
        self._journal = journal
        self._fsync = journal is not None and config.durability == "fsync"
        self._resume_key = resume_key
        self._hub = hub
        self._journal_task = journal_task
        self._flush_for = flush_for
        self._publish = publish
        self._hold_origin = hold_origin
        self._rng = random.Random()
        self._pacer = pacer_for(config.max_bytes_per_second)  # (every download's, segments too)
        self._redirects = RedirectRule(
            allow_insecure=config.allow_insecure_redirects,
            secrets=secrets,
            max_redirects=config.max_redirects,
        )
        self.auth = Authenticator(config) if auth is None else auth
        self._segments = Segments(
            config=config,
            clock=clock,
            supervisor=supervisor,
            start=start,
            journal_task=journal_task,
            publish=publish,
            fetch=self._fetch,
            request_headers=self._request_headers,
        )

    async def transfer(self, job: DownloadJob) -> FinishedEvent:
        """Attempts until the body is whole, then the move into place."""
        timeout = self.config.resource_timeout
        remaining = None if timeout is None else max(0.0, timeout - job.active_time)
        started = self.clock()
        try:
            with contextlib.nullcontext() if remaining is None else anyio.fail_after(remaining):
                await self._attempts(job)
        except TransferError:
            raise
        except TimeoutError as exc:
            raise ResourceTimeoutError(
                f"the task took longer than resource_timeout ({timeout} seconds)",
                url=job.record.url,
            ) from exc
        finally:
            job.active_time += self.clock() - started  # suspended time is not counted
        if job.moved:  # by the last write (_finish_into)
            return job.finished()
        if job.integrity is not None or job.served_digests:
            await verify(job)
        # Shielded: once the move starts, it finishes, and the task has finished.
        # The journal learns of it first, so a crash in between is never taken for
        # a lost partial file (and the file is never downloaded again).
        with anyio.CancelScope(shield=True):
            job.move_on(MoveInput.WHOLE)
            job.final_write = None  # the file is whole now, whatever was said before
            if self._journal is not None:
                self._journal_task(job.record, urgent=True, data=True)
                await self._flush_for(job.record, shielded=True)
            try:
                await move_into_place(job.partial, job.record.destination, durable=self._fsync)
            except OSError as exc:
                raise file_error(
                    exc, url=job.record.url, action="move the file to", path=job.record.destination
                ) from exc
            job.move_on(MoveInput.PLACED)
        return job.finished()

    async def _finish_into(self, job: DownloadJob, size: int) -> Path | None:
        """The whole body has arrived: may its last write also move it into place?

        Yes, unless every journal entry must be fsynced first (the classic order
        then: the body whole and synced, ``moving`` committed, the move). A
        background session commits ``moving`` first, with the offset written so
        far and what the destination is now (:class:`FinalWrite`), so a
        process killed during that step can tell whether it completed.
        Not cancellable once it has decided (the sink's contract): the commit
        of ``moving`` is waited for shielded.
        """
        if self._fsync or job.integrity is not None or job.served_digests:
            return None  # (to be checked before the move: verify.py)
        if self._journal is not None:
            try:
                replaces = file_identity(job.record.destination)
            except OSError:  # cannot tell, or not a regular file: the classic order
                return None
            job.final_write = FinalWrite(size=size, replaces=replaces)
        job.move_on(MoveInput.WHOLE)
        if self._journal is not None:
            self._journal_task(job.record, urgent=True)
            with anyio.CancelScope(shield=True):
                await self._flush_for(job.record, shielded=True)
        return job.record.destination

    async def _attempts(self, job: DownloadJob) -> None:
        """The retry loop: transient failures are retried from the bytes on disk.

        ``failures`` counts consecutive attempts that made no kept progress
        (``kept_progress``): bytes that a later attempt must fetch again do not
        renew the budget, so every task ends."""
        policy = self.config.retry
        failures = 0  # consecutive attempts that made no kept progress
        probes = 0  # ranged requests asking a close-delimited body's end to be confirmed
        metering, record = self.metering, job.record
        while True:
            metering.begin(record)
            try:
                await self._attempt(job)
                metering.end(record, "ok")
                if not self._needs_probe(job) or probes == policy.max_attempts:
                    return  # (never confirmed by max_attempts probes: unverified)
                probes += 1
                job.announce_resume = True
                continue
            except RestartFromZero as signal:
                self._kept_progress(job)  # (moves the mark; a restart is no progress)
                failures += 1
                if failures >= policy.max_attempts:
                    error = ProtocolError(str(signal), url=job.record.url)
                    metering.end(record, "failed", error)
                    raise error from None
                metering.end(record, "retried")
                job.record.bytes_received = 0
                job.segments = None
                job.validator = None
                if signal.ranges_unsupported:
                    job.record.segments_wanted = 1  # fall back to one connection
                logger.debug("task %d: starting over from byte 0: %s", job.record.id, signal)
                job.announce_resume = True
                job.restarted = True  # the next attempt starts over: no progress either
                continue
            except TransferError as exc:
                if await self._answered(job, exc):
                    metering.end(record, "retried", exc)
                    continue  # again, with the credentials given (no retry counted)
                if self._kept_progress(job):
                    failures = 0
                failures += 1
                decision = decide_retry(policy, exc, failures, self._rng)
                metering.end(record, "failed" if decision.give_up else "retried", exc)
                if decision.give_up:
                    raise
                await back_off(
                    job,
                    decision,
                    attempt=failures + 1,
                    error=exc,
                    from_byte=job.record.bytes_received,
                    publish=self._publish,
                    hold_origin=self._hold_origin,
                )
            finally:
                metering.left(record)  # (if it has not ended above)

    async def _answered(self, job: DownloadJob, error: TransferError) -> bool:
        """Whether ``error`` was a 401 answered with new credentials (see
        :class:`~.auth.Authenticator`); raises the task's end if it ends it."""
        challenge = None if job.auth is None else self.auth.challenge(error)
        if challenge is None or job.auth is None:
            return False
        return await self.auth.challenged(challenge, job.auth, task_info(job.record))

    @staticmethod
    def _needs_probe(job: DownloadJob) -> bool:
        """After an attempt that ended well: is the body's length still to be
        confirmed by another (ranged) request? Raises ``IncompleteBodyError`` when
        a close-delimited body is detectably cut short; False when the task is
        done, its length vouched for (``bytes_expected`` known) or not."""
        if job.moved or job.record.bytes_expected is not None:
            return False
        verdict, reason = judge_unframed_end(
            offset=job.record.bytes_received,
            validator=job.validator,
            announced=job.announced,
            previous=job.last_end,
            whole=job.body_start == 0,
        )
        if job.validator is not None:
            job.last_end = (job.validator, job.record.bytes_received)
        if verdict is EndVerdict.TRUNCATED:
            raise IncompleteBodyError(reason, url=job.record.url)
        if verdict is EndVerdict.VERIFIED:
            job.record.bytes_expected = job.record.bytes_received
        return verdict is EndVerdict.PROBE

    @staticmethod
    def _kept_progress(job: DownloadJob) -> bool:
        """Whether the attempt that just failed left bytes the next one builds on."""
        kept, job.resume_mark = kept_progress(
            job.resume_mark,
            validator=job.validator,
            offset=job.record.bytes_received,
            restarted=job.restarted,
        )
        kept = kept and not job.too_slow  # a trickle is no progress, whatever it wrote
        job.restarted = job.too_slow = False
        return kept

    async def _attempt(self, job: DownloadJob) -> None:
        job.move_on(MoveInput.ATTEMPT)
        job.final_write = None
        if job.segments is not None:
            await self._segments.resume_segments(job)
            return
        plan = plan_resume(
            offset=job.record.bytes_received,
            validator=job.validator,
            total=job.record.bytes_expected,
        )
        # Without a range the whole file comes again; a ResumedEvent with offset 0
        # says so when there were bytes on disk.
        if plan.offset and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "task %d: resuming at byte %d (%s)",
                job.record.id,
                plan.offset,
                "ranged" if plan.ranged else "not ranged",
            )
        headers = await self._request_headers(job, plan.headers)
        if job.record.segments_wanted > 1 and not plan.ranged:
            # The answer may be split into segments; their workers live here.
            async with segment_group() as group:
                await self._attempt_once(job, plan, headers, group)
        else:
            await self._attempt_once(job, plan, headers, None)

    async def _attempt_once(
        self,
        job: DownloadJob,
        plan: ResumePlan,
        headers: Mapping[str, str],
        group: anyio.abc.TaskGroup | None,
    ) -> None:
        """One request; with ``group``, an answer split into segments is finished
        by workers there (and by this one, once its own segment is done)."""
        on_split = None
        queue: deque[Segment] | None = None
        if group is not None:
            segments: deque[Segment] = deque()
            queue = segments

            async def on_split(job: DownloadJob) -> None:
                await self._segments.start_segments(job, group, segments)

        sink = AttemptSink(
            job,
            offset=plan.offset,
            ranged=plan.ranged,
            config=self.config,
            clock=self.clock,
            publish=self._publish,
            before_write=self._before_write,
            finish_into=self._finish_into,
            on_split=on_split,
        )
        try:
            await self._fetch(job, headers, sink)
        except TransferError:
            if not job.moved:
                raise
            return  # the file is in place (by the last write): what failed after is moot
        if sink.split:  # segment 0 is done: help with the others
            assert queue is not None  # only an attempt with a group splits
            await self._segments.worker(job, queue, borrowed=False)

    async def _fetch(
        self, job: DownloadJob, headers: Mapping[str, str], sink: AttemptSink | SegmentSink
    ) -> None:
        assert self.client is not None
        chain: list[str] = []
        recorder = recorder_of(job.record)
        policy = None
        if self.config.redirect_policy is not None:
            policy = redirect_check(self.config, task_info(job.record))
        # (Asked once per request: nothing is formatted when DEBUG is off.)
        debug = logger.isEnabledFor(logging.DEBUG)
        if debug:
            logger.debug(
                "task %d: GET %s (Range: %s)",
                job.record.id,
                job.record.url,
                headers.get("Range") or "none, from byte 0",
            )
        try:
            await fetch_to_file(
                self.client,
                url=job.record.url,
                headers=headers,
                partial=job.partial,
                request_timeout=self.config.request_timeout,
                sink=sink,
                redirects=self._redirects,
                chain=chain,
                policy=policy,
                pacer=self._pacer,
                trace=recorder,
            )
        except TransferError as exc:
            if chain and job.auth is not None:
                job.auth.answered = chain[-1]
            if debug:
                logger.debug(
                    "task %d: GET failed (status %s, %d bytes on disk): %s",
                    job.record.id,
                    sink.status,
                    job.record.bytes_received,
                    exc,
                )
            raise
        finally:
            if recorder is not None:
                recorder.redirected(chain)  # (the URLs it asked for: the chain)
        if debug:
            logger.debug(
                "task %d: GET answered %s, %d bytes on disk",
                job.record.id,
                sink.status,
                job.record.bytes_received,
            )

    async def _request_headers(self, job: DownloadJob, extra: Mapping[str, str]) -> dict[str, str]:
        """The task's headers, the provider's (if any), then the range headers."""
        headers = await provided_headers(
            self.config.headers_provider, job.record.url, job.record.headers
        )
        if self.auth.active:
            if job.auth is None:
                job.auth = AuthState(job.record.url)
            await self.auth.add_header(job.record.url, headers, job.auth)
        headers.update(extra)
        return headers

    async def _before_write(self, job: DownloadJob) -> None:
        """Bytes are about to be written below what the journal vouches for (a
        restart): record the lower offset durably first (the journal's invariant)."""
        if self._journal is not None and job.journaled_offset > job.record.bytes_received:
            self._journal_task(job.record, urgent=True)
            await self._flush_for(job.record)

    def cancel_outcome(self, job: DownloadJob) -> CancelledEvent:
        data = job.resume_data() if job.record.stage is Stage.CANCELING_KEEPING else None
        if data is not None:
            data = sign(data, self._resume_key)
        return CancelledEvent(task_id=job.record.id, resume_data=data)

    def error_outcome(self, job: DownloadJob, error: TransferError) -> ErrorEvent:
        """The task failed. Out of space with bytes that can be resumed: the
        partial file is kept and the event carries (signed) resume data for them,
        to continue once space is freed."""
        data = None
        if isinstance(error, LocalFileError) and error.errno in OUT_OF_SPACE:
            data = job.resume_data()
            # never vouch for more than the file holds
            if data is not None and data.offset <= partial_size(job.partial):
                data = sign(data, self._resume_key)
            else:
                data = None
        return ErrorEvent(task_id=job.record.id, error=error, resume_data=data)
