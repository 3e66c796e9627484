"""The daemon client's command channel: one small HTTP/1.1 exchange per command.

A command is a ``POST`` with a JSON body, answered with a JSON body of a known
length (``Content-Length``; aiohttp's server sets it on every answer it makes
whole). This is all the client needs of HTTP for them, so it speaks it itself
over at most ``COMMAND_CONNECTIONS`` kept-alive connections to the socket, the
rest of the calls waiting their turn (never an overflow of the daemon's listen
backlog). The long-lived requests (hello, attach, cursor streams) stay on
aiohttp's client (``connection.streams_session``).

Why not aiohttp's client for the commands too (docs/design.md, "Commands on a
channel of their own"): its request and response objects, timers, tracing and
URL building cost more per command than the daemon's handling of it; a
sequential ``download()`` loop pays them once per call, and that time is not
overlapped with anything.

A connection that breaks, answers something that is not HTTP, or is left in the
middle of an exchange (cancelled) is closed, never reused; the error is a
:class:`ChannelError` (an ``OSError``, as a refused connection is), which the
attachment treats as a lost daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = ["COMMAND_CONNECTIONS", "ChannelError", "CommandChannel"]

COMMAND_CONNECTIONS: Final = 8  # concurrent command requests; the rest wait their turn
HEAD_LIMIT: Final = 64 * 1024  # an answer's status line and headers, at most
BODY_LIMIT: Final = 256 * 1024 * 1024  # an answer's body, at most (a 10,000-task batch: ~5 MiB)


class ChannelError(ConnectionError):
    """The command's connection broke, or the answer was not HTTP we understand."""


class _Connection:
    """One kept-alive connection: one exchange at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def usable(self) -> bool:
        """Still open at both ends (the daemon closes idle connections)."""
        return not self.writer.is_closing() and not self.reader.at_eof()

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send ``request``; the answer's status, body, and whether the
        connection may carry another."""
        self.writer.write(request)
        await self.writer.drain()
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ChannelError("the daemon closed the connection before answering") from exc
        except asyncio.LimitOverrunError as exc:
            raise ChannelError("the daemon's answer has an oversized head") from exc
        status, length, keep = _parse_head(head)
        if length is not None:
            body = await self._exactly(length)
        else:  # delimited by the connection's end
            body = await self.reader.read(BODY_LIMIT)
            keep = False
        return status, body, keep

    async def _exactly(self, length: int) -> bytes:
        if length > BODY_LIMIT:
            raise ChannelError(f"the daemon's answer is too large ({length} bytes)")
        try:
            return await self.reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise ChannelError("the daemon's answer was cut short") from exc

    def close(self) -> None:
        self.writer.close()


def _parse_head(head: bytes) -> tuple[int, int | None, bool]:
    """An answer's status, ``Content-Length`` (None: none), and whether the
    connection stays open after it. A chunked answer is refused: aiohttp's
    server sends a whole answer with its length."""
    lines = head.split(b"\r\n")
    try:
        version, code = lines[0].split(b" ", 2)[:2]
        status = int(code)
    except ValueError as exc:
        raise ChannelError(f"the daemon answered {lines[0][:80]!r}, not HTTP") from exc
    if not version.startswith(b"HTTP/1."):
        raise ChannelError(f"the daemon answered {lines[0][:80]!r}, not HTTP/1.x")
    length = None
    keep = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError as exc:
                raise ChannelError(f"the daemon sent Content-Length {value[:40]!r}") from exc
            if length < 0:
                raise ChannelError(f"the daemon sent Content-Length {length}")
        elif name == b"transfer-encoding":
            raise ChannelError(f"the daemon answered with Transfer-Encoding {value[:40]!r}")
        elif name == b"connection":
            token = value.strip().lower()
            keep = token == b"keep-alive" or (keep and token != b"close")
    return status, length, keep


class CommandChannel:
    """``POST`` a JSON body to the daemon's socket at ``path``, get the status
    and the body of the answer; see the module docstring."""

    def __init__(self, path: Path, *, limit: int = COMMAND_CONNECTIONS) -> None:
        self._path = str(path)
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._closed = False

    async def post(self, target: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """The answer's status and body. ``target``: the path (``/v1/...``)."""
        if self._closed:
            raise ChannelError("the command channel is closed")
        request = _request(target, body, headers)
        async with self._slots:
            connection = self._take()
            if connection is None:
                reader, writer = await asyncio.open_unix_connection(self._path, limit=HEAD_LIMIT)
                connection = _Connection(reader, writer)
            keep = False
            try:
                status, answer, keep = await connection.exchange(request)
            finally:
                if keep and not self._closed:
                    self._idle.append(connection)
                else:  # broken, cancelled mid-exchange, or not to be reused
                    connection.close()
        return status, answer

    def _take(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
            connection.close()
        return None

    async def close(self) -> None:
        """Close the idle connections; one still in an exchange closes after it."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()


def _request(target: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    """A ``POST`` of ``body`` (JSON) to ``target``, with ``headers``."""
    lines = [f"POST {target} HTTP/1.1\r\nHost: bgtransfer\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} has a line break")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return "".join(lines).encode("latin-1") + body
