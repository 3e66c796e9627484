"""The upload job: one task's upload state, behind the :class:`~.job.Job` protocol.

An :class:`UploadJob` holds what only an upload has: the journalled fields
(method, source file and its identity, ``reply_to``, and the upload URL and
offset slot of a resumable upload), the private file the answer's body is
written to before it moves to ``reply_to``, and the server's answer once it
accepted the file. The work is the engine's shared
:class:`~.upload.Uploader`, which sends each attempt's body through a
strategy (:class:`~.upload.BodyStrategy`: plain, or
:class:`~.upload_resumable.ResumableStrategy`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .._core.events import CancelledEvent, ErrorEvent, FinishedEvent, UploadReply
from .._core.journal import Phase, TaskEntry
from .._core.resume_data import ResumeData
from .._core.states import Stage, TaskState
from .._core.upload import UploadFields
from .._core.upload_protocol import UploadResponse
from .._exceptions import SourceChangedError, TransferError
from .._io.files import remove_quietly

if TYPE_CHECKING:
    from .auth import AuthState
    from .record import TaskRecord

__all__ = ["UploadJob", "UploadWork", "upload_job"]


class UploadWork(Protocol):
    """What an upload job asks of the engine's shared :class:`~.upload.Uploader`
    (declared here, below it, so that neither module imports the other)."""

    async def transfer(self, job: UploadJob) -> FinishedEvent:
        """The job's attempts, until the server accepted the whole file."""
        ...

    async def terminate(self, job: UploadJob) -> None:
        """Remove a cancelled resumable upload from the server (failures logged)."""
        ...

    def resume_data(self, job: UploadJob) -> ResumeData | None:
        """Signed resume data for a resumable upload the server holds, else None."""
        ...


_PHASES = {
    Stage.RUNNING: Phase.RUNNING,
    Stage.SUSPENDED: Phase.SUSPENDED,
    Stage.CANCELING: Phase.CANCELING,
    Stage.CANCELING_KEEPING: Phase.CANCELING,
    Stage.COMPLETED: Phase.ENDED,
}


class UploadJob:
    """One task's upload: its state here, its work done by ``uploader``."""

    __slots__ = (
        "abandoned",
        "announce_resume",
        "auth",
        "backing_off_until",
        "discovery",
        "fields",
        "finished",
        "may_have_partial",
        "partials_dir",
        "record",
        "reply",
        "uploader",
    )

    def __init__(
        self, record: TaskRecord, *, uploader: UploadWork, fields: UploadFields, partials_dir: Path
    ) -> None:
        self.record = record
        self.uploader = uploader
        self.fields = fields
        self.partials_dir = partials_dir  # the session's (reply_partial's directory)
        self.announce_resume = False  # send ResumedEvent(offset=0) before the next body
        self.backing_off_until: float | None = None  # time.time() the next attempt waits for
        self.auth: AuthState | None = None  # what credentials did (an Authenticator's)
        self.may_have_partial = False  # a reply partial may exist
        self.reply: UploadReply | None = None  # the server's answer, once it accepted the file
        self.finished: FinishedEvent | None = None  # set once the task's work is complete
        self.discovery: UploadResponse | None = None  # protocol="auto"'s OPTIONS answer
        self.abandoned = False  # failed for good: the server's upload is removed too

    @property
    def source(self) -> Path:
        return Path(self.fields.source)

    @property
    def reply_partial(self) -> Path:
        """The private file the answer's body goes to before it moves to
        ``reply_to``. Made when asked: most uploads have no ``reply_to``, and a
        session reopening 10,000 of them need not build 10,000 paths."""
        return self.partials_dir / f"{self.record.id}.reply"

    @property
    def reply_to(self) -> Path | None:
        return None if self.fields.reply_to is None else Path(self.fields.reply_to)

    # -- the Job protocol -----------------------------------------------------------

    async def run(self) -> FinishedEvent:
        return await self.uploader.transfer(self)

    def entry(self) -> TaskEntry:
        record = self.record
        phase = _PHASES[record.stage]
        return TaskEntry(
            id=record.id,
            url=record.url,
            destination=record.destination_key,
            description=record.description,
            headers=record.public_headers,
            phase=phase,
            offset=record.bytes_received,
            total=record.bytes_expected,
            outcome=record.terminal if phase is Phase.ENDED else None,
            upload=self.fields,
        )

    @property
    def data_file(self) -> None:
        return None  # nothing the entry vouches for is in a file of ours

    def paused(self) -> None:
        self.announce_resume = True

    def done_anyway(self) -> FinishedEvent | None:
        return self.finished  # (the reply is at reply_to: a cancel came too late)

    def cancel_outcome(self) -> CancelledEvent:
        data = None
        if self.record.stage is Stage.CANCELING_KEEPING:  # (a plain upload has none)
            data = self.uploader.resume_data(self)
        return CancelledEvent(task_id=self.record.id, resume_data=data)

    def error_outcome(self, error: TransferError) -> ErrorEvent:
        # A changed file can never complete the upload the server holds (and no
        # resume data continues it): it is removed like a cancelled one's.
        fields = self.fields
        self.abandoned = (
            isinstance(error, SourceChangedError) and fields.upload_offset < fields.identity.size
        )
        return ErrorEvent(task_id=self.record.id, error=error)

    @property
    def has_leftovers(self) -> bool:
        return self.may_have_partial or self.fields.upload_url is not None

    async def discard(self) -> None:
        try:
            cancelled = self.record.state is TaskState.CANCELING
            if (cancelled or self.abandoned) and self.fields.upload_url is not None:
                await self.uploader.terminate(self)  # the server's part of the upload
        finally:
            await remove_quietly(self.reply_partial)


def upload_job(record: TaskRecord) -> UploadJob:
    """The record's job, which is an upload."""
    job = record.job
    assert isinstance(job, UploadJob), f"task {record.id} is not an upload"
    return job
