"""What a reopened session does with each journal entry, given what is on disk.

:func:`plan_reattach` is the rule (sans-IO): a journal entry (:mod:`.journal`)
and the facts about its partial file and its destination in, a
:class:`Reattach` decision out. The journal's invariant (an entry never claims
more than the partial file holds) is what makes the bytes it trusts safe.
"""

from __future__ import annotations

import enum
from pathlib import Path

import attrs

from .._exceptions import LocalFileError
from .events import CancelledEvent, ErrorEvent, FinishedEvent, TerminalEvent
from .journal import FileIdentity, FinalWrite, Phase, TaskEntry, public_headers
from .resume_data import ResumeData
from .segments import Segment, contiguous_prefix
from .states import Input, Signal, TaskState

__all__ = ["Action", "Reattach", "ending", "plan_reattach", "plan_upload_reattach"]


class Action(enum.Enum):
    """What a reattaching session does with a journal entry."""

    CONTINUE = "continue"  # a live task: queue it (RUNNING) or keep it paused (SUSPENDED)
    MOVE = "move"  # the body is whole in the partial file: move it into place, finish
    END = "end"  # the task has ended: deliver ``outcome``


@attrs.frozen(kw_only=True)
class Reattach:
    """:func:`plan_reattach`'s answer for one entry."""

    action: Action
    state: TaskState = TaskState.RUNNING
    """For ``CONTINUE``: ``RUNNING`` or ``SUSPENDED``."""
    offset: int = 0
    """For ``CONTINUE`` and ``MOVE``: the bytes of the partial file to trust."""
    validator: str | None = None
    restarted: bool = False
    """For ``CONTINUE``: bytes were recorded but cannot be used; it starts over."""
    outcome: TerminalEvent | None = None
    """For ``END``: the terminal event to deliver."""
    segments: tuple[tuple[int, int, int], ...] | None = None
    """For ``CONTINUE``: the segments to carry on with (``offset`` is their sum)."""
    remove_partial: bool = False
    """The partial file is of no more use and must go."""

    @property
    def inputs(self) -> tuple[Input | Signal, ...]:
        """What brings a new task (``Stage.RUNNING``) to where this plan puts it,
        through the engine's table (``STAGES``): a restored task takes the same
        path a live one does. ``MOVE``: none yet (the move's result ends it,
        :func:`ending`)."""
        if self.action is Action.END:
            assert self.outcome is not None
            return ending(self.outcome)
        if self.action is Action.CONTINUE and self.state is TaskState.SUSPENDED:
            return (Input.SUSPEND,)
        return ()


def ending(outcome: TerminalEvent) -> tuple[Input | Signal, ...]:
    """The inputs that end a running task with ``outcome``, as a live one ends
    (a cancel first cancels, keeping its partial if the outcome has resume data)."""
    if isinstance(outcome, FinishedEvent):
        return (Input.FINISH,)
    if isinstance(outcome, ErrorEvent):
        return (Input.FAIL,)
    keeping = outcome.resume_data is not None
    return (Signal.CANCEL_KEEPING if keeping else Input.CANCEL, Input.CANCELLED)


def plan_reattach(
    entry: TaskEntry,
    *,
    partial: str,
    partial_size: int | None,
    destination_exists: bool,
    destination_id: FileIdentity | None = None,
) -> Reattach:
    """Decide what becomes of ``entry`` given its partial file (None: missing) and
    whether its destination exists (``destination_id``: which file is there, for
    a final write; None: none).

    * ``ENDED``: deliver its outcome; the partial goes unless it backs resume data
      (a cancel with resume data, or an error for want of space).
    * ``CANCELING``: the cancel completes now, with resume data if it was asked
      for and the partial file still holds the vouched-for bytes (unsigned: the
      engine signs what it hands out).
    * ``MOVING``: the partial there and whole: move it. The partial gone and the
      destination there: the move happened before the crash: finished. Both gone:
      the finished file was deleted: an error (never downloaded again).
    * ``MOVING`` before the final write (:class:`FinalWrite`): the partial there with every
      byte vouched for: move it. No partial file and another file at the
      destination than the one recorded: the step completed: finished.
      Otherwise the last write may not have happened: continue from the bytes
      vouched for, as a running task (the rest is fetched again).
    * ``RUNNING``/``SUSPENDED``: continue from the bytes vouched for, or from the
      file's length if that is shorter (the rest was lost with the machine); from
      zero without a partial file or a validator.
    """
    has_partial = partial_size is not None
    if entry.phase is Phase.ENDED:
        assert entry.outcome is not None
        keep = (
            isinstance(entry.outcome, CancelledEvent | ErrorEvent)
            and entry.outcome.resume_data is not None
        )
        return Reattach(
            action=Action.END, outcome=entry.outcome, remove_partial=has_partial and not keep
        )
    trusted = min(entry.offset, partial_size) if partial_size is not None else 0
    segmented = entry.segments is not None
    if segmented:
        # Segments write all over a file preallocated to the total: only that size
        # is consistent with them; their own counts are what is vouched for.
        whole = partial_size is not None and partial_size == entry.total
        segments = [Segment(start=a, end=b, done=d) for a, b, d in entry.segments or ()]
        trusted = contiguous_prefix(segments) if whole else 0
    if entry.phase is Phase.CANCELING:
        data = None
        if entry.keep_partial and entry.validator is not None and trusted > 0:
            data = ResumeData(
                url=entry.url,
                partial=partial,
                offset=trusted,
                validator=entry.validator,
                total=entry.total,
                encoding=entry.encoding,
                destination=entry.destination,
                description=entry.description,
                headers=public_headers(entry.headers),
                integrity=entry.integrity,
            )
        return Reattach(
            action=Action.END,
            outcome=CancelledEvent(task_id=entry.id, resume_data=data),
            remove_partial=has_partial and data is None,
        )
    if entry.phase is Phase.MOVING and entry.final_write is not None:
        decided = _reattach_final_write(entry, entry.final_write, partial_size, destination_id)
        if decided is not None:
            return decided
        # Falls through: continued like a running task.
    elif entry.phase is Phase.MOVING:
        if partial_size is not None and partial_size == entry.offset:
            return Reattach(action=Action.MOVE, offset=entry.offset, validator=entry.validator)
        if partial_size is None and destination_exists:
            outcome: TerminalEvent = FinishedEvent(
                task_id=entry.id,
                location=Path(entry.destination),
                total_bytes=entry.offset,
                length_verified=entry.total is not None,  # known once vouched for
            )
            return Reattach(action=Action.END, outcome=outcome)
        if partial_size is None:
            error = LocalFileError(
                f"the finished file was moved to {entry.destination} but is no longer there "
                "(deleted before the session recorded the finish); not downloading it again",
                url=entry.url,
                filename=entry.destination,
            )
            return Reattach(action=Action.END, outcome=ErrorEvent(task_id=entry.id, error=error))
        # A partial file of another length: not the whole body after all; continue it.
    state = TaskState.SUSPENDED if entry.phase is Phase.SUSPENDED else TaskState.RUNNING
    if segmented and entry.validator is not None and partial_size == entry.total:
        return Reattach(
            action=Action.CONTINUE,
            state=state,
            offset=entry.offset,
            validator=entry.validator,
            segments=entry.segments,
        )
    if segmented:
        trusted = 0  # the file is not the one the segments describe: start over
    usable = entry.validator is not None and trusted > 0
    return Reattach(
        action=Action.CONTINUE,
        state=state,
        offset=trusted if usable else 0,
        validator=entry.validator if usable else None,
        restarted=entry.offset > 0 and not usable,
    )


def _reattach_final_write(
    entry: TaskEntry,
    final_write: FinalWrite,
    partial_size: int | None,
    destination_id: FileIdentity | None,
) -> Reattach | None:
    """A ``MOVING`` entry written before the last write: MOVE, END, or None
    (continue it as a running task)."""
    if partial_size == entry.offset == final_write.size:
        # Every byte was written (and vouched for) before the step; only the
        # close and the rename were left.
        return Reattach(action=Action.MOVE, offset=entry.offset, validator=entry.validator)
    if (
        partial_size is None
        and destination_id is not None
        and destination_id != final_write.replaces
    ):
        outcome = FinishedEvent(
            task_id=entry.id,
            location=Path(entry.destination),
            total_bytes=final_write.size,
            length_verified=entry.total is not None,
        )
        return Reattach(action=Action.END, outcome=outcome)
    return None


def plan_upload_reattach(entry: TaskEntry) -> Reattach:
    """What a reopened session does with an upload's journal entry. A plain
    upload keeps nothing on the server between attempts, so a running one
    starts again from its first byte (``offset`` 0); a suspended one stays
    suspended; one being cancelled ends cancelled; an ended one delivers its
    terminal event. (The source file is checked before its next attempt.)"""
    if entry.phase is Phase.ENDED:
        return Reattach(action=Action.END, outcome=entry.outcome, remove_partial=True)
    if entry.phase is Phase.CANCELING:
        return Reattach(
            action=Action.END, outcome=CancelledEvent(task_id=entry.id), remove_partial=True
        )
    if entry.phase is Phase.SUSPENDED:
        return Reattach(action=Action.CONTINUE, state=TaskState.SUSPENDED)
    return Reattach(action=Action.CONTINUE, restarted=entry.offset > 0)
