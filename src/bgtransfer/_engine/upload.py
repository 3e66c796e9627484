"""Uploads: their admission, their attempts with retries, and their reattach.

:class:`Uploads` is what an engine holds for its upload jobs: it validates new
upload requests into records (the source file and its identity, ``reply_to``
by the download's destination rules), does the work of every
:class:`~.upload_job.UploadJob` (:class:`Uploader`: attempts, retries with
backoff, progress, the answer's body moved to ``reply_to``) and reattaches the
journal's uploads (the :class:`~.reattacher.Reattacher` protocol, by
``plan_upload_reattach``). The scheduler runs upload jobs as it runs downloads,
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
import functools
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import attrs

from .._core.config import Configuration
from .._core.events import (
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    TaskEvent,
    UploadReply,
)
from .._core.journal import TaskEntry
from .._core.naming import Origin, origin_of, parse_url
from .._core.reattach import Action, plan_upload_reattach
from .._core.resume_data import InvalidResumeDataError, ResumeData, sign, verify
from .._core.retry import decide_retry
from .._core.secrets import SecretHeaders
from .._core.upload import (
    RESUMABLE,
    SourceIdentity,
    UploadFields,
    UploadRequest,
    reply_headers,
    source_change,
)
from .._core.upload_protocol import advertised_protocol
from .._exceptions import (
    InvalidDestinationError,
    ResourceTimeoutError,
    SourceChangedError,
    TransferError,
)
from .._io.errors import file_error
from .._io.files import move_into_place, remove_quietly
from .._io.pacing import pacer_for
from .._io.progress import count as count_progress
from .._io.resumable import discover
from .._io.upload import Answer, check_source, inspect_source, send_file
from .admission import Admission, merge_headers, provided_headers
from .auth import Authenticator, AuthState, task_info
from .journaling import FlushFor, JournalTask
from .metering import Metering, recorder_of
from .reattacher import Reattached
from .record import TaskRecord
from .retrying import back_off
from .terminations import Terminator
from .upload_job import UploadJob, upload_job
from .upload_resumable import ResumableStrategy

if TYPE_CHECKING:
    import aiohttp

__all__ = ["BodyStrategy", "PlainStrategy", "Uploader", "Uploads"]


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


class Uploads:
    """An engine's uploads: admission, the shared :class:`Uploader`, reattach."""

    def __init__(
        self,
        *,
        config: Configuration,
        admission: Admission,
        partials_dir: Path,
        uploader: Uploader,
        secrets: SecretHeaders,
        resume_key: bytes = b"",
    ) -> None:
        self.config = config
        self._resume_key = resume_key
        self.uploader = uploader
        self._admission = admission
        self._partials_dir = partials_dir
        self._secrets = secrets

    def prepare(
        self, task_id: int, request: UploadRequest, resolved_dirs: dict[Path, Path] | None = None
    ) -> TaskRecord:
        """A record for ``request``, validated (the file is stat'ed and resolved,
        ``reply_to`` resolved as a download's destination); not queued yet.
        ``resolved_dirs``: a batch's source directories resolved so far."""
        if not isinstance(request, UploadRequest):
            raise TypeError(f"expected an UploadRequest, not {type(request).__name__}")
        url, origin = parse_url(request.url, self._admission.origins)
        source, identity = inspect_source(url, request.file, resolved_dirs)
        reply_to = None
        if request.reply_to is not None:
            reply_to = self._admission.resolve_destination(url, request.reply_to, {})
            if reply_to == source:
                raise InvalidDestinationError(
                    f"{url}: reply_to {str(reply_to)!r} is the file being uploaded"
                )
        fields = UploadFields(
            method=request.method,
            source=str(source),
            identity=identity,
            reply_to=None if reply_to is None else str(reply_to),
            protocol=request.protocol,
        )
        return self.new_record(
            task_id, url, origin, fields, description=request.description, headers=request.headers
        )

    def resumed_record(
        self, task_id: int, data: ResumeData, *, headers: tuple[tuple[str, str], ...]
    ) -> TaskRecord:
        """A record continuing the upload ``data`` describes (signed by this state
        directory: :class:`~bgtransfer.InvalidResumeDataError` otherwise), if its
        file is still the one uploaded (:class:`~bgtransfer.SourceChangedError`
        otherwise); not queued yet."""
        verify(data, self._resume_key)
        if data.kind != "upload" or data.source is None or data.identity is None:
            raise InvalidResumeDataError(
                "this is a download's resume data: use Session.download_with_resume_data()"
            )
        assert data.upload_url is not None
        assert data.protocol is not None
        url, origin = parse_url(data.url, self._admission.origins)
        expected = SourceIdentity(*data.identity)
        source, identity = inspect_source(url, data.source)
        problem = source_change(expected, identity)
        if problem is not None or str(source) != data.source:
            raise SourceChangedError(
                f"{url}: {data.source} changed since the upload was cancelled: "
                f"{problem or 'another file is at its path now'}; upload it again as a new task",
                url=url,
                filename=data.source,
            )
        fields = UploadFields(
            method=data.method or "PUT",
            source=data.source,
            identity=expected,
            upload_url=data.upload_url,
            upload_offset=data.offset,
            protocol=data.protocol,
        )
        record = self.new_record(
            task_id,
            url,
            origin,
            fields,
            description=data.description,
            headers=tuple(merge_headers(data.headers, headers).items()),
        )
        upload_job(record).announce_resume = True
        return record

    def new_record(
        self,
        task_id: int,
        url: str,
        origin: Origin,
        fields: UploadFields,
        *,
        description: str | None,
        headers: tuple[tuple[str, str], ...],
    ) -> TaskRecord:
        source = Path(fields.source)
        job = functools.partial(
            UploadJob,
            uploader=self.uploader,
            fields=fields,
            reply_partial=self._partials_dir / f"{task_id}.reply",
        )
        return TaskRecord(
            task_id=task_id,
            url=url,
            origin=origin,
            destination=source if fields.reply_to is None else Path(fields.reply_to),
            description=description,
            headers=merge_headers(self.config.headers, headers),
            request_headers=headers,
            progress_interval=self.config.progress_interval,
            job=job,
            secrets=self._secrets,
            total=fields.identity.size,
            source=source,
        )

    # -- the Reattacher protocol ------------------------------------------------------

    async def reattach(self, entries: Sequence[TaskEntry]) -> list[Reattached]:
        """Per upload entry, its record in the state ``plan_upload_reattach``
        gives it: a running plain upload queues again from its first byte."""
        back = []
        for entry in entries:
            assert entry.upload is not None
            plan = plan_upload_reattach(entry)
            record = self.new_record(
                entry.id,
                entry.url,  # validated when the journal was read
                origin_of(entry.url, self._admission.origins),
                entry.upload,
                description=entry.description,
                headers=entry.headers,
            )
            job = upload_job(record)
            job.may_have_partial = entry.upload.reply_to is not None
            # A resumable upload the server holds continues from its offset.
            job.announce_resume = plan.restarted or entry.upload.upload_url is not None
            for event in plan.inputs:
                record.advance(event)
            outcome = plan.outcome
            if outcome is not None:
                if isinstance(outcome, FinishedEvent):
                    total = record.bytes_received = record.bytes_expected = outcome.total_bytes
                    record.last_progress = ProgressEvent(
                        task_id=record.id,
                        bytes_written=total,
                        total_bytes_written=total,
                        total_bytes_expected=total,
                    )
                record.terminal = outcome
                record.replayed = True
                record.set_done()
            back.append(
                Reattached(
                    record=record,
                    action=plan.action,
                    leftover=plan.action is Action.END and job.may_have_partial,
                    newly_ended=outcome is not None and entry.outcome is None,
                )
            )
        return back

    @staticmethod
    async def remove_leftovers(records: Sequence[TaskRecord]) -> None:
        """Remove the reply partials of uploads that ended."""
        await remove_quietly(*(upload_job(record).reply_partial for record in records))
