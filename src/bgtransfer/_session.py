"""``Session``: the application's front door to the engine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType

from ._core.config import Configuration, normalize_headers
from ._core.events import SessionEvent
from ._core.fetch import FetchResponse
from ._core.metrics import SessionMetrics
from ._core.naming import validate_identifier
from ._core.request import DownloadRequest, request_batch
from ._core.resume_data import ResumeData, resume_data_of
from ._core.supervisor import SupervisorStatistics
from ._core.upload import UploadRequest
from ._daemon.startup import check_daemon_session, open_daemon_backend
from ._engine.backend import DataTasks, GivenBackend, TaskBackend
from ._engine.hub import EventStream
from ._engine.startup import open_backend
from ._exceptions import SessionClosedError, SessionError
from ._state_dir import STATE_DIR_ENV, default_state_dir
from ._task import DownloadTask, UploadTask, task_handle

__all__ = ["STATE_DIR_ENV", "Session", "default_state_dir"]


class Session:
    """A named (background) or ephemeral download session; use with ``async with``.

    ``Session("com.example.bg")`` is a background session. It keeps its files
    under ``state_dir/<identifier>/``: the journal (``journal.sqlite3``), the lock
    file, partial files in ``partials/`` and, for downloads given no destination,
    the finished files in ``downloads/``; ``state_dir`` itself holds the key its
    sessions sign resume data with (``.resume-data.key``). Every task is recorded
    in the journal; leaving the ``async with`` block (normally, by an exception or
    by cancellation) journals where the running tasks stand instead of cancelling them, and
    the next ``Session`` with the same identifier, in this process or a new one,
    finds them in :meth:`tasks` and continues them. Only one open ``Session`` may
    own an identifier at a time (:class:`~bgtransfer.SessionInUseError`).

    ``Session()`` is ephemeral: no journal; its directory is a fresh temporary
    one; leaving the block cancels the tasks that have not ended (each ends with a
    ``CancelledEvent``) and removes their partials. Files downloaded without a
    destination stay (``FinishedEvent.location`` says where).

    :meth:`finish_tasks_and_invalidate` and :meth:`invalidate_and_cancel` are the
    explicit ways to end a session's tasks for good.
    """

    def __init__(
        self,
        identifier: str | None = None,
        *,
        config: Configuration | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        daemon: bool = False,
    ) -> None:
        if identifier is not None:
            validate_identifier(identifier)
        if config is None:
            config = Configuration()
        elif not isinstance(config, Configuration):
            raise TypeError(
                f"config must be a bgtransfer.Configuration, not {type(config).__name__}"
            )
        if state_dir is not None and not isinstance(state_dir, str | os.PathLike):
            raise TypeError(
                f"state_dir must be a str or os.PathLike, not {type(state_dir).__name__}"
            )
        if not isinstance(daemon, bool):
            raise TypeError(f"daemon must be a bool, not {type(daemon).__name__}")
        if daemon:
            check_daemon_session(identifier, config)
        self._daemon = daemon
        self._identifier = identifier
        self._config = config
        # Absolute now: a task's destination and location must not change meaning
        # when the process changes its working directory later.
        self._state_dir = Path(state_dir).expanduser().absolute() if state_dir is not None else None
        self._directory: Path | None = None
        self._given_backend: TaskBackend | None = None
        self._opened: AbstractAsyncContextManager[TaskBackend] | None = None
        self._backend: TaskBackend | None = None
        self._entered = False

    # -- properties ---------------------------------------------------------------

    @property
    def identifier(self) -> str | None:
        """The background identifier, or None for an ephemeral session."""
        return self._identifier

    @property
    def config(self) -> Configuration:
        return self._config

    @property
    def directory(self) -> Path:
        """The session's own directory (``state_dir/<identifier>`` or a temporary one)."""
        if self._directory is None:
            raise SessionClosedError("the session is not open")
        return self._directory

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Session:
        if self._entered:
            raise SessionError("a Session can be entered only once; make a new one")
        self._entered = True
        opener = self._opener()
        backend = await opener.__aenter__()
        self._opened = opener
        self._backend = backend
        self._directory = backend.directory
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._require_backend()
        opened, self._opened = self._opened, None
        self._backend = None
        if opened is not None:
            await opened.__aexit__(exc_type, exc, tb)
        return None

    def _opener(self) -> AbstractAsyncContextManager[TaskBackend]:
        """The one start-up path (``_engine/startup.py``; the daemon's client's
        for ``daemon=True``), or the backend a test handed to :meth:`_with_backend`."""
        if self._given_backend is not None:
            return GivenBackend(self._given_backend)
        base = self._state_dir
        if self._identifier is not None and base is None:
            base = default_state_dir()
        if self._daemon:
            assert base is not None
            default = self._state_dir is None and not os.environ.get(STATE_DIR_ENV)
            return open_daemon_backend(
                self._identifier, state_dir=base, config=self._config, default=default
            )
        return open_backend(self._identifier, state_dir=base, config=self._config)

    @classmethod
    def _with_backend(
        cls,
        backend: TaskBackend,
        identifier: str | None = None,
        *,
        config: Configuration | None = None,
    ) -> Session:
        """A session over a backend made elsewhere (tests: a fake one; later: the
        daemon's client). Entering it opens nothing; leaving it closes nothing."""
        session = cls(identifier, config=config)
        session._given_backend = backend
        return session

    def _require_backend(self) -> TaskBackend:
        if self._backend is None:
            raise SessionClosedError("the session is not open; use 'async with Session(...)'")
        return self._backend

    # -- tasks ----------------------------------------------------------------------

    async def download(
        self,
        url: str,
        destination: str | os.PathLike[str] | None = None,
        *,
        description: str | None = None,
        headers: dict[str, str] | None = None,
        segments: int | None = None,
        checksum: str | None = None,
        expected_size: int | None = None,
    ) -> DownloadTask:
        """Start downloading ``url``; return its task at once (it may wait for a slot).

        The body streams to a partial file in the session directory and is moved
        atomically to ``destination`` when complete; a task that fails or is
        cancelled never leaves anything at ``destination``. ``destination`` may be
        a file path (its directory must exist; an existing regular file is replaced
        on success), an existing directory, or None (the session's ``downloads/``); in
        the last two cases the name comes from the URL, made unique (``name (1).ext``).
        It may not be inside the state directory (but for ``downloads/``), nor
        something other than a regular file (a device, a FIFO, a symbolic link).
        ``segments`` (1-16, default ``Configuration.segments``) fetches a large file
        over that many connections at once when the server supports ranges.
        ``checksum`` (``"sha256:<hex>"``; also ``sha512``, ``blake2b``, ``sha1``,
        ``md5``) and ``expected_size`` (bytes) are checked before the file is
        moved into place: a mismatch ends the task in
        :class:`~bgtransfer.IntegrityError` and nothing reaches ``destination``
        (see docs/integrity.md; a server's ``Repr-Digest`` is checked too).

        Raises at the call, before any I/O, for wrong arguments:
        :class:`TypeError`, :class:`~bgtransfer.InvalidURLError`,
        :class:`~bgtransfer.UnsupportedSchemeError`,
        :class:`~bgtransfer.InvalidDestinationError` (all ``ValueError``), and
        :class:`~bgtransfer.SessionClosedError` when the session is not open.
        Everything that goes wrong later arrives as the task's ``ErrorEvent``.
        """
        backend = self._require_backend()
        request = DownloadRequest(  # checks the description and the URL's userinfo
            url,
            destination,
            description=description,
            headers=headers,
            segments=segments,
            checksum=checksum,
            expected_size=expected_size,
        )
        return DownloadTask(backend, await backend.submit(request))

    async def upload(
        self,
        url: str,
        file: str | os.PathLike[str],
        *,
        method: str = "PUT",
        headers: dict[str, str] | None = None,
        description: str | None = None,
        reply_to: str | os.PathLike[str] | None = None,
        protocol: str = "plain",
    ) -> UploadTask:
        """Start sending ``file`` to ``url``; return its task at once (it may wait
        for a slot, under the same limits as downloads).

        The file's bytes are the body of one ``PUT`` (or ``POST``), streamed.
        Its identity (size, mtime, device, inode) is checked before, while and
        after every attempt (:class:`~bgtransfer.SourceChangedError`). A failed
        attempt is retried from the first byte as the retry policy says (a
        ``ResumedEvent`` with offset 0 says so), and so is a running upload that
        a new process reattaches. A 2xx answer finishes the task: its
        ``FinishedEvent.reply`` holds the status, the headers (secret ones left
        out) and up to ``Configuration.upload_reply_max_bytes`` of the body; with
        ``reply_to`` the whole body is written to that file instead (atomically,
        by the rules of a download's destination) and ``location`` is that file.
        Any other status is an :class:`~bgtransfer.HTTPStatusError`, as for a
        download. Redirects are not followed.

        ``protocol="tus"`` or ``"ietf"`` (the IETF draft) makes it resumable:
        retries, ``resume()`` and a new process continue from the server's
        offset; ``cancel()`` removes it from the server. ``"auto"`` asks the
        server (``OPTIONS``). ``reply_to`` is for plain uploads only.

        Raises at the call: :class:`~bgtransfer.InvalidSourceError` when ``file``
        is missing, a directory or not a regular file (links are resolved),
        :class:`~bgtransfer.InvalidDestinationError` for a ``reply_to`` a download
        could not have as its destination, ``ValueError`` for another method than
        ``"PUT"`` or ``"POST"``, another ``protocol``, ``reply_to`` with a
        resumable protocol, and what :meth:`download` raises for the URL.
        """
        backend = self._require_backend()
        request = UploadRequest(
            url,
            file,
            method=method,
            headers=headers,
            description=description,
            reply_to=reply_to,
            protocol=protocol,
        )
        snapshot = await backend.submit_upload(request)
        handle = task_handle(backend, snapshot)
        assert isinstance(handle, UploadTask)
        return handle

    async def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> FetchResponse:
        """Request ``url``; return the answer, body in memory (the iOS data task;
        ephemeral sessions only). Shares the downloads' slots, client, headers,
        redirect and retry rules; returns any final status. See docs/fetch.md."""
        backend = self._require_backend()
        if self._identifier is not None or not isinstance(backend, DataTasks):
            raise SessionError(
                f"fetch() is for ephemeral sessions, not {self._identifier!r}: a body in "
                "memory cannot outlive the process (download() to a file instead)"
            )
        return await backend.fetch(
            url, method=method, headers=normalize_headers(headers), max_bytes=max_bytes
        )

    async def download_many(self, requests: Iterable[DownloadRequest | str]) -> list[DownloadTask]:
        """Start many downloads at once; return their tasks in the same order.

        Each item is a :class:`DownloadRequest` (what :meth:`download` takes) or a
        URL alone (the default destination). All or none: every request is checked
        first, destinations against each other too (two requests cannot claim one
        file path; names made from URLs are made unique across the batch), and
        the first wrong one raises what :meth:`download` would, with a note naming
        its index, before any task is made. A background session journals the
        whole batch in one commit before returning (one fsync with
        ``durability="fsync"``, where a loop of :meth:`download` calls does one each).
        """
        backend = self._require_backend()
        batch = request_batch(requests, DownloadRequest, url_alone=DownloadRequest)
        return [DownloadTask(backend, snapshot) for snapshot in await backend.submit_many(batch)]

    async def upload_many(self, requests: Iterable[UploadRequest]) -> list[UploadTask]:
        """Start many uploads at once; return their tasks in the same order.

        Each item is an :class:`UploadRequest` (what :meth:`upload` takes). All
        or none, as :meth:`download_many`: every request is checked first (two
        cannot share a ``reply_to``), and the first wrong one raises what
        :meth:`upload` would, with a note naming its index, before any task is
        made. A background session journals the batch in one commit; through
        the daemon it is one request.
        """
        backend = self._require_backend()
        batch = request_batch(requests, UploadRequest)
        return [UploadTask(backend, snapshot) for snapshot in await backend.submit_uploads(batch)]

    async def download_with_resume_data(
        self,
        resume_data: ResumeData | bytes,
        destination: str | os.PathLike[str] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> DownloadTask:
        """Start a new task that continues a cancelled one from its resume data.

        ``resume_data`` is what ``cancel_with_resume_data()`` returned, or an
        ``ErrorEvent``'s for a disk that was full (or its ``to_bytes()``). It is
        checked first: only resume data signed with this state directory's key
        (``<state_dir>/.resume-data.key``) is taken, unchanged, naming a partial
        file in a ``partials/`` directory there; an ephemeral session without a
        state directory takes only its own. Resume data of an ephemeral session is
        good only while that session is open: it removes its partial files when it
        closes. The new task takes
        the partial file over (one rename), asks
        for the rest with ``Range``/``If-Range``, and reports the offset with a
        ``ResumedEvent`` before any progress. ``destination`` defaults to the
        original one; ``headers`` add to the saved ones (secret headers, such as
        ``Authorization``, ``Cookie`` or ``X-Api-Key``, are never saved: supply them
        again here or from ``Configuration.headers_provider``).

        Raises :class:`~bgtransfer.InvalidResumeDataError` (a ``ValueError``) when the
        data is unreadable, unsigned, altered or signed elsewhere, or its partial
        file is gone (its ephemeral session closed, say) or shorter than it says;
        the message names the cause, and no file is touched then. The
        same resume data used twice never gives two tasks one file: the second use
        finds the partial file gone and raises.
        """
        backend = self._require_backend()
        resume_data = resume_data_of(resume_data, "download")
        snapshot = await backend.submit_resumed(
            resume_data, destination, headers=normalize_headers(headers)
        )
        return DownloadTask(backend, snapshot)

    async def upload_with_resume_data(
        self, resume_data: ResumeData | bytes, *, headers: dict[str, str] | None = None
    ) -> UploadTask:
        """Continue a resumable upload from its ``cancel_with_resume_data()``
        (or its ``to_bytes()``): at its upload URL, from the server's offset.

        Only data signed by this state directory is taken
        (:class:`~bgtransfer.InvalidResumeDataError` otherwise, or for a
        download's), and only while the file is unchanged
        (:class:`~bgtransfer.SourceChangedError`). ``headers`` add to the saved
        ones (secret headers are never saved: supply them again).
        """
        backend = self._require_backend()
        resume_data = resume_data_of(resume_data, "upload")
        snapshot = await backend.submit_resumed(
            resume_data, None, headers=normalize_headers(headers)
        )
        handle = task_handle(backend, snapshot)
        assert isinstance(handle, UploadTask)
        return handle

    def tasks(self) -> list[DownloadTask | UploadTask]:
        """Every task of this session, downloads and uploads, in creation order.

        In a background session reopened after an earlier one, that starts with the
        tasks it left (same ids, URLs, descriptions, states) that have not been
        acknowledged: running and suspended ones, and ended ones whose terminal
        event was never acknowledged.
        """
        backend = self._require_backend()
        return [task_handle(backend, snapshot) for snapshot in backend.tasks()]

    def statistics(self) -> SupervisorStatistics:
        """The supervisor's queues now: tasks transferring (``active``) and waiting
        for a slot (``queued``), in total and per origin."""
        return self._require_backend().statistics()

    async def metrics(self) -> SessionMetrics:
        """The session's attempts that have ended, added up: attempts, retries,
        redirects, bytes, connections opened and reused, the time to first byte.
        Counted in this process (docs/metrics.md)."""
        return await self._require_backend().metrics()

    def events(self, *, follow: bool = True, since: int | None = None) -> EventStream[SessionEvent]:
        """One merged stream of every task's events, present and future.

        It starts with what a late subscriber missed (per task: the progress so far
        and the terminal event if ended, including those a previous process never
        delivered), then one ``EventsDeliveredEvent``; it ends when the session
        closes. With ``follow=False`` it ends right after the
        ``EventsDeliveredEvent``: a way to drain what was missed and stop (as
        ``docker logs`` does without ``--follow``).

        ``since`` (background sessions): a cursor, the ``seq`` of the last event
        the application has dealt with (``EventsDeliveredEvent.cursor``, or any
        event's ``seq``; 0 for everything the log holds). The stream then starts
        with every event of the session's event log numbered after it (every
        task event but progress, in order, terminal ones included whether
        acknowledged or not), then the progress of each running task, then
        ``EventsDeliveredEvent``. When the log no longer holds everything after
        ``since`` (it keeps ``Configuration.event_log_size`` events, and those of
        tasks not acknowledged), the stream starts with an ``EventsGapEvent``
        followed by what ``since=None`` gives: never a silent loss. An ephemeral
        session has no log: :class:`~bgtransfer.InvalidRequestError`.
        """
        backend = self._require_backend()
        stream: EventStream[SessionEvent] = backend.subscribe(None, follow=follow, since=since)
        return stream

    async def acknowledge(self, *task_ids: int) -> None:
        """Acknowledge the terminal events of these tasks, by id; return once the
        journal has forgotten them (one commit for all).

        What ``await task.acknowledge()`` does, for applications that kept only
        the ids (``event.task_id``). An id of a task that has not ended, or that
        the session no longer has (acknowledged before), is left alone.
        """
        backend = self._require_backend()
        for task_id in task_ids:
            given: object = task_id  # (typed int; a caller's may not be)
            if isinstance(given, bool) or not isinstance(given, int):
                hint = " (pass them as arguments: acknowledge(*ids))"
                raise TypeError(
                    f"task ids are int, not {type(given).__name__}"
                    + (hint if isinstance(given, list | tuple | set) else "")
                )
        await backend.acknowledge(task_ids)

    async def wait_events_delivered(self) -> None:
        """Wait until every terminal event replayed from the journal has been
        acknowledged (at once if there were none).

        Those are the events of tasks that ended while no process delivered them.
        With ``Configuration(acknowledge="auto")`` (the default) a terminal event
        is acknowledged once a stream or ``task.wait()`` hands it out; with
        ``"explicit"`` only by ``task.acknowledge()`` or :meth:`acknowledge`.
        """
        await self._require_backend().wait_events_delivered()

    async def finish_tasks_and_invalidate(self) -> None:
        """Accept no new task and wait until every task has ended (suspended ones
        included: resume or cancel them, or this waits for ever)."""
        backend = self._require_backend()
        backend.invalidate()
        for snapshot in backend.tasks():
            await _wait_quietly(backend, snapshot.id, stop_when_suspended=False)
        await backend.flush()

    async def invalidate_and_cancel(self) -> None:
        """Accept no new task, cancel every task that has not ended, and wait for them.

        The explicit way to end a background session for good: the cancellations
        are in the journal when this returns, so nothing continues in a later
        process (their ``CancelledEvent`` events are delivered until acknowledged).
        """
        backend = self._require_backend()
        backend.invalidate()
        for snapshot in backend.tasks():
            await backend.cancel(snapshot.id, wait=False)
        for snapshot in backend.tasks():
            await _wait_quietly(backend, snapshot.id, stop_when_suspended=False)
        await backend.flush()

    def __repr__(self) -> str:
        kind = repr(self._identifier) if self._identifier is not None else "ephemeral"
        return f"<Session {kind}>"


async def _wait_quietly(backend: TaskBackend, task_id: int, *, stop_when_suspended: bool) -> None:
    """Until the task has ended (a session closing meanwhile ends the wait too)."""
    with contextlib.suppress(SessionClosedError):
        await backend.wait(task_id, hand_out=False, stop_when_suspended=stop_when_suspended)
