"""What a kind of job does when a session reopens: the reattacher protocol.

Apart from :mod:`.job` because it speaks of records (:mod:`.record`), which
name their :class:`~.job.Job`: the job protocol stays below the record, and
this above both, so no two modules import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from .._core.journal import TaskEntry
from .._core.reattach import Action
from .record import TaskRecord

__all__ = ["Reattached", "Reattacher"]


@attrs.frozen
class Reattached:
    """A journal entry's task as its kind of job brings it back: ``record`` is
    in the stage the decision gave it (ended ones ``COMPLETED``, with their
    terminal event, marked ``replayed``)."""

    record: TaskRecord
    action: Action
    """What was decided: continue it, move its finished work into place, or end it."""
    leftover: bool = False
    """It ended and its files are of no more use: removed before any terminal
    event is delivered (``Reattacher.remove_leftovers``)."""
    newly_ended: bool = False
    """It ended here (the journal does not hold its end yet): journal it."""


class Reattacher(Protocol):
    """What the engine needs of a kind of job when a session reopens."""

    async def reattach(self, entries: Sequence[TaskEntry]) -> list[Reattached]:
        """Decide, per journal entry, what becomes of its task (given what is on
        disk), and rebuild its record accordingly."""
        ...

    async def remove_leftovers(self, records: Sequence[TaskRecord]) -> None:
        """Remove what the ended ``records`` left behind (``leftover``)."""
        ...
