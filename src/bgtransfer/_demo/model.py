"""The demo's five rows as plain state, driven by session events (no UI, no I/O)."""

from __future__ import annotations

import enum
import hashlib
from pathlib import Path

import attrs

from .._core.events import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
)

__all__ = ["DEMO_FILES", "IDENTIFIER", "DemoFile", "DemoModel", "Row", "RowState", "file_sha256"]

IDENTIFIER = "com.example.bgtransfer.demo"  # the demo's session, interactive or headless


@attrs.frozen
class DemoFile:
    """One file the demo offers: where the loopback server serves it, its size, its label."""

    path: str
    size: int
    label: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


# The classic sample app's five files: about 700 KB to about 29 MB.
DEMO_FILES = (
    DemoFile("/demo/networking-overview.pdf", 700_000, "Networking overview"),
    DemoFile("/demo/session-video-480p.mp4", 4_400_000, "Session video (480p)"),
    DemoFile("/demo/sample-code.zip", 9_100_000, "Sample code"),
    DemoFile("/demo/session-video-720p.mp4", 17_300_000, "Session video (720p)"),
    DemoFile("/demo/session-video-1080p.mp4", 29_000_000, "Session video (1080p)"),
)


class RowState(enum.Enum):
    """What a row shows in its state column."""

    IDLE = "Not started"
    RUNNING = "Downloading"
    PAUSED = "Paused"
    STOPPED = "Stopped"
    VERIFYING = "Verifying"
    READY = "Ready"
    FAILED = "Failed"


@attrs.define
class Row:
    """One file's row: what it shows and which task (or resume data) stands behind it."""

    file: DemoFile
    state: RowState = RowState.IDLE
    received: int = 0
    task_id: int | None = None
    resume_data: bytes | None = None
    note: str = ""

    @property
    def fraction(self) -> float:
        if self.state is RowState.READY:
            return 1.0
        return min(1.0, self.received / self.file.size) if self.file.size else 0.0

    @property
    def label(self) -> str:
        """The state column: "Waiting" for a started row with no byte yet (queued
        for one of the per-host connections, or waiting for the server)."""
        if self.state is RowState.RUNNING and self.received == 0:
            return "Waiting"
        return self.state.value

    @property
    def can_start(self) -> bool:
        return self.state in (RowState.IDLE, RowState.PAUSED, RowState.STOPPED, RowState.FAILED)

    def clear(self, state: RowState = RowState.IDLE, note: str = "") -> None:
        self.state = state
        self.received = 0
        self.task_id = None
        self.resume_data = None
        self.note = note


class DemoModel:
    """The five rows; :meth:`apply` folds a session event into them."""

    def __init__(self, files: tuple[DemoFile, ...] = DEMO_FILES) -> None:
        self.rows = [Row(file) for file in files]
        self.notified = False

    def row_of_task(self, task_id: int) -> Row | None:
        return next((row for row in self.rows if row.task_id == task_id), None)

    def row_of_path(self, path: str) -> Row | None:
        return next((row for row in self.rows if row.file.path == path), None)

    @property
    def all_ready(self) -> bool:
        return all(row.state is RowState.READY for row in self.rows)

    def take_all_done_notice(self) -> bool:
        """True once each time every row becomes Ready (the "all done" notice)."""
        if self.all_ready and not self.notified:
            self.notified = True
            return True
        if not self.all_ready:
            self.notified = False
        return False

    def apply(self, event: object) -> Row | None:
        """Fold one event in; return the row it changed (None: not one of ours).

        A ``FinishedEvent`` moves the row to ``VERIFYING``: the controller checks
        the file's SHA-256 and calls :meth:`verified`.
        """
        task_id = getattr(event, "task_id", None)
        row = self.row_of_task(task_id) if isinstance(task_id, int) else None
        if row is None:
            return None
        match event:
            case ProgressEvent(total_bytes_written=done):
                row.state = RowState.RUNNING
                row.received = done
                row.note = ""
            case ResumedEvent(offset=offset):
                row.state = RowState.RUNNING
                row.received = offset
                row.note = f"resumed at {offset:,} bytes"
            case RetryEvent(attempt=attempt, error=error):
                row.note = f"retry {attempt}: {error}"
            case FinishedEvent(total_bytes=size):
                row.state = RowState.VERIFYING
                row.received = size
                row.note = ""
            case ErrorEvent(error=error):
                row.clear(RowState.FAILED, str(error))
            case CancelledEvent():
                if row.state is not RowState.PAUSED:
                    row.clear(RowState.STOPPED)
            case _:
                return None
        return row

    def verified(self, row: Row, ok: bool) -> None:
        if ok:
            row.state = RowState.READY
            row.received = row.file.size
            row.task_id = None
            row.note = "sha256 verified"
        else:
            row.clear(RowState.FAILED, "sha256 mismatch")


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of the file at ``path``, read 1 MiB at a time; None when it is
    gone or cannot be read (not verified). Blocking: call it in a worker thread."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()
