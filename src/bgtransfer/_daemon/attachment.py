"""The daemon client's attachment: its lease on a session of the daemon, and
the requests made under it, kept across daemon restarts.

:class:`Attachment` reaches the daemon (launching it on demand,
``connection.reach``), attaches, and reads the attachment's event lines into
the client's :class:`~bgtransfer._daemon.snapshots.Snapshots` and its
:class:`~bgtransfer._engine.hub.EventHub`. When those lines end (or a
request's connection breaks) while the session is open, it reaches the daemon
again, attaches again, and publishes what the streams missed meanwhile
(``Snapshots.merge``); :meth:`Attachment.send` sends a command again once
attached (or, for a submission, says its answer was lost: :class:`Unanswered`).
Bounded by the launch timeout: a daemon that does not come back, or a session
another client took meanwhile, ends the attachment (:meth:`Attachment.end`)
with an error that waits, streams and commands then raise.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiohttp

from .._core.config import Configuration
from .._core.events import EventsDeliveredEvent, EventsGapEvent, ProgressEvent
from .._core.wire import encode_config
from .._core.wire_stats import decode_statistics
from .._engine.backend import TaskSnapshot
from .._engine.hub import EventHub
from .._exceptions import DaemonError, SessionClosedError, SessionInUseError
from .channel_client import NO_CHANNEL, Channel, open_channel
from .connection import (
    BASE,
    HEADERS,
    LAUNCH_TIMEOUT,
    STOPPING,
    DaemonStopping,
    command_session,
    daemon_error,
    reach,
    streams_session,
)
from .paths import socket_path
from .protocol import LEASE_HEADER, MAX_BODY
from .snapshots import Snapshots

__all__ = ["LOST", "Attachment", "Unanswered"]

LOST: Final = (aiohttp.ClientError, OSError, ValueError)  # the daemon's connection broke
ATTEMPTS: Final = 4  # a command is sent at most this often (three reconnections)
JSON: Final = {"Content-Type": "application/json"}

Backlog = list[tuple[TaskSnapshot, ProgressEvent | None]]


class Unanswered(Exception):
    """A submission's connection broke; the daemon is back, and the request may
    or may not have made its tasks (``mark``: the client's :meth:`Snapshots.mark`
    when it was sent)."""

    def __init__(self, mark: int) -> None:
        super().__init__("the daemon's answer was lost")
        self.mark = mark


class Attachment:
    """One session's lease on the daemon; see the module docstring."""

    def __init__(
        self,
        identifier: str,
        config: Configuration,
        *,
        state_dir: Path,
        default: bool,
        book: Snapshots,
        hub: EventHub,
        on_end: Callable[[BaseException | None], None],
        on_question: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        path = socket_path(state_dir, default=default)
        self.http = streams_session(path)  # the attachment, cursor streams, hello
        self._commands = command_session(path)
        self._state_dir = state_dir
        self._default = default
        self.identifier = identifier
        self._config = config
        self.prefix = f"{BASE}/v1/sessions/{identifier}"
        self.headers = dict(HEADERS)
        self.directory = Path()
        self._book = book
        self._hub = hub
        self._on_end = on_end  # the client ends its cursor streams
        self._on_question = on_question  # the client asks its auth provider
        self._response: aiohttp.ClientResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self.generation = 0  # attachments made after the first
        self.closed = False  # closed by the application, or ended for good
        self.lost: BaseException | None = None  # why the daemon could not be reached again
        self.invalidated = False  # the daemon ends the session: no reconnection
        self._channel: Channel | None = None  # the commands' (channel_client.py)
        self._channel_lock = asyncio.Lock()
        self._channels = True  # the daemon offers one (its hello; a refused upgrade says not)

    @property
    def leased(self) -> bool:
        return self._response is not None and LEASE_HEADER in self.headers

    # -- attaching ----------------------------------------------------------------------

    async def open(self) -> None:
        """Reach the daemon (launching it if nothing answers) and attach; a
        daemon that stopped in between is waited for, and a new one reached
        (within the launch timeout)."""
        deadline = asyncio.get_running_loop().time() + LAUNCH_TIMEOUT
        while True:
            self._heard(await reach(self.http, self._state_dir, default=self._default))
            try:
                backlog = await self._attach()
                break
            except DaemonStopping:
                if asyncio.get_running_loop().time() > deadline:
                    raise
        for snapshot, progress in backlog:
            self._book.take(snapshot, progress)
        self._reader = asyncio.create_task(self._read(self._response))

    def _heard(self, hello: dict[str, Any]) -> None:
        capabilities = hello.get("capabilities")
        self._channels = isinstance(capabilities, list) and "channel" in capabilities

    async def _attach(self) -> Backlog:
        """Attach: the lease, and the backlog's task lines (up to ``ready``)."""
        body = {"config": encode_config(self._config)}
        response = await self.http.post(self.prefix + "/attach", json=body, headers=self.headers)
        if response.status != 200:
            try:
                answer = await response.json(content_type=None)
            finally:
                response.release()
            if response.status == STOPPING:
                raise DaemonStopping(str(daemon_error(answer)))
            raise daemon_error(answer)
        try:
            backlog = await self._backlog(response)
        except BaseException:
            response.close()
            raise
        self._response = response
        return backlog

    async def _backlog(self, response: aiohttp.ClientResponse) -> Backlog:
        backlog = []
        while (line := await read_line(response)) is not None:
            kind = line.get("type")
            if kind == "attached":
                self.headers[LEASE_HEADER] = str(line["lease"])
                self.directory = Path(line["directory"])
                self._book.statistics = decode_statistics(line["statistics"])
            elif kind == "task":
                backlog.append(self._book.task_line(line))
            elif kind == "ready":
                self._book.cursor = _optional_int(line.get("cursor"))
                return backlog
        raise SessionClosedError(f"the daemon closed session {self.identifier!r}")

    async def _read(self, response: aiohttp.ClientResponse | None) -> None:
        """The live events: each updates the snapshots, then reaches the streams.
        When they end with the session still open, the client reconnects."""
        try:
            while response is not None and (line := await read_line(response)) is not None:
                kind = line.get("type")
                if kind == "challenge" and self._on_question is not None:
                    self._on_question(line)
                if kind != "event":
                    continue
                event = self._book.apply(line)
                if not isinstance(event, EventsDeliveredEvent | EventsGapEvent):
                    self._hub.publish(event)
        except LOST:
            pass  # the daemon went away
        if self.invalidated and not self.closed:  # the daemon ended the session
            self.end(None)
        elif not self.closed:
            self._connection_lost()

    # -- reconnecting -------------------------------------------------------------------

    def _connection_lost(self) -> asyncio.Task[None]:
        """The reconnection, started unless one runs."""
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())
        return self._reconnecting

    async def _reconnect(self) -> None:
        """Reach the daemon again (launching one), attach again, and hand the
        streams what they missed; within the launch timeout, else :meth:`end`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LAUNCH_TIMEOUT
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        response, self._response = self._response, None
        if response is not None:
            response.close()  # the old lease ends with its connection
        self.headers.pop(LEASE_HEADER, None)
        await self._drop_channel()
        delay = 0.01
        while True:
            try:
                self._heard(await reach(self.http, self._state_dir, default=self._default))
                backlog = await self._attach()
                break
            except SessionInUseError as exc:
                # Another client's lease: the session is theirs now. Otherwise
                # our own old lease (until the daemon sees its connection
                # close), or a daemon on its way out still closing the session.
                if await self._taken(exc):
                    self.end(exc)
                    return
                if loop.time() > deadline:
                    self.end(DaemonError(f"{exc}, still after {LAUNCH_TIMEOUT:g} s"))
                    return
            except (*LOST, DaemonStopping) as exc:  # it died (or stops) after the hello
                if loop.time() > deadline:
                    self.end(exc)
                    return
            except Exception as exc:  # DaemonError (it did not come back), a refusal
                self.end(exc)
                return
            await asyncio.sleep(delay)  # a bounded retry, short growing pauses
            delay = min(delay * 2, 0.2)
        self.generation += 1
        for event in self._book.merge(backlog):
            self._hub.publish(event)
        self._reader = loop.create_task(self._read(self._response))

    async def _taken(self, refused: SessionInUseError) -> bool:
        """Whether another client holds the session's lease (the daemon's
        status says who is attached), rather than a holder that lets go."""
        if refused.pid == os.getpid():
            return False
        try:
            async with self.http.get(BASE + "/v1/status", headers=HEADERS) as response:
                status = await response.json(content_type=None)
            sessions = status["sessions"] if response.status == 200 else []
        except (*LOST, KeyError, TypeError):
            return False  # (the daemon went away again: the next attempt says)
        return any(
            isinstance(s, dict)
            and s.get("identifier") == self.identifier
            and s.get("attached")
            and s.get("client_pid") not in (None, os.getpid())
            for s in sessions
        )

    def end(self, cause: BaseException | None) -> None:
        """The session is over for this client: streams end (with an error
        naming ``cause``), waits and commands raise it."""
        self.closed = True
        self.lost = cause
        error = None if cause is None else self.closed_error()
        self._hub.close(error)
        self._on_end(error)
        self._book.wake_all()

    def closed_error(self, what: str = "") -> Exception:
        """What a call on the closed session raises (``what``: before what)."""
        cause = self.lost
        if isinstance(cause, SessionInUseError):
            error: Exception = SessionInUseError(self.identifier, cause.pid)
            error.add_note("the daemon's connection was lost, and another client took the session")
        elif cause is not None:
            error = SessionClosedError(
                f"session {self.identifier!r} is closed{what}: the daemon's connection was "
                f"lost and could not be made again ({type(cause).__name__}: {cause})"
            )
        else:
            error = SessionClosedError(f"session {self.identifier!r} is closed{what}")
        error.__cause__ = cause
        return error

    async def ready(self) -> None:
        """Return once attached (a reconnection that runs is waited for)."""
        reconnecting = self._reconnecting
        if reconnecting is not None and not reconnecting.done():
            await asyncio.shield(reconnecting)
        if self.lost is not None:  # (closing: the commands sent before still go)
            raise self.closed_error()

    async def recover(self, generation: int, exc: BaseException) -> None:
        """A request's connection broke: return once attached again, if the
        session is open (a reconnection since ``generation`` counts)."""
        if self.closed or self.invalidated:
            raise self.closed_error() from exc
        if self.generation == generation:
            await asyncio.shield(self._connection_lost())
        await self.ready()

    async def close(self) -> None:
        """Stop reading and reconnecting; the lease ends with the connection."""
        self.closed = True
        for job in (self._reconnecting, self._reader):
            if job is not None and not job.done():
                job.cancel()
                try:
                    await job
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # (ours, not the job's)
        if self._response is not None:
            self._response.close()
        await self._drop_channel()

    async def close_sessions(self) -> None:
        await self._commands.close()
        await self.http.close()

    # -- requests -----------------------------------------------------------------------

    async def send(
        self, path: str, body: dict[str, Any] | None, *, resend: bool = True
    ) -> dict[str, Any]:
        """A command; sent again after a reconnection when its connection broke
        (``resend``; otherwise :class:`Unanswered`) or its lease was unknown
        (a daemon that came back before the attachment noticed)."""
        attempts = 0
        while True:
            attempts += 1
            await self.ready()
            generation, mark = self.generation, self._book.mark()
            try:
                status, answer = await self.post(path, body)
            except LOST as exc:
                if attempts == ATTEMPTS:
                    raise self._gone(exc) from exc
                await self.recover(generation, exc)
                if not resend:
                    raise Unanswered(mark) from exc
                continue
            if status == 200:
                break
            error = daemon_error(answer)
            if status == STOPPING and attempts < ATTEMPTS:
                # Refused unread by a stopping daemon: sent again to the next one.
                await self.recover(generation, error)
                continue
            if status != 409 or type(error) is not SessionClosedError or attempts == ATTEMPTS:
                raise error
            await self.recover(generation, error)  # no such lease: a new daemon
        if "statistics" in answer:
            self._book.statistics = decode_statistics(answer["statistics"])
        return dict(answer)

    def _gone(self, exc: BaseException) -> SessionClosedError:
        return SessionClosedError(
            f"session {self.identifier!r}: the daemon's connection broke again after "
            f"{ATTEMPTS - 1} reconnections ({type(exc).__name__}: {exc})"
        )

    async def call_once(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """A command sent once, as it is (the detach when closing)."""
        status, answer = await self.post(path, body)
        if status != 200:
            raise daemon_error(answer)
        return dict(answer)

    async def post(self, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        """The command's status and answer: over the channel (opened when first
        needed, again after a reconnection), else as a request of its own (a
        daemon without a channel; a body beyond what a message may hold, for
        the daemon's 413; the detach, which ends the channel's lease)."""
        text = json.dumps(body or {}, separators=(",", ":"))
        if self._channels and path != "/detach" and len(text) < MAX_BODY:
            channel = self._channel
            lease = self.headers.get(LEASE_HEADER)
            if channel is None or not channel.open or channel.lease != lease:
                channel = await self._open_channel()
            if channel is not None:
                return await channel.call(path, text)
        async with self._commands.post(
            self.prefix + path, data=text, headers={**self.headers, **JSON}
        ) as response:
            return response.status, await response.json(content_type=None)

    async def _open_channel(self) -> Channel | None:
        """The lease's channel, opened unless another caller just did; None
        when the daemon refuses it (the request then says why, or goes as a
        request for good where the daemon has no channel)."""
        async with self._channel_lock:
            lease = self.headers.get(LEASE_HEADER)
            channel = self._channel
            if channel is not None and channel.open and channel.lease == lease:
                return channel
            await self._drop_channel()
            if lease is None or not self._channels:
                return None
            try:
                self._channel = await open_channel(
                    self.http, self.prefix + "/channel", self.headers, lease
                )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in NO_CHANNEL:
                    self._channels = False
                return None
            return self._channel

    async def _drop_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


async def read_line(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
    """The next JSON line of a stream of the daemon; None at its end."""
    raw = await response.content.readline()
    if not raw:
        return None
    document = json.loads(raw)
    if not isinstance(document, dict):
        raise DaemonError("the daemon sent a line that is not a JSON object")
    return document


def _optional_int(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise DaemonError(f"the daemon sent {value!r} where a number belongs")
