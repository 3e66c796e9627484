"""The I/O driver of the resumable-upload machines (tus 1.0, the IETF draft).

:func:`send_resumable` sends what a machine (``_core.tus``,
``_core.resumable_upload``) asks for over an ``aiohttp.ClientSession``, feeds it
each answer, and returns the upload's final response. The file is streamed from
the offset (``_io.file_body``, 1 MiB chunks), never read whole; the machine
holding a new upload URL is handed to ``on_upload_url`` (and awaited) before
the first byte of the file is sent, so a job can journal the URL (and what the
server said of itself); each offset the server acknowledges goes to
``on_offset``.

One call is one attempt: a lost connection ends it with a
:class:`~bgtransfer.NetworkError`, and the caller (its retry policy) starts the
next attempt with a machine made from the upload URL and the last acknowledged
offset, which first asks the server where the upload stands. That is the same
path a new process takes after a kill, so there is one way to resume, not two.
Protocol-level detours (a 409, a 460, an expired upload) are followed inside the
attempt.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Final, TypeVar

import aiohttp

from .._core.upload import SourceIdentity, source_change
from .._core.upload_protocol import (
    UploadMachine,
    UploadRequest,
    UploadResponse,
    discovery_request,
)
from .._exceptions import LocalFileError
from .errors import file_error, map_errors
from .file_body import CHUNK_BYTES, FileBody, identity_of, read_chunk
from .pacing import Pacer
from .threads import run_blocking
from .upload import changed_error

__all__ = [
    "BODY_CAP",
    "discover",
    "send_resumable",
    "send_termination",
    "terminate_upload",
]

BODY_CAP: Final = 64 * 1024
"""Bytes of a response body kept (the final response's); the rest is read and dropped."""

M = TypeVar("M", bound=UploadMachine)


async def send_resumable(
    client: aiohttp.ClientSession,
    machine: M,
    path: str | os.PathLike[str],
    *,
    identity: SourceIdentity | None = None,
    headers: Mapping[str, str] | None = None,
    on_upload_url: Callable[[M], Awaitable[None]] | None = None,
    on_offset: Callable[[int], Awaitable[None]] | None = None,
    on_progress: Callable[[int], None] | None = None,
    request_timeout: float | None = None,
    body_cap: int = BODY_CAP,
    pacer: Pacer | None = None,
    trace: object = None,
) -> UploadResponse:
    """Run ``machine`` to the end of the upload of ``path``; its final response.

    The final response is returned whatever its status: an IETF-draft answer
    carrying ``Upload-Complete: ?1`` is the target's verdict on the whole file,
    a 4xx or 5xx included, and the caller judges it. Redirects are not followed
    (a 3xx is an :class:`~bgtransfer.HTTPStatusError`).

    ``headers`` (the app's, e.g. ``Authorization``) go with every request, under
    the protocol's own. ``on_progress(position)`` gets the file position sent so
    far, after each piece (it goes back when the server holds less than was
    sent). Errors are :class:`~bgtransfer.TransferError` naming the machine's
    ``task_url``; the file is only read. ``pacer``: the session's upload
    bandwidth limit (None: none). ``trace``: every request's
    ``trace_request_ctx`` (the attempt's metrics recorder).

    ``identity``: what the file was when the task took it. The open file is
    checked against it (``fstat``, in the thread hop of each read) before every
    piece of it is sent, a digest's reads included, so a file written to (or
    replaced) mid-upload ends the attempt with
    :class:`~bgtransfer.SourceChangedError` before a byte of the new version
    goes out: the server never completes an upload made of two versions.
    """
    task_url = machine.task_url
    extra = dict(headers or {})
    try:
        fd = await run_blocking(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise file_error(exc, url=task_url, action="open", path=path) from exc
    source = _Source(fd, path, task_url, identity)
    try:
        opened = os.fstat(fd)
        if identity is not None:
            source.check(identity_of(opened))
        size = opened.st_size
        expected = machine.size
        if size != expected:
            raise LocalFileError(
                f"{path} has {size} bytes, the upload {expected}: the file changed",
                url=task_url,
                filename=os.fspath(path),
            )
        known_url = machine.upload_url
        known_offset = machine.offset
        while machine.result is None:
            request = machine.next_request()
            response = await _exchange(
                client,
                request,
                source,
                extra,
                task_url=task_url,
                request_timeout=request_timeout,
                body_cap=body_cap,
                on_progress=on_progress,
                pacer=pacer,
                trace=trace,
            )
            machine = machine.on_response(request, response)
            if machine.upload_url is not None and machine.upload_url != known_url:
                known_url = machine.upload_url
                if on_upload_url is not None:
                    await on_upload_url(machine)
            if machine.offset is not None and machine.offset != known_offset:
                known_offset = machine.offset
                if on_progress is not None:
                    on_progress(known_offset)
                if on_offset is not None:
                    await on_offset(known_offset)
        return machine.result
    finally:
        source.close()


async def terminate_upload(
    client: aiohttp.ClientSession,
    machine: UploadMachine,
    *,
    headers: Mapping[str, str] | None = None,
    request_timeout: float | None = None,
) -> int | None:
    """Ask the server to drop the upload (tus termination, the draft's
    cancellation); the answer's status, or None when there is nothing to drop."""
    request = machine.cancel_request()
    if request is None:
        return None
    return await send_termination(
        client,
        request,
        task_url=machine.task_url,
        headers=headers,
        request_timeout=request_timeout,
    )


async def send_termination(
    client: aiohttp.ClientSession,
    request: UploadRequest,
    *,
    task_url: str,
    headers: Mapping[str, str] | None = None,
    request_timeout: float | None = None,
) -> int:
    """Send a machine's ``cancel_request()``; the answer's status (its body is
    read and dropped). A lost connection is a :class:`~bgtransfer.NetworkError`."""
    with map_errors(url=task_url, request_timeout=request_timeout):
        async with client.request(
            request.method,
            request.url,
            headers=_headers(headers or {}, request),
            allow_redirects=False,
            timeout=_timeout(request_timeout),
        ) as response:
            await _read_bounded(response, 0)
            return response.status


async def discover(
    client: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    request_timeout: float | None = None,
    trace: object = None,
) -> UploadResponse:
    """The server's answer to the ``OPTIONS`` both protocols answer about
    themselves (``discovery_request``), whatever its status, for
    ``advertised_protocol``; a lost connection is the attempt's
    :class:`~bgtransfer.NetworkError`."""
    request = discovery_request(url)
    with map_errors(url=url, request_timeout=request_timeout):
        async with client.request(
            request.method,
            request.url,
            headers=_headers(headers or {}, request),
            allow_redirects=False,
            timeout=_timeout(request_timeout),
            trace_request_ctx=trace,
        ) as response:
            await _read_bounded(response, 0)
            return UploadResponse.of(response.status, response.headers.items())


def _headers(extra: Mapping[str, str], request: UploadRequest) -> dict[str, str]:
    merged = dict(extra)
    lowered = {name.lower(): name for name in merged}
    for name, value in request.headers:
        merged.pop(lowered.get(name.lower(), name), None)
        merged[name] = value
    if request.method in {"POST", "PUT", "PATCH"}:
        merged["Content-Length"] = str(request.body_length)
    return merged


def _timeout(request_timeout: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, sock_connect=request_timeout, sock_read=request_timeout
    )


async def _exchange(
    client: aiohttp.ClientSession,
    request: UploadRequest,
    source: _Source,
    extra: Mapping[str, str],
    *,
    task_url: str,
    request_timeout: float | None,
    body_cap: int,
    on_progress: Callable[[int], None] | None,
    pacer: Pacer | None,
    trace: object,
) -> UploadResponse:
    headers = _headers(extra, request)
    data: FileBody | None = None
    if request.body is not None:
        start, end = request.body
        if request.checksum is not None:
            digest = await source.digest(start, end, request.checksum)
            headers["Upload-Checksum"] = f"{request.checksum} {digest}"
        data = source.body(start, end, on_progress=on_progress, pacer=pacer)
    try:
        with map_errors(url=task_url, request_timeout=request_timeout):
            async with client.request(
                request.method,
                request.url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=_timeout(request_timeout),
                trace_request_ctx=trace,
            ) as response:
                body = await _read_bounded(response, body_cap)
                return UploadResponse.of(response.status, response.headers.items(), body)
    except Exception:
        # aiohttp reports a body that could not be read as a failed write: the
        # file's own error is the one to tell.
        if data is not None and data.error is not None:
            raise data.error from None
        raise
    finally:
        if data is not None:
            data.release()


async def _read_bounded(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The first ``cap`` bytes of the body; the rest is read and dropped."""
    kept = bytearray()
    async for piece in response.content.iter_chunked(64 * 1024):
        room = cap - len(kept)
        if room > 0:
            kept += piece[:room]
    return bytes(kept)


class _Source:
    """The file being uploaded, read by ``os.pread`` in a worker thread: no shared
    file position, and the descriptor is closed only once no read is in flight
    (aiohttp may still be ending a cancelled body when the upload's call ends)."""

    def __init__(
        self,
        fd: int,
        path: str | os.PathLike[str],
        task_url: str,
        identity: SourceIdentity | None,
    ) -> None:
        self._fd = fd
        self._path = path
        self._task_url = task_url
        self._identity = identity
        self._reads = 0
        self._closing = False

    def check(self, found: SourceIdentity) -> None:
        """:class:`~bgtransfer.SourceChangedError` unless the open file is
        still what the task took (size, modification time, device, inode)."""
        assert self._identity is not None
        problem = source_change(self._identity, found)
        if problem is not None:
            raise changed_error(self._task_url, self._path, problem)

    def close(self) -> None:
        """Close the file now, or when the read in flight ends."""
        self._closing = True
        if self._reads == 0:
            os.close(self._fd)

    async def _read(self, size: int, position: int) -> bytes:
        if self._closing:
            raise LocalFileError(f"{self._path} was closed: the upload ended", url=self._task_url)
        self._reads += 1
        try:
            # run_blocking waits for the thread even when cancelled.
            if self._identity is None:
                return await run_blocking(os.pread, self._fd, size, position)
            piece, found = await run_blocking(read_chunk, self._fd, size, position)
        except OSError as exc:
            raise file_error(exc, url=self._task_url, action="read", path=self._path) from exc
        finally:
            self._read_ended()
        self.check(found)  # (after the read: a write during it shows too)
        return piece

    def _read_ended(self) -> None:
        self._reads -= 1
        if self._closing and self._reads == 0:
            os.close(self._fd)

    async def pieces(self, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)``, a chunk (1 MiB) at a time."""
        position = start
        while position < end:
            piece = await self._read(min(CHUNK_BYTES, end - position), position)
            if not piece:
                raise LocalFileError(
                    f"{self._path} ended at {position} bytes, before {end}: the file changed",
                    url=self._task_url,
                    filename=os.fspath(self._path),
                )
            yield piece
            position += len(piece)

    def body(
        self,
        start: int,
        end: int,
        *,
        on_progress: Callable[[int], None] | None,
        pacer: Pacer | None = None,
    ) -> FileBody:
        """The request body: the bytes ``[start, end)``, each chunk reported
        as sent by its end position. It has its own descriptor (a ``dup``),
        closed once aiohttp is done with it, whatever happens to this source."""
        if self._closing:
            raise LocalFileError(f"{self._path} was closed: the upload ended", url=self._task_url)
        position = start

        def check(found: SourceIdentity) -> None:
            if self._identity is not None:
                self.check(found)

        def went(nbytes: int) -> None:
            nonlocal position
            position += nbytes
            if on_progress is not None:
                on_progress(position)

        return FileBody(
            os.dup(self._fd),
            start,
            end,
            check=check,
            short=lambda at: LocalFileError(
                f"{self._path} ended at {at} bytes, before {end}: the file changed",
                url=self._task_url,
                filename=os.fspath(self._path),
            ),
            fail=lambda exc: file_error(exc, url=self._task_url, action="read", path=self._path),
            on_sent=went,
            pacer=pacer,
        )

    async def digest(self, start: int, end: int, algorithm: str) -> str:
        """base64 of the ``algorithm`` digest of the bytes ``[start, end)``."""
        hasher = hashlib.new(algorithm)
        async for piece in self.pieces(start, end):
            hasher.update(piece)
        return base64.b64encode(hasher.digest()).decode("ascii")
