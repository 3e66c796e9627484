"""Data tasks (``Session.fetch``): a request whose answer comes back in memory.

A fetch is not a task of the scheduler: it has no journal entry, no events and
no runner (its body lives in the caller's memory, so it cannot outlive the
caller, nor the process). It is a plain awaitable that shares what a download
shares with the session: the supervisor's slots (the engine queues it under
the same per-host and total limits, in creation order, and the caller waits
for its grant: :meth:`~.engine.Engine.fetch`), the client (TLS, proxy,
User-Agent), the request path (headers, ``headers_provider``, credentials and
their 401 handling, the redirect rule and ``redirect_policy``) and the retry
decision (:func:`~bgtransfer._core.retry.decide_retry`, the one function every
kind of task asks). :class:`Fetcher` does the attempts once the slot is held.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from .._core.auth import TaskInfo
from .._core.config import Configuration, HeaderPairs
from .._core.fetch import FetchResponse
from .._core.naming import Origin
from .._core.redirects import RedirectRule
from .._core.retry import decide_retry
from .._core.secrets import SecretHeaders
from .._exceptions import HTTPStatusError, TransferError
from .._io.fetch import Reply, fetch_once
from .admission import provided_headers
from .auth import Authenticator, AuthState, redirect_check

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Fetcher"]


class Fetcher:
    """The attempts of an engine's fetches; ``client`` is set once the engine is entered."""

    def __init__(
        self,
        *,
        config: Configuration,
        auth: Authenticator,
        secrets: SecretHeaders,
        hold: Callable[[Origin, float], None],
    ) -> None:
        self.config = config
        self.auth = auth
        self.client: aiohttp.ClientSession | None = None
        self._secrets = secrets
        self._hold = hold
        self._redirects = RedirectRule(
            allow_insecure=config.allow_insecure_redirects,
            secrets=secrets,
            max_redirects=config.max_redirects,
        )
        self._rng = random.Random()

    async def fetch(
        self,
        info: TaskInfo,
        origin: Origin,
        *,
        method: str,
        headers: HeaderPairs,
        max_bytes: int,
    ) -> FetchResponse:
        """Attempts (the session's retry policy) until an answer that is final:
        any status but a transient one the policy still retries."""
        policy = self.config.retry
        state = AuthState(info.url) if self.auth.active else None
        failures = 0
        while True:
            try:
                reply = await self._attempt(info, method, headers, max_bytes, state)
                transient = _status_error(reply, info.url)
                if transient is not None:
                    raise transient
                break
            except TransferError as exc:
                challenge = None if state is None else self.auth.challenge(exc)
                if (
                    challenge is not None
                    and state is not None
                    and await self.auth.challenged(challenge, state, info)
                ):
                    continue  # with the credentials given (no retry counted)
                failures += 1
                retry = decide_retry(policy, exc, failures, self._rng)
                if retry.delay is None:
                    if isinstance(exc, _StatusError) and exc.reply is not None:
                        reply = exc.reply  # a status is the answer, not an error
                        break
                    raise
                if retry.hold is not None:
                    self._hold(origin, retry.hold)
                await anyio.sleep(retry.delay)
        return FetchResponse(
            status=reply.status,
            url=reply.url,
            headers=self._secrets.public(reply.headers),
            body=reply.body,
            request_url=info.url,
        )

    async def _attempt(
        self,
        info: TaskInfo,
        method: str,
        given: HeaderPairs,
        max_bytes: int,
        state: AuthState | None,
    ) -> Reply:
        assert self.client is not None
        config = self.config
        headers = await provided_headers(config.headers_provider, info.url, dict(given))
        if state is not None:
            await self.auth.add_header(info.url, headers, state)
        reply = await fetch_once(
            self.client,
            method=method,
            url=info.url,
            headers=headers,
            request_timeout=config.request_timeout,
            max_bytes=max_bytes,
            redirects=self._redirects,
            policy=redirect_check(config, info),
        )
        if state is not None:
            state.answered = reply.url
        return reply


class _StatusError(HTTPStatusError):
    """A status the retry policy may retry (or the auth challenge answer),
    carrying the reply it came with (returned when it is final)."""

    reply: Reply | None = None


def _status_error(reply: Reply, url: str) -> HTTPStatusError | None:
    """The reply as the error the retry decision and the 401 handling read
    (a 401, or a status in the policy's ``retry_statuses``), else None."""
    if 200 <= reply.status < 400:
        return None
    error = _StatusError(
        reply.status,
        reply.reason,
        url=url,
        retry_after=_header(reply, "Retry-After"),
        www_authenticate=", ".join(
            value for name, value in reply.headers if name.lower() == "www-authenticate"
        )
        or None,
    )
    error.reply = reply
    return error


def _header(reply: Reply, name: str) -> str | None:
    wanted = name.lower()
    for key, value in reply.headers:
        if key.lower() == wanted:
            return value
    return None
