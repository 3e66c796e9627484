"""One attempt of a data task (``Session.fetch``): the request, its body in memory.

The thin aiohttp shell of ``_engine/fetch.py``: it makes the request, follows
redirects as a download does (``_io/transfer.py``'s ``_follow``: the core's
rule, the application's ``redirect_policy``), and reads the body into memory
up to a cap, under one watchdog for ``request_timeout``. A body longer than the
cap fails the attempt (:class:`~bgtransfer.ResponseTooLargeError`) before
more than the cap is held: a ``Content-Length`` past it fails before any byte
is read.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import anyio
import attrs

from .._core.redirects import REDIRECT_STATUSES, RedirectRule
from .._exceptions import ResponseTooLargeError
from .errors import map_errors, quiet_error
from .transfer import RedirectCheck, _client_timeout, _follow
from .watchdog import Watchdog

__all__ = ["Reply", "fetch_once"]


@attrs.frozen(kw_only=True)
class Reply:
    """What the server answered one attempt (any final status)."""

    status: int
    reason: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _too_large(url: str, max_bytes: int, what: str) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"the response body is larger than max_bytes ({max_bytes} bytes): {what}",
        url=url,
        max_bytes=max_bytes,
    )


async def fetch_once(
    client: aiohttp.ClientSession,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    request_timeout: float | None,
    max_bytes: int,
    redirects: RedirectRule,
    policy: RedirectCheck | None = None,
) -> Reply:
    """One ``method`` request of ``url``, redirects followed; the answer with its
    whole body (at most ``max_bytes`` of it, else ``ResponseTooLargeError``).
    A network failure or a stalled server raises the attempt's
    :class:`~bgtransfer.TransferError` (``map_errors``)."""
    timeout = _client_timeout(request_timeout)
    reply: Reply | None = None
    with anyio.CancelScope() as scope:
        watchdog = None if request_timeout is None else Watchdog(request_timeout, scope.cancel)
        try:
            with map_errors(url=url, request_timeout=request_timeout):
                chain = [url]
                response = await client.request(
                    method, url, headers=headers, timeout=timeout, allow_redirects=False
                )
                if response.status in REDIRECT_STATUSES:
                    response = await _follow(
                        client,
                        response,
                        chain,
                        headers,
                        timeout,
                        redirects,
                        watchdog,
                        policy,
                        method,
                    )
                async with response:
                    if watchdog is not None:
                        watchdog.touch()
                    # A HEAD has no body (its Content-Length is the resource's).
                    body = (
                        b""
                        if method == "HEAD"
                        else await _read_body(response, url, max_bytes, watchdog)
                    )
                    reply = Reply(
                        status=response.status,
                        reason=response.reason or "",
                        url=chain[-1],
                        headers=tuple(response.headers.items()),
                        body=body,
                    )
        finally:
            if watchdog is not None:
                watchdog.stop()
    if scope.cancelled_caught:  # only the watchdog cancels this scope
        raise quiet_error(request_timeout, url=url)
    assert reply is not None
    return reply


async def _read_body(
    response: aiohttp.ClientResponse, url: str, max_bytes: int, watchdog: Watchdog | None
) -> bytes:
    """The whole body, or ``ResponseTooLargeError`` before more than ``max_bytes`` is kept."""
    length = response.content_length
    if length is not None and length > max_bytes:
        response.close()  # unread: the connection is not reused
        raise _too_large(url, max_bytes, f"Content-Length is {length}")
    parts: list[bytes] = []
    kept = 0
    async for chunk, _ in response.content.iter_chunks():
        if watchdog is not None:
            watchdog.touch()
        kept += len(chunk)
        if kept > max_bytes:
            response.close()
            raise _too_large(url, max_bytes, f"more than {max_bytes} bytes came")
        if chunk:
            parts.append(chunk)
    return b"".join(parts)
