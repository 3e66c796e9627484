"""The I/O half of a retry, shared by every job's retry loop.

The decision is :func:`~bgtransfer._core.retry.decide_retry` (pure); once it
says "again, in so long", :func:`back_off` does what every job then does: hold
the origin if the server asked, publish the :class:`~bgtransfer.RetryEvent`,
log the retry (DEBUG), and sleep with the backing-off mark that
``bgtransfer status`` shows. A job's loop reads::

    decision = decide_retry(policy, error, failures, rng)
    if decision.give_up:
        raise
    await back_off(job, decision, attempt=failures + 1, error=error, ...)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import anyio

from .._core.events import RetryEvent, TaskEvent
from .._core.retry import RetryDecision
from .._exceptions import TransferError

if TYPE_CHECKING:
    from .record import TaskRecord

__all__ = ["Retrying", "back_off"]

logger = logging.getLogger("bgtransfer")


class Retrying(Protocol):
    """What :func:`back_off` needs of a job."""

    record: TaskRecord
    announce_resume: bool
    backing_off_until: float | None


async def back_off(
    job: Retrying,
    decision: RetryDecision,
    *,
    attempt: int,
    error: TransferError,
    from_byte: int,
    publish: Callable[[TaskEvent], None],
    hold_origin: Callable[[TaskRecord, float], None],
) -> None:
    """The pause before ``attempt`` (2 for the first retry) that ``decision``
    allowed after ``error``; ``from_byte``: where the next attempt starts (logged)."""
    delay = decision.delay
    assert delay is not None  # (a decision to give up raises in the loop)
    if decision.hold is not None:
        hold_origin(job.record, decision.hold)
    job.announce_resume = True
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "task %d: attempt %d in %.3f s, from byte %d, after: %s",
            job.record.id,
            attempt,
            delay,
            from_byte,
            error,
        )
    publish(RetryEvent(task_id=job.record.id, attempt=attempt, error=error, delay=delay))
    job.backing_off_until = time.time() + delay
    try:
        await anyio.sleep(delay)
    finally:
        job.backing_off_until = None
