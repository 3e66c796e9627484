"""``request_timeout`` for one transfer: a quiet-period timer, paused while
the transfer waits for the disk or the journal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Watchdog", "paused"]


class Watchdog:
    """``request_timeout`` as one timer per period, not one per socket read.

    aiohttp's ``sock_read`` timeout cancels and re-arms a timer on every read,
    which costs more than the read at loopback speeds. Here a read only notes
    the time; the timer, when it fires, either finds the stream quiet for the
    whole timeout (and calls ``on_expiry``) or re-arms itself for the new
    deadline. While paused (waiting for the disk or the journal), it never fires.
    """

    def __init__(self, timeout: float, on_expiry: Callable[[], object]) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._on_expiry = on_expiry
        self.last = self._loop.time()
        self.paused = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(
            self.last + timeout, self._check
        )

    def touch(self) -> None:
        """Data arrived (or a pause ended): the quiet period starts again."""
        self.last = self._loop.time()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        now = self._loop.time()
        due = self.last + self._timeout
        if self.paused:
            due = now + self._timeout
        elif now >= due:
            self._handle = None
            self._on_expiry()
            return
        self._handle = self._loop.call_at(due, self._check)


class paused:
    """The watchdog does not fire in the block (a wait for the disk or the
    journal); the quiet period starts again after it. A class, not
    ``@contextmanager``: it runs a few times per file."""

    __slots__ = ("_watchdog",)

    def __init__(self, watchdog: Watchdog | None) -> None:
        self._watchdog = watchdog

    def __enter__(self) -> None:
        if self._watchdog is not None:
            self._watchdog.paused = True

    def __exit__(self, *exc_info: object) -> None:
        if self._watchdog is not None:
            self._watchdog.paused = False
            self._watchdog.touch()
