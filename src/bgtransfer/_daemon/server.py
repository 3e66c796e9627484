"""The transfer daemon: background sessions served over a Unix socket.

HTTP/1.1 and JSON, served by aiohttp (``docs/daemon.md`` is the protocol).
Each session is opened with the same start-up path as an in-process one
(:func:`~bgtransfer._engine.startup.open_backend`), held while a client is
attached or a task runs, and closed (its journal recording where the tasks
stand) when neither is true. One client per session at a time: its attachment
is one long streaming response, and its lease ends with that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib.metadata import version as _package_version
from pathlib import Path
from typing import Any, Final

import anyio
import attrs
from aiohttp import web

from .._core.config import Configuration
from .._core.events import EventsDeliveredEvent, ProgressEvent
from .._core.naming import validate_identifier
from .._core.resume_data import ResumeData
from .._core.states import TaskState
from .._core.wire import (
    PROTOCOL_VERSION,
    WireError,
    decode_config,
    decode_request,
    encode_config,
    encode_event,
    encode_exception,
    encode_snapshot,
    encode_statistics,
)
from .._engine.local import LocalBackend
from .._engine.startup import BackendStartup, open_backend
from .._exceptions import BgTransferError, SessionClosedError, SessionInUseError
from .._io.files import make_private_dir
from .._io.journal import JOURNAL_NAME
from .paths import lock_path, make_socket_dir, socket_path

__all__ = [
    "CONFIG_NAME",
    "LEASE_HEADER",
    "MAX_BODY",
    "PROTOCOL_HEADER",
    "Daemon",
    "package_version",
    "run_daemon",
]

PROTOCOL_HEADER: Final = "Bgtransfer-Protocol"
LEASE_HEADER: Final = "Bgtransfer-Lease"
MAX_BODY: Final = 16 * 1024 * 1024  # a batch of some 10,000 requests; more is refused (413)
CONFIG_NAME: Final = "daemon-session.json"  # a session's configuration, without secrets
SHUTDOWN_BOUND: Final = 10.0  # seconds SIGTERM/--stop may take to journal and close
CAPABILITIES: Final = ("attach", "status", "stop")
_LIVE = (TaskState.RUNNING, TaskState.CANCELING)

log = logging.getLogger("bgtransfer.daemon")


def package_version() -> str:
    try:
        return _package_version("bgtransfer")
    except Exception:  # not installed (a source tree on sys.path)
        return "unknown"


class _Refused(Exception):
    """A request answered with an HTTP error status and a JSON error body."""

    def __init__(self, status: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.status = status
        self.error = error


@attrs.define(eq=False)
class _Served:
    """One session the daemon holds open."""

    identifier: str
    startup: BackendStartup
    backend: LocalBackend
    config: Configuration  # the client's (secret headers included, in memory only)
    lease: str | None = None
    client_pid: int | None = None
    runner: asyncio.Task[Any] | None = None  # the task that opened it, and closes it
    monitor: asyncio.Task[None] | None = None
    attachment: asyncio.Task[Any] | None = None  # the attach request's handler
    closing: asyncio.Event = attrs.Factory(asyncio.Event)


class Daemon:
    """The server of one state directory. :meth:`serve` runs it until stopped."""

    def __init__(
        self,
        state_dir: Path,
        *,
        socket_file: Path,
        idle_timeout: float | None = None,
        allowed_uid: int | None = None,
    ) -> None:
        self._state_dir = state_dir
        self._socket = socket_file
        self._idle_timeout = idle_timeout
        self._uid = os.getuid() if allowed_uid is None else allowed_uid
        self._sessions: dict[str, _Served] = {}
        self._opening = asyncio.Lock()  # one session opens or closes at a time
        self._stop = asyncio.Event()
        self._idle: asyncio.TimerHandle | None = None
        self._started = time.monotonic()
        self._busy = 0  # requests in progress (an idle daemon has none)
        self._monitors: set[asyncio.Task[None]] = set()

    # -- running ----------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        """Reopen the sessions with unfinished tasks, listen, and run until
        :meth:`stop` (SIGTERM, ``--stop``, the idle time); then close every
        session (journaling where the tasks stand) within a bounded time."""
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        self._routes(app)
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            await self._reopen_sessions()
            make_socket_dir(self._socket)
            with contextlib.suppress(FileNotFoundError):
                self._socket.unlink()  # a dead daemon's (we hold the lock)
            site = web.UnixSite(runner, str(self._socket))
            await site.start()
            os.chmod(self._socket, 0o600)
            log.info("listening on %s (pid %d)", self._socket, os.getpid())
            self._arm_idle()
            await self._stop.wait()
            log.info("stopping")
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_BOUND):
                for served in list(self._sessions.values()):
                    await self._close(served)
                monitors = [t for t in self._monitors if t is not asyncio.current_task()]
                if monitors:  # sessions closing by themselves: let them finish
                    await asyncio.gather(*monitors, return_exceptions=True)
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_BOUND):
                await runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                self._socket.unlink()

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

    # -- sessions -----------------------------------------------------------------

    async def _reopen_sessions(self) -> None:
        """Every session of the state dir whose journal has tasks still running."""
        if not self._state_dir.is_dir():
            return
        for directory in sorted(self._state_dir.iterdir()):
            stored = directory / CONFIG_NAME
            if not (stored.is_file() and (directory / JOURNAL_NAME).is_file()):
                continue
            try:
                config = decode_config(json.loads(stored.read_text("utf-8")))
                served = await self._open(directory.name, config)
            except Exception as exc:  # one broken session never stops the others
                log.warning("cannot reopen session %r: %s", directory.name, exc)
                continue
            self._watch(served)

    async def _open(self, identifier: str, config: Configuration) -> _Served:
        """Open the session in a task of its own: the engine's task group lives
        in the task that entered it, and must be left by that task too."""
        ready: asyncio.Future[_Served] = asyncio.get_running_loop().create_future()
        runner = asyncio.create_task(self._run_session(identifier, config, ready))
        try:
            served = await asyncio.shield(ready)
        except BaseException:
            if not ready.done():
                runner.cancel()
            raise
        self._sessions[identifier] = served
        try:
            await anyio.to_thread.run_sync(_store_config, served.backend.directory, config)
        except BaseException:
            await self._close(served)
            raise
        log.info("session %r open (%d tasks)", identifier, len(served.backend.tasks()))
        return served

    async def _run_session(
        self, identifier: str, config: Configuration, ready: asyncio.Future[_Served]
    ) -> None:
        engine_config = config.replace(acknowledge="explicit", handle_sigterm=False)
        startup = open_backend(identifier, state_dir=self._state_dir, config=engine_config)
        try:
            backend = await startup.__aenter__()
        except BaseException as exc:
            if not ready.cancelled():
                ready.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        served = _Served(identifier, startup, backend, config, runner=asyncio.current_task())
        try:
            ready.set_result(served)
            await served.closing.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await startup.__aexit__(None, None, None)

    async def _close(self, served: _Served) -> None:
        """Journal where the session's tasks stand and close it."""
        if self._sessions.get(served.identifier) is served:
            del self._sessions[served.identifier]
        monitor, served.monitor = served.monitor, None
        if monitor is not None and monitor is not asyncio.current_task():
            monitor.cancel()
            self._monitors.discard(monitor)
        served.closing.set()
        if served.runner is not None:
            with anyio.CancelScope(shield=True):
                await asyncio.wait([served.runner])
        log.info("session %r closed", served.identifier)
        self._arm_idle()

    def _watch(self, served: _Served) -> None:
        """With no client: close the session once no task runs."""
        if served.monitor is None and served.lease is None:
            monitor = served.monitor = asyncio.create_task(self._close_when_done(served))
            self._monitors.add(monitor)
            monitor.add_done_callback(self._monitors.discard)

    async def _close_when_done(self, served: _Served) -> None:
        backend = served.backend
        while served.lease is None:
            live = [s for s in backend.tasks() if s.state in _LIVE]
            if not live:
                break
            try:
                await backend.wait(live[0].id, hand_out=False, stop_when_suspended=True)
            except SessionClosedError:
                return
        async with self._opening:
            if served.lease is None and self._sessions.get(served.identifier) is served:
                served.monitor = None
                await self._close(served)

    # -- HTTP -----------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        s = "/v1/sessions/{identifier}"
        t = s + "/tasks/{task_id:[0-9]+}"
        app.router.add_get("/v1/hello", self._hello)
        app.router.add_get("/v1/status", self._status)
        app.router.add_post("/v1/stop", self._stop_request)
        app.router.add_post(s + "/attach", self._attach)
        app.router.add_post(s + "/detach", self._detach)
        app.router.add_post(s + "/tasks", self._command(self._submit))
        app.router.add_post(s + "/resumed", self._command(self._submit_resumed))
        app.router.add_post(t + "/cancel", self._command(self._cancel))
        app.router.add_post(t + "/suspend", self._command(self._suspend))
        app.router.add_post(t + "/resume", self._command(self._resume))
        app.router.add_post(t + "/wait", self._command(self._wait))
        app.router.add_post(s + "/acknowledge", self._command(self._acknowledge))
        app.router.add_post(s + "/invalidate", self._command(self._invalidate))
        app.router.add_post(s + "/events-delivered", self._command(self._events_delivered))
        app.router.add_post(s + "/flush", self._command(self._flush))

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Peer check, version check, and every error as a JSON body."""
        self._busy += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            self._check(request)
            return await handler(request)
        except _Refused as refused:
            return _error(refused.status, refused.error)
        except web.HTTPException as exc:  # aiohttp's: 404, 405, 413...
            if exc.status < 400:
                raise
            return _error(exc.status, RuntimeError(exc.reason))
        except (BgTransferError, TypeError, ValueError, KeyError) as exc:
            status = 404 if isinstance(exc, KeyError) else 400
            if isinstance(exc, SessionInUseError):
                status = 409
            return _error(status, exc)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a bug: answered, logged, never the daemon's end
            log.exception("request %s %s failed", request.method, request.path)
            return _error(500, exc)
        finally:
            self._busy -= 1
            self._arm_idle()

    def _check(self, request: web.Request) -> None:
        """The peer is this user (SO_PEERCRED), and speaks this protocol version."""
        _pid, uid = _peer(request)
        if uid is not None and uid != self._uid:
            raise _Refused(403, PermissionError(f"uid {uid} may not use this daemon"))
        given = request.headers.get(PROTOCOL_HEADER)
        if given is None and request.path != "/v1/hello":
            raise _Refused(400, ValueError(f"the {PROTOCOL_HEADER} header is missing"))
        if given is not None and given != str(PROTOCOL_VERSION):
            raise _Refused(400, _version_error(given))

    async def _hello(self, request: web.Request) -> web.Response:
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

    async def _status(self, request: web.Request) -> web.Response:
        sessions = []
        for served in self._sessions.values():
            backend = served.backend
            records = {record.id: record for record in backend.engine.records()}
            sessions.append(
                {
                    "identifier": served.identifier,
                    "attached": served.lease is not None,
                    "client_pid": served.client_pid,
                    "statistics": encode_statistics(backend.statistics()),
                    "tasks": [
                        {**encode_snapshot(s), "activity": _activity(s.state, records.get(s.id))}
                        for s in backend.tasks()
                    ],
                }
            )
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

    async def _stop_request(self, request: web.Request) -> web.Response:
        self._stop.set()
        return web.json_response({"stopping": True}, status=202)

    # -- attach ---------------------------------------------------------------------

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        identifier = validate_identifier(request.match_info["identifier"])
        body = await _body(request)
        config = decode_config(body.get("config"))
        pid, _uid = _peer(request)
        async with self._opening:
            served = self._sessions.get(identifier)
            if served is not None and served.lease is not None:
                raise SessionInUseError(identifier, served.client_pid)
            if served is not None and served.config != config:
                await self._close(served)  # its tasks continue under the new configuration
                served = None
            if served is None:
                served = await self._open(identifier, config)
            lease = served.lease = secrets.token_hex(16)
            served.client_pid = pid
            served.attachment = asyncio.current_task()
            monitor, served.monitor = served.monitor, None
            if monitor is not None:
                monitor.cancel()
        try:
            return await self._stream(request, served)
        finally:
            if served.lease == lease:  # the connection ended without a detach
                served.lease = None
                served.client_pid = None
                served.attachment = None
                if self._sessions.get(identifier) is served:
                    self._watch(served)

    async def _detach(self, request: web.Request) -> web.Response:
        """The client leaves: its lease ends now (not when the daemon notices the
        connection closing), and a session with no running task closes before
        the answer, so the client's next attach finds it as a new process would."""
        identifier = request.match_info["identifier"]
        async with self._opening:
            served = self._sessions.get(identifier)
            lease = request.headers.get(LEASE_HEADER)
            if served is None or served.lease is None or lease != served.lease:
                return web.json_response({})
            served.lease = None
            served.client_pid = None
            attachment, served.attachment = served.attachment, None
            if attachment is not None:
                attachment.cancel()  # ends its stream
            if not any(s.state in _LIVE for s in served.backend.tasks()):
                await self._close(served)
                return web.json_response({})
        self._watch(served)
        return web.json_response({})

    async def _stream(self, request: web.Request, served: _Served) -> web.StreamResponse:
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
            await _send(
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
            for snapshot in snapshots:
                record = records.get(snapshot.id)
                last = record.last_progress if record is not None else None
                line: dict[str, Any] = {"type": "task", "task": encode_snapshot(snapshot)}
                if last is not None:
                    line["progress"] = [last.total_bytes_written, last.total_bytes_expected]
                if record is not None and record.replayed:
                    line["replayed"] = True
                await _send(response, line)
            async for event in stream:  # the backlog: the snapshots hold it already
                if isinstance(event, EventsDeliveredEvent):
                    break
            await _send(response, {"type": "ready"})
            async for event in stream:
                line = {"type": "event", "event": encode_event(event)}
                if not isinstance(event, ProgressEvent):
                    with contextlib.suppress(KeyError):
                        line["task"] = encode_snapshot(backend.task(event.task_id))
                    line["statistics"] = encode_statistics(backend.statistics())
                await _send(response, line)
        return response

    # -- commands -------------------------------------------------------------------

    Command = Callable[[_Served, dict[str, Any], web.Request], Awaitable[dict[str, Any]]]

    def _command(self, run: Command) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            identifier = request.match_info["identifier"]
            served = self._sessions.get(identifier)
            lease = request.headers.get(LEASE_HEADER)
            if served is None or served.lease is None or lease != served.lease:
                raise _Refused(
                    409,
                    SessionClosedError(
                        f"session {identifier!r}: no attachment holds this lease "
                        "(attach first; a lease ends with its connection)"
                    ),
                )
            answer = await run(served, await _body(request), request)
            answer["statistics"] = encode_statistics(served.backend.statistics())
            return web.json_response(answer)

        return handler

    async def _submit(
        self, served: _Served, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        backend = served.backend
        if "request" in body:
            snapshot = await backend.submit(decode_request(body["request"]))
            return {"tasks": [encode_snapshot(snapshot)]}
        given = body.get("requests")
        if not isinstance(given, list):
            raise WireError("'requests' is not a list")
        snapshots = await backend.submit_many([decode_request(item) for item in given])
        return {"tasks": [encode_snapshot(s) for s in snapshots]}

    async def _submit_resumed(
        self, served: _Served, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        blob = body.get("resume_data")
        if not isinstance(blob, str):
            raise WireError("'resume_data' is not text")
        destination = body.get("destination")
        if destination is not None and (
            not isinstance(destination, str) or not Path(destination).is_absolute()
        ):
            raise WireError(f"destination {destination!r} is not an absolute path")
        headers = decode_request({"url": "", "headers": body.get("headers", [])}).headers
        snapshot = await served.backend.submit_resumed(
            ResumeData.from_bytes(blob.encode("utf-8")), destination, headers=headers
        )
        return {"task": encode_snapshot(snapshot)}

    async def _cancel(
        self, served: _Served, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        snapshot = await served.backend.cancel(
            _task_id(request),
            resume_data=bool(body.get("resume_data", False)),
            wait=bool(body.get("wait", True)),
        )
        return {"task": encode_snapshot(snapshot)}

    async def _suspend(
        self, served: _Served, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        return {"task": encode_snapshot(served.backend.suspend(_task_id(request)))}

    async def _resume(
        self, served: _Served, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        return {"task": encode_snapshot(served.backend.resume(_task_id(request)))}

    async def _wait(
        self, served: _Served, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        snapshot = await served.backend.wait(
            _task_id(request),
            hand_out=bool(body.get("hand_out", True)),
            stop_when_suspended=bool(body.get("stop_when_suspended", True)),
        )
        return {"task": encode_snapshot(snapshot)}

    async def _acknowledge(
        self, served: _Served, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise WireError("'ids' is not a list of task ids")
        await served.backend.acknowledge(ids)
        return {}

    async def _invalidate(
        self, served: _Served, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        served.backend.invalidate()
        return {}

    async def _events_delivered(
        self, served: _Served, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        await served.backend.wait_events_delivered()
        return {}

    async def _flush(
        self, served: _Served, body: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        await served.backend.flush()
        return {}


# -- helpers ------------------------------------------------------------------------


def _version_error(given: str) -> ValueError:
    return ValueError(
        f"protocol version mismatch: the client speaks version {given}, "
        f"this daemon (bgtransfer {package_version()}) speaks version {PROTOCOL_VERSION}"
    )


def _activity(state: TaskState, record: Any) -> str:
    """What a task is doing, for ``bgtransfer status``."""
    if state is TaskState.RUNNING:
        return "transferring" if record is not None and record.running else "waiting for a slot"
    return {
        TaskState.SUSPENDED: "suspended",
        TaskState.CANCELING: "cancelling",
        TaskState.COMPLETED: "ended",
    }[state]


def _error(status: int, error: BaseException) -> web.Response:
    return web.json_response({"error": encode_exception(error)}, status=status)


async def _send(response: web.StreamResponse, line: dict[str, Any]) -> None:
    # write() waits while the client's socket is full: the engine never does
    # (the session stream between them coalesces progress meanwhile).
    await response.write(json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise WireError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WireError("the request body is not a JSON object")
    return body


def _task_id(request: web.Request) -> int:
    return int(request.match_info["task_id"])


_PEERCRED = struct.Struct("3i")


def _peer(request: web.Request) -> tuple[int | None, int | None]:
    """The connected process's pid and uid (SO_PEERCRED; None where unknown)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None, None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return None, None
    pid, uid, _gid = _PEERCRED.unpack(raw)
    return pid, uid


def _store_config(directory: Path, config: Configuration) -> None:
    """The session's configuration, without secret headers, for a restarted daemon."""
    target = directory / CONFIG_NAME
    temporary = directory / (CONFIG_NAME + ".tmp")
    data = json.dumps(encode_config(config, keep_secrets=False), indent=1).encode("utf-8")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(temporary, target)


# -- the process ----------------------------------------------------------------------


@contextlib.contextmanager
def _daemon_lock(state_dir: Path) -> Iterator[bool]:
    make_private_dir(state_dir)
    fd = os.open(lock_path(state_dir), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


def run_daemon(state_dir: Path, *, default: bool = False, idle_timeout: float | None = None) -> int:
    """The ``bgtransfer daemon`` process: 0 when it ran, or when another daemon
    of the state dir already runs ("already running")."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    state_dir = state_dir.absolute()
    with _daemon_lock(state_dir) as acquired:
        if not acquired:
            print(f"bgtransfer daemon: already running for {state_dir}", file=sys.stderr)
            return 0
        path = socket_path(state_dir, default=default)

        async def main() -> None:
            daemon = Daemon(state_dir, socket_file=path, idle_timeout=idle_timeout)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, daemon.stop)
            await daemon.serve()

        asyncio.run(main())
    return 0
