"""The download job: one task's download state, behind the :class:`~.job.Job` protocol.

A :class:`DownloadJob` holds everything only a download has: its partial
file, the validator and coding the server promised, what earlier answers
said about the length (for a close-delimited body's end), the retry budget's
mark, its segments, resume data's partial file being adopted, and where its move into
place stands. The work itself is the engine's shared :class:`Downloader`
(bound once the engine has one); the task's own record keeps what every job
has (request, state, progress, terminal event).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .._core.digests import Integrity
from .._core.events import CancelledEvent, ErrorEvent, FinishedEvent
from .._core.journal import FinalWrite, Phase, TaskEntry, public_headers
from .._core.resume_data import ResumeData
from .._core.retry import ResumeMark
from .._core.segments import Segment, contiguous_prefix
from .._core.states import MoveInput, MovePhase, Stage, move_to
from .._exceptions import TransferError
from .._io.digest import RunningDigest
from .._io.files import remove_quietly

if TYPE_CHECKING:
    from .auth import AuthState
    from .record import TaskRecord

__all__ = ["DownloadJob", "DownloadWork", "download_job"]


class DownloadWork(Protocol):
    """What a download job asks of the engine's shared
    :class:`~.download.Downloader` (declared here, below it, so that neither
    module imports the other)."""

    async def transfer(self, job: DownloadJob) -> FinishedEvent:
        """The job's attempts, until its file is at its destination."""
        ...

    def cancel_outcome(self, job: DownloadJob) -> CancelledEvent:
        """What the cancelled job ends with (resume data if asked for and safe)."""
        ...

    def error_outcome(self, job: DownloadJob, error: TransferError) -> ErrorEvent:
        """What ``error`` ends the job with (resume data when it keeps its work)."""
        ...


_PHASES = {
    Stage.RUNNING: Phase.RUNNING,
    Stage.SUSPENDED: Phase.SUSPENDED,
    Stage.CANCELING: Phase.CANCELING,
    Stage.CANCELING_KEEPING: Phase.CANCELING,  # keep_partial says which
    Stage.COMPLETED: Phase.ENDED,
}


_NOTHING_KEPT = ResumeMark()
"""A new task's mark (a frozen value: every queued task shares it)."""


class DownloadJob:
    """One task's download: its state here, its work done by ``downloader``."""

    __slots__ = (
        "_partial",
        "_partials_dir",
        "active_time",
        "adopting",
        "announce_resume",
        "announced",
        "auth",
        "backing_off_until",
        "body_start",
        "downloader",
        "encoding",
        "final_write",
        "integrity",
        "journaled_offset",
        "last_end",
        "may_have_partial",
        "move",
        "record",
        "restarted",
        "resume_mark",
        "running",
        "segments",
        "served_digests",
        "too_slow",
        "validator",
    )

    def __init__(
        self,
        record: TaskRecord,
        *,
        partial: Path | None = None,
        partials_dir: Path | None = None,
        offset: int = 0,
        validator: str | None = None,
        total: int | None = None,
        encoding: str = "identity",
        integrity: Integrity | None = None,
    ) -> None:
        self.record = record
        self.integrity = integrity  # checksum= and expected_size=, checked before the move
        # Digests the server sent for the whole file (Repr-Digest, or a 200's
        # Content-Digest), by algorithm; checked before the move too.
        self.served_digests: dict[str, tuple[bytes, str]] = {}
        # The digests of the partial file as its bytes were written (this process).
        self.running: RunningDigest | None = None
        self.downloader: DownloadWork | None = None  # bound by the engine
        # The partial file (None: ``partials_dir/<id>.part``, made when first
        # asked: a queued task may never need it).
        self._partial = partial
        self._partials_dir = partials_dir
        self.validator = validator  # for If-Range; None: cannot resume safely
        self.encoding = encoding
        # A complete length some response announced, with its validator: a
        # close-delimited body that disagrees with it was cut (judge_unframed_end).
        self.announced: tuple[str, int] | None = (
            None if validator is None or total is None else (validator, total)
        )
        self.last_end: tuple[str, int] | None = None  # the last close-delimited end
        self.body_start = offset  # where the current attempt's body began
        self.announce_resume = offset > 0  # send ResumedEvent before the next body
        # What renews the retry budget (RetryPolicy): bytes past resume_mark, by an
        # attempt that did not start over (restarted) nor trickle (too_slow).
        self.resume_mark = (
            _NOTHING_KEPT if validator is None and offset == 0 else ResumeMark(validator, offset)
        )
        self.restarted = False
        self.too_slow = False
        self.active_time = 0.0  # seconds spent running, for resource_timeout
        self.move = MovePhase.TRANSFERRING  # how far the move into place has got
        self.final_write: FinalWrite | None = None  # MOVING: the last write moves it
        self.may_have_partial = offset > 0  # False: no partial file was ever made
        self.journaled_offset = 0  # the offset the journal's newest entry vouches for
        self.segments: list[Segment] | None = None  # set once the file is split
        self.adopting: str | None = None  # resume data's partial, until moved into ours
        self.backing_off_until: float | None = None  # time.time() the next attempt waits for
        self.auth: AuthState | None = None  # what credentials did (an Authenticator's)

    @property
    def partial(self) -> Path:
        """The partial file the body is written to."""
        partial = self._partial
        if partial is None:
            assert self._partials_dir is not None, "a partial file or its directory is given"
            partial = self._partial = self._partials_dir / f"{self.record.id}.part"
        return partial

    # -- the Job protocol -----------------------------------------------------------

    async def run(self) -> FinishedEvent:
        self.may_have_partial = True
        assert self.downloader is not None, "a download job runs once bound"
        return await self.downloader.transfer(self)

    def entry(self) -> TaskEntry:
        record = self.record
        moving = self.move is not MovePhase.TRANSFERRING and record.terminal is None
        phase = Phase.MOVING if moving else _PHASES[record.stage]
        entry = TaskEntry(
            id=record.id,
            url=record.url,
            destination=record.destination_key,
            description=record.description,
            headers=record.public_headers,
            phase=phase,
            keep_partial=record.stage is Stage.CANCELING_KEEPING,
            offset=record.bytes_received,
            total=record.bytes_expected,
            validator=self.validator,
            encoding=self.encoding,
            outcome=record.terminal if phase is Phase.ENDED else None,
            segments=None
            if self.segments is None
            else tuple((seg.start, seg.end, seg.done) for seg in self.segments),
            adopting=self.adopting,
            final_write=self.final_write if phase is Phase.MOVING else None,
            integrity=self.integrity,
        )
        self.journaled_offset = entry.offset
        return entry

    @property
    def data_file(self) -> Path:
        return self.partial

    def paused(self) -> None:
        self.announce_resume = True

    def done_anyway(self) -> FinishedEvent | None:
        return self.finished() if self.move is MovePhase.MOVED else None

    def cancel_outcome(self) -> CancelledEvent:
        assert self.downloader is not None
        return self.downloader.cancel_outcome(self)

    def error_outcome(self, error: TransferError) -> ErrorEvent:
        assert self.downloader is not None
        return self.downloader.error_outcome(self, error)

    @property
    def has_leftovers(self) -> bool:
        return self.may_have_partial

    async def discard(self) -> None:
        await remove_quietly(self.partial)

    # -- the download's own ---------------------------------------------------------

    def move_on(self, event: MoveInput) -> None:
        """Advance the move phase (by the table: ``MOVE_PHASES``)."""
        self.move = move_to(self.move, event)

    @property
    def moved(self) -> bool:
        """The file is at its destination: the task has finished."""
        return self.move is MovePhase.MOVED

    def finished(self) -> FinishedEvent:
        record = self.record
        return FinishedEvent(
            task_id=record.id,
            location=record.destination,
            total_bytes=record.bytes_received,
            length_verified=record.bytes_expected is not None,
        )

    def resume_data(self) -> ResumeData | None:
        """What ``cancel_with_resume_data()`` hands out, or None if resuming is unsafe."""
        record = self.record
        offset = (
            record.bytes_received if self.segments is None else contiguous_prefix(self.segments)
        )
        if self.validator is None or offset == 0:
            return None
        return ResumeData(
            url=record.url,
            partial=str(self.partial),
            offset=offset,
            validator=self.validator,
            total=record.bytes_expected,
            encoding=self.encoding,
            destination=record.destination_key,
            description=record.description,
            headers=public_headers(tuple(record.headers.items()), record.secrets),
            integrity=self.integrity,
        )


def download_job(record: TaskRecord) -> DownloadJob:
    """The record's job, which is a download (for the download's own modules)."""
    job = record.job
    assert isinstance(job, DownloadJob), f"task {record.id} is not a download"
    return job
