"""The engine's metrics: each task's attempts (kept on its record) and the
session's tally, begun and ended by the download's and the upload's retry
loops. The values and the bookkeeping are the core's (``_core/metrics.py``);
this reads the clocks and knows the records."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from .._core.metrics import (
    AttemptRecorder,
    Outcome,
    SessionMetrics,
    SessionTally,
    TaskMetrics,
    TaskMetricsLog,
)
from .._exceptions import TransferError

if TYPE_CHECKING:
    from .record import TaskRecord

__all__ = ["Metering", "recorder_of"]


def recorder_of(record: TaskRecord) -> AttemptRecorder | None:
    """The task's running attempt's recorder (its requests' ``trace_request_ctx``)."""
    log = record.metrics
    return None if log is None else log.current


class Metering:
    """Begins and ends the attempts of an engine's tasks, and adds them up."""

    __slots__ = ("_tally",)

    def __init__(self) -> None:
        self._tally = SessionTally()

    @staticmethod
    def begin(record: TaskRecord) -> AttemptRecorder:
        """A new attempt of the task: its requests carry the recorder returned."""
        log = record.metrics
        if log is None:
            log = record.metrics = TaskMetricsLog()
        return log.begin(
            record.url, now=time.monotonic(), wall=time.time(), counted=record.bytes_moved
        )

    def end(self, record: TaskRecord, outcome: Outcome, error: BaseException | None = None) -> None:
        """The task's running attempt ended so (nothing if none is running)."""
        log = record.metrics
        if log is None or log.current is None:
            return
        attempt = log.end(
            now=time.monotonic(),
            wall=time.time(),
            counted=record.bytes_moved,
            outcome=outcome,
            error=None if error is None else type(error).__name__,
        )
        if attempt is not None:
            self._tally.fold(attempt, kind=record.kind)

    def left(self, record: TaskRecord) -> None:
        """In a retry loop's ``finally``: an attempt still running was left by
        the exception on its way out: ``failed`` for a transfer error (one the
        loop raised itself, such as answering a 401 again), else ``stopped``
        (cancelled). Nothing when the attempt has ended already."""
        error = sys.exc_info()[1]
        if isinstance(error, TransferError):
            self.end(record, "failed", error)
        else:
            self.end(record, "stopped")

    @staticmethod
    def task(record: TaskRecord) -> TaskMetrics:
        """The task's metrics now, its running attempt included."""
        log = record.metrics
        if log is None:
            log = TaskMetricsLog()
        return log.snapshot(record.id, counted=record.bytes_moved, kind=record.kind)

    def session(self) -> SessionMetrics:
        """The session's ended attempts, added up."""
        return self._tally.value()
