"""A range of an open file as an aiohttp request body, checked as it goes.

The one body of every upload (plain, tus, IETF): the bytes ``[start, end)``
read a chunk at a time by ``pread`` in a worker thread (the loop never waits
for the disk), each chunk checked against the identity the task took (size,
modification time, device, inode: the ``fstat`` of the open file in the same
thread call), so a file written to while it is sent stops the body before its
end and the server never receives a whole body made of two versions. One
chunk is in flight at a time: the memory of a body of any size.

Not ``sendfile``: measured side by side (docs/design.md, "Upload bodies are
read, not sent by sendfile"), ``loop.sendfile`` took a quarter less CPU and
more wall time, and it would read a cold file on the loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

from .._core.upload import SourceIdentity
from .._exceptions import TransferError
from .pacing import Pacer, pieces
from .threads import run_blocking
from .watchdog import Watchdog, paused

__all__ = ["CHUNK_BYTES", "FileBody", "identity_of", "read_chunk"]

CHUNK_BYTES = 1024 * 1024
"""Bytes per read: progress and the checks come this often, and a chunk is the
one buffer a body holds."""


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
    the task's (it is called with the file's ``fstat`` after every read);
    ``short(position)`` is the task's error for a file that ends before
    ``end``; ``fail(exc)`` maps a read's :class:`OSError` to the task's error;
    ``on_sent(n)`` is told each chunk's bytes (a paced upload's: each piece's)
    once they are handed to the connection. An error of the file is kept in
    :attr:`error` (aiohttp reports a failed body as a connection error: the
    caller raises this one).

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
            await self._read_and_write(writer, self._start)
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
