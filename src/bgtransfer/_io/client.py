"""The HTTP client the engine downloads with, and how many transfers it may run.

The one place that builds aiohttp's ``ClientSession`` and ``TCPConnector`` and
reads the process's descriptor limit: the engine asks for a client and a slot
count and sets up no connection machinery itself.
"""

from __future__ import annotations

import logging

import aiohttp

from .._core.config import Configuration
from .._core.supervisor import DESCRIPTORS_PER_SLOT, RESERVED_DESCRIPTORS, slots_for_descriptors

__all__ = ["READ_BUFSIZE", "descriptor_slots", "make_client"]

logger = logging.getLogger("bgtransfer")

READ_BUFSIZE = 1024 * 1024  # aiohttp's per-connection read buffer (it buffers up to twice this)


def make_client(config: Configuration, limit: int) -> aiohttp.ClientSession:
    """A client for ``limit`` connections at once (at most ``max_connections_per_host``
    to one host), that hands bodies over as sent (no decompression) and never
    times a whole request out (the engine's own timeouts do)."""
    connector = aiohttp.TCPConnector(
        limit=limit,
        # Defence in depth: the supervisor already keeps each origin within the
        # limit; this also bounds the hosts a redirect leads to.
        limit_per_host=config.max_connections_per_host,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        # aiohttp's 64 KiB default pauses and resumes the socket every few reads
        # at loopback speeds; past 2 x this, reading waits for the writer.
        read_bufsize=READ_BUFSIZE,
        timeout=aiohttp.ClientTimeout(total=None),
    )


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
