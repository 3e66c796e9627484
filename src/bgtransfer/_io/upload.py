"""One plain upload attempt: a file streamed as a request body, the answer read.

The thin aiohttp shell of :class:`~bgtransfer._engine.upload.Uploader`'s
plain strategy. The body is the source file (``file_body.FileBody``: bounded
chunks read in a worker thread), so a file of any size costs one chunk of
memory; each chunk is checked against the identity the task took at
``upload()``, so a file written to while it is sent stops the request before
its last byte (the server never receives a whole body made of two versions).
The answer's status is judged by the core (``check_upload_status``); its body
is kept up to a cap, or streamed into the reply file. Also here: the source
file's check before each attempt (its checks at ``upload()`` are
``sources.inspect_source``'s).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp
import anyio
import attrs

from .._core.upload import SourceIdentity, check_upload_status, source_change
from .._exceptions import SourceChangedError
from .errors import file_error, map_errors, quiet_error
from .file_body import FileBody, identity_of
from .pacing import Pacer
from .threads import run_blocking
from .watchdog import Watchdog, paused

__all__ = [
    "Answer",
    "changed_error",
    "check_source",
    "send_file",
]


@attrs.frozen(kw_only=True)
class Answer:
    """What the server answered an attempt that it accepted (a 2xx)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    truncated: bool


def changed_error(url: str, source: str | os.PathLike[str], problem: str) -> SourceChangedError:
    """The task's error for a source file that is no longer the one it took."""
    return SourceChangedError(
        f"the file {os.fspath(source)} changed since the upload was made: {problem}; "
        "it is not sent (upload it again as a new task)",
        url=url,
        filename=os.fspath(source),
    )


def _stat_identity(source: Path) -> SourceIdentity | None:
    try:
        return identity_of(os.stat(source))
    except FileNotFoundError:
        return None


async def check_source(url: str, source: Path, identity: SourceIdentity) -> None:
    """Raise :class:`SourceChangedError` when the file at ``source`` is no longer
    the one ``identity`` describes (before an attempt, and after its body)."""
    try:
        found = await run_blocking(_stat_identity, source)
    except OSError as exc:
        raise file_error(exc, url=url, action="read", path=source) from exc
    problem = source_change(identity, found)
    if problem is not None:
        raise changed_error(url, source, problem)


def _body(  # noqa: PLR0917 - a private helper of send_file
    fd: int,
    url: str,
    source: Path,
    identity: SourceIdentity,
    on_sent: Callable[[int], None],
    watchdog: Watchdog | None,
    pacer: Pacer | None,
) -> FileBody:
    """The whole file as the body, checked against ``identity`` as it goes."""

    def check(found: SourceIdentity) -> None:
        problem = source_change(identity, found)
        if problem is not None:
            raise changed_error(url, source, problem)

    return FileBody(
        fd,
        0,
        identity.size,
        check=check,
        short=lambda _: changed_error(url, source, "it is shorter than it was"),
        fail=lambda exc: file_error(exc, url=url, action="read", path=source),
        on_sent=on_sent,
        watchdog=watchdog,
        pacer=pacer,
    )


async def send_file(
    client: aiohttp.ClientSession,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    source: Path,
    identity: SourceIdentity,
    request_timeout: float | None,
    on_sent: Callable[[int], None],
    reply_max: int,
    reply_file: Path | None,
    pacer: Pacer | None = None,
    trace: object = None,
) -> Answer:
    """One attempt: ``method`` ``url`` with the file as its body.

    Returns the answer once the server accepted it (2xx) and the file was the
    same to its last byte; raises a :class:`~bgtransfer.TransferError`
    otherwise (``HTTPStatusError`` for another status, ``SourceChangedError``
    for a changed file). With ``reply_file`` the response body is written
    there (a new private file, replaced whole), else up to ``reply_max`` bytes
    of it are kept. ``request_timeout``: no byte sent or received for that long
    ends the attempt (:class:`~bgtransfer.TransferTimeoutError`). ``pacer``:
    the session's upload bandwidth limit (None: none). ``trace``: the request's
    ``trace_request_ctx`` (the attempt's metrics recorder).
    """
    send_headers = dict(headers)
    send_headers["Content-Length"] = str(identity.size)
    timeout = aiohttp.ClientTimeout(
        total=None, connect=None, sock_connect=request_timeout, sock_read=None
    )
    try:
        fd = await run_blocking(os.open, source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise file_error(exc, url=url, action="read", path=source) from exc
    answer: Answer | None = None
    with anyio.CancelScope() as scope:
        watchdog = None if request_timeout is None else Watchdog(request_timeout, scope.cancel)
        body = _body(fd, url, source, identity, on_sent, watchdog, pacer)
        try:
            with map_errors(url=url, request_timeout=request_timeout):
                try:
                    response = await client.request(
                        method,
                        url,
                        data=body,
                        headers=send_headers,
                        timeout=timeout,
                        allow_redirects=False,
                        trace_request_ctx=trace,
                    )
                except Exception as exc:
                    if body.error is not None:
                        raise body.error from exc
                    raise
                async with response:
                    if body.error is not None:
                        raise body.error
                    check_upload_status(
                        url, response.status, response.reason or "", response.headers
                    )
                    if body.sent != identity.size:  # (an early answer to a partial body)
                        raise aiohttp.ServerDisconnectedError(
                            "the server answered before the body ended"
                        )
                    answer = await _read_answer(response, reply_max, reply_file, url, watchdog)
        finally:
            if watchdog is not None:
                watchdog.stop()
            body.release()  # (now, or when aiohttp's writer leaves it)
    if scope.cancelled_caught:  # only the watchdog cancels this scope
        raise quiet_error(request_timeout, url=url)
    assert answer is not None
    return answer


async def _read_answer(
    response: aiohttp.ClientResponse,
    reply_max: int,
    reply_file: Path | None,
    url: str,
    watchdog: Watchdog | None,
) -> Answer:
    headers = tuple(response.headers.items())
    if reply_file is None:
        parts: list[bytes] = []
        kept = 0
        truncated = False
        async for chunk, _ in response.content.iter_chunks():
            if watchdog is not None:
                watchdog.touch()
            room = reply_max - kept
            if len(chunk) > room:
                truncated = True
                chunk = chunk[:room]  # noqa: PLW2901 - the cap is the point
            if chunk:
                parts.append(chunk)
                kept += len(chunk)
            if truncated:
                break  # the rest is not read (the connection is not reused)
        return Answer(
            status=response.status, headers=headers, body=b"".join(parts), truncated=truncated
        )
    try:
        fd = await run_blocking(_create_reply, reply_file)
    except OSError as exc:
        raise file_error(exc, url=url, action="write the reply to", path=reply_file) from exc
    try:
        async for chunk, _ in response.content.iter_chunks():
            if watchdog is not None:
                watchdog.touch()
            if chunk:
                with paused(watchdog):
                    await run_blocking(_write_all, fd, chunk)
    except OSError as exc:
        raise file_error(exc, url=url, action="write the reply to", path=reply_file) from exc
    finally:
        os.close(fd)
    return Answer(status=response.status, headers=headers, body=b"", truncated=False)


def _create_reply(path: Path) -> int:
    """The reply's private temporary file, empty (a previous attempt's replaced)."""
    return os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]
