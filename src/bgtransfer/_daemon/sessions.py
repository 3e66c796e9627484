"""The sessions a daemon serves: opened, watched and closed, each in a runner task of its own.

Each session is opened with the same start-up path as an in-process one
(:func:`~bgtransfer._engine.startup.open_backend`), held while a client is
attached or a task runs, and closed (its journal recording where the tasks
stand) when neither is true. ``server.py`` routes requests to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import attrs

from .._core.auth import APP_ANSWERS
from .._core.config import Configuration
from .._core.events import EventsDeliveredEvent, is_terminal
from .._core.states import TaskState
from .._core.wire import decode_config, encode_config
from .._engine.hub import EventStream
from .._engine.local import LocalBackend
from .._engine.startup import BackendStartup, open_backend
from .._exceptions import SessionClosedError
from .._io.files import read_json, write_json
from .._io.journal import JOURNAL_NAME
from .credentials import AppCredentials
from .launching import LaunchController

__all__ = ["CONFIG_NAME", "LIVE", "Served", "SessionTable"]

CONFIG_NAME: Final = "daemon-session.json"  # a session's configuration, without secrets
LIVE: Final = (TaskState.RUNNING, TaskState.CANCELING)

log = logging.getLogger("bgtransfer.daemon")


@attrs.define(eq=False)
class Served:
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
    streams: set[asyncio.Task[Any]] = attrs.Factory(set)  # the lease's event streams
    closing: asyncio.Event = attrs.Factory(asyncio.Event)
    launch: LaunchController | None = None  # with a launch_command
    credentials: AppCredentials | None = None  # when the application answers challenges
    latest: int = 0  # the newest terminal event's number the controller was told
    # (seq, task id) of the terminal events told and maybe not acknowledged: a heap
    unacked: list[tuple[int, int]] = attrs.Factory(list)

    @property
    def launch_pending(self) -> bool:
        """Events wait for the application to be launched, or its launch runs
        (the session stays open for it, and to record how it ended)."""
        if self.launch is None:
            return False
        status = self.launch.status
        # (A task's end is told to the controller once the log holds it, a
        # commit later: the records say at once that an event waits.)
        return (
            status.waiting
            or status.running
            or any(r.terminal is not None and not r.acked for r in self.backend.engine.records())
        )

    def activity(self) -> None:
        """Tasks were submitted, suspended or resumed (or one ended)."""
        if self.launch is not None:
            self.launch.activity(busy(self.backend))

    def acknowledged(self, task_ids: Sequence[int]) -> None:
        """The application acknowledged these tasks' terminal events."""
        if self.launch is not None:
            self.launch.acknowledged(self._acknowledged_cursor())

    def told(self, seq: int, task_id: int) -> None:
        """The controller was told the terminal event ``seq`` of ``task_id``."""
        self.latest = max(self.latest, seq)
        heapq.heappush(self.unacked, (seq, task_id))

    def _acknowledged_cursor(self) -> int:
        """The controller's cursor: every terminal event numbered up to it is
        acknowledged (the one below the oldest that is not, or ``latest``):
        amortised O(log n) per acknowledgement, from the heap of those told."""
        records = self.backend.engine
        while self.unacked:
            seq, task_id = self.unacked[0]
            try:
                acked = records.record(task_id).acked
            except KeyError:  # forgotten: acknowledged
                acked = True
            if not acked:
                return seq - 1
            heapq.heappop(self.unacked)
        return self.latest

    def app_needed(self, needed: bool, answered: bool) -> None:
        """A task waits for the application's credentials (or none does)."""
        if self.launch is not None:
            self.launch.app_needed("credentials" if needed else None, answered=answered)

    def attached(self, yes: bool) -> None:
        if self.launch is not None:
            if yes:
                self.launch.client_attached()
            else:
                self.launch.client_detached()


def busy(backend: LocalBackend) -> bool:
    """A task of the session runs or is queued (suspended ones do not count)."""
    statistics = backend.statistics()
    if statistics.active or statistics.queued:
        return True
    # (Not counted there: tasks backing off before a retry, and those cancelling.)
    return any(s.state in LIVE for s in backend.tasks())


async def _launch_controller(served: Served, state_dir: Path) -> EventStream[Any]:
    """The session's :class:`LaunchController`, restored from its last status
    with the event log's cursors, and the stream that tells it the terminal
    events as they are numbered (its backlog read: the cursor it ends with)."""
    backend = served.backend
    stream = backend.subscribe(None, follow=True)
    async for event in stream:  # (the backlog: every task's end not acknowledged)
        if is_terminal(event) and event.seq is not None:
            served.told(event.seq, event.task_id)
        if isinstance(event, EventsDeliveredEvent):
            served.latest = event.cursor or 0
            break
    served.launch = await LaunchController.restore(
        served.identifier,
        state_dir=state_dir,
        config=served.config,
        latest=served.latest,
        acknowledged=served._acknowledged_cursor(),
        busy=busy(backend),
    )
    return stream


async def _tell_launches(served: Served, stream: EventStream[Any]) -> None:
    """Each terminal event, once the log holds its number, then the activity."""
    async with stream:
        async for event in stream:
            if is_terminal(event) and event.seq is not None and served.launch is not None:
                served.told(event.seq, event.task_id)
                served.launch.event_published(event.seq)
                served.activity()


class SessionTable:
    """The open sessions of one state directory, by identifier.

    ``changed`` is called whenever a session closes (the daemon's idle timer)."""

    def __init__(self, state_dir: Path, *, changed: Callable[[], None]) -> None:
        self.state_dir = state_dir
        self.open: dict[str, Served] = {}
        self.lock = asyncio.Lock()  # one session opens or closes at a time
        self._changed = changed
        self._monitors: set[asyncio.Task[None]] = set()

    def get(self, identifier: str) -> Served | None:
        return self.open.get(identifier)

    def __bool__(self) -> bool:
        return bool(self.open)

    async def reopen_all(self) -> None:
        """Every session of the state dir whose journal has tasks still running."""
        if not self.state_dir.is_dir():
            return
        for directory in sorted(self.state_dir.iterdir()):
            stored = directory / CONFIG_NAME
            if not (stored.is_file() and (directory / JOURNAL_NAME).is_file()):
                continue
            try:
                config = decode_config(read_json(stored))
                served = await self.open_session(directory.name, config)
            except Exception as exc:  # one broken session never stops the others
                log.warning("cannot reopen session %r: %s", directory.name, exc)
                continue
            self.watch(served)

    async def close_all(self) -> None:
        """Close every session (shutdown), and wait for those closing by themselves."""
        for served in list(self.open.values()):
            await self.close(served)
        monitors = [t for t in self._monitors if t is not asyncio.current_task()]
        if monitors:
            await asyncio.gather(*monitors, return_exceptions=True)

    async def open_session(self, identifier: str, config: Configuration) -> Served:
        """Open the session in a task of its own: the engine's task group lives
        in the task that entered it, and must be left by that task too."""
        ready: asyncio.Future[Served] = asyncio.get_running_loop().create_future()
        runner = asyncio.create_task(self._run_session(identifier, config, ready))
        try:
            served = await asyncio.shield(ready)
        except BaseException:
            if not ready.done():
                runner.cancel()
            raise
        self.open[identifier] = served
        try:
            await anyio.to_thread.run_sync(_store_config, served.backend.directory, config)
        except BaseException:
            await self.close(served)
            raise
        log.info("session %r open (%d tasks)", identifier, len(served.backend.tasks()))
        return served

    async def _run_session(
        self, identifier: str, config: Configuration, ready: asyncio.Future[Served]
    ) -> None:
        engine_config = config.replace(acknowledge="explicit", handle_sigterm=False)
        credentials = None
        if config.auth is APP_ANSWERS:  # the app's provider: the daemon asks the app
            credentials = AppCredentials(identifier)
            engine_config = engine_config.replace(auth=credentials)
        startup = open_backend(identifier, state_dir=self.state_dir, config=engine_config)
        try:
            backend = await startup.__aenter__()
        except BaseException as exc:
            if not ready.cancelled():
                ready.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        backend.gathers = False  # (the command channel's submissions: local.py)
        served = Served(identifier, startup, backend, config, runner=asyncio.current_task())
        served.credentials = credentials
        try:
            async with contextlib.AsyncExitStack() as stack:
                if config.launch_command is not None:
                    stream = await _launch_controller(served, self.state_dir)
                    assert served.launch is not None
                    await stack.enter_async_context(served.launch)
                    teller = asyncio.create_task(_tell_launches(served, stream))
                    stack.callback(teller.cancel)
                    if credentials is not None:  # (a task may wait already)
                        credentials.on_change = served.app_needed
                        served.app_needed(credentials.waiting > 0, False)
                ready.set_result(served)
                await served.closing.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.exception("session %r: launch events failed", identifier)
        finally:
            with anyio.CancelScope(shield=True):
                await startup.__aexit__(None, None, None)

    async def close(self, served: Served) -> None:
        """Journal where the session's tasks stand and close it."""
        if self.open.get(served.identifier) is served:
            del self.open[served.identifier]
        monitor, served.monitor = served.monitor, None
        if monitor is not None and monitor is not asyncio.current_task():
            monitor.cancel()
            self._monitors.discard(monitor)
        served.closing.set()
        if served.runner is not None:
            with anyio.CancelScope(shield=True):
                await asyncio.wait([served.runner])
        log.info("session %r closed", served.identifier)
        self._changed()

    def watch(self, served: Served) -> None:
        """With no client: close the session once no task runs."""
        if served.monitor is None and served.lease is None:
            monitor = served.monitor = asyncio.create_task(self._close_when_done(served))
            self._monitors.add(monitor)
            monitor.add_done_callback(self._monitors.discard)

    async def _close_when_done(self, served: Served) -> None:
        backend = served.backend
        while served.lease is None:
            live = [s for s in backend.tasks() if s.state in LIVE]
            if not live:
                break
            try:
                await backend.wait(live[0].id, hand_out=False, stop_when_suspended=True)
            except SessionClosedError:
                return
        if served.launch is not None and served.lease is None:
            # Events wait for the application: stay open to launch it (until
            # it acknowledges them; an attaching client cancels this wait).
            await served.launch.wait_status(lambda _status: not served.launch_pending)
        async with self.lock:
            if served.lease is None and self.open.get(served.identifier) is served:
                served.monitor = None
                await self.close(served)


def _store_config(directory: Path, config: Configuration) -> None:
    """The session's configuration, without secret headers, for a restarted daemon."""
    write_json(directory / CONFIG_NAME, encode_config(config, keep_secrets=False))
