"""Uploads: their attempts with retries (their tasks are made and reattached
by :mod:`.upload_tasks`).

:class:`Uploader` does the work of every :class:`~.upload_job.UploadJob`:
attempts, retries with backoff, progress, the answer's body moved to
``reply_to``. The scheduler runs upload jobs as it runs downloads,
under the same limits; it never learns the verb.

One attempt's body is sent by a :class:`BodyStrategy`. :class:`PlainStrategy`
sends the whole file with one request; :class:`~.upload_resumable.ResumableStrategy`
(tus, the IETF draft) learns the server's offset first and sends the rest,
keeping its upload URL and offset in the job's journalled fields
(``UploadFields.upload_url``/``upload_offset``, journalled with
``journal_task``). ``protocol="auto"`` is settled at the first attempt, by
one ``OPTIONS``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import anyio
import attrs

from .._core.config import Configuration
from .._core.events import (
    FinishedEvent,
    ResumedEvent,
    TaskEvent,
    UploadReply,
)
from .._core.resume_data import ResumeData, sign
from .._core.retry import decide_retry
from .._core.secrets import SecretHeaders
from .._core.upload import (
    RESUMABLE,
    reply_headers,
)
from .._core.upload_protocol import advertised_protocol
from .._exceptions import (
    ResourceTimeoutError,
    TransferError,
)
from .._io.errors import file_error
from .._io.files import move_into_place
from .._io.pacing import pacer_for
from .._io.progress import count as count_progress
from .._io.resumable import discover
from .._io.upload import Answer, check_source, send_file
from .admission import provided_headers
from .auth import Authenticator, AuthState, task_info
from .journaling import FlushFor, JournalTask
from .metering import Metering, recorder_of
from .record import TaskRecord
from .retrying import back_off
from .terminations import Terminator
from .upload_job import UploadJob
from .upload_resumable import ResumableStrategy

if TYPE_CHECKING:
    import aiohttp

__all__ = ["BodyStrategy", "PlainStrategy", "Uploader"]


class BodyStrategy(Protocol):
    """How one attempt of an upload sends the file (the seam for resumable uploads)."""

    async def send(
        self, job: UploadJob, headers: Mapping[str, str], on_sent: Callable[[int], None]
    ) -> Answer:
        """Send the body of one attempt; return the server's accepting answer,
        raise the attempt's :class:`~bgtransfer.TransferError` otherwise.
        ``on_sent(n)``: ``n`` more bytes of the file went out."""
        ...


@attrs.define
class PlainStrategy:
    """The whole file as the body of one ``PUT`` or ``POST``, every attempt."""

    uploader: Uploader

    async def send(
        self, job: UploadJob, headers: Mapping[str, str], on_sent: Callable[[int], None]
    ) -> Answer:
        uploader = self.uploader
        assert uploader.client is not None
        config = uploader.config
        return await send_file(
            uploader.client,
            method=job.fields.method,
            url=job.record.url,
            headers=headers,
            source=job.source,
            identity=job.fields.identity,
            request_timeout=config.request_timeout,
            on_sent=on_sent,
            reply_max=config.upload_reply_max_bytes,
            reply_file=None if job.reply_to is None else job.reply_partial,
            pacer=uploader.pacer,
            trace=recorder_of(job.record),
        )


class Uploader:
    """Uploads the tasks of one engine; ``client`` is set once the engine is entered."""

    def __init__(
        self,
        *,
        config: Configuration,
        clock: Callable[[], float],
        secrets: SecretHeaders,
        fsync: bool,
        publish: Callable[[TaskEvent], None],
        hold_origin: Callable[[TaskRecord, float], None],
        journal_task: JournalTask | None = None,
        flush_for: FlushFor | None = None,
        resume_key: bytes = b"",
        auth: Authenticator | None = None,
        terminator: Terminator | None = None,
        metering: Metering | None = None,
    ) -> None:
        self.config = config
        self.terminator = (
            Terminator(config=config, journal=None) if terminator is None else terminator
        )
        self.metering = Metering() if metering is None else metering
        self.clock = clock
        self.auth = Authenticator(config) if auth is None else auth
        self.client: aiohttp.ClientSession | None = None
        self.pacer = pacer_for(config.max_bytes_per_second)  # (every upload's; not downloads')
        self.strategy: BodyStrategy = PlainStrategy(self)
        self.resumable = ResumableStrategy(self)
        self.journal_task = journal_task  # None: no journal (an ephemeral session)
        self.flush_for = flush_for
        self._resume_key = resume_key
        self.secrets = secrets
        self._secrets = secrets
        self._fsync = fsync
        self.publish = publish
        self._publish = publish
        self._hold_origin = hold_origin
        self._rng = random.Random()

    async def transfer(self, job: UploadJob) -> FinishedEvent:
        """Attempts until the server accepted the file, then its answer's body
        (if kept in a file) moved to ``reply_to``."""
        timeout = self.config.resource_timeout
        try:
            with contextlib.nullcontext() if timeout is None else anyio.fail_after(timeout):
                answer = await self._attempts(job)
        except TransferError:
            raise
        except TimeoutError as exc:
            raise ResourceTimeoutError(
                f"the task took longer than resource_timeout ({timeout} seconds)",
                url=job.record.url,
            ) from exc
        record = job.record
        reply_to = job.reply_to
        if reply_to is not None:
            with anyio.CancelScope(shield=True):  # once the move starts, it finishes
                try:
                    await move_into_place(job.reply_partial, reply_to, durable=self._fsync)
                except OSError as exc:
                    raise file_error(
                        exc, url=record.url, action="move the reply to", path=reply_to
                    ) from exc
        job.reply = UploadReply(
            status=answer.status,
            headers=reply_headers(answer.headers, self._secrets),
            body=answer.body,
            truncated=answer.truncated,
            saved_to=reply_to,
        )
        job.finished = FinishedEvent(
            task_id=record.id,
            location=record.destination,
            total_bytes=record.bytes_received,
            reply=job.reply,
        )
        return job.finished

    async def terminate(self, job: UploadJob) -> None:
        """Remove a cancelled resumable upload from the server (failures logged)."""
        await self.resumable.terminate(job)

    def resume_data(self, job: UploadJob) -> ResumeData | None:
        """Signed resume data for a resumable upload the server holds (its URL
        and the offset it acknowledged, the file's identity), else None."""
        fields = job.fields
        if fields.protocol not in RESUMABLE or fields.upload_url is None:
            return None
        record = job.record
        identity = fields.identity
        data = ResumeData(
            kind="upload",
            url=record.url,
            partial="",
            offset=fields.upload_offset,
            validator="",
            total=identity.size,
            description=record.description,
            headers=record.public_headers,
            source=fields.source,
            identity=(identity.size, identity.mtime_ns, identity.device, identity.inode),
            upload_url=fields.upload_url,
            protocol=fields.protocol,
            method=fields.method,
            # What the server offered goes along (the continued upload's
            # checksum, its termination), as the journal keeps it.
            tus=None if fields.tus is None else fields.tus.known(),
        )
        return sign(data, self._resume_key)

    async def _attempts(self, job: UploadJob) -> Answer:
        """The retry loop: a plain upload that failed is sent again from its
        first byte, while the retry policy allows."""
        policy = self.config.retry
        failures = 0
        metering, record = self.metering, job.record
        while True:
            metering.begin(record)
            try:
                answer = await self._attempt(job)
            except TransferError as exc:
                challenge = None if job.auth is None else self.auth.challenge(exc)
                if (
                    challenge is not None
                    and job.auth is not None
                    and await self.auth.challenged(challenge, job.auth, task_info(job.record))
                ):
                    metering.end(record, "retried", exc)
                    job.announce_resume = True  # the file is sent again from its first byte
                    continue  # with the credentials given (no retry counted)
                failures += 1
                decision = decide_retry(policy, exc, failures, self._rng)
                metering.end(record, "failed" if decision.give_up else "retried", exc)
                if decision.give_up:
                    raise
                resumable = job.fields.protocol in RESUMABLE
                await back_off(
                    job,
                    decision,
                    attempt=failures + 1,
                    error=exc,
                    # (a plain upload sends the file again from its first byte)
                    from_byte=job.fields.upload_offset if resumable else 0,
                    publish=self._publish,
                    hold_origin=self._hold_origin,
                )
            else:
                metering.end(record, "ok")
                return answer
            finally:
                metering.left(record)  # (if it has not ended above)

    async def _attempt(self, job: UploadJob) -> Answer:
        record = job.record
        fields = job.fields
        await check_source(record.url, job.source, fields.identity)
        size = fields.identity.size
        record.bytes_expected = size
        record.throttle.set_expected(size)
        headers = await self.request_headers(record)
        if self.auth.active:
            if job.auth is None:
                job.auth = AuthState(record.url)
            await self.auth.add_header(record.url, headers, job.auth)
        if fields.protocol == "auto":
            await self._choose_protocol(job, headers)
        job.may_have_partial = job.reply_to is not None

        def on_sent(nbytes: int) -> None:
            record.bytes_received += nbytes
            record.bytes_moved += nbytes  # (every attempt's: the metrics)
            count_progress(record.throttle, nbytes, self.clock, self._publish)

        if job.fields.protocol in RESUMABLE:
            answer = await self.resumable.send(job, headers, on_sent)
        else:
            record.bytes_received = 0
            record.throttle.restart(0)
            if job.announce_resume:  # a plain upload starts again from its first byte
                job.announce_resume = False
                self._publish(ResumedEvent(task_id=record.id, offset=0, expected_total=size))
            answer = await self.strategy.send(job, headers, on_sent)
        # The body was the file to its last byte; it must still be at its path.
        await check_source(record.url, job.source, fields.identity)
        return answer

    async def _choose_protocol(self, job: UploadJob, headers: Mapping[str, str]) -> None:
        """``protocol="auto"``: ask the server (one ``OPTIONS``) and keep what it
        advertises (tus, else the IETF draft, else plain) in the journal."""
        assert self.client is not None
        answer = await discover(
            self.client,
            job.record.url,
            headers=headers,
            request_timeout=self.config.request_timeout,
            trace=recorder_of(job.record),
        )
        protocol = advertised_protocol(answer) or "plain"
        job.fields = attrs.evolve(job.fields, protocol=protocol)
        job.discovery = answer  # the tus machine takes the capabilities from it
        if self.journal_task is not None:
            self.journal_task(job.record)

    async def request_headers(self, record: TaskRecord) -> dict[str, str]:
        """The task's headers, and the provider's (if any) merged over them."""
        return await provided_headers(self.config.headers_provider, record.url, record.headers)
