"""An engine's upload tasks: made from requests, and reattached.

:class:`Uploads` validates new upload requests into records (the source file
and its identity, ``reply_to`` by the download's destination rules), makes the
records of uploads continued from resume data, and reattaches the journal's
uploads (the :class:`~.reattacher.Reattacher` protocol, by
``plan_upload_reattach``). Their work is the :class:`~.upload.Uploader`'s.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._core.config import Configuration
from .._core.journal import TaskEntry
from .._core.naming import Origin, origin_of, parse_url
from .._core.reattach import Action, plan_upload_reattach
from .._core.resume_data import InvalidResumeDataError, ResumeData, verify
from .._core.secrets import SecretHeaders
from .._core.upload import (
    SourceIdentity,
    UploadFields,
    UploadRequest,
    source_change,
)
from .._exceptions import (
    InvalidDestinationError,
    SourceChangedError,
)
from .._io.files import remove_quietly
from .._io.sources import inspect_source
from .admission import Admission, merge_headers
from .reattacher import Reattached
from .record import TaskRecord
from .upload import Uploader
from .upload_job import UploadJob, upload_job

if TYPE_CHECKING:
    pass

__all__ = ["Uploads"]


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

    def prepare(self, task_id: int, request: UploadRequest) -> TaskRecord:
        """A record for ``request``, validated (the file is stat'ed and resolved,
        ``reply_to`` resolved as a download's destination); not queued yet."""
        if not isinstance(request, UploadRequest):
            raise TypeError(f"expected an UploadRequest, not {type(request).__name__}")
        url, origin = parse_url(request.url, self._admission.origins)
        resolved, identity = inspect_source(url, request.file)
        source = Path(resolved)
        reply_to = None
        if request.reply_to is not None:
            try:
                reply_to = self._admission.resolve_destination(url, request.reply_to, {})
            except InvalidDestinationError as exc:
                # Checked as a download's destination: said as what the caller named.
                said = str(exc).replace(f"{url}: destination", f"{url}: reply_to", 1)
                raise InvalidDestinationError(said) from None
            if reply_to == source:
                raise InvalidDestinationError(
                    f"{url}: reply_to {str(reply_to)!r} is the file being uploaded"
                )
        fields = UploadFields(
            method=request.method,
            source=resolved,
            identity=identity,
            reply_to=None if reply_to is None else str(reply_to),
            protocol=request.protocol,
        )
        return self.new_record(
            task_id,
            url,
            origin,
            fields,
            description=request.description,
            headers=request.headers,
            source=source,
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
        resolved, identity = inspect_source(url, data.source)
        problem = source_change(expected, identity)
        if problem is not None or resolved != data.source:
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
            tus=data.tus,
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
        source: Path | None = None,
    ) -> TaskRecord:
        """The record of an upload with ``fields`` (``source``: its file's path,
        when the caller has it already)."""
        if source is None:
            source = Path(fields.source)
        job = functools.partial(
            UploadJob,
            uploader=self.uploader,
            fields=fields,
            partials_dir=self._partials_dir,
        )
        return TaskRecord(
            task_id=task_id,
            url=url,
            origin=origin,
            destination=source if fields.reply_to is None else Path(fields.reply_to),
            description=description,
            headers=self._admission.merged_headers(headers),
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
                record.end_replayed(outcome)
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
