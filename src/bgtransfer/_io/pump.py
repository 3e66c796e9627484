"""Large bodies read straight from the socket by one worker-thread call.

Through aiohttp a body reaches the disk by way of the event loop: for every read
(at most 256 KiB) the loop wakes, the transport allocates a new ``bytes``, the
HTTP parser copies the body part into another, the stream buffers it, and a
write is handed to a thread. For a large body on a plain TCP connection none of
that is needed once the headers are parsed. ``detach_body`` stops the transport
from reading (``pause_reading``), takes the body bytes aiohttp already holds, and
duplicates the socket's file descriptor; ``pump_body`` then moves the rest in one
worker-thread call that reads into one reused buffer and writes it at its offset
(``readv``, ``pwrite``): two copies per byte, no allocation, no loop wakeup per
read. The call gets a thread of its own rather than one of the loop's executor,
which the session's other file operations share.

The thread writes whatever it has before it waits for the socket, so received
bytes never wait in memory for more. It enforces ``request_timeout`` itself
(``poll``), and stops when the loop asks (a pipe wakes it): a cancelled or
failed pump has still written every byte it received, and counted them.

The price: aiohttp's parser never sees the body, so the connection cannot go
back to the pool; it is closed, and the next request to that host opens a new
one. Hence the size threshold (``PUMP_MIN_BYTES``): a handshake is nothing
beside 8 MiB. Bodies over TLS, chunked bodies, bodies without a length, and
platforms without ``poll``/``readv`` keep the aiohttp path.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import os
import select
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import anyio
import attrs

from .._exceptions import IncompleteBodyError, TransferError
from .errors import file_error, quiet_error
from .files import open_partial, pwrite_all, reserve_blocks
from .threads import start_thread

if TYPE_CHECKING:
    from .body_writer import BodyPlan, TransferSink
    from .digest import RunningDigest

__all__ = ["PUMP_BUFFER_BYTES", "PUMP_MIN_BYTES", "PumpJob", "detach_body", "pump_body"]

PUMP_MIN_BYTES = 8 * 1024 * 1024
"""Bodies (or segments) at least this long are pumped; shorter ones keep aiohttp's path."""

PUMP_BUFFER_BYTES = 1024 * 1024
"""The pump's one buffer: at most this much is read before it is written."""

REPORT_INTERVAL = 0.05
"""Seconds between the loop's looks at the pump's count (progress, ``min_speed``)."""

AVAILABLE = hasattr(select, "poll") and hasattr(os, "readv") and hasattr(os, "pwritev")


class _End(enum.Enum):
    DONE = "done"
    STOPPED = "stopped"  # the loop asked
    EOF = "eof"  # the server closed the connection early
    NETWORK = "network"  # reading the socket failed
    TIMEOUT = "timeout"  # request_timeout without a byte
    FILE = "file"  # opening, writing or closing the file failed


@attrs.frozen
class _Result:
    end: _End
    error: OSError | None = None
    action: str = "write"


class PumpJob:
    """One pumped body: what the worker reads from and writes to, and its count.

    ``written`` is the worker's running count of bytes on disk; the loop only
    reads it. ``stop`` is the loop's request to end early; the pipe wakes a
    worker that waits for the socket.
    """

    __slots__ = (
        "digest",
        "head",
        "offset",
        "path",
        "sock",
        "stop",
        "timeout",
        "truncate",
        "wake_r",
        "wake_w",
        "want",
        "written",
    )

    def __init__(
        self,
        *,
        sock: int,
        path: Path,
        offset: int,
        truncate: bool,
        head: bytes,
        want: int,
        timeout: float | None,
    ) -> None:
        self.sock = sock
        self.path = path
        self.offset = offset
        self.truncate = truncate
        self.head = head
        self.want = want  # bytes still to read from the socket, after head
        self.timeout = timeout
        self.written = 0
        self.digest: RunningDigest | None = None  # updated by every write that lands
        self.stop = False
        self.wake_r, self.wake_w = os.pipe()

    def wake(self) -> None:
        self.stop = True
        with contextlib.suppress(OSError):  # the pipe is full: it is awake already
            os.write(self.wake_w, b"\0")

    def close(self) -> None:
        for fd in (self.sock, self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def detach_body(
    response: aiohttp.ClientResponse,
    plan: BodyPlan,
    partial: Path,
    *,
    request_timeout: float | None,
) -> PumpJob | None:
    """A pump for the rest of ``response``'s body, or None where aiohttp keeps it.

    On success the transport no longer reads: the body is the job's, and the
    connection must be closed (not reused) once the job is done.
    """
    if not AVAILABLE or plan.length is None or plan.length < PUMP_MIN_BYTES:
        return None
    length = response.content_length
    if length is None or "Transfer-Encoding" in response.headers:
        return None
    if length != plan.length if plan.truncate else length < plan.length:
        return None  # the normal path reports the mismatch
    connection = response.connection
    transport = None if connection is None else connection.transport
    if transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None  # the bytes on the socket are TLS records
    sock = transport.get_extra_info("socket")
    content = response.content
    if sock is None or content.exception() is not None or content.is_eof():
        return None
    try:
        fd = os.dup(sock.fileno())  # ours to close, whatever aiohttp does with its own
    except OSError:
        return None
    try:
        job = PumpJob(
            sock=fd,
            path=partial,
            offset=plan.offset,
            truncate=plan.truncate,
            head=b"",
            want=plan.length,
            timeout=request_timeout,
        )
    except OSError:  # no pipe (out of descriptors): aiohttp keeps the body
        os.close(fd)
        return None
    # Reading may resume the transport (aiohttp's flow control); pausing it
    # afterwards, with no await in between, leaves no byte behind.
    head = content.read_nowait()
    transport.pause_reading()
    job.digest = plan.digest
    job.head = head[: plan.length]
    job.want = plan.length - len(job.head)
    return job


async def pump_body(job: PumpJob, sink: TransferSink, url: str) -> int:
    """Run ``job``; returns the bytes written (all of them) or raises.

    Bytes written are reported to ``sink`` as they land, at most every
    ``REPORT_INTERVAL``; the last ones also when the pump fails or is cancelled.
    """
    try:
        # A thread of its own: a pump lasts as long as its body, and in the loop's
        # executor (a few threads, shared with every file operation) slow servers
        # would hold them all, stalling the other downloads and a queued pump's
        # cancellation.
        future = start_thread(_pump, job, name="bgtransfer-pump")
    except BaseException:
        job.close()
        raise
    reported = 0
    try:
        while True:
            await asyncio.wait([future], timeout=REPORT_INTERVAL)
            written = job.written
            if written > reported:
                sink.chunk_received(written - reported)  # may raise: too slow
                sink.bytes_written(written - reported)
                reported = written
            if future.done():
                break
    finally:
        if not future.done():
            job.wake()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([future])
        if job.written > reported:  # stopped, or the sink raised at the last report
            sink.bytes_written(job.written - reported)
            reported = job.written
        job.close()
    result = future.result()
    if result.end is _End.DONE:
        return reported
    raise _error(result, job, url)


def _error(result: _Result, job: PumpJob, url: str) -> TransferError:
    total = len(job.head) + job.want
    error: TransferError
    if result.end is _End.FILE:
        assert result.error is not None
        error = file_error(result.error, url=url, action=result.action, path=job.path)
    elif result.end is _End.TIMEOUT:
        error = quiet_error(job.timeout, url=url)
    elif result.end is _End.EOF:
        error = IncompleteBodyError(
            f"the body was cut short (the server closed the connection after "
            f"{job.written} of {total} bytes)",
            url=url,
        )
    else:
        cause = result.error
        reason = (cause.strerror if cause is not None else None) or str(cause)
        error = IncompleteBodyError(f"the body was cut short ({reason})", url=url)
    error.__cause__ = result.error
    return error


def _pump(job: PumpJob) -> _Result:
    """The worker's call: open the file, copy socket to file, close the file."""
    try:
        fd = open_partial(job.path, offset=job.offset, truncate=job.truncate)
    except OSError as exc:
        return _Result(_End.FILE, exc, "open partial file")
    try:
        if job.truncate:  # a segment's file was reserved whole
            reserve_blocks(fd, job.offset, len(job.head) + job.want)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.close(fd)
        return _Result(_End.FILE, exc, "reserve space for")
    try:
        result = _copy(job, fd)
    except OSError as exc:  # from the file: _copy judges the socket's errors itself
        result = _Result(_End.FILE, exc)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    try:
        os.close(fd)
    except OSError as exc:
        if result.end is _End.DONE or result.end is _End.STOPPED:
            result = _Result(_End.FILE, exc, "close")
    return result


def _land(job: PumpJob, fd: int, data: bytes | memoryview, offset: int) -> int:
    """Write ``data`` at ``offset`` and count it; returns the next offset."""
    try:
        pwrite_all(fd, [data], offset)
    except OSError:
        if job.digest is not None:
            job.digest.broken = True
        raise
    if job.digest is not None:
        job.digest.update(offset, [data])
    job.written += len(data)
    return offset + len(data)


def _copy(job: PumpJob, fd: int) -> _Result:
    """Socket to file; a file error raises ``OSError`` (the caller reports it)."""
    offset = _land(job, fd, job.head, job.offset)
    left = job.want
    if not left:
        return _Result(_End.DONE)
    buffer = memoryview(bytearray(min(PUMP_BUFFER_BYTES, left)))
    size = len(buffer)
    filled = 0  # bytes in buffer, not yet written
    poller = select.poll()
    poller.register(job.sock, select.POLLIN)
    poller.register(job.wake_r, select.POLLIN)
    wait_ms = -1 if job.timeout is None else max(1, math.ceil(job.timeout * 1000))
    end: _Result | None = None
    while end is None:
        blocked = False
        try:
            got = os.readv(job.sock, [buffer[filled : filled + min(size - filled, left)]])
        except BlockingIOError:
            blocked = True
        except OSError as exc:
            end = _Result(_End.NETWORK, exc)
            break
        else:
            if got == 0:
                end = _Result(_End.EOF)
                break
            filled += got
            left -= got
        # Write before waiting for the socket, when full, and at the end.
        if filled and (blocked or filled == size or not left):
            offset = _land(job, fd, buffer[:filled], offset)
            filled = 0
        if not left:
            return _Result(_End.DONE)
        if job.stop:
            end = _Result(_End.STOPPED)
        elif blocked and not poller.poll(wait_ms):
            end = _Result(_End.TIMEOUT)
    # Ended early: what was received is still written (a resume continues after it).
    _land(job, fd, buffer[:filled], offset)
    return end
