"""The command channel, the client's side: one WebSocket per attachment that
carries its commands (``channel_server.py`` is the daemon's side and says the
messages).

A command is a message with an id; the reader matches each answer to its
caller. A caller cancelled while its command runs sends ``{"cancel": id}``,
as closing a request's connection cancels it in the daemon. When the channel
closes (the daemon went away, the lease ended), every caller waiting gets a
connection error, as a request whose connection broke: the attachment
reconnects and the command is sent again (``attachment.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Final

import aiohttp

__all__ = ["IN_FLIGHT", "NO_CHANNEL", "Channel", "open_channel"]

IN_FLIGHT: Final = 64  # commands sent and not answered at most (the daemon's bound)
NO_CHANNEL: Final = (404, 405)  # an upgrade refused so: a daemon without the channel


class Channel:
    """One open channel, bound to the lease it was opened with."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, lease: str) -> None:
        self.lease = lease
        self._ws = ws
        self._next = 0
        self._waiting: dict[int, asyncio.Future[tuple[int, Any]]] = {}
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._error: Exception | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def open(self) -> bool:
        return self._error is None and not self._ws.closed

    async def call(self, path: str, text: str) -> tuple[int, Any]:
        """Send the command ``path`` with its encoded body; its status and answer."""
        async with self._slots:
            if self._error is not None:
                raise self._error
            self._next += 1
            ident = self._next
            future: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
            self._waiting[ident] = future
            try:
                command = json.dumps(path)
                await self._ws.send_str(f'{{"id":{ident},"command":{command},"body":{text}}}')
                return await future
            except asyncio.CancelledError:
                # (The caller's cancel cancels the future it awaits: not an answer.)
                answered = future.done() and not future.cancelled()
                if not answered and self.open:
                    self._send_soon(f'{{"cancel":{ident}}}')
                raise
            finally:
                self._waiting.pop(ident, None)

    def _send_soon(self, text: str) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(text))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly(self, text: str) -> None:
        # A channel that closed meanwhile cancelled its commands itself.
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            await self._ws.send_str(text)

    async def _read(self) -> None:
        error: Exception = aiohttp.ClientConnectionError("the daemon closed the command channel")
        try:
            async for message in self._ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                answer = json.loads(message.data)
                future = self._waiting.get(answer.get("id"))
                if future is not None and not future.done():
                    future.set_result((answer["status"], answer["answer"]))
        except (aiohttp.ClientError, ConnectionError, ValueError, AttributeError, KeyError) as exc:
            error = aiohttp.ClientConnectionError(f"the command channel broke: {exc!r}")
        finally:
            self._error = error
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(error)

    async def close(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            await self._ws.close()
        self._reader.cancel()
        await asyncio.wait([self._reader, *self._background])


async def open_channel(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], lease: str
) -> Channel:
    """The channel of the attachment holding ``lease``;
    ``aiohttp.WSServerHandshakeError`` when the daemon refuses the upgrade.
    Its answers are not bounded here, as a request's are not: they are the
    daemon's (this user's process), a batch of 10,000 snapshots for one."""
    ws = await http.ws_connect(url, headers=headers, compress=0, max_msg_size=0)
    return Channel(ws, lease)
