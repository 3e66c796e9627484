"""The I/O driver of the resumable-upload machines (tus 1.0, the IETF draft).

:func:`send_resumable` sends what a machine (``_core.tus``,
``_core.resumable_upload``) asks for over an ``aiohttp.ClientSession``, feeds it
each answer, and returns the upload's final response. The file is streamed from
the offset in :data:`CHUNK` pieces, never read whole; the upload URL is handed to
``on_upload_url`` (and awaited) before the first byte of the file is sent, so a
job can journal it; each offset the server acknowledges goes to ``on_offset``.

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
from typing import Any, Final, TypeVar

import aiofiles
import aiohttp

from .._core.upload_protocol import UploadMachine, UploadRequest, UploadResponse
from .._exceptions import LocalFileError
from .errors import file_error, map_errors

__all__ = ["BODY_CAP", "CHUNK", "send_resumable", "terminate_upload"]

CHUNK: Final = 1024 * 1024
"""Bytes read from the file and handed to the connection at a time: one thread
hop (aiofiles) per MiB. On loopback 64 KiB pieces send 90 MiB/s, 256 KiB 330,
1 MiB 620 (to a server that drops what it reads; ``curl -T`` there: 270)."""
BODY_CAP: Final = 64 * 1024
"""Bytes of a response body kept (the final response's); the rest is read and dropped."""

M = TypeVar("M", bound=UploadMachine)


async def send_resumable(
    client: aiohttp.ClientSession,
    machine: M,
    path: str | os.PathLike[str],
    *,
    headers: Mapping[str, str] | None = None,
    on_upload_url: Callable[[str], Awaitable[None]] | None = None,
    on_offset: Callable[[int], Awaitable[None]] | None = None,
    on_progress: Callable[[int], None] | None = None,
    request_timeout: float | None = None,
    body_cap: int = BODY_CAP,
) -> UploadResponse:
    """Run ``machine`` to the end of the upload of ``path``; its final response.

    ``headers`` (the app's, e.g. ``Authorization``) go with every request, under
    the protocol's own. ``on_progress(position)`` gets the file position sent so
    far, after each piece (it goes back when the server holds less than was
    sent). Errors are :class:`~bgtransfer.TransferError` naming the machine's
    ``task_url``; the file is only read.
    """
    task_url = machine.task_url
    extra = dict(headers or {})
    try:
        opened = await aiofiles.open(path, "rb")
    except OSError as exc:
        raise file_error(exc, url=task_url, action="open", path=path) from exc
    try:
        size = os.fstat(opened.fileno()).st_size
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
                opened,
                path,
                extra,
                task_url=task_url,
                request_timeout=request_timeout,
                body_cap=body_cap,
                on_progress=on_progress,
            )
            machine = machine.on_response(request, response)
            if machine.upload_url is not None and machine.upload_url != known_url:
                known_url = machine.upload_url
                if on_upload_url is not None:
                    await on_upload_url(known_url)
            if machine.offset is not None and machine.offset != known_offset:
                known_offset = machine.offset
                if on_progress is not None:
                    on_progress(known_offset)
                if on_offset is not None:
                    await on_offset(known_offset)
        return machine.result
    finally:
        await opened.close()


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
    task_url = machine.task_url
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
    opened: Any,
    path: str | os.PathLike[str],
    extra: Mapping[str, str],
    *,
    task_url: str,
    request_timeout: float | None,
    body_cap: int,
    on_progress: Callable[[int], None] | None,
) -> UploadResponse:
    headers = _headers(extra, request)
    failed: list[LocalFileError] = []
    data: AsyncIterator[bytes] | None = None
    if request.body is not None:
        start, end = request.body
        if request.checksum is not None:
            digest = await _digest(opened, path, start, end, request.checksum, task_url=task_url)
            headers["Upload-Checksum"] = f"{request.checksum} {digest}"
        data = _stream(
            opened, path, start, end, task_url=task_url, on_progress=on_progress, failed=failed
        )
    try:
        with map_errors(url=task_url, request_timeout=request_timeout):
            async with client.request(
                request.method,
                request.url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=_timeout(request_timeout),
            ) as response:
                body = await _read_bounded(response, body_cap)
                return UploadResponse.of(response.status, response.headers.items(), body)
    except Exception:
        # aiohttp reports a body that could not be read as a failed write: the
        # file's own error is the one to tell.
        if failed:
            raise failed[0] from None
        raise


async def _read_bounded(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The first ``cap`` bytes of the body; the rest is read and dropped."""
    kept = bytearray()
    async for piece in response.content.iter_chunked(64 * 1024):
        room = cap - len(kept)
        if room > 0:
            kept += piece[:room]
    return bytes(kept)


async def _stream(
    opened: Any,
    path: str | os.PathLike[str],
    start: int,
    end: int,
    *,
    task_url: str,
    on_progress: Callable[[int], None] | None,
    failed: list[LocalFileError],
) -> AsyncIterator[bytes]:
    """The file's bytes ``[start, end)`` in pieces, reporting each as sent; a
    read error is also put in ``failed``."""
    position = start
    try:
        await opened.seek(start)
        while position < end:
            piece = await opened.read(min(CHUNK, end - position))
            if not piece:
                raise LocalFileError(
                    f"{path} ended at {position} bytes, before {end}: the file changed",
                    url=task_url,
                    filename=os.fspath(path),
                )
            yield piece
            position += len(piece)
            if on_progress is not None:
                on_progress(position)
    except OSError as exc:
        error = exc if isinstance(exc, LocalFileError) else _read_error(exc, path, task_url)
        failed.append(error)
        raise error from exc


async def _digest(
    opened: Any,
    path: str | os.PathLike[str],
    start: int,
    end: int,
    algorithm: str,
    *,
    task_url: str,
) -> str:
    """base64 of the ``algorithm`` digest of the file's bytes ``[start, end)``."""
    hasher = hashlib.new(algorithm)
    position = start
    try:
        await opened.seek(start)
        while position < end:
            piece = await opened.read(min(CHUNK, end - position))
            if not piece:
                raise LocalFileError(
                    f"{path} ended at {position} bytes, before {end}: the file changed",
                    url=task_url,
                    filename=os.fspath(path),
                )
            hasher.update(piece)
            position += len(piece)
    except OSError as exc:
        if isinstance(exc, LocalFileError):
            raise
        raise _read_error(exc, path, task_url) from exc
    return base64.b64encode(hasher.digest()).decode("ascii")


def _read_error(exc: OSError, path: str | os.PathLike[str], task_url: str) -> LocalFileError:
    return file_error(exc, url=task_url, action="read", path=path)
