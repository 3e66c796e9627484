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
draft's ``DELETE``), through the engine's :class:`~.terminations.Terminator`,
which journals it first; its failure is logged, not the task's.
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
from .._core.terminations import PendingTermination
from .._core.tus import TusUpload
from .._core.upload import check_upload_status
from .._core.upload_protocol import UploadMachine
from .._exceptions import ResumableUploadError, TransferError
from .._io.pacing import Pacer
from .._io.resumable import send_resumable
from .._io.upload import Answer
from .journaling import FlushFor, JournalTask
from .metering import recorder_of
from .terminations import Terminator

if TYPE_CHECKING:
    import aiohttp

    from .record import TaskRecord
    from .upload_job import UploadJob

__all__ = ["ResumableStrategy", "machine_for"]

logger = logging.getLogger("bgtransfer")

_FAILING = frozenset({Stage.FAILING, Stage.FAILING_SUSPENDED})
"""Stages whose record the journal cannot take any more (it fails the task)."""


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
            capabilities=fields.tus,  # (journalled: OPTIONS is asked once per upload)
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
    pacer: Pacer | None
    terminator: Terminator
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

        async def on_upload_url(machine: UploadMachine) -> None:
            # A new upload (the first, or one that expired): journalled and
            # committed before a byte of the file is sent to it, with what a
            # tus server said of itself.
            tus = machine.capabilities if isinstance(machine, TusUpload) else None
            job.fields = attrs.evolve(
                job.fields, upload_url=machine.upload_url, upload_offset=0, tus=tus
            )
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
                identity=fields.identity,
                headers=headers,
                on_upload_url=on_upload_url,
                on_offset=on_offset,
                on_progress=on_progress,
                request_timeout=uploader.config.request_timeout,
                body_cap=uploader.config.upload_reply_max_bytes,
                pacer=uploader.pacer,
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
        """Remove the upload from the server (a cancel, a changed file): durably
        (see :mod:`.terminations`); a failure is logged."""
        uploader = self.uploader
        fields = job.fields
        if fields.upload_url is None or machine_for(job).cancel_request() is None:
            return  # nothing there, or a tus server that offers no termination
        record = job.record
        pending = PendingTermination(
            task_id=record.id,
            url=record.url,
            upload_url=fields.upload_url,
            protocol=fields.protocol,
            headers=record.public_headers,
        )
        try:
            with anyio.fail_after(uploader.terminator.timeout):
                headers = await uploader.request_headers(record)
        except (TransferError, TimeoutError) as exc:
            shown = redacted_url(fields.upload_url)
            logger.warning("task %d: could not remove the upload %s: %s", record.id, shown, exc)
            return
        await uploader.terminator.terminate(pending, headers)
