"""``bgtransfer demo --headless`` after the app's first run: the new process
that reattaches (:func:`reattach`), and the closing table (:func:`report`)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from .._core.events import (
    CancelledEvent,
    ErrorEvent,
    EventsDeliveredEvent,
    EventsGapEvent,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    TaskEvent,
)
from .._core.states import TaskState
from .._demo.model import DEMO_FILES, IDENTIFIER, DemoFile, file_sha256
from .._session import Session
from .._task import DownloadTask
from .headless_app import CONFIG, say
from .options import EXIT_INTEGRITY, EXIT_OK

__all__ = ["reattach", "report"]

_FILES = {file.path: file for file in DEMO_FILES}


async def reattach(state_dir: Path, *, daemon: bool) -> dict[str, str]:
    """Open the demo's session again, in this process; follow every task it
    holds to its end. Returns each file's outcome by path (files whose task the
    first run saw end are not there: their event was delivered and
    acknowledged then)."""
    async with (
        Session(IDENTIFIER, state_dir=state_dir, config=CONFIG, daemon=daemon) as session,
        session.events() as events,
    ):
        reattached = _Reattached(session)
        if not reattached.pending:
            return {}
        async for event in events:
            if not isinstance(event, EventsDeliveredEvent | EventsGapEvent):
                reattached.step(event)
            if not reattached.pending:
                break
        return reattached.outcomes


class _Reattached:
    """The tasks found on reattaching, followed to their ends."""

    def __init__(self, session: Session) -> None:
        self.outcomes: dict[str, str] = {}
        self.pending: dict[int, DemoFile] = {}
        self.quarter: dict[int, int] = {}  # task id -> quarters of its file said
        tasks = [t for t in session.tasks() if isinstance(t, DownloadTask)]
        for task in tasks:
            file = _FILES.get(urlsplit(task.url).path)
            if file is not None:
                self.pending[task.id] = file
        print(f"reattached in process {os.getpid()}: {len(self.pending)} task(s) of {IDENTIFIER!r}")
        for task in tasks:
            if task.id not in self.pending:
                continue
            if task.state is TaskState.COMPLETED:  # its end was not acknowledged
                self.quarter[task.id] = 4  # (its replayed progress is old news)
                outcome = type(task.result).__name__
                say(self.pending[task.id], f"ended in the first run: {outcome}, delivered again")
            else:
                received = task.bytes_received  # what the journal vouches for
                self.quarter[task.id] = 4 * received // self.pending[task.id].size
                say(self.pending[task.id], f"{task.state.value}, {received:,} bytes kept")

    def step(self, event: TaskEvent) -> None:
        file = self.pending.get(event.task_id)
        if file is None:
            return
        match event:
            case ResumedEvent(offset=0):
                say(file, "starts again from zero")
            case ResumedEvent(offset=offset):
                say(file, f"continues at {offset:,} bytes (asks for bytes={offset}-)")
            case ProgressEvent(total_bytes_written=done, total_bytes_expected=total) if total:
                reached = 4 * done // total
                if self.quarter.get(event.task_id, 0) < reached < 4:
                    self.quarter[event.task_id] = reached
                    say(file, f"{25 * reached}%")
            case FinishedEvent(total_bytes=size):
                self.outcomes[file.path] = "finished"
                say(file, f"finished: {size:,} bytes")
            case ErrorEvent(error=error):
                self.outcomes[file.path] = "failed"
                say(file, f"failed: {error}")
            case CancelledEvent():  # the stop's, delivered again
                self.outcomes.setdefault(file.path, "cancelled")
        if isinstance(event, FinishedEvent | ErrorEvent | CancelledEvent):
            del self.pending[event.task_id]


def report(
    out: Path,
    outcomes: dict[str, str],
    requests: list[tuple[str, str | None]],
    *,
    kept: bool = True,
) -> int:
    """The table of the five files (each one's SHA-256 checked against the
    served content), then the server's GETs; the exit status. ``kept``: the
    files stay in ``out`` (else it is a temporary directory about to go)."""
    from .._demo.server import expected_sha256  # noqa: PLC0415 (the test server's import)

    expected = expected_sha256(DEMO_FILES)
    print(f"\n{'file':<28} {'size':>12}  {'state':<26} sha256")
    verified = 0
    for file in DEMO_FILES:
        digest = file_sha256(out / file.name)
        ok = digest == expected[file.path]
        verified += ok
        state = outcomes.get(file.path, "finished in the first run" if ok else "missing")
        check = "ok" if ok else ("missing" if digest is None else "MISMATCH")
        print(f"{file.name:<28} {file.size:>12,}  {state:<26} {check}")
    print("\nthe server's log: each GET of a file, and the range it asked for")
    for file in DEMO_FILES:
        asked = [rng or "whole file" for path, rng in requests if path == file.path]
        print(f"  {file.name:<28} {', '.join(asked)}")
    if kept:
        print(f"\nfiles in {out}")
    else:
        print("\nthe files were in a temporary directory, removed now (keep them: --output DIR)")
    if verified == len(DEMO_FILES):
        print("all files verified")
        return EXIT_OK
    print(f"{len(DEMO_FILES) - verified} file(s) not verified")
    return EXIT_INTEGRITY
