"""The daemon's client: a :class:`~bgtransfer._engine.backend.TaskBackend` over
the daemon's socket (``startup.py`` makes it and opens it).

The client keeps a snapshot of every task (``snapshots.py``), current from the
attachment's event stream (``attachment.py``), so the sync queries (``task``,
``tasks``, ``statistics``) and ``wait`` never touch the socket (the daemon sends
a terminal event once its journal holds it); commands are HTTP requests carrying
the lease, over a few connections of their own. The daemon's engine
acknowledges explicitly; the client applies the application's acknowledgement
rule (``"auto"``: it acknowledges what it hands out).

**The daemon comes back.** When the daemon goes away under an open session, the
attachment reaches it again (launching one) and attaches again; streams, waits
and commands go on. A command whose answer was lost is sent again, except a
submission: the tasks it made before the daemon died are found in the new
attachment (``Snapshots.claim``) and only the others are sent again
(docs/design.md, "The daemon client comes back").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from .._core.auth import BasicAuth, BearerToken
from .._core.config import Configuration, HeaderPairs
from .._core.metrics import SessionMetrics, TaskMetrics
from .._core.request import DownloadRequest
from .._core.resume_data import ResumeData
from .._core.states import Input, TaskState, transition
from .._core.supervisor import SupervisorStatistics
from .._core.upload import UploadRequest
from .._core.wire import encode_request, encode_snapshot
from .._core.wire_metrics import decode_session_metrics, decode_task_metrics
from .._core.wire_upload import encode_upload
from .._engine.backend import TaskSnapshot
from .._engine.backlog import check_cursor
from .._engine.hub import EventHub, EventStream, snapshot_progress
from .._exceptions import DaemonError
from .answering import Answerer
from .attachment import Attachment, Unanswered
from .snapshots import Snapshots, SubmissionKey, task_of
from .streams import CursorStream, feed
from .submissions import Submissions

__all__ = ["DaemonBackend"]

CLOSE_BOUND: Final = 10.0  # seconds closing may wait for the answers of commands sent


class DaemonBackend:
    """One attached session of the daemon, behind the backend protocol."""

    def __init__(
        self, identifier: str, config: Configuration, *, state_dir: Path, default: bool
    ) -> None:
        self._identifier = identifier
        self._config = config
        self._book = Snapshots()
        auto = config.acknowledge == "auto"
        self._hub = EventHub(on_delivered=self._delivered if auto else None)
        self._streams: set[CursorStream] = set()  # streams opened with a cursor
        auth = config.auth
        self._answerer = (  # the app's provider answers the daemon's challenges
            None if auth is None or isinstance(auth, BasicAuth | BearerToken) else Answerer(auth)
        )
        self._link = Attachment(
            identifier,
            config,
            state_dir=state_dir,
            default=default,
            book=self._book,
            hub=self._hub,
            on_end=self._end_streams,
            on_question=None if self._answerer is None else self._answerer.question,
        )
        if self._answerer is not None:
            self._answerer.bind(self._link)
        self._pending: list[asyncio.Task[Any]] = []  # sync commands sent, in order
        self._pending_acks: list[asyncio.Task[Any]] = []  # acknowledgements sent
        self._acks: list[int] | None = None  # delivered, acknowledged with the next batch
        self._submissions = Submissions(self._submit_each)  # download() calls, coalesced
        self._upload_submissions = Submissions(  # and upload() calls
            functools.partial(self._submit_each, path="/uploads")
        )

    @property
    def directory(self) -> Path:
        return self._link.directory

    @property
    def _closed(self) -> bool:
        return self._link.closed

    async def _open(self) -> None:
        await self._link.open()

    def _end_streams(self, error: BaseException | None) -> None:
        for stream in list(self._streams):
            stream.end(error)

    async def _close(self) -> None:
        self._send_acknowledgements()  # before closing: they are the app's
        link = self._link
        link.closed = True
        try:
            if self._answerer is not None:
                await self._answerer.close()
            pending = self._pending + self._pending_acks
            self._pending, self._pending_acks = [], []
            if pending:  # commands already sent (acknowledgements...) get their answer
                await _finish(asyncio.gather(*pending, return_exceptions=True), CLOSE_BOUND)
            for task in pending:
                task.cancel()
            if link.leased and link.lost is None:
                with contextlib.suppress(Exception):
                    await _finish(link.call_once("/detach", None), CLOSE_BOUND)
            await link.close()  # (its reader stopped: the lease ends with its connection)
            for stream in list(self._streams):
                stream.stop()
        finally:
            self._hub.close()
            self._book.wake_all()
            await link.close_sessions()

    # -- requests ---------------------------------------------------------------------

    async def _call(
        self, path: str, body: dict[str, Any] | None = None, *, resend: bool = True
    ) -> dict[str, Any]:
        if self._closed:
            raise self._link.closed_error()
        await self._settle_pending()  # the sync commands sent before go first
        return await self._link.send(path, body, resend=resend)

    async def _settle_pending(self, *, acknowledgements: bool = True) -> None:
        """Wait for the answers of the sync commands sent so far (``suspend()``,
        ``resume()``, ``invalidate()``; and, unless told not to, the
        acknowledgements)."""
        await _settle(self._pending)
        if acknowledgements:
            await _settle(self._pending_acks)

    def _call_nowait(
        self, path: str, body: dict[str, Any] | None = None, *, ack: bool = False
    ) -> None:
        """A sync command: sent now, its answer not awaited (the next async
        request waits for it, so commands reach the daemon in order)."""
        if self._closed:
            raise self._link.closed_error()
        task = asyncio.get_running_loop().create_task(self._quietly(path, body))
        (self._pending_acks if ack else self._pending).append(task)

    async def _quietly(self, path: str, body: dict[str, Any] | None) -> None:
        with contextlib.suppress(Exception):
            answer = await self._link.send(path, body)
            if "task" in answer:
                self._book.update(task_of(answer), vouched=False)

    def _task_answer(self, answer: dict[str, Any]) -> TaskSnapshot:
        return self._book.update(task_of(answer))

    # -- commands ---------------------------------------------------------------------

    async def submit(self, request: DownloadRequest) -> TaskSnapshot:
        if self._closed:
            raise self._link.closed_error()
        task = await self._submissions.submit(encode_request(_absolute(request)))
        return self._book.own(self._book.update(task_of({"task": task})))

    async def _submit_each(
        self, requests: list[dict[str, Any]], *, path: str = "/tasks"
    ) -> list[dict[str, Any]]:
        """Concurrent ``download()`` (or, at ``/uploads``, ``upload()``) calls in
        one request (``submissions.py``); after a lost answer, the ones the
        daemon made are claimed and the others sent again."""
        key = _key if path == "/tasks" else _upload_key
        results: list[dict[str, Any]] = [{} for _ in requests]
        left = list(range(len(requests)))
        while left:
            try:
                answer = await self._call(path, {"each": [requests[i] for i in left]}, resend=False)
            except Unanswered as lost:
                claimed = self._book.claim([key(requests[i]) for i in left], lost.mark)
                for index, snapshot in zip(left, claimed, strict=True):
                    if snapshot is not None:
                        results[index] = {"task": encode_snapshot(snapshot)}
                left = [i for i, snapshot in zip(left, claimed, strict=True) if snapshot is None]
                continue
            answered = answer.get("results")
            if not isinstance(answered, list) or len(answered) != len(left):
                raise DaemonError(f"the daemon answered {len(left)} submissions with {answer!r}")
            for index, result in zip(left, answered, strict=True):
                results[index] = result
            break
        return results

    async def submit_many(self, requests: Sequence[DownloadRequest]) -> list[TaskSnapshot]:
        encoded = [encode_request(_absolute(r)) for r in requests]
        return await self._submit_batch("/tasks", {"requests": encoded}, [_key(r) for r in encoded])

    async def _submit_batch(
        self, path: str, body: dict[str, Any], keys: list[SubmissionKey]
    ) -> list[TaskSnapshot]:
        """A ``download_many``/``upload_many`` request (all or none: one journal
        write); after a lost answer, its tasks are claimed or it is sent again."""
        while True:
            try:
                answer = await self._call(path, body, resend=False)
            except Unanswered as lost:
                claimed = self._book.claim(keys, lost.mark)
                made = [snapshot for snapshot in claimed if snapshot is not None]
                if len(made) == len(keys):
                    return made
                if made:
                    call = "download_many" if path == "/tasks" else "upload_many"
                    raise DaemonError(
                        f"session {self._identifier!r}: the daemon's connection was lost during "
                        f"{call}(); {len(made)} of its {len(keys)} tasks exist "
                        f"(ids {[s.id for s in made]})"
                    ) from lost
                continue
            book = self._book
            return [book.own(book.update(task_of({"task": t}))) for t in answer["tasks"]]

    async def submit_upload(self, request: UploadRequest) -> TaskSnapshot:
        if self._closed:
            raise self._link.closed_error()
        task = await self._upload_submissions.submit(encode_upload(_absolute_upload(request)))
        return self._book.own(self._book.update(task_of({"task": task})))

    async def submit_uploads(self, requests: Sequence[UploadRequest]) -> list[TaskSnapshot]:
        encoded = [encode_upload(_absolute_upload(r)) for r in requests]
        keys = [_upload_key(r) for r in encoded]
        return await self._submit_batch("/uploads", {"uploads": encoded}, keys)

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
        while True:
            try:
                answer = await self._call("/resumed", body, resend=False)
                return self._book.own(self._task_answer(answer))
            except Unanswered as lost:
                key = (data.url, None, _absolute_path(destination) if destination else None)
                (claimed,) = self._book.claim([key], lost.mark)
                if claimed is not None:
                    return claimed

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
        self._book.tasks[task_id] = snapshot
        self._book.changed(task_id)  # a wait() stops at a suspension
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
            self._call_nowait("/acknowledge", {"ids": ids, "auto": True}, ack=True)

    def invalidate(self) -> None:
        self._call_nowait("/invalidate")
        self._link.invalidated = True  # the daemon ends the session: no reconnection

    # -- waiting and events -------------------------------------------------------------

    async def wait(
        self, task_id: int, *, hand_out: bool = True, stop_when_suspended: bool = True
    ) -> TaskSnapshot:
        """On the snapshot the attachment keeps current: no request per wait."""
        self.task(task_id)  # KeyError for an id the session never had
        # The answers of suspend()/resume(): the state they settle. Not the
        # acknowledgements (they settle nothing a wait reads): a loop of waits
        # would otherwise wait for a round trip each, the previous one's.
        await self._settle_pending(acknowledgements=False)
        snapshot = self.task(task_id)
        while snapshot.terminal is None:
            if self._closed:
                raise self._link.closed_error(f" before task {task_id} ({snapshot.url}) ended")
            if stop_when_suspended and snapshot.state is TaskState.SUSPENDED:
                return snapshot
            await self._book.wait_changed(task_id)
            snapshot = self.task(task_id)
        if hand_out and self._config.acknowledge == "auto":
            self._delivered(task_id)
        else:
            await asyncio.sleep(0)  # a wait is always a checkpoint
        return snapshot

    def subscribe(
        self, task_id: int | None, *, follow: bool = True, since: int | None = None
    ) -> EventStream[Any]:
        if since is not None:
            check_cursor(since, task_id, persistent=True)  # as in-process: refused at once
            if self._closed:
                raise self._link.closed_error()
            stream = CursorStream(
                self._hub,
                feed=lambda into: feed(self._link, self._book, into, since, follow),
                on_finish=self._streams.discard,
            )
            self._streams.add(stream)
            return stream
        if task_id is not None:
            self.task(task_id)  # KeyError for an id the session never had
        book = self._book
        ids = [task_id] if task_id is not None else list(book.tasks)
        backlog: list[Any] = []
        replayed = 0
        for tid in ids:
            backlog.extend(snapshot_progress(book.progress.get(tid)))
            terminal = book.tasks[tid].terminal
            if terminal is not None:
                backlog.append(terminal)
                replayed += tid in book.replayed
        return self._hub.subscribe(
            task_id, backlog, replayed=replayed, follow=follow, cursor=book.cursor
        )

    async def wait_events_delivered(self) -> None:
        await self._call("/events-delivered")

    # -- queries --------------------------------------------------------------------------

    def task(self, task_id: int) -> TaskSnapshot:
        return self._book.tasks[task_id]

    def tasks(self) -> list[TaskSnapshot]:
        tasks = self._book.tasks
        return [tasks[tid] for tid in sorted(tasks)]

    def statistics(self) -> SupervisorStatistics:
        return self._book.statistics

    async def flush(self) -> None:
        await self._call("/flush")

    async def task_metrics(self, task_id: int) -> TaskMetrics:
        answer = await self._call(f"/tasks/{task_id}/metrics")
        return decode_task_metrics(answer.get("metrics"))

    async def metrics(self) -> SessionMetrics:
        return decode_session_metrics((await self._call("/metrics")).get("metrics"))


def _key(request: dict[str, Any]) -> SubmissionKey:
    """What identifies the task an encoded request makes."""
    return (request["url"], request.get("description"), request.get("destination"))


def _upload_key(upload: dict[str, Any]) -> SubmissionKey:
    """What identifies the task an encoded upload makes (its snapshot's
    destination is its ``reply_to``, else its file)."""
    return (upload["url"], upload.get("description"), upload.get("reply_to") or upload["source"])


def _absolute_upload(request: UploadRequest) -> UploadRequest:
    """The daemon's working directory is not ours: the paths go absolute."""
    reply_to = None if request.reply_to is None else _absolute_path(request.reply_to)
    return attrs.evolve(request, file=_absolute_path(request.file), reply_to=reply_to)


def _absolute_path(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(path)


def _absolute(request: DownloadRequest) -> DownloadRequest:
    """The daemon's working directory is not ours: destinations go absolute."""
    destination = request.destination
    if destination is None or os.path.isabs(destination):
        return request
    return attrs.evolve(request, destination=os.path.abspath(destination))


async def _finish(awaitable: Awaitable[Any], bound: float) -> None:
    """Wait up to ``bound`` seconds for ``awaitable`` (cancelled beyond), whatever
    cancels the caller meanwhile: a cancel reaches the caller once it is done
    (anyio's shielded ``move_on_after``). Why not anyio here: this is the only
    use of anyio's event loop in the daemon's client, and the first use imports
    its asyncio backend, ~15 ms of every client process's close."""
    task = asyncio.ensure_future(awaitable)
    deadline = asyncio.get_running_loop().time() + bound
    cancelled = False
    while not task.done():
        try:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                task.cancel()
                await asyncio.wait([task])  # (its cancellation takes a turn)
            else:
                await asyncio.wait([task], timeout=remaining)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    if not task.cancelled():
        task.result()  # its error, if any, is the caller's


async def _settle(pending: list[asyncio.Task[Any]]) -> None:
    """Wait for the commands in ``pending``; the ones done leave the list. A
    cancelled caller leaves them running and in the list, for the next call to
    wait for: ``asyncio.gather`` would cancel them with the caller, and a
    command not yet written would be lost."""
    if not pending:
        return
    try:
        await asyncio.wait(list(pending))
    finally:
        pending[:] = [task for task in pending if not task.done()]
