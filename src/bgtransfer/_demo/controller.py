"""The demo's I/O: the loopback server, the background session, the rows' tasks.

Every user action (start, pause, stop, start all, stop all, reset) is a method
here, so the Textual app only maps keys and clicks to them and draws the model.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from .._core.config import Configuration
from .._core.events import CancelledEvent, ErrorEvent, FinishedEvent, SessionEvent
from .._core.resume_data import InvalidResumeDataError, ResumeData
from .._core.states import TaskState
from .._engine.hub import EventStream
from .._session import Session
from .._task import DownloadTask
from ..testing import TestServer
from .model import DEMO_FILES, IDENTIFIER, DemoFile, DemoModel, Row, RowState, file_sha256
from .server import (
    THROTTLE,
    DemoServer,
    ensure_server,
    expected_sha256,
    serve_files,
    stop_server,
    write_json,
)

__all__ = ["IDENTIFIER", "STATE_FILE", "DemoController"]

STATE_FILE = "demo-app.json"  # in the state dir: the server's port and paused rows' resume data


def _read_state(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class DemoController:
    """The five rows' downloads in one background session, on a loopback server.

    ``open()`` starts the server (on the port an earlier run used, when free),
    opens the session and reattaches: rows take back their running tasks, their
    saved resume data, or their finished files (verified by SHA-256).
    ``on_change`` is called after any row changed.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        output: Path | None = None,
        files: tuple[DemoFile, ...] = DEMO_FILES,
        throttle: tuple[int, float] | None = THROTTLE,
        connections: int = 2,
        on_change: Callable[[], None] = lambda: None,
        daemon: bool = False,
        default_state_dir: bool = False,
    ) -> None:
        self.state_dir = state_dir
        self.model = DemoModel(files)
        self.on_change = on_change
        self._output = output
        self._throttle = throttle
        self._config = Configuration(max_connections_per_host=connections, progress_interval=0.2)
        self.daemon = daemon  # the daemon's session, the server a detached process
        # The per-user state dir is given to the session as None, so the daemon's
        # socket is where `bgtransfer status` and `daemon --stop` look for it.
        self._session_state_dir = None if default_state_dir else state_dir
        self._server: TestServer | None = None  # in-process only
        self._served: DemoServer | None = None
        self._sha256: dict[str, str] = {}
        self._session: Session | None = None
        self._tasks: dict[int, DownloadTask] = {}
        self._runner: asyncio.Task[None] | None = None
        self.moved = False  # the server could not get its earlier port back

    # -- lifecycle -------------------------------------------------------------------

    @property
    def server(self) -> TestServer:
        """The in-process server (not with ``daemon``: see :attr:`served`)."""
        assert self._server is not None, "the demo is not open, or its server is detached"
        return self._server

    @property
    def served(self) -> DemoServer:
        """Where the files are served: this process's server or the detached one."""
        assert self._served is not None, "the demo is not open"
        return self._served

    @property
    def session(self) -> Session:
        assert self._session is not None, "the demo is not open"
        return self._session

    @property
    def output(self) -> Path:
        if self._output is not None:
            return self._output
        return self.session.directory / "downloads"

    def destination(self, row: Row) -> Path:
        return self.output / row.file.name

    async def open(self) -> None:
        """Start the server, open the session, reattach the rows; raise what failed.

        One task holds the session from here to :meth:`close` (its context is
        entered and left by the same task) and feeds its events to the rows.
        """
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(opened))
        try:
            await asyncio.shield(opened)
        except BaseException:
            await self.close()
            raise

    async def _run(self, opened: asyncio.Future[None]) -> None:
        async with contextlib.AsyncExitStack() as stack:
            try:
                stream = await self._open(stack)
            except Exception as exc:
                opened.set_exception(exc)
                return
            opened.set_result(None)
            self.on_change()
            await self._pump(stream)

    async def _open(self, stack: contextlib.AsyncExitStack) -> EventStream[SessionEvent]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        saved = _read_state(self.state_dir / STATE_FILE)
        port = saved.get("port")
        port = port if isinstance(port, int) else 0
        files = [row.file for row in self.model.rows]
        self._sha256 = await asyncio.to_thread(expected_sha256, files)
        if self.daemon:
            self._served = await self._detached_server(port)
        else:
            try:
                self._server = await self._start_server(stack, port)
            except OSError:  # the earlier port is taken: rows restart on a new one
                self._server = await self._start_server(stack, 0)
            self._served = DemoServer(self._server.base_url)
        self.moved = port not in (0, self.served.port)
        self._session = await stack.enter_async_context(
            Session(
                IDENTIFIER,
                state_dir=self._session_state_dir,
                config=self._config,
                daemon=self.daemon,
            )
        )
        self.output.mkdir(parents=True, exist_ok=True)
        await self._reattach(saved)
        await self._save()
        return await stack.enter_async_context(self.session.events())

    async def _start_server(self, stack: contextlib.AsyncExitStack, port: int) -> TestServer:
        server = await stack.enter_async_context(TestServer(port=port))  # closed last
        serve_files(server, [row.file for row in self.model.rows], self._throttle)
        return server

    async def _detached_server(self, port: int) -> DemoServer:
        """The state dir's detached server, started when none runs (on ``port``
        when it is free)."""
        files = [row.file for row in self.model.rows]
        return await ensure_server(self.state_dir, files, port=port, throttle=self._throttle)

    async def close(self) -> None:
        """Leave the session (its running tasks stay journaled), then stop the server."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    def _ours(self, url: str) -> bool:
        return url.startswith(self.served.base_url + "/")

    async def _reattach(self, saved: dict[str, object]) -> None:
        for task in self.session.tasks():
            if not isinstance(task, DownloadTask):
                continue  # (the demo's session only ever downloads)
            row = self.model.row_of_path(urlsplit(task.url).path)
            if row is None or row.task_id is not None or not self._ours(task.url):
                if task.state is not TaskState.COMPLETED:
                    await task.cancel()
                await task.acknowledge()
                if row is not None and row.task_id is None:
                    row.note = "the server moved: start it again"
                continue
            if task.state is TaskState.COMPLETED:
                await task.acknowledge()  # its file, if it finished, is checked below
                continue
            if task.state is TaskState.SUSPENDED:
                task.resume()
            self._bind(row, task)
            row.received = task.bytes_received
        await self._reattach_paused(saved)
        for row in self.model.rows:
            if row.state is RowState.IDLE and await self._verify(row):
                self.model.verified(row, ok=True)

    async def _reattach_paused(self, saved: dict[str, object]) -> None:
        resume = saved.get("resume")
        for path, encoded in (resume if isinstance(resume, dict) else {}).items():
            row = self.model.row_of_path(path)
            if row is None or row.task_id is not None or not isinstance(encoded, str):
                continue
            try:
                data = ResumeData.from_bytes(base64.b64decode(encoded))
            except (ValueError, InvalidResumeDataError):
                continue
            if self._ours(data.url):
                row.state, row.received = RowState.PAUSED, data.offset
                row.resume_data = data.to_bytes()
            else:
                row.note = "the server moved: start it again"
                await self._discard(data)

    def _bind(self, row: Row, task: DownloadTask) -> None:
        self._tasks[task.id] = task
        row.task_id = task.id
        row.state = RowState.RUNNING
        row.note = ""

    async def _verify(self, row: Row, location: Path | None = None) -> bool:
        """Whether the row's file (at ``location``, default its destination) has
        the served bytes."""
        path = self.destination(row) if location is None else location
        digest = await asyncio.to_thread(file_sha256, path)
        return digest == self._sha256[row.file.path]

    async def _discard(self, data: ResumeData) -> None:
        """Drop resume data for good: take its partial file over and cancel (which
        removes it), so no partial outlives the row."""
        with contextlib.suppress(InvalidResumeDataError):
            task = await self.session.download_with_resume_data(data)
            await task.cancel()

    async def _save(self) -> None:
        resume = {
            row.file.path: base64.b64encode(row.resume_data).decode("ascii")
            for row in self.model.rows
            if row.resume_data is not None
        }
        value = {"port": self.served.port, "resume": resume}
        await asyncio.to_thread(write_json, self.state_dir / STATE_FILE, value)

    async def _pump(self, stream: EventStream[SessionEvent]) -> None:
        async for event in stream:
            row = self.model.apply(event)
            if row is None:
                continue
            if isinstance(event, FinishedEvent | ErrorEvent | CancelledEvent):
                self._tasks.pop(event.task_id, None)
            if isinstance(event, FinishedEvent):
                self.on_change()  # "Verifying"
                ok = await self._verify(row, event.location)
                if row.task_id == event.task_id:  # not reset or restarted meanwhile
                    self.model.verified(row, ok=ok)
            self.on_change()

    # -- actions ----------------------------------------------------------------------

    async def toggle(self, index: int) -> None:
        """Start the row, or pause it when it runs (the start/pause button)."""
        row = self.model.rows[index]
        if row.state is RowState.RUNNING:
            await self.pause(index)
        else:
            await self.start(index)

    async def start(self, index: int) -> None:
        row = self.model.rows[index]
        if not row.can_start:
            return
        task: DownloadTask | None = None
        if self.daemon:  # a reset, or --stop-server, may have stopped it
            self._served = await self._detached_server(self.served.port)
        if row.resume_data is not None:
            data, row.resume_data = row.resume_data, None
            with contextlib.suppress(InvalidResumeDataError):
                task = await self.session.download_with_resume_data(data)
        if task is None:
            row.received = 0
            task = await self.session.download(
                self.served.url(row.file.path), self.destination(row), description=row.file.label
            )
        self._bind(row, task)
        await self._save()
        self.on_change()

    async def pause(self, index: int) -> None:
        """``cancel_with_resume_data()``: the row keeps its bytes and shows Paused."""
        row = self.model.rows[index]
        task = self._detach(row)
        if task is None:
            return
        row.state = RowState.PAUSED
        self.on_change()
        data = await task.cancel_with_resume_data()
        finished = await self._finished_meanwhile(row, task)
        if not finished and data is None:
            row.clear(RowState.STOPPED, "nothing to resume from")
        elif not finished and data is not None:
            row.resume_data, row.received = data.to_bytes(), data.offset
            row.note = f"paused at {data.offset:,} bytes"
        await self._save()
        self.on_change()

    async def stop(self, index: int) -> None:
        """Cancel the row's download and forget its bytes."""
        row = self.model.rows[index]
        task = self._detach(row)
        if task is not None:
            await task.cancel()
            if await self._finished_meanwhile(row, task):
                self.on_change()
                return
        elif row.resume_data is not None:
            await self._discard(ResumeData.from_bytes(row.resume_data))
        elif row.state is not RowState.PAUSED:
            return
        row.clear(RowState.STOPPED)
        await self._save()
        self.on_change()

    async def _finished_meanwhile(self, row: Row, task: DownloadTask) -> bool:
        """When the task finished before a pause or stop reached it: verify its
        file, show the row Ready, and say so."""
        result = task.result
        if not isinstance(result, FinishedEvent):
            return False
        row.task_id = task.id
        self.model.apply(result)
        self.model.verified(row, ok=await self._verify(row, result.location))
        return True

    def _detach(self, row: Row) -> DownloadTask | None:
        """The row's running task, no longer linked to the row (its late events
        are then ignored)."""
        if row.task_id is None:
            return None
        task = self._tasks.pop(row.task_id, None)
        row.task_id = None
        return task

    async def start_all(self) -> None:
        for index in range(len(self.model.rows)):
            await self.start(index)

    async def stop_all(self) -> None:
        for index, row in enumerate(self.model.rows):
            if row.state in (RowState.RUNNING, RowState.PAUSED):
                await self.stop(index)

    async def reset(self) -> None:
        """Stop everything, delete the downloaded files, show every row as new."""
        await self.stop_all()
        for row in self.model.rows:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(self.destination(row).unlink)
            row.clear()
        self.model.notified = False
        if self.daemon:  # nothing runs now: the detached server goes too
            await stop_server(self.state_dir)
        await self._save()
        self.on_change()
