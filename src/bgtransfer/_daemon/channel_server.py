"""The command channel, the daemon's side: a session's commands over one WebSocket.

``GET /v1/sessions/{identifier}/channel`` with the attachment's lease, upgraded
to a WebSocket (docs/daemon.md, "The command channel"). Each text message is a
command, ``{"id": n, "command": "/tasks/12/cancel", "body": {...}}`` (a path of
``commands.py``'s table, as its ``POST`` would name it below the session), and
its answer is ``{"id": n, "status": 200, "answer": {...}}``: the status and the
body that ``POST`` would have had. ``{"cancel": n}`` cancels command ``n`` (it
gets no answer then). The commands run concurrently, as requests do (the
submissions excepted: answered before the next message is read), at most
``IN_FLIGHT`` of a channel at once (beyond: 429, answered at once, so the
channel is always read and a cancel always arrives); a message that is not a
command gets a 400 answer with ``"id": null``. The lease is checked at each
command, and the channel ends with it.

Why a channel beside the routes: a command over it costs the client and the
daemon less than half of an HTTP request's CPU, and one ``download()`` through
the daemon is one command (docs/design.md, "Commands over one WebSocket").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Final, TypeGuard

from aiohttp import WSMsgType, web

from .._core.wire import WireError, encode_exception
from .commands import COMMANDS, Command, run_command
from .protocol import MAX_BODY, encode_json, refusal
from .routing import NUMBER, command_key
from .sessions import Served

__all__ = ["IN_FLIGHT", "serve_channel"]

IN_FLIGHT: Final = 64  # commands of one channel running at once
log = logging.getLogger("bgtransfer.daemon")

# The submissions (``download()``, ``upload()``: the channel's busiest traffic)
# run in the channel's own task, not a task of their own: a task, its first
# step and its end cost the daemon three loop callbacks per ``download()``.
# They end within a journal commit; the channel reads its next message after
# (docs/design.md, "What a command and a line cost the daemon").
_INLINE: Final = frozenset({"/tasks", "/resumed", "/uploads"})

# The commands whose path has no number are their own key (``/tasks``,
# ``/acknowledge``: most of a channel's traffic), found without cutting the path.
_PLAIN: Final[dict[str, tuple[str, int | None]]] = {
    key: (key, None) for key in COMMANDS if NUMBER not in key
}


async def serve_channel(
    request: web.BaseRequest, check: Callable[[], Served]
) -> web.WebSocketResponse:
    """Serve one channel until the client closes it (or its lease ends: the
    server cancels this handler). ``check`` gives the session the channel's
    lease holds, or raises ``protocol.Refused`` (409 for a lease that ended,
    503 while the daemon stops), as each command's request would be refused."""
    ws = web.WebSocketResponse(max_msg_size=MAX_BODY, compress=False)
    await ws.prepare(request)
    channel = _Channel(ws, check)
    try:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await channel.take(message.data)
            else:
                await _refuse(ws, None, 400, WireError("a command is a JSON text message"))
    finally:
        alive = list(channel.alive)
        for task in alive:
            task.cancel()
        if alive:
            await asyncio.wait(alive)  # a cancel of this handler still propagates
    return ws


class _Channel:
    def __init__(self, ws: web.WebSocketResponse, check: Callable[[], Served]) -> None:
        self._ws = ws
        self._check = check
        self._running: dict[int, asyncio.Task[None]] = {}  # by id: the ones that hold a slot
        self.alive: set[asyncio.Task[None]] = set()  # with the cancelled ones still ending

    async def take(self, text: str) -> None:
        """One message: a command started, a cancel done, or a 400/404/429 answer."""
        ws = self._ws
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            await _refuse(ws, None, 400, WireError(f"the message is not JSON: {exc}"))
            return
        if not isinstance(message, dict):
            await _refuse(ws, None, 400, WireError("the message is not a JSON object"))
            return
        if "cancel" in message:
            # Its slot is free at once (the task may take a turn to end); an
            # id that is not running was done already: nothing to do.
            target = message["cancel"]
            task = self._running.pop(target, None) if _is_id(target) else None
            if task is not None:
                task.cancel()
            return
        ident = message.get("id")
        if not _is_id(ident):
            await _refuse(ws, None, 400, WireError("the message has no integer 'id'"))
            return
        path, body = message.get("command"), message.get("body", {})
        found = None
        if isinstance(path, str):
            found = _PLAIN.get(path)
            if found is None and path.startswith("/"):
                found = command_key(path[1:])
        command = None if found is None else COMMANDS.get(found[0])
        if command is None or found is None or not isinstance(path, str):
            await _refuse(ws, ident, 404, KeyError(f"no such command: {path!r}"))
        elif not isinstance(body, dict):
            await _refuse(ws, ident, 400, WireError("the command's body is not a JSON object"))
        elif ident in self._running:
            await _refuse(ws, ident, 400, WireError(f"command {ident} is still running"))
        elif len(self._running) >= IN_FLIGHT:
            await _refuse(ws, ident, 429, WireError(f"{IN_FLIGHT} commands are running already"))
        else:
            await self._start(ident, path, command, body, found)

    async def _start(
        self,
        ident: int,
        path: str,
        command: Command,
        body: dict[str, Any],
        found: tuple[str, int | None],
    ) -> None:
        if found[0] in _INLINE:
            await self._run(ident, path, command, body, found[1])
            return
        task = asyncio.get_running_loop().create_task(
            self._run(ident, path, command, body, found[1])
        )
        self._running[ident] = task
        self.alive.add(task)
        task.add_done_callback(self._done)

    async def _run(
        self, ident: int, path: str, command: Command, body: dict[str, Any], number: int | None
    ) -> None:
        try:
            answer = await run_command(command, self._check(), body, number)
        except Exception as exc:  # every error is an answer, never the channel's end
            refused = refusal(exc)
            if refused is None:
                log.exception("command %s failed", path)
                refused = 500, exc
            await _refuse(self._ws, ident, *refused)
        else:
            await _send(self._ws, {"id": ident, "status": 200, "answer": answer})

    def _done(self, task: asyncio.Task[None]) -> None:
        self.alive.discard(task)
        for ident, running in self._running.items():
            if running is task:
                del self._running[ident]
                return


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


async def _refuse(
    ws: web.WebSocketResponse, ident: int | None, status: int, error: BaseException
) -> None:
    await _send(ws, {"id": ident, "status": status, "answer": {"error": encode_exception(error)}})


async def _send(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    text = encode_json(message)
    with contextlib.suppress(ConnectionError):  # the client went away: nobody to answer
        await ws.send_str(text)
