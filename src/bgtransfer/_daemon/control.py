"""``bgtransfer status`` and ``bgtransfer daemon --stop``: asking a running
daemon, never launching one."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any, Final

import aiohttp

from .._core.wire import PROTOCOL_VERSION
from .._io.lock import lock_held
from .paths import lock_path, socket_path
from .protocol import PROTOCOL_HEADER, SHUTDOWN_BOUND

# lock_held: for the front (the demo's detached server), which may not import _io.
__all__ = ["daemon_status", "lock_held", "stop_daemon"]

_BASE: Final = "http://bgtransfer"
_HEADERS: Final = {PROTOCOL_HEADER: str(PROTOCOL_VERSION)}


async def _ask(state_dir: Path, method: str, path: str, *, default: bool) -> dict[str, Any] | None:
    """The daemon's JSON answer, or None when no daemon answers."""
    connector = aiohttp.UnixConnector(path=str(socket_path(state_dir, default=default)))
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            async with http.request(method, _BASE + path, headers=_HEADERS) as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientConnectionError, OSError):
            return None
    if not isinstance(body, dict) or "error" in body:
        raise RuntimeError(f"the daemon answered {body!r}")
    return body


async def daemon_status(state_dir: Path, *, default: bool = False) -> dict[str, Any] | None:
    """The daemon's status (pid, version, uptime, socket, sessions and their
    tasks), or None when none runs."""
    return await _ask(state_dir, "GET", "/v1/status", default=default)


async def stop_daemon(state_dir: Path, *, default: bool = False) -> int:
    """Ask the daemon to stop; return once it has exited (its lock is free)."""
    answer = await _ask(state_dir, "POST", "/v1/stop", default=default)
    if answer is None:
        print(f"no daemon runs for {state_dir}", file=sys.stderr)
        return 0
    deadline = time.monotonic() + SHUTDOWN_BOUND * 2 + 5
    while not _lock_free(state_dir):
        if time.monotonic() > deadline:
            print("bgtransfer daemon: did not stop in time", file=sys.stderr)
            return 1
        await asyncio.sleep(0.02)  # bounded: the daemon's exit frees the lock
    return 0


def _lock_free(state_dir: Path) -> bool:
    return not lock_held(lock_path(state_dir))
