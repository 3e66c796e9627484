"""The resumable strategy: one attempt of a tus or IETF-draft upload.

Behind the :class:`~.upload.BodyStrategy` seam, :class:`ResumableStrategy` makes
the protocol's machine from the job's journalled fields (a new upload, or the
upload URL the server gave, which first asks the server where it stands) and
runs it with the driver (``_io.resumable.send_resumable``). The upload URL is
journalled and committed before the first byte of the file goes out
(``on_upload_url``); the offset the server acknowledges is kept in the job's
fields as it comes and journalled when the attempt ends (and with every entry
put meanwhile, a suspend's included): coarse, never per chunk. Progress counts
the bytes the server holds plus those sent since; an attempt that continues
from ``N > 0`` (or after a retry, a suspend, a reattach) says so first with
``ResumedEvent(offset=N)``.

``terminate`` removes a cancelled upload from the server (tus termination, the
draft's ``DELETE``); its failure is logged, not the task's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import anyio
import attrs

from .._core.config import Configuration
from .._core.events import ResumedEvent, TaskEvent
from .._core.resumable_upload import IetfUpload
from .._core.secrets import redacted_url
from .._core.states import Stage
from .._core.tus import TusUpload
from .._core.upload import check_upload_status
from .._core.upload_protocol import UploadMachine
from .._exceptions import ResumableUploadError, TransferError
from .._io.resumable import send_resumable, terminate_upload
from .._io.upload import Answer
from .journaling import FlushFor, JournalTask
from .metering import recorder_of

if TYPE_CHECKING:
    import aiohttp

    from .record import TaskRecord
    from .upload_job import UploadJob

__all__ = ["ResumableStrategy", "machine_for"]

logger = logging.getLogger("bgtransfer")

_FAILING = frozenset({Stage.FAILING, Stage.FAILING_SUSPENDED})
"""Stages whose record the journal cannot take any more (it fails the task)."""

TERMINATE_TIMEOUT = 10.0
"""Seconds a cancelled upload's termination may take (without a request_timeout)."""


def machine_for(job: UploadJob) -> UploadMachine:
    """The machine of the job's next attempt: a new upload, or the one the
    server holds at the journalled upload URL (asked for its offset first: the
    offset is left unknown so that the answer always reaches ``on_offset``)."""
    fields = job.fields
    url = job.record.url
    size = fields.identity.size
    discovery, job.discovery = job.discovery, None
    if fields.protocol == "tus":
        machine = TusUpload.start(
            url,
            size,
            task_url=url,
            upload_url=fields.upload_url,
            metadata=(("filename", job.source.name),),
        )
        if discovery is not None and machine.phase == "discover":
            # protocol="auto" asked OPTIONS already: its answer, not a second one
            machine = machine.on_response(machine.next_request(), discovery)
        return machine
    assert fields.protocol == "ietf", fields.protocol
    return IetfUpload.start(
        url, size, task_url=url, method=fields.method, upload_url=fields.upload_url
    )


class Uploading(Protocol):
    """What the strategy uses of the engine's :class:`~.upload.Uploader`
    (declared here so that neither module imports the other)."""

    config: Configuration
    client: aiohttp.ClientSession | None
    journal_task: JournalTask | None
    flush_for: FlushFor | None
    publish: Callable[[TaskEvent], None]

    async def request_headers(self, record: TaskRecord) -> dict[str, str]: ...


@attrs.define
class ResumableStrategy:
    """One attempt of a resumable upload (see the module's text)."""

    uploader: Uploading

    async def send(
        self, job: UploadJob, headers: Mapping[str, str], on_sent: Callable[[int], None]
    ) -> Answer:
        uploader = self.uploader
        assert uploader.client is not None
        record = job.record
        fields = job.fields
        acknowledged = fields.upload_offset if fields.upload_url is not None else 0
        # Until the server says, progress shows what it acknowledged last.
        record.bytes_received = acknowledged
        record.throttle.restart(acknowledged)
        position = acknowledged
        located = False

        async def on_upload_url(url: str) -> None:
            # A new upload (the first, or one that expired): journalled and
            # committed before a byte of the file is sent to it.
            job.fields = attrs.evolve(job.fields, upload_url=url, upload_offset=0)
            if uploader.journal_task is not None and uploader.flush_for is not None:
                if record.stage not in _FAILING:
                    uploader.journal_task(record, urgent=True)
                await uploader.flush_for(record)  # (a failing journal: its error)

        async def on_offset(offset: int) -> None:
            nonlocal located
            if not located:
                located = True
                known = job.fields.upload_offset  # (0 for an upload just created)
                if offset < known:
                    raise ResumableUploadError(
                        f"the server moved the upload's offset backwards, from {known} "
                        f"to {offset} bytes it holds",
                        url=record.url,
                    )
                moved_to(offset)
                if job.announce_resume or offset > 0:
                    job.announce_resume = False
                    uploader.publish(
                        ResumedEvent(
                            task_id=record.id, offset=offset, expected_total=fields.identity.size
                        )
                    )
            job.fields = attrs.evolve(job.fields, upload_offset=offset)

        def moved_to(offset: int) -> None:
            nonlocal position
            if offset >= position:
                on_sent(offset - position)
            else:  # the server holds less than was sent: progress goes back
                record.bytes_received = offset
                record.throttle.restart(offset)
            position = offset

        def on_progress(offset: int) -> None:
            if located:
                moved_to(offset)

        try:
            response = await send_resumable(
                uploader.client,
                machine_for(job),
                job.source,
                headers=headers,
                on_upload_url=on_upload_url,
                on_offset=on_offset,
                on_progress=on_progress,
                request_timeout=uploader.config.request_timeout,
                body_cap=uploader.config.upload_reply_max_bytes,
                trace=recorder_of(record),
            )
        finally:
            if uploader.journal_task is not None and record.stage not in _FAILING:
                uploader.journal_task(record)  # the acknowledged offset, coarse
        status = response.status
        check_upload_status(
            record.url, status, "", {name.lower(): value for name, value in response.headers}
        )
        return Answer(status=status, headers=response.headers, body=response.body, truncated=False)

    async def terminate(self, job: UploadJob) -> None:
        """Remove the upload from the server (a cancel); a failure is logged."""
        uploader = self.uploader
        if job.fields.upload_url is None or uploader.client is None:
            return
        timeout = uploader.config.request_timeout or TERMINATE_TIMEOUT
        shown = redacted_url(job.fields.upload_url)
        try:
            with anyio.fail_after(timeout):
                headers = await uploader.request_headers(job.record)
                status = await terminate_upload(
                    uploader.client, machine_for(job), headers=headers, request_timeout=timeout
                )
        except (TransferError, TimeoutError) as exc:
            logger.warning("task %d: could not remove the upload %s: %s", job.record.id, shown, exc)
            return
        if status is not None and not (200 <= status < 300 or status in (404, 410)):
            logger.warning(
                "task %d: the server answered HTTP %d to removing the upload %s",
                job.record.id,
                status,
                shown,
            )
