"""The transfer daemon: background sessions served over a Unix socket.

HTTP/1.1 and JSON, served by aiohttp (``docs/daemon.md`` is the protocol). This
module is the listener and its lifetime, and the routes that are not commands:
hello, status, stop, attach and detach. The sessions themselves are
``sessions.py``'s, the commands on them ``commands.py``'s. One client per
session at a time: its attachment is one long streaming response, and its lease
ends with that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from pathlib import Path

import anyio
import anyio.lowlevel
from aiohttp import web

from .._core.config import Configuration
from .._core.events import EventsDeliveredEvent
from .._core.naming import validate_identifier
from .._core.wire import (
    PROTOCOL_VERSION,
    WireError,
    decode_config,
)
from .._core.wire_stats import encode_statistics
from .._exceptions import DaemonError, SessionClosedError, SessionInUseError
from .channel_server import serve_channel
from .commands import COMMANDS, Command, run_command
from .paths import make_socket_dir
from .protocol import (
    CAPABILITIES,
    LEASE_HEADER,
    MAX_BODY,
    PROTOCOL_HEADER,
    SHUTDOWN_BOUND,
    Refused,
    error_response,
    package_version,
    peer,
    read_body,
    refusal,
    send_all,
    send_line,
    send_lines,
    version_error,
)
from .routing import SESSION, Handler, Routes, Target, request_factory
from .sessions import CONFIG_NAME, LIVE, Served, SessionTable
from .views import event_line, session_status, task_line

__all__ = [
    "CONFIG_NAME",
    "LEASE_HEADER",
    "MAX_BODY",
    "PROTOCOL_HEADER",
    "Daemon",
    "package_version",
]

log = logging.getLogger("bgtransfer.daemon")


class Daemon:
    """The server of one state directory. :meth:`serve` runs it until stopped."""

    def __init__(
        self,
        state_dir: Path,
        *,
        socket_file: Path,
        idle_timeout: float | None = None,
        allowed_uid: int | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        """``listener``: a listening socket at ``socket_file`` handed over by
        systemd (socket activation), served instead of binding one; the
        socket file is then systemd's, left in place at exit."""
        self._state_dir = state_dir
        self._socket = socket_file
        self._listener = listener
        self._idle_timeout = idle_timeout
        self._uid = os.getuid() if allowed_uid is None else allowed_uid
        self._sessions = SessionTable(state_dir, changed=self._arm_idle)
        self._stop = asyncio.Event()
        self._idle: asyncio.TimerHandle | None = None
        self._started = time.monotonic()
        self._busy = 0  # requests in progress (an idle daemon has none)
        self._routes = self._table()

    # -- running ----------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        """Reopen the sessions with unfinished tasks, listen, and run until
        :meth:`stop` (SIGTERM, ``--stop``, the idle time); then close every
        session (journaling where the tasks stand) within a bounded time."""
        server = web.Server(
            self._handle,
            request_factory=request_factory(MAX_BODY),
            handler_cancellation=True,
            access_log=None,
        )
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        # anyio imports its event loop's backend on first use (~15 ms): now,
        # before the daemon answers, not in the first client's attach.
        await anyio.lowlevel.checkpoint()
        try:
            await self._sessions.reopen_all()
            await self._listen(runner)
            self._arm_idle()
            await self._stop.wait()
            log.info("stopping")
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_BOUND):
                await self._sessions.close_all()
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_BOUND):
                await runner.cleanup()
            if self._listener is None:
                with contextlib.suppress(FileNotFoundError):
                    self._socket.unlink()

    async def _listen(self, runner: web.ServerRunner) -> None:
        if self._listener is not None:  # systemd's: bound, private, listening
            await web.SockSite(runner, self._listener).start()
            log.info("listening on %s (socket activation, pid %d)", self._socket, os.getpid())
            return
        make_socket_dir(self._socket)
        with contextlib.suppress(FileNotFoundError):
            self._socket.unlink()  # a dead daemon's (we hold the lock)
        await web.UnixSite(runner, str(self._socket)).start()
        os.chmod(self._socket, 0o600)
        log.info("listening on %s (pid %d)", self._socket, os.getpid())

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._idle_timeout is not None and not self._sessions and not self._busy:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self._idle_timeout, self._idle_exit)

    def _idle_exit(self) -> None:
        log.info("idle for %s s: exiting", self._idle_timeout)
        self._stop.set()

    # -- HTTP -----------------------------------------------------------------------

    def _table(self) -> Routes:
        routes = Routes()
        routes.add("GET", "/v1/hello", self._hello)
        routes.add("GET", "/v1/status", self._status)
        routes.add("POST", "/v1/stop", self._stop_request)
        routes.add("POST", SESSION + "/attach", self._attach)
        routes.add("POST", SESSION + "/detach", self._detach)
        routes.add("POST", SESSION + "/events", self._events)
        routes.add("GET", SESSION + "/channel", self._channel)
        for path, command in COMMANDS.items():
            routes.add("POST", SESSION + path, self._command(command))
        return routes

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Peer check, version check, the route, and every error as a JSON body."""
        self._busy += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            self._check(request)
            handler, target = self._routes.resolve(request.method, request.rel_url.path_safe)
            return await handler(request, target)
        except web.HTTPException as exc:  # aiohttp's: 413...
            if exc.status < 400:
                raise
            return error_response(exc.status, RuntimeError(exc.reason))
        except Exception as exc:
            refused = refusal(exc)
            if refused is None:  # a bug: answered, logged, never the daemon's end
                log.exception("request %s %s failed", request.method, request.path)
                refused = 500, exc
            return error_response(*refused)
        finally:
            self._busy -= 1
            self._arm_idle()

    def _check(self, request: web.BaseRequest) -> None:
        """The peer is this user (SO_PEERCRED), and speaks this protocol version;
        a stopping daemon takes no new work (:func:`_stopping`)."""
        _pid, uid = peer(request)
        if uid is not None and uid != self._uid:
            raise Refused(403, PermissionError(f"uid {uid} may not use this daemon"))
        given = request.headers.get(PROTOCOL_HEADER)
        if given is None and request.path != "/v1/hello":
            raise Refused(400, ValueError(f"the {PROTOCOL_HEADER} header is missing"))
        if given is not None and given != str(PROTOCOL_VERSION):
            raise Refused(400, version_error(given))
        if self._stop.is_set() and not _while_stopping(request.path):
            raise _stopping()

    async def _hello(self, request: web.BaseRequest, target: Target) -> web.Response:
        return web.json_response(
            {
                "protocol": PROTOCOL_VERSION,
                "version": package_version(),
                "pid": os.getpid(),
                "capabilities": list(CAPABILITIES),
                "state_dir": str(self._state_dir),
                "socket": str(self._socket),
            }
        )

    async def _status(self, request: web.BaseRequest, target: Target) -> web.Response:
        sessions = [session_status(served) for served in self._sessions.open.values()]
        return web.json_response(
            {
                "pid": os.getpid(),
                "version": package_version(),
                "protocol": PROTOCOL_VERSION,
                "uptime": time.monotonic() - self._started,
                "socket": str(self._socket),
                "state_dir": str(self._state_dir),
                "sessions": sessions,
            }
        )

    async def _stop_request(self, request: web.BaseRequest, target: Target) -> web.Response:
        self._stop.set()
        return web.json_response({"stopping": True}, status=202)

    # -- attach ---------------------------------------------------------------------

    async def _attach(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        identifier = validate_identifier(target.identifier)
        body = await read_body(request)
        config = decode_config(body.get("config"))
        pid, _uid = peer(request)
        sessions = self._sessions
        async with sessions.lock:
            if self._stop.is_set():  # (it began while this attach waited)
                raise _stopping()
            served = sessions.get(identifier)
            if served is not None and served.lease is not None:
                raise SessionInUseError(identifier, served.client_pid)
            if served is not None and not _same_engine(served.config, config):
                await sessions.close(served)  # its tasks continue under the new configuration
                served = None
            if served is None:
                served = await sessions.open_session(identifier, config)
            lease = served.lease = secrets.token_hex(16)
            served.client_pid = pid
            served.attached(True)
            served.attachment = asyncio.current_task()
            monitor, served.monitor = served.monitor, None
            if monitor is not None:
                monitor.cancel()
        try:
            return await self._stream(request, served)
        finally:
            if served.lease == lease:  # the connection ended without a detach
                self._end_lease(served)
                if sessions.get(identifier) is served:
                    sessions.watch(served)

    def _end_lease(self, served: Served) -> None:
        served.lease = None
        served.client_pid = None
        served.attached(False)
        attachment, served.attachment = served.attachment, None
        streams = [attachment, *served.streams]
        served.streams.clear()
        for task in streams:
            if task is not None and task is not asyncio.current_task():
                task.cancel()  # ends its stream

    async def _detach(self, request: web.BaseRequest, target: Target) -> web.Response:
        """The client leaves: its lease ends now (not when the daemon notices the
        connection closing), and a session with no running task closes before
        the answer, so the client's next attach finds it as a new process would."""
        identifier = target.identifier
        async with self._sessions.lock:
            served = self._sessions.get(identifier)
            lease = request.headers.get(LEASE_HEADER)
            if served is None or served.lease is None or lease != served.lease:
                return web.json_response({})
            self._end_lease(served)
            if not served.launch_pending and not any(
                s.state in LIVE for s in served.backend.tasks()
            ):
                await self._sessions.close(served)
                return web.json_response({})
        self._sessions.watch(served)
        return web.json_response({})

    async def _stream(self, request: web.BaseRequest, served: Served) -> web.StreamResponse:
        backend = served.backend
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        # Subscribed and listed at one instant: the stream's live events follow
        # exactly the tasks listed.
        stream = backend.subscribe(None, follow=True)
        async with stream:
            snapshots = backend.tasks()
            records = {r.id: r for r in backend.engine.records()}
            await response.prepare(request)
            assert served.lease is not None
            await send_line(
                response,
                {
                    "type": "attached",
                    "lease": served.lease,
                    "protocol": PROTOCOL_VERSION,
                    "pid": os.getpid(),
                    "directory": str(backend.directory),
                    "statistics": encode_statistics(backend.statistics()),
                },
            )
            await send_all(response, (task_line(s, records.get(s.id)) for s in snapshots))
            cursor = None
            async for event in stream:  # the backlog: the snapshots hold it already
                if isinstance(event, EventsDeliveredEvent):
                    cursor = event.cursor
                    break
            await send_line(response, {"type": "ready", "cursor": cursor})
            # The questions waiting for the app's credentials (at once), then new ones.
            questions = None if served.credentials is None else served.credentials.subscribe()
            try:
                await send_lines(
                    response, stream, lambda event: event_line(served, event), also=questions
                )
            finally:
                if questions is not None:
                    await questions.aclose()
        return response

    async def _events(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        """A session stream from a cursor (``Session.events(since=N)`` in the
        client): the daemon's own, as in-process, one NDJSON line per event.
        It ends with the lease (or, without ``follow``, after its
        ``EventsDeliveredEvent``)."""
        served = self._leased(request, target.identifier)
        body = await read_body(request)
        since = body.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            raise WireError("'since' is not an integer")
        stream = served.backend.subscribe(None, follow=bool(body.get("follow", True)), since=since)
        task = asyncio.current_task()
        assert task is not None
        served.streams.add(task)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        try:
            async with stream:
                await response.prepare(request)
                await send_lines(response, stream, lambda event: event_line(served, event))
        finally:
            served.streams.discard(task)
        return response

    # -- commands -------------------------------------------------------------------

    def _leased(self, request: web.BaseRequest, identifier: str) -> Served:
        """The session the request's lease holds (409 otherwise)."""
        served = self._sessions.get(identifier)
        lease = request.headers.get(LEASE_HEADER)
        if served is None or served.lease is None or lease != served.lease:
            raise Refused(
                409,
                SessionClosedError(
                    f"session {identifier!r}: no attachment holds this lease "
                    "(attach first; a lease ends with its connection)"
                ),
            )
        return served

    async def _channel(self, request: web.BaseRequest, target: Target) -> web.StreamResponse:
        """The command channel (``channel_server.py``): bound to the request's
        lease, it ends with it (as a stream does)."""
        identifier = target.identifier
        served = self._leased(request, identifier)

        def check() -> Served:
            if self._stop.is_set():
                raise _stopping()
            return self._leased(request, identifier)

        task = asyncio.current_task()
        assert task is not None
        served.streams.add(task)
        try:
            return await serve_channel(request, check)
        finally:
            served.streams.discard(task)

    def _command(self, run: Command) -> Handler:
        async def handler(request: web.BaseRequest, target: Target) -> web.StreamResponse:
            served = self._leased(request, target.identifier)
            body = await read_body(request)
            return web.json_response(await run_command(run, served, body, target.number))

        return handler


def _while_stopping(path: str) -> bool:
    """Whether a stopping daemon still answers ``path``: its status, a stop,
    and a detach (which only ends a lease)."""
    return path in ("/v1/status", "/v1/stop") or path.endswith("/detach")


def _stopping() -> Refused:
    """The answer of a stopping daemon to a hello, an attach or a command: the
    client waits for it to exit and reaches (launches) a new one."""
    return Refused(503, DaemonError("the daemon is stopping"))


def _same_engine(a: Configuration, b: Configuration) -> bool:
    """The session's engine runs the same under both (``acknowledge`` is the
    client's: the daemon's engine always acknowledges explicitly)."""
    return a.replace(acknowledge="explicit") == b.replace(acknowledge="explicit")
