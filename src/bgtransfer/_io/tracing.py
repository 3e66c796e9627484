"""aiohttp's trace signals, feeding the attempt's metrics recorder.

One :class:`aiohttp.TraceConfig` per client (:func:`metrics_trace`); a request
carries its attempt's :class:`~bgtransfer._core.metrics.AttemptRecorder` as
``trace_request_ctx`` (a request without one, such as a data task's, is not
recorded). Each callback reads the monotonic clock once and stores it: no
formatting, no allocation beyond aiohttp's own.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp

from .._core.metrics import AttemptRecorder

if TYPE_CHECKING:
    from .proxy import ProxyRoutes

__all__ = ["metrics_trace"]

_now = time.monotonic


def _recorder(context: SimpleNamespace) -> AttemptRecorder | None:
    recorder = context.trace_request_ctx
    return recorder if isinstance(recorder, AttemptRecorder) else None


def metrics_trace(routes: ProxyRoutes | None) -> aiohttp.TraceConfig:
    """The client's trace: each signal becomes one store in the request's
    recorder; ``routes`` names the proxy a request goes through (redacted)."""
    trace = aiohttp.TraceConfig()

    async def request_start(_: Any, context: SimpleNamespace, params: Any) -> None:
        if (recorder := _recorder(context)) is not None:
            proxy = None if routes is None else routes.shown(params.url)
            recorder.request_started(_now(), proxy)

    async def dns_start(_: Any, context: SimpleNamespace, params: Any) -> None:
        if (recorder := _recorder(context)) is not None:
            recorder.dns_started(_now())

    async def dns_end(_: Any, context: SimpleNamespace, params: Any) -> None:
        if (recorder := _recorder(context)) is not None:
            recorder.dns_ended(_now())

    async def connect_start(_: Any, context: SimpleNamespace, params: Any) -> None:
        if (recorder := _recorder(context)) is not None:
            recorder.connect_started(_now())

    async def connect_end(_: Any, context: SimpleNamespace, params: Any) -> None:
        if (recorder := _recorder(context)) is not None:
            recorder.connect_ended(_now())

    async def reused(_: Any, context: SimpleNamespace, params: Any) -> None:
        if (recorder := _recorder(context)) is not None:
            recorder.connection_reused()

    async def head_sent(_: Any, context: SimpleNamespace, params: Any) -> None:
        if (recorder := _recorder(context)) is not None:
            recorder.request_head_sent(_now())

    async def request_end(_: Any, context: SimpleNamespace, params: Any) -> None:
        if (recorder := _recorder(context)) is not None:
            recorder.response_started(_now(), params.response.status)

    trace.on_request_start.append(request_start)
    trace.on_dns_resolvehost_start.append(dns_start)
    trace.on_dns_resolvehost_end.append(dns_end)
    trace.on_connection_create_start.append(connect_start)
    trace.on_connection_create_end.append(connect_end)
    trace.on_connection_reuseconn.append(reused)
    trace.on_request_headers_sent.append(head_sent)
    trace.on_request_end.append(request_end)
    return trace
