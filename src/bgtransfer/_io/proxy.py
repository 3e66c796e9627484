"""Which proxy each request goes through, and aiohttp's pieces that send it there.

aiohttp's own ``trust_env=True`` is not used: it would also read ``~/.netrc``
and send its credentials (bgtransfer reads it only when asked), and it looks
the environment up again in a thread for every request. Instead the session
reads the environment once when it opens (:func:`proxy_routes`) and a request
class chooses the proxy for each URL from that (:func:`routed_client_parts`),
cached by origin. A session without any proxy installs none of this.
"""

from __future__ import annotations

import base64
import logging
import urllib.request
from collections.abc import Mapping
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .._core.config import Configuration
from .._core.network import ProxyURL, bypasses_proxy, parse_proxy

__all__ = ["ProxyFailure", "ProxyRoutes", "proxy_routes", "routed_client_parts"]

logger = logging.getLogger("bgtransfer")

_ENV_SCHEMES = ("http", "https")
_CACHED_ORIGINS = 1024


class ProxyFailure(aiohttp.ClientError):
    """The proxy refused, asked for credentials or answered an error (raised
    below the error boundary, which makes it a ``ProxyError`` for the task's URL)."""

    def __init__(self, proxy: str, status: int | None, reason: str) -> None:
        super().__init__(reason)
        self.proxy = proxy
        self.status = status
        self.reason = reason


class _Choice:
    """One proxy as aiohttp takes it: its URL (no credentials), its Basic credentials."""

    __slots__ = ("authorization", "shown", "url")

    def __init__(self, proxy: ProxyURL) -> None:
        self.shown = proxy.url
        self.url = URL(proxy.url)
        self.authorization: str | None = None
        if proxy.user is not None:
            pair = f"{proxy.user}:{proxy.password or ''}".encode()
            self.authorization = "Basic " + base64.b64encode(pair).decode("ascii")

    def __repr__(self) -> str:
        return f"<proxy {self.shown}>"


class ProxyRoutes:
    """The proxy of each URL: one for all (``Configuration.proxy``), or the
    environment's per scheme with its ``no_proxy`` exceptions."""

    def __init__(
        self, *, every: ProxyURL | None = None, by_scheme: Mapping[str, ProxyURL] | None = None
    ) -> None:
        self._every = None if every is None else _Choice(every)
        self._by_scheme = {scheme: _Choice(p) for scheme, p in (by_scheme or {}).items()}
        self._no_proxy = ""
        self._cache: dict[tuple[str, str, int | None], _Choice | None] = {}

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> ProxyRoutes | None:
        """From ``urllib.request.getproxies()``'s answer; None when it names no proxy."""
        by_scheme: dict[str, ProxyURL] = {}
        for scheme in _ENV_SCHEMES:
            value = environment.get(scheme)
            if not value:
                continue
            try:
                by_scheme[scheme] = parse_proxy(value, what=f"{scheme}_proxy")
            except ValueError as exc:
                # As aiohttp and curl do for what they cannot use: not used.
                logger.warning("%s; that proxy is not used", exc)
        if not by_scheme:
            return None
        routes = cls(by_scheme=by_scheme)
        routes._no_proxy = environment.get("no", "")
        return routes

    def choose(self, url: URL) -> _Choice | None:
        """The proxy for ``url``, or None to connect directly."""
        if self._every is not None:
            return self._every
        key = (url.scheme, url.host or "", url.explicit_port)
        try:
            return self._cache[key]
        except KeyError:
            pass
        choice = self._by_scheme.get(url.scheme)
        if (
            choice is not None
            and self._no_proxy
            and bypasses_proxy(key[1], url.port, self._no_proxy)
        ):
            choice = None
        if len(self._cache) >= _CACHED_ORIGINS:
            self._cache.clear()
        self._cache[key] = choice
        return choice

    def shown(self, url: URL) -> str | None:
        """The proxy of ``url`` as messages name it (``http://host:port``)."""
        choice = self.choose(url)
        return None if choice is None else choice.shown


def proxy_routes(config: Configuration) -> ProxyRoutes | None:
    """The session's routes: ``Configuration.proxy``, else the environment's now;
    None when every request connects directly."""
    if config.proxy is False:
        return None
    if config.proxy is not None:
        return ProxyRoutes(every=parse_proxy(config.proxy))
    return ProxyRoutes.from_environment(urllib.request.getproxies())


def routed_client_parts(routes: ProxyRoutes, connector_options: dict[str, Any]) -> dict[str, Any]:
    """The ``ClientSession`` keywords (connector, request class, status hook)
    that send each request through its proxy and report the proxy's failures."""

    class RoutedRequest(aiohttp.ClientRequest):
        def update_proxy(self, proxy: Any, proxy_auth: Any, proxy_headers: Any) -> None:
            choice = routes.choose(self.url) if proxy is None else None
            if choice is None:
                super().update_proxy(proxy, proxy_auth, proxy_headers)
                return
            if choice.authorization is not None:
                if self.is_ssl():
                    # Sent with CONNECT (aiohttp adds Host to this: one per request).
                    proxy_headers = CIMultiDict({"Proxy-Authorization": choice.authorization})
                else:
                    # The request itself goes to the proxy.
                    self.headers["Proxy-Authorization"] = choice.authorization
            super().update_proxy(choice.url, None, proxy_headers)

    class RoutedConnector(aiohttp.TCPConnector):
        async def connect(
            self,
            req: aiohttp.ClientRequest,
            traces: Any,
            timeout: Any,  # noqa: ASYNC109 - aiohttp's signature
        ) -> Any:
            try:
                return await super().connect(req, traces, timeout)
            except aiohttp.ClientHttpProxyError as exc:
                # The proxy answered CONNECT with an error of its own.
                shown = routes.shown(req.url) or "the proxy"
                raise ProxyFailure(shown, exc.status, exc.message or "") from exc
            except aiohttp.ClientProxyConnectionError as exc:
                shown = routes.shown(req.url) or "the proxy"
                reason = str(exc.os_error).strip() or type(exc.os_error).__name__
                raise ProxyFailure(shown, None, reason) from exc

    async def check_status(response: aiohttp.ClientResponse) -> None:
        # A plain-HTTP request goes to the proxy itself: its 407 comes as the
        # response (a CONNECT's comes as ClientHttpProxyError, above).
        if response.status == 407:  # Proxy Authentication Required
            shown = routes.shown(response.url) or "a proxy"
            raise ProxyFailure(shown, 407, response.reason or "Proxy Authentication Required")

    return {
        "connector": RoutedConnector(**connector_options),
        "request_class": RoutedRequest,
        "raise_for_status": check_status,
    }
