"""The ``bgtransfer daemon`` process: its lock, its log, and its server's run.

One daemon per state directory: the lock file (``flock``) says which; the
second one started says "already running" and exits 0 (the client that
launched it reaches the first). ``server.py`` is the daemon itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from .._io.files import make_private_dir
from .._io.sdlisten import inherited_listener
from .paths import lock_path, socket_path
from .server import Daemon, log

__all__ = ["LOG_ENV", "run_daemon"]


@contextlib.contextmanager
def _daemon_lock(state_dir: Path) -> Iterator[bool]:
    make_private_dir(state_dir)
    fd = os.open(lock_path(state_dir), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


LOG_ENV: Final = "BGTRANSFER_DAEMON_LOG"  # the engine's level in daemon.log (warning)


def _configure_logging(engine_level: str | None) -> None:
    """daemon.log: the daemon's own lines (listening, sessions opened and
    closed, launches, stopping, its errors) at INFO, and the engine's from
    WARNING: one INFO line per finished task is noise in a daemon that runs
    thousands (and its cost: docs/design.md, "What daemon.log shows").
    ``engine_level`` (``$BGTRANSFER_DAEMON_LOG``: ``info``, ``debug``...)
    lowers that, for someone following the tasks from the log."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    level = logging.WARNING
    if engine_level:
        named = logging.getLevelName(engine_level.strip().upper())
        if isinstance(named, int):
            level = named
        else:
            log.warning("%s=%r is not a logging level: WARNING", LOG_ENV, engine_level)
    logging.getLogger("bgtransfer").setLevel(level)
    log.setLevel(min(level, logging.INFO))


def _freeze_start_up() -> None:
    """What the daemon's start has made (modules, classes, functions: some
    40,000 objects that live as long as the process) is left out of the
    collector's passes: its older generations' passes, as the tasks' objects
    accumulate, walked all of it each time (the collector went from 125,000 to
    53,000 instructions per small file through the daemon: docs/design.md,
    "The daemon's start-up heap is frozen")."""
    gc.collect()  # the start's own garbage, not frozen with the rest
    gc.freeze()


def run_daemon(state_dir: Path, *, default: bool = False, idle_timeout: float | None = None) -> int:
    """The ``bgtransfer daemon`` process: 0 when it ran, or when another daemon
    of the state dir already runs ("already running")."""
    _configure_logging(os.environ.get(LOG_ENV))
    state_dir = state_dir.absolute()
    with _daemon_lock(state_dir) as acquired:
        if not acquired:
            print(f"bgtransfer daemon: already running for {state_dir}", file=sys.stderr)
            return 0
        path = socket_path(state_dir, default=default)
        try:  # systemd's socket (bgtransfer.socket), before binding one
            listener = inherited_listener(expected_path=path)
        except ValueError as exc:
            print(f"bgtransfer daemon: {exc}", file=sys.stderr)
            return 2

        async def main() -> None:
            daemon = Daemon(
                state_dir, socket_file=path, idle_timeout=idle_timeout, listener=listener
            )
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, daemon.stop)
            _freeze_start_up()
            await daemon.serve()

        asyncio.run(main())
    return 0
