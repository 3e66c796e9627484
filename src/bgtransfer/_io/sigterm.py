"""SIGTERM while background sessions are open: journal their tasks, then end as SIGTERM does.

``asyncio.run`` turns SIGINT into ``KeyboardInterrupt`` so that cleanup runs; a
SIGTERM left at its default disposition ends the process at once, and the tasks
of an open background session continue in the next process from their last
progress entry. So, while a background session is open in the main thread
and SIGTERM has its default disposition, this module handles it: every open
session's running tasks are journaled (each journal records the bytes on disk
and commits, within :data:`JOURNAL_TIMEOUT` seconds), then the default
disposition is restored and SIGTERM raised again, so that the process ends
exactly as SIGTERM would have ended it (status -15; 143 in a shell). A second
SIGTERM meanwhile ends it at once.

Process-wide: one handler for all the sessions open at once; the disposition
found before the first is restored when the last closes. An application that
installed its own handler keeps it (nothing is installed), and one that installs
its own while sessions are open keeps that too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType

__all__ = ["JOURNAL_TIMEOUT", "register", "unregister"]

logger = logging.getLogger("bgtransfer")

JOURNAL_TIMEOUT = 5.0
"""Seconds the sessions may take to journal their tasks before the process ends anyway."""

JournalRunning = Callable[[], Awaitable[None]]


class _Handling:
    """The process's state: what journals each open session's running tasks, and their loop."""

    def __init__(self) -> None:
        self.sessions: dict[object, JournalRunning] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ending: set[asyncio.Task[None]] = set()  # the journaling task, referenced


_handling = _Handling()


def register(journal_running: JournalRunning) -> object | None:
    """Call ``journal_running()`` on SIGTERM, then end the process; call on
    the loop, as a background session opens. Returns the token for
    :func:`unregister`, or None when SIGTERM is not handled: not the main
    thread, another disposition than the default (the application's), or
    sessions open in another event loop."""
    if threading.current_thread() is not threading.main_thread():
        return None
    loop = asyncio.get_running_loop()
    if not _handling.sessions:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None
        signal.signal(signal.SIGTERM, _on_sigterm)
        _handling.loop = loop
    elif loop is not _handling.loop:
        return None
    token = object()
    _handling.sessions[token] = journal_running
    return token


def unregister(token: object) -> None:
    """The session closed: the last one out restores the default disposition
    (unless the application has set its own since)."""
    if _handling.sessions.pop(token, None) is None or _handling.sessions:
        return
    _handling.loop = None
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """In the main thread, between two bytecodes: hand over to the loop."""
    # From now on SIGTERM kills: a second one, or the watchdog below if the loop
    # never gets to journal the tasks (blocked by a long synchronous call).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    loop = _handling.loop
    if loop is None or loop.is_closed():
        _die()
        return
    watchdog = threading.Timer(JOURNAL_TIMEOUT + 1.0, _die)
    watchdog.daemon = True
    watchdog.start()
    loop.call_soon_threadsafe(_start_journaling, loop)


def _start_journaling(loop: asyncio.AbstractEventLoop) -> None:
    task = loop.create_task(_journal_then_die(list(_handling.sessions.values())))
    _handling.ending.add(task)


async def _journal_then_die(sessions: list[JournalRunning]) -> None:
    try:
        logger.warning("SIGTERM: journaling %d background session(s) before ending", len(sessions))
        tasks = [asyncio.ensure_future(journal()) for journal in sessions]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=JOURNAL_TIMEOUT)
            for task in done:
                if task.exception() is not None:
                    logger.error("SIGTERM: journaling a session failed: %r", task.exception())
            if pending:
                logger.error(
                    "SIGTERM: %d session(s) did not finish journaling within %s s",
                    len(pending),
                    JOURNAL_TIMEOUT,
                )
    finally:
        _die()


def _die() -> None:
    """End the process as SIGTERM does (the default disposition is restored)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
