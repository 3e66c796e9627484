"""The app's first run in ``bgtransfer demo --headless``: a process of its own.

``headless.py`` starts it (``bgtransfer demo --headless --app-run URL ...``,
a hidden option) and relays its lines. It opens the demo's background session,
starts all five downloads, pauses one (``cancel_with_resume_data()``) and resumes
it (``download_with_resume_data()``), stops one (``cancel()``) and starts that
file again from zero; then, once a progress event shows a file mid-way, it prints
:data:`MID_WAY` and waits to be killed (SIGKILL, by the parent) or, through the
daemon, leaves: the process exits while the daemon carries on. Every step is
taken on an event, never after a delay, so it happens mid-download whatever the
machine's speed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .._core.config import Configuration
from .._core.events import (
    CancelledEvent,
    ErrorEvent,
    EventsDeliveredEvent,
    EventsGapEvent,
    FinishedEvent,
    ProgressEvent,
    SessionEvent,
)
from .._core.request import DownloadRequest
from .._demo.model import DEMO_FILES, IDENTIFIER, DemoFile
from .._session import Session
from .._task import DownloadTask

__all__ = ["CONFIG", "MID_WAY", "PAUSED", "STOPPED", "THROTTLE", "first_run", "say"]
# Two connections to the one host: three of the five files wait for a slot.
# 128 KiB every 50 ms per connection (about 2.6 MB/s): each step still happens
# mid-download, and the run takes about a quarter of a minute.
THROTTLE = (131_072, 0.05)
# Offsets journaled every 0.25 s (not 1 s): the SIGKILL loses less.
CONFIG = Configuration(max_connections_per_host=2, progress_interval=0.2, checkpoint_interval=0.25)
PAUSED = DEMO_FILES[1]  # paused, then resumed from its resume data
STOPPED = DEMO_FILES[2]  # stopped, then started again from zero
MID_WAY = "the app stops here"  # the line after which the parent kills the app
_KILL_AFTER = 1_000_000  # bytes each of two running files has when the app is killed


def say(file: DemoFile, text: str) -> None:
    """One line about one file, as both runs print them."""
    print(f"  {file.label:<22} {text}", flush=True)


def _mid_way(event: ProgressEvent, file: DemoFile) -> bool:
    """A quarter of the file is in: far enough to show, far from the end."""
    return event.total_bytes_written >= file.size // 4


class _FirstRun:
    """The steps, each taken on the event that makes it due."""

    def __init__(self, session: Session, base_url: str, output: Path) -> None:
        self.session = session
        self.base_url = base_url
        self.output = output
        self.tasks: dict[int, DemoFile] = {}  # task id -> its file, while we follow it
        self.handles: dict[int, DownloadTask] = {}
        self.paused = False
        self.stopped = False
        self.mid_way: dict[int, bool] = {}  # running task id -> its last progress is mid-way

    async def start_all(self) -> None:
        requests = [
            DownloadRequest(self.base_url + f.path, self.output / f.name, description=f.label)
            for f in DEMO_FILES
        ]
        for task, file in zip(await self.session.download_many(requests), DEMO_FILES, strict=True):
            self.follow(task, file)
        print(f"started all {len(DEMO_FILES)} downloads, 2 connections at a time", flush=True)

    def follow(self, task: DownloadTask, file: DemoFile) -> None:
        self.tasks[task.id] = file
        self.handles[task.id] = task

    def unfollow(self, task_id: int) -> DownloadTask:
        """Stop following a task (its own CancelledEvent and late progress are
        not news); return its handle."""
        del self.tasks[task_id]
        self.mid_way.pop(task_id, None)
        return self.handles.pop(task_id)

    async def pause_and_resume(self, task_id: int) -> None:
        data = await self.unfollow(task_id).cancel_with_resume_data()
        if data is None:  # it ended meanwhile: nothing to pause
            say(PAUSED, "ended before the pause reached it")
            return
        say(PAUSED, f"paused at {data.offset:,} bytes (cancel_with_resume_data)")
        self.follow(await self.session.download_with_resume_data(data), PAUSED)
        say(PAUSED, f"resumed: asks the server for bytes={data.offset}- (with resume data)")

    async def stop_and_restart(self, task_id: int, offset: int) -> None:
        await self.unfollow(task_id).cancel()
        say(STOPPED, f"stopped at {offset:,} bytes (cancel: the partial file is gone)")
        again = await self.session.download(
            self.base_url + STOPPED.path, self.output / STOPPED.name, description=STOPPED.label
        )
        self.follow(again, STOPPED)
        say(STOPPED, "started again from zero")

    async def run(self) -> None:
        """Take the steps as the events come; return once a file is mid-way
        after both the pause and the stop."""
        async with self.session.events() as stream:
            await self.start_all()
            async for event in stream:
                if await self.step(event):
                    return

    async def step(self, event: SessionEvent) -> bool:
        """Act on one event; True once the app may be killed."""
        if isinstance(event, EventsDeliveredEvent | EventsGapEvent):
            return False
        file = self.tasks.get(event.task_id)
        if file is None:
            return False
        match event:
            case ProgressEvent() if file is PAUSED and not self.paused and _mid_way(event, file):
                self.paused = True
                await self.pause_and_resume(event.task_id)
            case ProgressEvent() if file is STOPPED and not self.stopped and _mid_way(event, file):
                self.stopped = True
                await self.stop_and_restart(event.task_id, event.total_bytes_written)
            case ProgressEvent(total_bytes_written=done, total_bytes_expected=total) if total:
                self.mid_way[event.task_id] = _KILL_AFTER <= done < total
                # Killed once both connections carry a file past a few
                # checkpoints, so the next process has partial files to continue.
                if self.paused and self.stopped and sum(self.mid_way.values()) >= 2:
                    for task_id, mid_way in self.mid_way.items():
                        if mid_way:
                            received = self.handles[task_id].bytes_received
                            say(self.tasks[task_id], f"{received:,} bytes in")
                    return True
            case FinishedEvent(total_bytes=size):
                say(file, f"finished: {size:,} bytes")
            case ErrorEvent(error=error):
                say(file, f"failed: {error}")
            case CancelledEvent():
                pass  # (the demo cancels nothing it still follows)
        if isinstance(event, FinishedEvent | ErrorEvent | CancelledEvent):
            self.unfollow(event.task_id)
            # (Never on a machine so fast that all ended first: then nothing is left.)
            return not self.tasks
        return False


async def first_run(base_url: str, state_dir: Path, output: Path, *, daemon: bool) -> int:
    """The first app run; returns 0 once the files are mid-way (through the
    daemon) or never returns (in-process: the parent kills it)."""
    async with Session(IDENTIFIER, state_dir=state_dir, config=CONFIG, daemon=daemon) as session:
        await _FirstRun(session, base_url, output).run()
        print(MID_WAY, flush=True)
        if not daemon:
            await asyncio.Event().wait()  # until SIGKILL: the session is never closed
    return 0
