"""One HTTP GET streamed into a partial file: the thin aiohttp shell.

The core decides (``check_response``); this module only moves bytes: it makes
the request, follows redirects as the core's rule says, and hands the body to
the pump (a large body, ``_io/pump.py``) or to the body writer
(``_io/body_writer.py``), under one watchdog for ``request_timeout``
(``_io/watchdog.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
import anyio

from .._core.redirects import REDIRECT_STATUSES, RedirectRule, next_hop
from .._core.secrets import redacted_url
from .._exceptions import IncompleteBodyError, RedirectError
from .body_writer import (
    FIRST_WRITE_BYTES,
    FIRST_WRITE_DELAY,
    INLINE_BYTES,
    MAX_PENDING_BYTES,
    BodyPlan,
    BodyWriter,
    TransferSink,
)
from .errors import map_errors, quiet_error
from .pacing import Pacer
from .pump import detach_body, pump_body
from .watchdog import Watchdog, paused

__all__ = [
    "FIRST_WRITE_BYTES",
    "FIRST_WRITE_DELAY",
    "INLINE_BYTES",
    "MAX_PENDING_BYTES",
    "BodyPlan",
    "TransferSink",
    "fetch_to_file",
]

_NO_INSECURE_REDIRECTS = RedirectRule()

RedirectCheck = Callable[[int, str], Awaitable[str | bool]]
"""Asked before a redirect is followed, with its status and target: True
follows it, False refuses it (``RedirectError``), a str goes there instead."""

logger = logging.getLogger("bgtransfer")


async def fetch_to_file(
    client: aiohttp.ClientSession,
    *,
    url: str,
    headers: Mapping[str, str],
    partial: Path,
    request_timeout: float | None,
    sink: TransferSink,
    redirects: RedirectRule = _NO_INSECURE_REDIRECTS,
    chain: list[str] | None = None,
    policy: RedirectCheck | None = None,
    pacer: Pacer | None = None,
    trace: object = None,
) -> BodyPlan | None:
    """One GET of ``url``; the body goes where ``sink.judge`` says.

    Returns the plan that was carried out once every byte is on disk and the
    length matches, or None when the sink decided there was no body to write;
    raises a :class:`~bgtransfer.TransferError` otherwise. Redirects are
    followed here, hop by hop, as the core's rule (``next_hop``) says: with the
    same headers to the same origin (so ``Range`` goes along), without the
    secret ones to another; a refused one raises
    :class:`~bgtransfer.RedirectError`. ``chain``, if given, receives every
    URL requested (``url`` first, the one that answered last); ``policy``, if
    given, is asked about each redirect next_hop allows (``RedirectCheck``).
    The task's URL is the one it was given. ``trace``: every request's
    ``trace_request_ctx`` (the attempt's metrics recorder, ``_io/tracing.py``).

    ``request_timeout`` bounds connecting (aiohttp's ``sock_connect``) and every
    wait for the server: no byte for that long ends the attempt with
    :class:`~bgtransfer.TransferTimeoutError`. Waits for the disk or the journal
    do not count.

    ``pacer``: the session's bandwidth limit (None: none). The body is then
    read chunk by chunk, each one paid for before the next is read (never by
    the pump), and the time waited is reported to ``sink.held``.
    """
    timeout = _client_timeout(request_timeout)
    with anyio.CancelScope() as scope:
        watchdog = None if request_timeout is None else Watchdog(request_timeout, scope.cancel)
        try:
            with map_errors(url=url, request_timeout=request_timeout):
                if chain is None:
                    chain = []
                chain.append(url)
                response = await client.get(
                    url,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                    trace_request_ctx=trace,
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
                        trace=trace,
                    )
                async with response:
                    # aiohttp's headers are looked up case-insensitively already.
                    plan = sink.judge(response.status, response.reason or "", response.headers)
                    if plan is None:
                        return None
                    with paused(watchdog):
                        await sink.prepare(plan)
                    written = await _stream_body(
                        response,
                        partial,
                        plan,
                        sink,
                        url,
                        request_timeout=request_timeout,
                        watchdog=watchdog,
                        pacer=pacer,
                    )
        finally:
            if watchdog is not None:
                watchdog.stop()
    if scope.cancelled_caught:  # only the watchdog cancels this scope
        raise quiet_error(request_timeout, url=url)
    assert plan is not None  # the scope ends early only by the watchdog (above)
    if plan.length is not None and written != plan.length:
        # aiohttp normally raises ClientPayloadError first; this is the backstop.
        raise IncompleteBodyError(
            f"received {written} of the {plan.length} bytes announced", url=url
        )
    return plan


async def _follow(  # noqa: PLR0917 - a private helper of fetch_to_file
    client: aiohttp.ClientSession,
    response: aiohttp.ClientResponse,
    chain: list[str],
    headers: Mapping[str, str],
    client_timeout: aiohttp.ClientTimeout,
    rule: RedirectRule,
    watchdog: Watchdog | None,
    policy: RedirectCheck | None,
    method: str = "GET",
    trace: object = None,
) -> aiohttp.ClientResponse:
    """Follow the redirects that begin with ``response`` (to ``chain``'s one
    URL); return the first response that is not one (a 3xx without
    ``Location`` included). ``chain`` grows with every URL requested.
    ``method``: the request's (a fetch's may be another than ``GET``; a 303
    turns it into ``GET``, except ``HEAD``)."""
    url = chain[0]
    debug = logger.isEnabledFor(logging.DEBUG)
    while response.status in REDIRECT_STATUSES:
        location = response.headers.get("Location")
        if location is None:
            break
        # Unread, as aiohttp leaves it: an empty or fully received body lets the
        # connection go back to the pool; anything else closes it.
        response.release()
        hop = next_hop(chain, location, headers, rule, task_url=url)
        if watchdog is not None:
            watchdog.touch()  # the server answered
        if policy is not None:
            with paused(watchdog):  # the application's time, not the server's
                verdict = await policy(response.status, hop.url)
            if verdict is False:
                raise RedirectError(
                    f"redirect_policy refused the redirect to {redacted_url(hop.url)}", url=url
                )
            if isinstance(verdict, str):
                hop = next_hop(chain, verdict, headers, rule, task_url=url)
        chain.append(hop.url)
        if debug:
            # (The target as scheme://host/path: its query may hold a signature.)
            logger.debug(
                "%s: redirect %d (%d) to %s",
                url,
                len(chain) - 1,
                response.status,
                redacted_url(hop.url),
            )
        headers = hop.headers
        if response.status == 303 and method != "HEAD":
            method = "GET"
        response = await client.request(
            method,
            hop.url,
            headers=headers,
            timeout=client_timeout,
            allow_redirects=False,
            trace_request_ctx=trace,
        )
    return response


@functools.lru_cache(maxsize=8)
def _client_timeout(request_timeout: float | None) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for a request (one value per configuration: a frozen
    object, made once rather than per request)."""
    return aiohttp.ClientTimeout(
        total=None, connect=None, sock_connect=request_timeout, sock_read=None
    )


async def _stream_body(
    response: aiohttp.ClientResponse,
    partial: Path,
    plan: BodyPlan,
    sink: TransferSink,
    url: str,
    *,
    request_timeout: float | None,
    watchdog: Watchdog | None,
    pacer: Pacer | None,
) -> int:
    job = None
    if pacer is None:  # (the pump cannot be paced: it reads the socket in a thread)
        job = detach_body(response, plan, partial, request_timeout=request_timeout)
    if job is not None:
        try:
            with paused(watchdog):  # the pump keeps its own time
                return await pump_body(job, sink, url)
        finally:
            response.close()  # aiohttp's parser never saw the body: no reuse
    writer = BodyWriter(partial, plan, sink, url=url, watchdog=watchdog)
    # A segment served by a whole-file response stops at its end; the rest of that
    # body is not read (the connection is closed, not reused).
    remaining = None if plan.truncate else plan.length
    try:
        # iter_chunks hands over each buffer as aiohttp received it; iter_any
        # would join whatever is buffered into one new bytes object first.
        async for chunk, _ in response.content.iter_chunks():
            if not chunk:
                continue  # the end of an HTTP chunk (chunked encoding)
            if watchdog is not None:
                watchdog.touch()
            if remaining is not None:
                chunk = chunk[:remaining]  # noqa: PLW2901 - the cut is the point
                remaining -= len(chunk)
            sink.chunk_received(len(chunk))
            await writer.add(chunk)
            if pacer is not None:
                held = await pacer.pace(len(chunk), watchdog)
                if held:
                    sink.held(held)
            if remaining == 0:
                break
        await writer.finish()
    finally:
        await writer.aclose()
    return writer.written
