"""The HTTP client the engine downloads with, and how many transfers it may run.

The one place that builds aiohttp's ``ClientSession`` and ``TCPConnector`` and
reads the process's descriptor limit: the engine asks for a client and a slot
count and sets up no connection machinery itself. Every request the engine
makes goes through this client, so the network settings (proxy, TLS,
User-Agent) live here, not in a job.
"""

from __future__ import annotations

import functools
import logging
import platform
import ssl
from typing import Any

import aiohttp

from .._core.config import Configuration
from .._core.network import user_agent
from .._core.supervisor import DESCRIPTORS_PER_SLOT, RESERVED_DESCRIPTORS, slots_for_descriptors
from .._core.version import VERSION
from .._exceptions import InvalidRequestError
from .proxy import proxy_routes, routed_client_parts
from .tracing import metrics_trace

__all__ = ["READ_BUFSIZE", "default_user_agent", "descriptor_slots", "make_client", "ssl_setting"]

logger = logging.getLogger("bgtransfer")

READ_BUFSIZE = 1024 * 1024  # aiohttp's per-connection read buffer (it buffers up to twice this)


def make_client(config: Configuration, limit: int) -> aiohttp.ClientSession:
    """A client for ``limit`` connections at once (at most ``max_connections_per_host``
    to one host), that hands bodies over as sent (no decompression) and never
    times a whole request out (the engine's own timeouts do)."""
    connector_options: dict[str, Any] = {
        "limit": limit,
        # Defence in depth: the supervisor already keeps each origin within the
        # limit; this also bounds the hosts a redirect leads to.
        "limit_per_host": config.max_connections_per_host,
        "ssl": ssl_setting(config),
    }
    routes = proxy_routes(config)
    parts: dict[str, Any]
    if routes is None:
        parts = {"connector": aiohttp.TCPConnector(**connector_options)}
    else:
        parts = routed_client_parts(routes, connector_options)
    return aiohttp.ClientSession(
        **parts,
        # (aiohttp's trust_env would also send ~/.netrc's credentials: proxy.py
        # reads the environment's proxies instead.)
        trust_env=False,
        headers={"User-Agent": config.user_agent or default_user_agent()},
        auto_decompress=False,
        # aiohttp's 64 KiB default pauses and resumes the socket every few reads
        # at loopback speeds; past 2 x this, reading waits for the writer.
        read_bufsize=READ_BUFSIZE,
        timeout=aiohttp.ClientTimeout(total=None),
        # Each request's metrics (DNS, connect, head sent, response head): fed to
        # the recorder a request carries as trace_request_ctx (_io/tracing.py).
        trace_configs=[metrics_trace(routes)],
    )


@functools.cache
def default_user_agent() -> str:
    """``bgtransfer/<version> aiohttp/<version> Python/<major.minor>``."""
    python = ".".join(platform.python_version_tuple()[:2])
    return user_agent(VERSION, aiohttp.__version__, python)


def ssl_setting(config: Configuration) -> ssl.SSLContext | bool:
    """What aiohttp's connector takes for ``Configuration.ssl`` and
    ``client_cert``: the CA bundle and certificate files are read here, once per
    session; one that cannot be is an :class:`InvalidRequestError` naming it."""
    setting = config.ssl
    if isinstance(setting, ssl.SSLContext):
        return setting
    if setting is False:
        logger.warning(
            "Configuration.ssl=False: servers' certificates are not verified; anyone on "
            "the network path can read or change what this session downloads"
        )
        if config.client_cert is None:
            return False
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(setting, str):
        try:
            context = ssl.create_default_context(cafile=setting)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidRequestError(
                f"Configuration.ssl: cannot load the CA bundle {setting}: {_cause(exc)}"
            ) from exc
    elif config.client_cert is None:
        return True
    else:
        context = ssl.create_default_context()
    if config.client_cert is not None:
        cert, key = config.client_cert
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            shown = cert if key is None else f"{cert} and {key}"
            raise InvalidRequestError(
                f"Configuration.client_cert: cannot load {shown}: {_cause(exc)}"
            ) from exc
    return context


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def descriptor_slots(wanted: int) -> int:
    """``max_concurrent_transfers``, lowered to what ``RLIMIT_NOFILE`` (soft) can serve;
    a WARNING says so when it is lowered."""
    try:
        import resource  # noqa: PLC0415 -- not on Windows
    except ImportError:
        return wanted
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    slots = slots_for_descriptors(wanted, None if soft == resource.RLIM_INFINITY else soft)
    if slots < wanted:
        logger.warning(
            "max_concurrent_transfers=%d lowered to %d: the process may open %d file "
            "descriptors (RLIMIT_NOFILE), %d per transfer after %d for the rest "
            "(raise the limit to run more at once)",
            wanted,
            slots,
            soft,
            DESCRIPTORS_PER_SLOT,
            RESERVED_DESCRIPTORS,
        )
    return slots
