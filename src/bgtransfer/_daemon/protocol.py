"""The daemon protocol's HTTP side: headers, limits, and the helpers every route uses.

Shared by the server (``server.py``, ``sessions.py``, ``commands.py``), its
client (``connection.py``, ``client.py``) and ``control.py``. The values
themselves are :mod:`bgtransfer._core.wire`'s.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from .._core.version import VERSION
from .._core.wire import PROTOCOL_VERSION, WireError, encode_exception
from .._exceptions import BgTransferError, SessionInUseError

if TYPE_CHECKING:
    # Types only: the clients (connection.py, control.py) import this module for
    # its constants, and aiohttp.web is the server's (error_response imports it).
    from aiohttp import web

__all__ = [
    "CAPABILITIES",
    "LEASE_HEADER",
    "MAX_BODY",
    "PROTOCOL_HEADER",
    "SHUTDOWN_BOUND",
    "Refused",
    "encode_json",
    "error_response",
    "package_version",
    "peer",
    "read_body",
    "refusal",
    "send_all",
    "send_line",
    "send_lines",
    "version_error",
]

PROTOCOL_HEADER: Final = "Bgtransfer-Protocol"
LEASE_HEADER: Final = "Bgtransfer-Lease"
MAX_BODY: Final = 16 * 1024 * 1024  # a batch of some 10,000 requests; more is refused (413)
SHUTDOWN_BOUND: Final = 10.0  # seconds SIGTERM/--stop may take to journal and close
CAPABILITIES: Final = ("attach", "status", "stop", "credentials", "channel")
WRITE_BATCH: Final = 256  # lines a stream's reader holds at most while a write waits
# Seconds a stream's write waits after the one before, so lines that follow
# closely go together: each write wakes the client, and a wake-up of another
# process costs the daemon more than the line (docs/design.md, "What a command
# and a line cost the daemon"). A line after a quiet moment goes at once.
LINGER: Final = 0.005
# The daemon's JSON text (stream lines, channel answers). json.dumps with
# separators makes an encoder each call: one, made once (the same text: ASCII,
# no spaces). What it encodes are fresh dicts of the wire's encoders, never a
# cycle: the check for one cost 8% of a line's encoding.
encode_json: Final = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def package_version() -> str:
    # The package's constant: importlib.metadata cost every daemon's start 2%.
    return VERSION


class Refused(Exception):
    """A request answered with an HTTP error status and a JSON error body."""

    def __init__(self, status: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.status = status
        self.error = error


def refusal(exc: Exception) -> tuple[int, BaseException] | None:
    """The status and the error a request that raised ``exc`` is answered
    with (the same over HTTP and the command channel); None for an error that
    is no refusal (a bug: answered 500 and logged by the caller)."""
    if isinstance(exc, Refused):
        return exc.status, exc.error
    if isinstance(exc, SessionInUseError):
        return 409, exc
    if isinstance(exc, KeyError):
        return 404, exc
    if isinstance(exc, BgTransferError | TypeError | ValueError):
        return 400, exc
    return None


def version_error(given: str) -> ValueError:
    return ValueError(
        f"protocol version mismatch: the client speaks version {given}, "
        f"this daemon (bgtransfer {package_version()}) speaks version {PROTOCOL_VERSION}"
    )


def error_response(status: int, error: BaseException) -> web.Response:
    from aiohttp import web  # noqa: PLC0415 (see the imports)

    return web.json_response({"error": encode_exception(error)}, status=status)


async def send_line(response: web.StreamResponse, line: dict[str, Any]) -> None:
    # write() waits while the client's socket is full: the engine never does
    # (the session stream between them coalesces progress meanwhile).
    await response.write(_line_bytes(line))


def _line_bytes(line: dict[str, Any]) -> bytes:
    return encode_json(line).encode("utf-8") + b"\n"


async def send_all(response: web.StreamResponse, lines: Iterable[dict[str, Any]]) -> None:
    """Lines known at once (the attach stream's backlog), WRITE_BATCH to a write."""
    chunk: list[bytes] = []
    for line in lines:
        chunk.append(_line_bytes(line))
        if len(chunk) >= WRITE_BATCH:
            await response.write(b"".join(chunk))
            chunk.clear()
    if chunk:
        await response.write(b"".join(chunk))


async def send_lines(
    response: web.StreamResponse,
    items: AsyncIterator[Any],
    render: Callable[[Any], dict[str, Any]],
    *,
    also: AsyncIterator[dict[str, Any]] | None = None,
) -> None:
    """Each item of ``items`` as a line, the lines that are ready together in
    one write: a reader takes items while they come without waiting, and the
    writer sends what it holds as soon as the reader has to wait, once LINGER
    has passed since its last write: a line after a quiet moment goes at once,
    lines that follow closely go together (and the lines held when ``items``
    ends, or a full batch, at once). Each write wakes the client once, not once
    per line. The reader stops taking at WRITE_BATCH lines held until the
    writer takes them: a slow client leaves the rest in ``items`` (which
    coalesces progress), never in an unbounded list here. ``also``: lines of
    another source (the questions of ``credentials.py``, a few), read beside
    ``items`` into the same writes, until ``items`` ends."""
    held: list[bytes] = []
    ready = asyncio.Event()  # a line held, or the reader ended
    room = asyncio.Event()  # the writer took the lines held
    urgent = asyncio.Event()  # the writer's pause ends early: ended, or a batch held
    ended = False

    async def read() -> None:
        nonlocal ended
        try:
            async for item in items:
                held.append(_line_bytes(render(item)))
                ready.set()
                if len(held) >= WRITE_BATCH:
                    urgent.set()
                    room.clear()
                    await room.wait()
        finally:
            ended = True
            ready.set()
            urgent.set()

    async def read_also() -> None:
        assert also is not None
        async for line in also:
            held.append(_line_bytes(line))
            ready.set()

    loop = asyncio.get_running_loop()
    reader = loop.create_task(read())
    other = None if also is None else loop.create_task(read_also())
    last = -math.inf  # when the last write went (the loop's clock)
    try:
        while held or not ended:
            if not held:
                ready.clear()
                await ready.wait()
                continue
            pause = last + LINGER - loop.time()
            if pause > 0 and not ended and len(held) < WRITE_BATCH:
                await _linger(urgent, pause)  # the lines that follow join these
                continue
            last = loop.time()
            lines = b"".join(held)
            held.clear()
            room.set()
            await response.write(lines)
        await reader  # its error, if any, is this stream's
    finally:
        await _end_readers(reader, other)


async def _linger(urgent: asyncio.Event, pause: float) -> None:
    """Wait ``pause`` seconds, or until ``urgent`` is set."""
    urgent.clear()
    timer = asyncio.get_running_loop().call_later(pause, urgent.set)
    try:
        await urgent.wait()
    finally:
        timer.cancel()


async def _end_readers(reader: asyncio.Task[None], other: asyncio.Task[None] | None) -> None:
    """``send_lines``'s end: its readers stopped, their errors retrieved."""
    if other is not None:
        other.cancel()
        await asyncio.wait([other])
        if not other.cancelled():
            other.exception()  # retrieved (it ends only when cancelled)
    if not reader.done():
        reader.cancel()
        await asyncio.wait([reader])  # a cancel of this task still propagates
    if not reader.cancelled():
        reader.exception()  # retrieved: raised above, or lost with the write's


async def read_body(request: web.BaseRequest) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise WireError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WireError("the request body is not a JSON object")
    return body


_PEERCRED = struct.Struct("3i")


def peer(request: web.BaseRequest) -> tuple[int | None, int | None]:
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
