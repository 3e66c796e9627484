"""The daemon's client: a :class:`~bgtransfer._engine.backend.TaskBackend` over
the daemon's socket (``startup.py`` connects, launching the daemon on demand,
and attaches it).

The client keeps a snapshot of every task, current from the attachment's event
stream, so the sync queries (``task``, ``tasks``, ``statistics``) and ``wait``
never touch the socket (the daemon sends a terminal event once its journal holds
it); commands are HTTP requests carrying the lease, over a few connections of
their own (thousands of concurrent ``download()`` calls queue in the client
instead of overflowing the daemon's listen backlog). The daemon's engine
acknowledges explicitly; the client applies the application's acknowledgement
rule (``"auto"``: it acknowledges what it hands out).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp
import anyio
import anyio.lowlevel
import attrs

from .._core.config import Configuration, HeaderPairs
from .._core.events import (
    EventsDeliveredEvent,
    EventsGapEvent,
    ProgressEvent,
    SessionEvent,
    TaskEvent,
    is_terminal,
)
from .._core.request import DownloadRequest
from .._core.resume_data import ResumeData
from .._core.states import Input, TaskState, transition
from .._core.supervisor import SupervisorStatistics
from .._core.upload import UploadRequest
from .._core.wire import (
    decode_event,
    decode_statistics,
    encode_config,
    encode_request,
    snapshot_fields,
)
from .._core.wire_upload import encode_upload
from .._engine.backend import TaskSnapshot
from .._engine.backlog import check_cursor
from .._engine.hub import EventHub, EventStream, snapshot_progress
from .._exceptions import DaemonError, SessionClosedError
from .connection import BASE, HEADERS, command_session, daemon_error
from .protocol import LEASE_HEADER
from .streams import CursorStream
from .submissions import Submissions

__all__ = ["DaemonBackend"]

CLOSE_BOUND: Final = 10.0  # seconds closing may wait for the answers of commands sent


class DaemonBackend:
    """One attached session of the daemon, behind the backend protocol."""

    def __init__(self, http: aiohttp.ClientSession, identifier: str, config: Configuration) -> None:
        self._http = http  # the long-lived streams: the attachment, cursor streams
        self._commands = command_session(http)
        self._identifier = identifier
        self._config = config
        self._prefix = f"{BASE}/v1/sessions/{identifier}"
        self._headers = dict(HEADERS)
        self._directory = Path()
        self._snapshots: dict[int, TaskSnapshot] = {}
        self._progress: dict[int, ProgressEvent] = {}
        self._replayed: set[int] = set()
        self._statistics = SupervisorStatistics(
            active=0, queued=0, active_by_origin={}, queued_by_origin={}
        )
        auto = config.acknowledge == "auto"
        self._hub = EventHub(on_delivered=self._delivered if auto else None)
        self._response: aiohttp.ClientResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: list[asyncio.Task[Any]] = []  # sync commands sent, in order
        self._closed = False
        self._cursor: int | None = None  # the newest logged event's number seen
        self._streams: set[CursorStream] = set()  # streams opened with a cursor
        self._changes: dict[int, asyncio.Event] = {}  # per waited task: set when it changes
        self._acks: list[int] | None = None  # delivered, acknowledged with the next batch
        self._submissions = Submissions(self._submit_each)  # download() calls, coalesced

    @property
    def directory(self) -> Path:
        return self._directory

    # -- attachment -------------------------------------------------------------------

    async def _attach(self) -> None:
        body = {"config": encode_config(self._config)}
        response = await self._http.post(self._prefix + "/attach", json=body, headers=self._headers)
        if response.status != 200:
            try:
                answer = await response.json(content_type=None)
            finally:
                response.release()
            raise daemon_error(answer)
        self._response = response
        while True:
            line = await self._line(response)
            if line is None:
                raise SessionClosedError(f"the daemon closed session {self._identifier!r}")
            kind = line.get("type")
            if kind == "attached":
                self._headers[LEASE_HEADER] = str(line["lease"])
                self._directory = Path(line["directory"])
                self._statistics = decode_statistics(line["statistics"])
            elif kind == "task":
                snapshot = TaskSnapshot(**snapshot_fields(line["task"]))
                self._snapshots[snapshot.id] = snapshot
                progress = line.get("progress")
                if progress is not None:
                    self._progress[snapshot.id] = ProgressEvent(
                        task_id=snapshot.id,
                        bytes_written=progress[0],
                        total_bytes_written=progress[0],
                        total_bytes_expected=progress[1],
                    )
                if line.get("replayed"):
                    self._replayed.add(snapshot.id)
            elif kind == "ready":
                self._cursor = _optional_int(line.get("cursor"))
                break
        self._reader = asyncio.create_task(self._read(response))

    @staticmethod
    async def _line(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
        raw = await response.content.readline()
        if not raw:
            return None
        document = json.loads(raw)
        if not isinstance(document, dict):
            raise DaemonError("the daemon sent a line that is not a JSON object")
        return document

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        """The live events: each updates the snapshots, then reaches the streams."""
        try:
            while (line := await self._line(response)) is not None:
                if line.get("type") != "event":
                    continue
                event = self._apply(line)
                if isinstance(event, EventsDeliveredEvent | EventsGapEvent):
                    continue
                self._hub.publish(event)
        except (aiohttp.ClientError, OSError, ValueError):
            pass  # the daemon went away: as a closed session
        finally:
            self._closed = True
            self._hub.close()
            for stream in list(self._streams):
                stream.end()
            for change in self._changes.values():
                change.set()  # waiters find the session closed
            self._changes.clear()

    def _apply(self, line: dict[str, Any]) -> SessionEvent:
        """An event line of the daemon: the snapshots, statistics and cursor
        it carries are taken in; the event is returned."""
        event = decode_event(line["event"])
        if "task" in line:
            snapshot = TaskSnapshot(**snapshot_fields(line["task"]))
            self._update(snapshot, vouched=is_terminal(event))
        if "statistics" in line:
            self._statistics = decode_statistics(line["statistics"])
        seq = getattr(event, "seq", None)
        if seq is not None and (self._cursor is None or seq > self._cursor):
            self._cursor = seq
        if isinstance(event, ProgressEvent):
            self._progress[event.task_id] = event
            current = self._snapshots.get(event.task_id)
            if current is not None and current.terminal is None:
                self._snapshots[event.task_id] = attrs.evolve(
                    current,
                    bytes_received=event.total_bytes_written,
                    bytes_expected=event.total_bytes_expected,
                )
        return event

    def _update(self, snapshot: TaskSnapshot, *, vouched: bool = True) -> TaskSnapshot:
        """Take a newer snapshot in. Not ``vouched``: it rode with something else
        than the task's end (another event, a suspend's answer); an end it shows
        may not be journaled yet, so it waits for the terminal event's line."""
        current = self._snapshots.get(snapshot.id)
        if current is not None and current.terminal is not None and snapshot.terminal is None:
            return current  # an older answer than the stream's: the end stays
        unvouched_end = not vouched and snapshot.terminal is not None
        if unvouched_end and current is not None and current.terminal is None:
            snapshot = attrs.evolve(snapshot, state=current.state, terminal=None)
        self._snapshots[snapshot.id] = snapshot
        self._changed(snapshot.id)
        return snapshot

    def _changed(self, task_id: int) -> None:
        change = self._changes.pop(task_id, None)
        if change is not None:
            change.set()

    async def _close(self) -> None:
        self._send_acknowledgements()  # before closing: they are the app's
        self._closed = True
        try:
            pending, self._pending = self._pending, []
            if pending:  # commands already sent (acknowledgements...) get their answer
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_BOUND):
                    await asyncio.gather(*pending, return_exceptions=True)
            for task in pending:
                task.cancel()
            if self._response is not None and LEASE_HEADER in self._headers:
                with (
                    anyio.CancelScope(shield=True),
                    anyio.move_on_after(CLOSE_BOUND),
                    contextlib.suppress(Exception),
                ):
                    await self._call_direct("/detach", None)
            for stream in list(self._streams):
                await stream.aclose()
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            if self._response is not None:
                self._response.close()  # the lease ends with the connection
        finally:
            self._hub.close()
            await self._commands.close()
            await self._http.close()

    # -- requests ---------------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._closed:
            raise SessionClosedError(f"session {self._identifier!r} is closed")
        pending, self._pending = self._pending, []
        if pending:  # the sync commands sent before go first
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            async with self._commands.post(
                self._prefix + path, json=body or {}, headers=self._headers
            ) as response:
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise SessionClosedError(
                f"session {self._identifier!r}: the daemon's connection was lost ({exc})"
            ) from exc
        if response.status != 200:
            raise daemon_error(answer)
        if "statistics" in answer:
            self._statistics = decode_statistics(answer["statistics"])
        return dict(answer)

    def _call_nowait(self, path: str, body: dict[str, Any] | None = None) -> None:
        """A sync command: sent now, its answer not awaited (the next async
        request waits for it, so commands reach the daemon in order)."""
        if self._closed:
            raise SessionClosedError(f"session {self._identifier!r} is closed")
        task = asyncio.get_running_loop().create_task(self._quietly(path, body))
        self._pending.append(task)

    async def _quietly(self, path: str, body: dict[str, Any] | None) -> None:
        with contextlib.suppress(Exception):
            answer = await self._call_direct(path, body)
            if "statistics" in answer:
                self._statistics = decode_statistics(answer["statistics"])
            if "task" in answer:
                self._update(TaskSnapshot(**snapshot_fields(answer["task"])), vouched=False)

    async def _call_direct(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        async with self._commands.post(
            self._prefix + path, json=body or {}, headers=self._headers
        ) as response:
            answer = await response.json(content_type=None)
        if response.status != 200:
            raise daemon_error(answer)
        return dict(answer)

    def _task_answer(self, answer: dict[str, Any]) -> TaskSnapshot:
        return self._update(TaskSnapshot(**snapshot_fields(answer["task"])))

    # -- commands ---------------------------------------------------------------------

    async def submit(self, request: DownloadRequest) -> TaskSnapshot:
        if self._closed:
            raise SessionClosedError(f"session {self._identifier!r} is closed")
        task = await self._submissions.submit(encode_request(_absolute(request)))
        return self._update(TaskSnapshot(**snapshot_fields(task)))

    async def _submit_each(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Concurrent ``download()`` calls in one request (``submissions.py``)."""
        answer = await self._call("/tasks", {"each": requests})
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(requests):
            raise DaemonError(f"the daemon answered {len(requests)} submissions with {answer!r}")
        return results

    async def submit_many(self, requests: Sequence[DownloadRequest]) -> list[TaskSnapshot]:
        body = {"requests": [encode_request(_absolute(r)) for r in requests]}
        answer = await self._call("/tasks", body)
        return [self._update(TaskSnapshot(**snapshot_fields(t))) for t in answer["tasks"]]

    async def submit_upload(self, request: UploadRequest) -> TaskSnapshot:
        reply_to = None if request.reply_to is None else _absolute_path(request.reply_to)
        request = attrs.evolve(request, source=_absolute_path(request.source), reply_to=reply_to)
        return self._task_answer(await self._call("/uploads", {"upload": encode_upload(request)}))

    async def submit_resumed(
        self,
        data: ResumeData,
        destination: str | os.PathLike[str] | None,
        *,
        headers: HeaderPairs,
    ) -> TaskSnapshot:
        body = {
            "resume_data": data.to_bytes().decode("utf-8"),
            "destination": None if destination is None else _absolute_path(destination),
            "headers": [list(pair) for pair in headers],
        }
        return self._task_answer(await self._call("/resumed", body))

    async def cancel(
        self, task_id: int, *, resume_data: bool = False, wait: bool = True
    ) -> TaskSnapshot:
        self.task(task_id)  # KeyError for an id the session never had
        answer = await self._call(
            f"/tasks/{task_id}/cancel", {"resume_data": resume_data, "wait": wait}
        )
        snapshot = self._task_answer(answer)
        if wait and resume_data and self._config.acknowledge == "auto":
            self._delivered(task_id)  # the caller gets the outcome
        return snapshot

    def suspend(self, task_id: int) -> TaskSnapshot:
        return self._sync_command(task_id, Input.SUSPEND, "suspend")

    def resume(self, task_id: int) -> TaskSnapshot:
        return self._sync_command(task_id, Input.RESUME, "resume")

    def _sync_command(self, task_id: int, what: Input, path: str) -> TaskSnapshot:
        snapshot = self.task(task_id)
        self._call_nowait(f"/tasks/{task_id}/{path}")
        # The state table says the new state; the daemon's answer confirms it.
        snapshot = attrs.evolve(snapshot, state=transition(snapshot.state, what))
        self._snapshots[task_id] = snapshot
        self._changed(task_id)  # a wait() stops at a suspension
        return snapshot

    async def acknowledge(self, task_ids: Sequence[int]) -> None:
        await self._call("/acknowledge", {"ids": list(task_ids)})

    def _delivered(self, task_id: int) -> None:
        """This task's terminal event was handed out (``acknowledge="auto"``):
        acknowledged with the others handed out in the same turn of the loop, in
        one request (as in-process, where it is one lazy journal entry)."""
        if self._closed:
            return
        if self._acks is None:
            self._acks = []
            asyncio.get_running_loop().call_soon(self._send_acknowledgements)
        self._acks.append(task_id)

    def _send_acknowledgements(self) -> None:
        ids, self._acks = self._acks, None
        if ids and not self._closed:
            self._call_nowait("/acknowledge", {"ids": ids})

    def invalidate(self) -> None:
        self._call_nowait("/invalidate")

    # -- waiting and events -------------------------------------------------------------

    async def wait(
        self, task_id: int, *, hand_out: bool = True, stop_when_suspended: bool = True
    ) -> TaskSnapshot:
        """On the snapshot the attachment keeps current: no request per wait."""
        self.task(task_id)  # KeyError for an id the session never had
        pending, self._pending = self._pending, []
        if pending:  # the answers of suspend()/resume() sent before: the state they settle
            await asyncio.gather(*pending, return_exceptions=True)
        snapshot = self.task(task_id)
        while snapshot.terminal is None:
            if self._closed:
                raise SessionClosedError(
                    f"the session closed before task {task_id} ({snapshot.url}) ended"
                )
            if stop_when_suspended and snapshot.state is TaskState.SUSPENDED:
                return snapshot
            change = self._changes.get(task_id)
            if change is None:
                change = self._changes[task_id] = asyncio.Event()
            await change.wait()
            snapshot = self.task(task_id)
        if hand_out and self._config.acknowledge == "auto":
            self._delivered(task_id)
        else:
            await anyio.lowlevel.checkpoint()  # a wait is always a checkpoint
        return snapshot

    def subscribe(
        self, task_id: int | None, *, follow: bool = True, since: int | None = None
    ) -> EventStream[Any]:
        if since is not None:
            check_cursor(since, task_id, persistent=True)  # as in-process: refused at once
            if self._closed:
                raise SessionClosedError(f"session {self._identifier!r} is closed")
            stream = CursorStream(
                self._hub,
                feed=lambda into: self._feed(into, since, follow),
                on_finish=self._streams.discard,
            )
            self._streams.add(stream)
            return stream
        if task_id is not None:
            self.task(task_id)  # KeyError for an id the session never had
        ids = [task_id] if task_id is not None else list(self._snapshots)
        backlog: list[TaskEvent] = []
        replayed = 0
        for tid in ids:
            backlog.extend(snapshot_progress(self._progress.get(tid)))
            terminal = self._snapshots[tid].terminal
            if terminal is not None:
                backlog.append(terminal)
                replayed += tid in self._replayed
        return self._hub.subscribe(
            task_id, backlog, replayed=replayed, follow=follow, cursor=self._cursor
        )

    async def _feed(self, stream: CursorStream, since: int, follow: bool) -> None:
        """A cursor stream's events: the daemon's answer to ``POST .../events``."""
        error: BaseException | None = None
        body = {"since": since, "follow": follow}
        try:
            async with self._http.post(
                self._prefix + "/events", json=body, headers=self._headers
            ) as response:
                if response.status != 200:
                    error = daemon_error(await response.json(content_type=None))
                    return
                while (line := await self._line(response)) is not None:
                    if line.get("type") == "event":
                        stream.push(self._apply(line))
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = SessionClosedError(
                f"session {self._identifier!r}: the daemon's connection was lost ({exc})"
            )
        finally:
            stream.end(error)

    async def wait_events_delivered(self) -> None:
        await self._call("/events-delivered")

    # -- queries --------------------------------------------------------------------------

    def task(self, task_id: int) -> TaskSnapshot:
        return self._snapshots[task_id]

    def tasks(self) -> list[TaskSnapshot]:
        return [self._snapshots[tid] for tid in sorted(self._snapshots)]

    def statistics(self) -> SupervisorStatistics:
        return self._statistics

    async def flush(self) -> None:
        await self._call("/flush")


def _optional_int(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise DaemonError(f"the daemon sent {value!r} where a number belongs")


def _absolute_path(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(path)


def _absolute(request: DownloadRequest) -> DownloadRequest:
    """The daemon's working directory is not ours: destinations go absolute."""
    destination = request.destination
    if destination is None or os.path.isabs(destination):
        return request
    return attrs.evolve(request, destination=os.path.abspath(destination))
