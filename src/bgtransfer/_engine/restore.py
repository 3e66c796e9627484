"""Tasks that come back: the journal's, when a session reopens, and resume data's.

:class:`Restorer` turns what a previous process left (journal entries, the
partial files beside them, a destination a move was under way to) into
records, each with the state ``plan_reattach`` decides, finishing a move into
place that a killed process had started. For resume data handed back by the
application it finds the partial file (signed by this state directory, inside
a ``partials/`` of it) and takes it over with one rename. The engine registers
the records and schedules them; this only rebuilds them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import attrs

from .._core.config import Configuration, HeaderPairs
from .._core.events import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    ProgressEvent,
    TerminalEvent,
)
from .._core.journal import TaskEntry
from .._core.naming import Origin, origin_of, parse_url
from .._core.reattach import Action, Reattach, ending, plan_reattach
from .._core.resume_data import ResumeData, sign, verify
from .._core.segments import Segment
from .._core.states import MoveInput
from .._io.errors import file_error
from .._io.files import move_into_place, remove_quietly
from .._io.partials import Identity, adopt_partial, inspect_partials
from .._io.resume_key import locate_partial
from .._io.threads import run_blocking
from .admission import Admission
from .download_job import download_job
from .reattacher import Reattached
from .record import TaskRecord

__all__ = ["Restorer"]

Facts = tuple[TaskEntry, str, "int | None", "Identity | None"]
"""An entry, its partial file, that file's size (None: missing), its destination's identity."""


class Restorer:
    """Rebuilds records for one engine (``fsync``: moves into place are durable)."""

    def __init__(
        self,
        *,
        config: Configuration,
        admission: Admission,
        partials_dir: Path,
        resume_key: bytes,
        resume_root: Path | None,
        fsync: bool,
    ) -> None:
        self.config = config
        self._admission = admission
        self._partials_dir = partials_dir
        self._resume_key = resume_key
        self._resume_root = resume_root
        self._fsync = fsync

    # -- the journal's tasks ------------------------------------------------------

    async def reattach(self, entries: Sequence[TaskEntry]) -> list[Reattached]:
        """The download's reattach (the :class:`~.reattacher.Reattacher` protocol):
        what is on disk for each entry, then ``plan_reattach``'s decision."""
        back = []
        for facts in await self.inspect(entries):
            record, plan = await self.reattach_one(facts)
            back.append(
                Reattached(
                    record=record,
                    action=plan.action,
                    leftover=plan.remove_partial,
                    newly_ended=record.terminal is not None and facts[0].outcome is None,
                )
            )
        return back

    async def inspect(self, entries: Sequence[TaskEntry]) -> list[Facts]:
        """What is on disk for each entry (in a worker thread), after finishing any
        adoption of resume data's partial file a crash interrupted."""
        # As text: most entries (queued tasks) never need their partial's Path.
        directory = f"{self._partials_dir}{os.sep}"
        partials = [f"{directory}{entry.id}.part" for entry in entries]
        facts = await anyio.to_thread.run_sync(inspect_partials, entries, partials)
        return [
            (entry, partial, size, destination_id)
            for entry, partial, (size, destination_id) in zip(entries, partials, facts, strict=True)
        ]

    async def reattach_one(self, facts: Facts) -> tuple[TaskRecord, Reattach]:
        """The record of one entry, in the state the plan gives it. A task that
        ended (or whose move into place this finishes) comes back COMPLETED with
        its terminal event, marked ``replayed``."""
        entry, partial, size, destination_id = facts
        plan = plan_reattach(
            entry,
            partial=partial,
            partial_size=size,
            destination_exists=destination_id is not None,
            destination_id=destination_id,
        )
        record = self._admission.new_record(
            task_id=entry.id,
            url=entry.url,  # validated when the journal was read
            origin=origin_of(entry.url, self._admission.origins),
            destination=Path(entry.destination),  # (its partial file: the usual one)
            description=entry.description,
            headers=entry.headers,
            offset=plan.offset,
            validator=plan.validator,
            total=entry.total,
            encoding=entry.encoding,
            integrity=entry.integrity,
        )
        job = download_job(record)
        if plan.segments is not None:
            job.segments = [Segment(start=a, end=b, done=d) for a, b, d in plan.segments]
        record.segments_wanted = self.config.segments
        job.journaled_offset = entry.offset
        job.may_have_partial = True  # whatever the journal says, look when it ends
        job.announce_resume = plan.offset > 0 or plan.restarted
        outcome = self._signed(plan.outcome)  # the journal's are not handed out as stored
        inputs = plan.inputs  # through the table, as a live task goes there
        if plan.action is Action.MOVE:
            job.move_on(MoveInput.WHOLE)  # as the journal says: MOVING
            outcome = await self._finish_restored(record, plan.offset)
            inputs = ending(outcome)
        for event in inputs:
            record.advance(event)
        if outcome is None:
            if plan.offset > 0:  # a late subscriber's backlog says the bytes on disk
                record.last_progress = ProgressEvent(
                    task_id=record.id,
                    bytes_written=plan.offset,
                    total_bytes_written=plan.offset,
                    total_bytes_expected=record.bytes_expected,
                )
            return record, plan
        record.end_replayed(outcome)
        return record, plan

    @staticmethod
    async def remove_leftovers(records: Sequence[TaskRecord]) -> None:
        """Remove the partial files of tasks that ended (in one thread hop)."""
        await remove_quietly(*(download_job(record).partial for record in records))

    async def _finish_restored(self, record: TaskRecord, size: int) -> TerminalEvent:
        """The body was whole when the last process died: move it into place now."""
        try:
            await move_into_place(
                download_job(record).partial,
                record.destination,
                durable=self._fsync,
                recovering=True,
            )
        except OSError as exc:
            error = file_error(
                exc, url=record.url, action="move the file to", path=record.destination
            )
            return ErrorEvent(task_id=record.id, error=error)
        download_job(record).move_on(MoveInput.PLACED)
        return FinishedEvent(
            task_id=record.id,
            location=record.destination,
            total_bytes=size,
            length_verified=record.bytes_expected is not None,
        )

    def _signed(self, outcome: TerminalEvent | None) -> TerminalEvent | None:
        """``outcome`` with its resume data (if any) signed with this state's key."""
        if isinstance(outcome, CancelledEvent | ErrorEvent) and outcome.resume_data is not None:
            return attrs.evolve(outcome, resume_data=sign(outcome.resume_data, self._resume_key))
        return outcome

    # -- resume data ----------------------------------------------------------------

    async def locate(self, data: ResumeData) -> tuple[str, Origin, Path]:
        """The URL, its origin, and the partial file that ``data`` names, once its
        MAC and the file (a regular one, in a ``partials/`` of this state
        directory) are checked: :class:`InvalidResumeDataError` otherwise."""
        verify(data, self._resume_key)
        url, origin = parse_url(data.url, self._admission.origins)
        source = await run_blocking(
            functools.partial(
                locate_partial,
                data.partial,
                url=url,
                offset=data.offset,
                partials_dir=self._partials_dir,
                state_dir=self._resume_root,
            )
        )
        return url, origin, source

    def resumed_record(
        self,
        task_id: int,
        data: ResumeData,
        destination: str | os.PathLike[str] | None,
        *,
        url: str,
        origin: Origin,
        headers: HeaderPairs,
    ) -> TaskRecord:
        """The record of a new task continuing ``data`` (to ``destination``, or the
        one the data names)."""
        given = destination if destination is not None else data.destination
        return self._admission.new_record(
            task_id=task_id,
            url=url,
            origin=origin,
            destination=self._admission.resolve_destination(url, given, {}),
            description=data.description,
            headers=(*data.headers, *headers),
            offset=data.offset,
            validator=data.validator,
            total=data.total,
            encoding=data.encoding,
            integrity=data.integrity,
        )

    @staticmethod
    async def adopt_partial(record: TaskRecord, source: Path, offset: int) -> None:
        """Move the partial file ``source`` to the record's, with one rename (in a
        worker thread): of two tasks adopting it, exactly one gets it."""
        partial = download_job(record).partial
        await anyio.to_thread.run_sync(adopt_partial, source, partial, offset, record.url)
