"""The daemon client's connection: hello, and launching the daemon on demand.

``reach`` gives the daemon's hello, starting ``python -m bgtransfer daemon``
detached when nothing answers (two clients doing so at once end up with one
daemon); the client's start-up and its reconnection both go through it.
``streams_session`` is the client's aiohttp session on the socket for them and
the long-lived requests (the commands have a channel of their own,
``channel.py``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import aiohttp

from .._core.wire import PROTOCOL_VERSION, decode_exception
from .._exceptions import DaemonError
from .._io.files import make_private_dir
from .paths import log_path, socket_path
from .protocol import PROTOCOL_HEADER

__all__ = [
    "BASE",
    "HEADERS",
    "LAUNCH_TIMEOUT",
    "STOPPING",
    "DaemonStopping",
    "connect",
    "daemon_error",
    "hello",
    "reach",
    "streams_session",
]

LAUNCH_TIMEOUT: Final = 20.0  # seconds a launched daemon may take to answer
RELAUNCH_PAUSE: Final = 0.1  # seconds between launches while an exiting daemon holds the lock
BASE: Final = "http://bgtransfer"  # the host is ignored on a Unix socket
HEADERS: Final = {PROTOCOL_HEADER: str(PROTOCOL_VERSION)}
STOPPING: Final = 503  # a stopping daemon's answer to a hello, an attach or a command
_children: list[subprocess.Popen[bytes]] = []  # launched daemons, reaped when they exit


class DaemonStopping(DaemonError):
    """The daemon answered that it is stopping (``STOPPING``): as if none
    answered yet, the client waits for it to exit and reaches a new one."""


async def hello(http: aiohttp.ClientSession) -> dict[str, Any]:
    """The daemon's hello; :class:`DaemonError` naming both versions on a mismatch."""
    async with http.get(BASE + "/v1/hello", headers=HEADERS) as response:
        body = await response.json(content_type=None)
    if response.status == STOPPING:
        raise DaemonStopping(str(daemon_error(body)))
    if response.status != 200:
        error = daemon_error(body)
        raise DaemonError(f"the daemon refused this client: {error}") from error
    if body.get("protocol") != PROTOCOL_VERSION:
        raise DaemonError(
            f"protocol version mismatch: this client speaks version {PROTOCOL_VERSION}, "
            f"the daemon (bgtransfer {body.get('version')}) speaks version {body.get('protocol')}"
        )
    return dict(body)


def daemon_error(body: object) -> Exception:
    error = body.get("error") if isinstance(body, dict) else None
    if error is None:
        return DaemonError(f"the daemon answered {body!r}")
    return decode_exception(error)


async def connect(
    state_dir: Path, *, default: bool
) -> tuple[aiohttp.ClientSession, dict[str, Any]]:
    """A client session to ``state_dir``'s daemon and its hello, launching the
    daemon when nothing answers (two clients doing so at once: one daemon)."""
    http = streams_session(socket_path(state_dir, default=default))
    try:
        return http, await reach(http, state_dir, default=default)
    except BaseException:
        await http.close()
        raise


def streams_session(path: Path) -> aiohttp.ClientSession:
    """The client session for the long-lived requests on the socket at
    ``path`` (the attachment, the cursor streams, the hello): no limit on its
    connections, each stream holding one for as long as it lives."""
    return aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=str(path), limit=0),
        timeout=aiohttp.ClientTimeout(),
    )


async def reach(http: aiohttp.ClientSession, state_dir: Path, *, default: bool) -> dict[str, Any]:
    """The hello of ``state_dir``'s daemon through ``http``, launching the
    daemon when nothing answers (again when the launched one found another
    holding the lock, "already running", and still nothing answers: that one
    was exiting). A daemon that answers it is stopping is waited for (it
    exits, then one is launched). :class:`DaemonError` when the launched one
    fails or nothing answers within ``LAUNCH_TIMEOUT``."""
    path = socket_path(state_dir, default=default)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    process: subprocess.Popen[bytes] | None = None
    delay = 0.005
    while True:
        try:
            return await hello(http)
        except DaemonStopping as exc:
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"the bgtransfer daemon for {state_dir} was still stopping after "
                    f"{LAUNCH_TIMEOUT:g} s (socket {path}; its log: {log_path(state_dir)})"
                ) from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            if process is None:  # nothing answers: launch one
                process = await _launch_daemon(state_dir, default)
                continue
            status = process.poll()
            if status not in (None, 0) or time.monotonic() > deadline:
                why = f"exited with status {status}" if status else "did not answer in time"
                raise DaemonError(
                    f"the bgtransfer daemon for {state_dir} {why} "
                    f"(socket {path}; its log: {log_path(state_dir)})"
                ) from exc
            if status == 0:
                # "Already running": another daemon held the lock, and nothing
                # answers now (it was on its way out): launch one again.
                process = await _launch_daemon(state_dir, default)
                delay = RELAUNCH_PAUSE
        # Bounded wait for the daemon's socket to answer (a fresh interpreter
        # takes a few hundred ms), or for a stopping one to exit: short,
        # growing pauses.
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def _launch_daemon(state_dir: Path, default: bool) -> subprocess.Popen[bytes]:
    try:
        return await asyncio.to_thread(_launch, state_dir, default)
    except OSError as exc:  # its log cannot be opened (a link there), no interpreter...
        raise DaemonError(
            f"cannot launch the bgtransfer daemon for {state_dir}: {exc.strerror or exc} "
            f"({exc.filename or sys.executable})"
        ) from exc


def _launch(state_dir: Path, default: bool) -> subprocess.Popen[bytes]:
    """``python -m bgtransfer daemon`` detached: its own session, no terminal,
    stdin from /dev/null, output to the state dir's ``daemon.log``, no
    inherited descriptors."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
    make_private_dir(state_dir)
    command = [sys.executable, "-m", "bgtransfer", "daemon"]
    if not default:
        command += ["--state-dir", str(state_dir)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(log_path(state_dir), flags, 0o600)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            close_fds=True,
            start_new_session=True,
            cwd="/",
        )
    finally:
        os.close(fd)
    _children.append(process)
    return process
