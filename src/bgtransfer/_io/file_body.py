"""A range of an open file as an aiohttp request body, checked as it goes.

The bytes go out by one of two ways:

* **sendfile**: on a plain TCP (or Unix) connection of asyncio's own event
  loop, unpaced, the kernel copies the file to the socket (``loop.sendfile``,
  as aiohttp's server sends a file): no ``pread`` into the process, no copy
  back out, no worker-thread hop per chunk. The last chunk is still read into
  memory (below), so the check holds for every byte.
* **read**: anywhere else (TLS, whose bytes the process must encrypt; a loop
  without ``sendfile``; a paced upload, which goes out in the pacer's pieces),
  a chunk at a time by ``pread`` in a worker thread, as before.

Both ways check the open file against the identity the task took (size,
modification time, device, inode) after every step, and the body's last chunk
is read into memory *after* a check that covers every step before it: a write
to the file during a ``sendfile`` step shows in the check that follows the
step, before the last byte goes, so the server never receives a whole body
made of two versions (docs/design.md, "Uploads go out by sendfile").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

from .._core.upload import SourceIdentity
from .._exceptions import TransferError
from .pacing import Pacer, pieces
from .threads import run_blocking
from .watchdog import Watchdog, paused

__all__ = ["CHUNK_BYTES", "FileBody", "read_chunk"]

CHUNK_BYTES = 1024 * 1024
"""Bytes per step (a ``sendfile`` call, or a ``pread``): progress and the
checks come at least this often, and a read chunk is the one buffer a body holds."""


def identity_of(st: os.stat_result) -> SourceIdentity:
    """A file's identity as ``stat`` (or ``fstat``) gave it."""
    return SourceIdentity(
        size=st.st_size, mtime_ns=st.st_mtime_ns, device=st.st_dev, inode=st.st_ino
    )


def read_chunk(fd: int, size: int, offset: int) -> tuple[bytes, SourceIdentity]:
    """A chunk and what the open file is now (its size and mtime: a write to it
    shows; its device and inode are the ones opened)."""
    chunk = os.pread(fd, size, offset)
    return chunk, identity_of(os.fstat(fd))


class FileBody(payload.Payload):
    """Bytes ``[start, end)`` of the open file ``fd`` as one request's body.

    ``check(identity)`` raises the task's error when the open file is no longer
    the task's (it is called with the file's ``fstat`` after every step);
    ``short(position)`` is the task's error for a file that ends before
    ``end``; ``fail(exc)`` maps a read's :class:`OSError` to the task's error;
    ``on_sent(n)`` is told each step's bytes once they are handed to the
    connection. An error of the file is kept in :attr:`error` (aiohttp reports
    a failed body as a connection error: the caller raises this one).

    The body owns ``fd`` once made: :meth:`release` closes it at once, or when
    the write in flight ends (aiohttp may still be ending a cancelled body when
    the caller's request has ended; a descriptor closed under a read could be
    reused by another file).
    """

    def __init__(
        self,
        fd: int,
        start: int,
        end: int,
        *,
        check: Callable[[SourceIdentity], None],
        short: Callable[[int], TransferError],
        fail: Callable[[OSError], TransferError],
        on_sent: Callable[[int], None],
        watchdog: Watchdog | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        super().__init__(fd)
        self._size = end - start
        self._fd = fd
        self._start = start
        self._end = end
        self._check = check
        self._short = short
        self._fail = fail
        self._on_sent = on_sent
        self._watchdog = watchdog
        self._pacer = pacer
        self._writing = False
        self._released = False
        self.error: TransferError | None = None
        self.sent = 0
        self.sendfile_used = False

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file body is bytes, not text")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        if self._released:  # (the request ended before its body began)
            raise self._error(OSError("the upload ended before its body was sent"))
        # Sent once: aiohttp sends an idempotent request again by itself after a
        # connection error unless its body is consumed; the task's retry policy
        # decides, and a file that changed must not be sent again at all.
        self._consumed = True
        self._writing = True
        try:
            position: int | None = self._start
            if self._pacer is None:
                position = await self._sendfile(writer, self._start)
            if position is not None:
                await self._read_and_write(writer, position)
        except TransferError as error:
            self.error = error
            raise
        finally:
            self._left()

    def release(self) -> None:
        """The request is over: close the file now, or once the write in flight ends."""
        if self._released:
            return
        self._released = True
        if not self._writing:
            os.close(self._fd)

    def _left(self) -> None:
        self._writing = False
        if self._released:  # (released while the write was in flight)
            os.close(self._fd)

    async def _sendfile(self, writer: AbstractStreamWriter, position: int) -> int | None:
        """Every step but the last by ``sendfile``; returns where it stopped
        (``position`` itself where the connection does not offer it), or None
        when the connection broke mid-body.

        A broken connection ends the body quietly: sendfile stops the
        connection's reading while a step waits, so a server that answered
        early and closed (a 409 at a stale offset, a 413) has its answer
        unread yet; aiohttp reads it (or the disconnect) once the body ends,
        as it would have read it during a write. (asyncio names any failed
        first call of a step "sendfile not available", errno lost: one read of
        the file tells a broken file from a broken connection.)"""
        last = self._end - ((self._end - position) % CHUNK_BYTES or CHUNK_BYTES)
        transport: Any = getattr(writer, "transport", None)
        if position >= last or transport is None:
            return position
        # aiohttp (>= 3.12) holds the head until the body's first write: it goes first.
        send_headers = getattr(writer, "send_headers", None)
        if send_headers is not None:
            send_headers()
        loop = asyncio.get_running_loop()
        with os.fdopen(self._fd, "rb", buffering=0, closefd=False) as file:
            while position < last:
                step = CHUNK_BYTES
                try:
                    await loop.sendfile(transport, file, position, step, fallback=False)
                except (NotImplementedError, RuntimeError, OSError) as exc:
                    if position == self._start and not isinstance(exc, OSError):
                        return position  # TLS, another event loop: the body is read instead
                    await self._file_still_good(position)
                    return None  # the connection broke mid-body (see the docstring)
                position += step
                self.sendfile_used = True
                self._check(identity_of(os.fstat(self._fd)))
                self._went(step)
                # A step the socket took whole never waited: one loop turn lets the
                # other tasks run and the connection read (sendfile pauses its reading).
                await asyncio.sleep(0)
        return position

    async def _file_still_good(self, position: int) -> None:
        """Raise the file's error if a read at ``position`` fails or the file changed."""
        try:
            found = (await run_blocking(read_chunk, self._fd, 1, position))[1]
        except OSError as exc:
            raise self._error(exc) from exc
        self._check(found)

    async def _read_and_write(self, writer: AbstractStreamWriter, position: int) -> None:
        while position < self._end:
            size = min(CHUNK_BYTES, self._end - position)
            try:
                with paused(self._watchdog):
                    chunk, found = await run_blocking(read_chunk, self._fd, size, position)
            except OSError as exc:
                raise self._error(exc) from exc
            self._check(found)
            if not chunk:
                raise self._short(position)
            if self._pacer is None:
                await writer.write(chunk)
                self._went(len(chunk))
            else:
                # Paced: in pieces, each paid for before it goes (aiohttp asks
                # for nothing more once the Content-Length is sent).
                for piece in pieces(chunk, self._pacer.piece_bytes):
                    await self._pacer.pace(len(piece), self._watchdog)
                    await writer.write(piece)
                    self._went(len(piece))
            position += len(chunk)

    def _error(self, exc: OSError) -> TransferError:
        self.error = self._fail(exc)
        return self.error

    def _went(self, nbytes: int) -> None:
        self.sent += nbytes
        if self._watchdog is not None:
            self._watchdog.touch()
        self._on_sent(nbytes)
