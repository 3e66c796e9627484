"""One HTTP GET streamed into a partial file: the thin aiohttp/aiofiles shell.

The core decides (``check_response``); this module only moves bytes. Reading the
socket and writing the file overlap: while one write runs in aiofiles' worker
thread, arriving chunks gather in memory and go out as the next single write.
A slow disk thus batches writes instead of stalling the socket, a slow network
still gets each chunk written promptly, and the gathering buffer is bounded
(``MAX_PENDING_BYTES``): past it the reader waits for the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import aiofiles
import aiohttp
import anyio
import attrs
from aiofiles.threadpool.binary import AsyncFileIO

from .._exceptions import IncompleteBodyError
from .errors import file_error, map_errors
from .files import private_opener

__all__ = ["MAX_PENDING_BYTES", "BodyPlan", "TransferSink", "fetch_to_file"]

MAX_PENDING_BYTES = 8 * 1024 * 1024
"""Bytes received but not yet handed to the disk, at most, per transfer."""


@attrs.frozen
class BodyPlan:
    """Where a response's body goes: at ``offset`` in the partial file, expecting
    ``length`` bytes (None: until the server ends the body). With ``truncate`` the
    file is cut at ``offset`` first (bytes past it were never confirmed); without
    (a segment of a preallocated file), what lies beyond is left alone and the
    body is read no further than ``length`` bytes."""

    offset: int
    length: int | None
    truncate: bool = True


class TransferSink(Protocol):
    """What a transfer reports to, and asks, its owner (the engine's task record)."""

    def judge(self, status: int, reason: str, headers: Mapping[str, str]) -> BodyPlan | None:
        """Decide from the status and (lower-cased) headers; None: no body to write."""
        ...

    async def prepare(self, plan: BodyPlan) -> None:
        """Called once the plan is made, before the partial file is opened or truncated."""
        ...

    def chunk_received(self, nbytes: int) -> None:
        """Called for each chunk read; may raise to end the attempt (too slow)."""
        ...

    def bytes_written(self, nbytes: int) -> None:
        """Called as bytes reach the file, in order."""
        ...


async def fetch_to_file(
    client: aiohttp.ClientSession,
    *,
    url: str,
    headers: Mapping[str, str],
    partial: Path,
    request_timeout: float | None,
    sink: TransferSink,
) -> BodyPlan | None:
    """One GET of ``url``; the body goes where ``sink.judge`` says.

    Returns the plan that was carried out once every byte is on disk and the
    length matches, or None when the sink decided there was no body to write;
    raises a :class:`~bgtransfer.TransferError` otherwise. Redirects are
    followed by aiohttp, with the same headers (so ``Range`` goes along).
    """
    timeout = aiohttp.ClientTimeout(
        total=None, connect=None, sock_connect=request_timeout, sock_read=request_timeout
    )
    with map_errors(url=url, request_timeout=request_timeout):
        async with client.get(url, headers=dict(headers), timeout=timeout) as response:
            plan = sink.judge(
                response.status,
                response.reason or "",
                {name.lower(): value for name, value in response.headers.items()},
            )
            if plan is None:
                return None
            await sink.prepare(plan)
            written = await _stream_body(response, partial, plan, sink, url)
    if plan.length is not None and written != plan.length:
        # aiohttp normally raises ClientPayloadError first; this is the backstop.
        raise IncompleteBodyError(
            f"received {written} of the {plan.length} bytes announced", url=url
        )
    return plan


async def _open_at(partial: Path, plan: BodyPlan, url: str) -> AsyncFileIO:
    """The partial file opened for writing at the plan's offset (created, and
    truncated there if the plan says so)."""
    file: AsyncFileIO | None = None
    offset = plan.offset
    try:
        # Shielded: a cancel arriving while the worker thread opens the file
        # would otherwise leave the opened file with nobody to close it.
        with anyio.CancelScope(shield=True):
            # Unbuffered: a write that returned is in the kernel, so a checkpoint
            # counting it survives the process being killed (the journal's
            # invariant); batching is done by the writer below, not by a buffer.
            if offset == 0 and plan.truncate:
                file = await aiofiles.open(partial, "wb", buffering=0, opener=private_opener)
            else:
                file = await aiofiles.open(partial, "r+b", buffering=0, opener=private_opener)
                if plan.truncate:
                    await file.truncate(offset)  # bytes past it were never confirmed
                await file.seek(offset)
    except OSError as exc:
        if file is not None:
            await file.close()
        raise file_error(exc, url=url, action="open partial file", path=partial) from exc
    assert file is not None
    return file


async def _stream_body(
    response: aiohttp.ClientResponse, partial: Path, plan: BodyPlan, sink: TransferSink, url: str
) -> int:
    file = await _open_at(partial, plan, url)
    writer = _OverlappedWriter(file, sink, url=url, path=partial)
    # A segment served by a whole-file response stops at its end; the rest of that
    # body is not read (the connection is closed, not reused).
    remaining = None if plan.truncate else plan.length
    try:
        async for chunk in response.content.iter_any():
            if remaining is not None:
                chunk = chunk[:remaining]  # noqa: PLW2901 - the cut is the point
                remaining -= len(chunk)
            sink.chunk_received(len(chunk))
            await writer.add(chunk)
            if remaining == 0:
                break
        await writer.flush()
    finally:
        await writer.aclose()
    return writer.written


class _OverlappedWriter:
    """Writes gathered chunks while the next ones arrive; at most one write in flight.

    When a write completes, its bytes are reported at once and whatever gathered
    behind it goes out as the next write, so received bytes never wait in memory
    for the next chunk to arrive (a stalled server still gets honest progress).
    """

    def __init__(self, file: AsyncFileIO, sink: TransferSink, *, url: str, path: Path):
        self._file = file
        self._sink = sink
        self._url = url
        self._path = path
        self._pending = bytearray()
        self._inflight: asyncio.Task[int] | None = None
        self._error: BaseException | None = None
        self.written = 0

    async def add(self, chunk: bytes) -> None:
        self._raise_if_failed()
        self._pending += chunk
        if self._inflight is None:
            self._launch()
        elif len(self._pending) >= MAX_PENDING_BYTES:
            await self._drain()  # back-pressure: the disk is slower than the network
            self._raise_if_failed()

    async def flush(self) -> None:
        """Write everything received, then flush the file object."""
        await self._drain()
        self._raise_if_failed()
        try:
            await self._file.flush()
        except OSError as exc:
            raise file_error(exc, url=self._url, action="write", path=self._path) from exc

    async def aclose(self) -> None:
        """Write what was received, even when cancelled or failed, then close the file.

        Afterwards the file holds exactly ``written`` bytes, all of them received
        from the server (a later resume continues after them). On success ``flush``
        has already written everything; after a failure or a cancel, a write error
        here is dropped in favour of the first error.
        """
        with anyio.CancelScope(shield=True):
            try:
                await self._drain()
            finally:
                try:
                    await self._file.close()
                except OSError as exc:
                    raise file_error(exc, url=self._url, action="close", path=self._path) from exc

    def _launch(self) -> None:
        data, self._pending = self._pending, bytearray()
        task = asyncio.ensure_future(self._file.write(data))
        task.add_done_callback(lambda done: self._written(done, data))
        self._inflight = task

    def _written(self, task: asyncio.Task[int | None], data: bytearray) -> None:
        self._inflight = None
        if task.cancelled():
            self._error = RuntimeError("a file write was cancelled")
        elif (error := task.exception()) is not None:
            self._error = error
        else:
            nbytes = task.result() or 0
            if nbytes < len(data):  # a short write (unbuffered): the rest goes first
                self._pending[:0] = data[nbytes:]
            self.written += nbytes
            self._sink.bytes_written(nbytes)
        if self._error is not None:
            self._pending.clear()  # the file is broken; nothing more goes into it
        elif self._pending:
            self._launch()

    async def _drain(self) -> None:
        # asyncio.wait, unlike awaiting the task, never cancels it: a write that a
        # worker thread has started always finishes before the file is closed.
        while self._inflight is not None:
            await asyncio.wait([self._inflight])

    def _raise_if_failed(self) -> None:
        error = self._error
        if error is None:
            return
        if isinstance(error, OSError):
            raise file_error(error, url=self._url, action="write", path=self._path) from error
        raise error
