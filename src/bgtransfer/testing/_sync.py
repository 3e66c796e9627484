"""Synchronisation between tests and request handlers, without polling or sleeps.

* :class:`Notifier` wakes waiters whenever observable server state changes, so a
  test can wait for a condition (``3 requests held``) instead of sleeping.
* :class:`Gates` are the per-path gates behind ``Faults(hold_after=...)``.
* :class:`Shutdown` lets handlers abandon their waits when the server stops.

All of it must be used from the server's event loop thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Gates", "Notifier", "ServerClosingError", "Shutdown"]


class ServerClosingError(Exception):
    """Raised inside a handler whose wait was interrupted by server shutdown."""


class Shutdown:
    """A one-way "the server is stopping" flag that sleeping handlers can await."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    @property
    def is_set(self) -> bool:
        """Whether shutdown has begun."""
        return self._event.is_set()

    def set(self) -> None:
        """Begin shutdown, waking every :meth:`sleep`."""
        self._event.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds``; raise :class:`ServerClosingError` if shutdown begins first."""
        if self._event.is_set():
            raise ServerClosingError
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return
        raise ServerClosingError


class Notifier:
    """Broadcasts "something changed" to coroutines waiting for a predicate."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._closed = False

    def notify(self) -> None:
        """Wake every waiter so it re-evaluates its predicate.  Callable from sync code."""
        self._event.set()
        self._event = asyncio.Event()

    def close(self) -> None:
        """Make current and future waits whose predicate is false raise RuntimeError."""
        self._closed = True
        self.notify()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true, re-checking it after every :meth:`notify`.

        Raises :class:`RuntimeError` if the notifier is closed while still waiting.
        """
        while not predicate():
            if self._closed:
                raise RuntimeError("the test server was closed while waiting")
            event = self._event
            await event.wait()


class _Gate:
    __slots__ = ("armed", "held", "opened")

    def __init__(self) -> None:
        self.armed = True
        self.held = 0
        # Set by release(); each release swaps in a fresh event, so requests that
        # arrive after a re-arm wait on a new one while the released ones go on.
        self.opened = asyncio.Event()


class Gates:
    """Per-path gates.  A gate starts armed: requests that reach it wait.

    :meth:`release` lets the waiting requests go and disarms the gate, so later
    requests pass straight through until :meth:`arm` is called again.
    """

    def __init__(self, notifier: Notifier, shutdown: Shutdown) -> None:
        self._gates: dict[str, _Gate] = {}
        self._notifier = notifier
        self._shutdown = shutdown

    def _gate(self, path: str) -> _Gate:
        gate = self._gates.get(path)
        if gate is None:
            gate = self._gates[path] = _Gate()
        return gate

    def arm(self, path: str) -> None:
        """Make later requests for ``path`` wait again (already released ones stay released)."""
        self._gate(path).armed = True

    def release(self, path: str) -> None:
        """Let requests held on ``path`` continue and disarm its gate."""
        gate = self._gate(path)
        gate.armed = False
        gate.opened.set()
        gate.opened = asyncio.Event()
        self._notifier.notify()

    def release_all(self) -> None:
        """Wake every held request (used at shutdown; gates stay as they are)."""
        for gate in self._gates.values():
            gate.opened.set()
            gate.opened = asyncio.Event()

    def held(self, path: str) -> int:
        """How many requests for ``path`` are waiting at its gate right now."""
        gate = self._gates.get(path)
        return 0 if gate is None else gate.held

    async def pass_through(self, path: str) -> None:
        """Wait at ``path``'s gate if it is armed.

        Raises :class:`ServerClosingError` if the server stops while waiting.
        """
        gate = self._gate(path)
        if not gate.armed:
            return
        if self._shutdown.is_set:
            raise ServerClosingError
        opened = gate.opened
        gate.held += 1
        self._notifier.notify()
        try:
            await opened.wait()
        finally:
            gate.held -= 1
            self._notifier.notify()
        if self._shutdown.is_set:
            raise ServerClosingError
