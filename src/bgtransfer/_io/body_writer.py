"""A response body into its partial file: the body writer and its one-hop write.

Reading the socket and writing the file overlap: while one write runs in the
file thread, arriving chunks gather in memory (as the chunks aiohttp read, never
copied into one buffer) and go out as the next single ``pwritev``. A slow disk
thus batches writes instead of stalling the socket, a slow network still gets
each chunk written promptly, and the gathering buffer is bounded
(``MAX_PENDING_BYTES``): past it the reader waits for the disk.

The number of thread hops is what bounds small files: the partial file is
opened by the first write, and the last write closes it and, when the sink
names a place, moves it there, so a body that arrives at once costs one hop
(open, write, close, rename), or none when it is small enough to be written on
the loop (``INLINE_BYTES``). The writes run in the one file thread
(``threads.submit_file_io``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import anyio
import attrs

from .digest import RunningDigest
from .errors import file_error
from .files import (
    PRIVATE_FILE_MODE,
    check_replaceable,
    finished_file_mode,
    open_partial,
    pwrite_all,
    reserve_blocks,
    set_mode,
)
from .threads import run_blocking, submit_file_io
from .watchdog import Watchdog, paused

__all__ = [
    "CLOSED",
    "FIRST_WRITE_BYTES",
    "FIRST_WRITE_DELAY",
    "INLINE_BYTES",
    "MAX_PENDING_BYTES",
    "BodyPlan",
    "BodyWriter",
    "TransferSink",
    "WriteOutcome",
    "write_chunks",
]

MAX_PENDING_BYTES = 8 * 1024 * 1024
"""Bytes received but not yet handed to the disk, at most, per transfer."""

FIRST_WRITE_BYTES = 64 * 1024
"""The partial file is opened (by the first write) once this much has arrived,
the body has ended, or ``FIRST_WRITE_DELAY`` has passed since its first byte."""

FIRST_WRITE_DELAY = 0.02
"""Seconds the first bytes may wait in memory for more (progress counts written bytes)."""

INLINE_BYTES = 64 * 1024
"""A body of at most this many bytes that arrived at once is written (opened,
written, closed, moved) by one call on the loop rather than in the file thread
(``threads.submit_file_io(inline=True)``)."""


CLOSED = -2  # the writer's file descriptor once the file is closed


@attrs.frozen
class BodyPlan:
    """Where a response's body goes: at ``offset`` in the partial file, expecting
    ``length`` bytes (None: until the server ends the body). With ``truncate`` the
    file is cut at ``offset`` first (bytes past it were never confirmed); without
    (a segment of a preallocated file), what lies beyond is left alone and the
    body is read no further than ``length`` bytes. ``digest``, when the task's
    bytes are to be checked, is updated by every write that lands."""

    offset: int
    length: int | None
    truncate: bool = True
    digest: RunningDigest | None = attrs.field(default=None, eq=False, kw_only=True)


class TransferSink(Protocol):
    """What a transfer reports to, and asks, its owner (the engine's task record)."""

    def judge(self, status: int, reason: str, headers: Mapping[str, str]) -> BodyPlan | None:
        """Decide from the status and headers (looked up by lower-case name,
        case-insensitively); None: no body to write."""
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

    def held(self, seconds: float) -> None:
        """The transfer waited ``seconds`` for the bandwidth limit (not the
        server's time: ``min_speed`` does not count it)."""
        ...

    async def finishing(self, size: int) -> Path | None:
        """Called once the whole body (of a plan that ``truncate``s) has arrived,
        before its last bytes are written; ``size`` is the file's length once
        they are. A path returned here is where the last write, after closing
        the file, moves it (``moved`` says it did). None leaves the file at the
        partial path. No cancellation may end it once it has decided on a path:
        whatever it waits for then (a journal commit) it waits for shielded, so
        the last write is launched whenever it returns one."""
        ...

    def moved(self) -> None:
        """The file is at the path ``finishing`` gave (called after ``bytes_written``)."""
        ...


@attrs.frozen
class WriteOutcome:
    fd: int  # open, -1 (never opened) or CLOSED
    error: OSError | None = None
    action: str = "write"
    path: Path | None = None  # what ``action`` failed on, when not the partial file
    moved: bool = False


_CLOSED_OK = WriteOutcome(CLOSED)
_MOVED = WriteOutcome(CLOSED, moved=True)


def write_chunks(  # noqa: PLR0917 - run_in_executor passes arguments positionally
    fd: int,
    path: Path,
    plan: BodyPlan,
    chunks: list[bytes],
    offset: int,
    close: bool,
    move_to: Path | None = None,
) -> WriteOutcome:
    """One worker-thread call: open the file if ``fd`` is -1, write, maybe close,
    and after closing maybe rename it to ``move_to``. A rename to another file
    system (``EXDEV``) is left to the caller: the file stays where it is. The
    rename replaces only a regular file (one ``lstat`` first): anything else at
    ``move_to`` fails it, the body kept in ``path``. A file to be moved gets
    the finished file's mode before it is closed (one ``fchmod``); if the
    rename then fails, it is made private again."""
    mode = None if move_to is None else finished_file_mode()
    outcome = _write_and_close(fd, path, plan, chunks, offset, close, mode)
    if move_to is None or outcome.error is not None:
        return outcome
    try:
        check_replaceable(move_to)
        os.replace(path, move_to)
    except OSError as exc:
        with contextlib.suppress(OSError):  # (a rare path: the file stays in partials/)
            set_mode(path, PRIVATE_FILE_MODE)
        if exc.errno == errno.EXDEV:
            return outcome
        return WriteOutcome(CLOSED, exc, "move the file to", move_to)
    return _MOVED


def _write_and_close(  # noqa: PLR0917 - mirrors write_chunks
    fd: int,
    path: Path,
    plan: BodyPlan,
    chunks: list[bytes],
    offset: int,
    close: bool,
    mode: int | None = None,
) -> WriteOutcome:
    if fd == -1:
        try:
            fd = open_partial(path, offset=plan.offset, truncate=plan.truncate)
        except OSError as exc:
            return WriteOutcome(-1, exc, "open partial file")
        if plan.truncate and plan.length is not None:  # a segment's file is reserved whole
            try:
                reserve_blocks(fd, plan.offset, plan.length)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.close(fd)
                return WriteOutcome(CLOSED, exc, "reserve space for")
    error: OSError | None = None
    action = "write"
    try:
        if chunks:
            pwrite_all(fd, chunks, offset)
    except OSError as exc:
        error = exc
    if plan.digest is not None and chunks:
        _hash_written(plan.digest, chunks, offset, error)
    if close:
        if mode is not None and error is None:
            with contextlib.suppress(OSError):  # (a file system that cannot: as is)
                os.fchmod(fd, mode)
        try:
            os.close(fd)
        except OSError as exc:
            if error is None:
                error, action = exc, "close"
        fd = CLOSED
    if error is None and fd == CLOSED:
        return _CLOSED_OK  # (the usual last write: one object for all)
    return WriteOutcome(fd, error, action)


def _hash_written(
    digest: RunningDigest, chunks: list[bytes], offset: int, error: OSError | None
) -> None:
    if error is None:
        digest.update(offset, chunks)
    else:
        digest.broken = True  # what reached the file is unknown: it is read again


class BodyWriter:
    """Writes gathered chunks while the next ones arrive; at most one write in flight.

    When a write completes, its bytes are reported at once and whatever gathered
    behind it goes out as the next write, so received bytes never wait in memory
    for the next chunk to arrive (a stalled server still gets honest progress:
    what the throttle holds back, its timer reports, see ``_io/progress.py``).
    The file is opened by the first write, which waits for ``FIRST_WRITE_BYTES``
    (or ``FIRST_WRITE_DELAY``, or the end of the body), and closed by the last.
    """

    def __init__(
        self,
        path: Path,
        plan: BodyPlan,
        sink: TransferSink,
        *,
        url: str,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._path = path
        self._plan = plan
        self._sink = sink
        self._url = url
        self._watchdog = watchdog
        self._loop = asyncio.get_running_loop()
        self._fd = -1
        self._offset = plan.offset  # where the next write lands
        self._chunks: list[bytes] = []
        self._pending = 0
        self._inflight = False  # a write is running in the file thread
        self._idle: asyncio.Future[None] | None = None  # what _drain awaits
        self._timer: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None
        self.written = 0

    async def add(self, chunk: bytes) -> None:
        self._raise_if_failed()
        if not chunk:
            return
        self._chunks.append(chunk)
        self._pending += len(chunk)
        if not self._inflight:
            if self._fd >= 0 or self._pending >= FIRST_WRITE_BYTES:
                self._launch()
            elif self._timer is None and not self._all_arrived():
                # (A body that has all arrived is written by finish(), next.)
                self._timer = self._loop.call_later(FIRST_WRITE_DELAY, self._first_write_due)
        elif self._pending >= MAX_PENDING_BYTES:
            with paused(self._watchdog):
                await self._drain()  # back-pressure: the disk is slower than the network
            self._raise_if_failed()

    async def finish(self) -> None:
        """Write everything received and close the file (one hop when it fits).

        When the body is whole and the sink names a place for it
        (``finishing``), the same call moves the file there after closing it:
        a small body costs one hop from its first byte to its destination.
        From that answer on, the last write runs to its end whatever is
        cancelled meanwhile, so the sink learns of the move (``moved``).
        """
        with paused(self._watchdog):
            # No first write by the timer from here on: it would race the last one
            # (each would open the file) while the sink is asked where it goes.
            self._cancel_timer()
            await self._drain()
            self._raise_if_failed()
            length = self._plan.length
            whole = length is None or self.written + self._pending == length
            if not (whole and self._plan.truncate):
                self._launch(close=True)  # also creates an empty file for an empty body
                await self._drain()
            else:
                size = self._plan.offset + self.written + self._pending
                # The sink shields its own waits (finishing's contract): nothing
                # is cancelled between its answer and the launch. A small body's
                # step runs here and is done on return: no scope to enter.
                move_to = await self._sink.finishing(size)
                self._launch(close=True, move_to=move_to)
                if self._inflight:
                    with anyio.CancelScope(shield=True):
                        await self._drain()
        self._raise_if_failed()

    async def aclose(self) -> None:
        """After a failure or a cancel: write what was received, then close the file.

        Afterwards the file holds at least ``written`` bytes past the plan's
        offset, all of them received from the server (a later resume continues
        after them). After success (``finish``) there is nothing left to do; a
        write or close error here is dropped in favour of the first error.
        """
        if self._fd == CLOSED and not self._inflight:
            return  # finished (or failed with the file closed): nothing to wait for
        with anyio.CancelScope(shield=True):
            self._cancel_timer()
            await self._drain()
            if self._fd == CLOSED:
                return
            if self._error is None and (self._chunks or self._fd >= 0):
                self._launch(close=True)
                await self._drain()
            elif self._fd >= 0:
                fd, self._fd = self._fd, CLOSED
                # The file already failed; that error is the one reported.
                with contextlib.suppress(OSError):
                    await run_blocking(os.close, fd)

    def _all_arrived(self) -> bool:
        length = self._plan.length
        return length is not None and self.written + self._pending >= length

    def _first_write_due(self) -> None:
        self._timer = None
        if not self._inflight and self._chunks and self._error is None and self._fd == -1:
            self._launch()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _launch(self, *, close: bool = False, move_to: Path | None = None) -> None:
        assert not self._inflight, "one write at a time"
        self._cancel_timer()
        chunks, self._chunks = self._chunks, []
        nbytes, self._pending = self._pending, 0
        offset = self._offset
        self._offset += nbytes
        self._inflight = True  # (an inline call is done, _written called, on return)
        submit_file_io(
            functools.partial(self._written, nbytes),
            write_chunks,
            self._fd,
            self._path,
            self._plan,
            chunks,
            offset,
            close,
            move_to,
            # A whole body in one call: no other call uses its file (a segment's
            # file is shared with the other segments' writers).
            inline=close and self._fd == -1 and self._plan.truncate and nbytes <= INLINE_BYTES,
        )

    def _written(
        self, nbytes: int, outcome: WriteOutcome | None, exc: BaseException | None
    ) -> None:
        self._inflight = False
        if self._idle is not None:
            if not self._idle.done():  # (cancelled when its waiter was)
                self._idle.set_result(None)
            self._idle = None
        if exc is not None:
            self._error = exc
        else:
            assert outcome is not None
            self._fd = outcome.fd
            if outcome.error is not None:
                error = file_error(
                    outcome.error,
                    url=self._url,
                    action=outcome.action,
                    path=outcome.path or self._path,
                )
                error.__cause__ = outcome.error
                self._error = error
            else:
                try:
                    if nbytes:
                        self.written += nbytes
                        self._sink.bytes_written(nbytes)
                finally:
                    if outcome.moved:
                        self._sink.moved()
        if self._error is not None:
            self._chunks.clear()  # the file is broken; nothing more goes into it
            self._pending = 0
        elif self._chunks and self._fd >= 0:
            self._launch()

    async def _drain(self) -> None:
        # A cancelled wait only cancels the waiter; the write runs to its end
        # and _written still sees it.
        while self._inflight:
            if self._idle is None or self._idle.done():  # done: cancelled with its waiter
                self._idle = self._loop.create_future()
            await self._idle

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
