"""Launch events for one session served by the daemon: the policy and the spawner, joined.

The daemon makes one :class:`LaunchController` per session it serves and tells
it what happens, from the event log and the client connections:

* :meth:`~LaunchController.event_published` -- an event for the application
  (a terminal event) got number ``cursor`` in the session's log (``urgent``:
  it needs the application before the other tasks end, credentials say);
* :meth:`~LaunchController.activity` -- whether a task of the session is
  running or queued (suspended ones do not count): launches wait for the batch;
* :meth:`~LaunchController.client_attached` / :meth:`~LaunchController.client_detached`;
* :meth:`~LaunchController.acknowledged` -- the application acknowledged every
  event up to ``cursor``;
* :meth:`~LaunchController.app_needed` -- a task waits for the application
  (credentials), or none does any more.

The controller feeds them, with the clock's time, to the sans-IO
:class:`~bgtransfer._core.launch.LaunchPolicy`, keeps *one* timer at the
policy's due time (nothing polls), and when it fires runs
``Configuration.launch_command`` with :func:`~bgtransfer._io.launcher.spawn`.
Its :attr:`~LaunchController.status` is the policy, for ``bgtransfer status``;
it is kept in ``<state_dir>/<identifier>/launch.json`` across restarts
(:meth:`LaunchController.restore`), and the launches' output goes to
``launch.log`` beside it. See docs/launch-events.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from .._core.config import Configuration
from .._core.launch import LaunchOrder, LaunchPolicy
from .._io.files import read_json, write_json
from .._io.launcher import SpawnFailure, launch_environment, spawn
from .._io.threads import run_blocking

__all__ = ["LOG_NAME", "STATUS_NAME", "Clock", "LaunchController", "WallClock"]

logger = logging.getLogger("bgtransfer")

STATUS_NAME = "launch.json"
LOG_NAME = "launch.log"


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """The time (seconds since the epoch) and one kind of timer at such a time."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer: ...


class WallClock:
    """The real clock: ``time.time()``, timers on the running loop."""

    def time(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        # (A wall clock that jumps only moves the wake-up; the controller checks
        # the policy's due time again when the timer fires.)
        return asyncio.get_running_loop().call_later(max(when - time.time(), 0.0), callback)


class LaunchController:
    """One session's launches; an async context manager. See the module docstring."""

    def __init__(
        self,
        identifier: str,
        *,
        state_dir: Path,
        config: Configuration,
        clock: Clock | None = None,
        policy: LaunchPolicy | None = None,
    ) -> None:
        self._identifier = identifier
        self._state_dir = state_dir
        self._directory = state_dir / identifier
        self._clock: Clock = WallClock() if clock is None else clock
        self._policy = LaunchPolicy.from_config(config) if policy is None else policy
        self._timer: Timer | None = None
        self._launch: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._saved = self._persisted(self._policy)
        self._saving: asyncio.Task[None] | None = None
        self._open = False

    @classmethod
    async def restore(
        cls,
        identifier: str,
        *,
        state_dir: Path,
        config: Configuration,
        latest: int,
        acknowledged: int,
        busy: bool,
        clock: Clock | None = None,
    ) -> LaunchController:
        """The controller a new daemon process makes for a session it serves
        again: the launch status the last one left (if any, and readable: a
        damaged one is logged and started afresh), with the event log's cursors
        (``latest`` published, ``acknowledged`` by the application) and whether
        tasks of the session run (``busy``, as for :meth:`activity`)."""
        clock = WallClock() if clock is None else clock
        path = state_dir / identifier / STATUS_NAME
        policy = LaunchPolicy.from_config(config)
        try:
            stored = await run_blocking(read_json, path)
            if stored is not None:
                policy = LaunchPolicy.from_json(stored, config)
        except (OSError, ValueError) as exc:
            logger.warning("%s: launch status %s ignored: %s", identifier, path, exc)
        on_disk = cls._persisted(policy)
        policy = policy.restarted(clock.time(), latest=latest, acknowledged=acknowledged, busy=busy)
        controller = cls(identifier, state_dir=state_dir, config=config, clock=clock, policy=policy)
        controller._saved = on_disk  # (a lost launch is written at the next change, or the end)
        return controller

    # -- lifetime ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._open = True
        self._rearm()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the timer and stop waiting for a running launch (the process goes
        on, and is reaped, on its own); the last status is written."""
        self._open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        launch, saving = self._launch, self._saving
        if launch is not None and not launch.done():
            launch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await launch
        if saving is not None and not saving.done():
            # Not cancelled: its write runs in a thread that a cancellation would
            # not stop, and a second write of the same temporary file beside it
            # would mangle both. It ends by itself (it writes what is current).
            await asyncio.wait([saving])
        self._launch = None
        self._saving = None
        await self._save_now()

    # -- what the daemon tells it ------------------------------------------------------

    def event_published(self, cursor: int, *, urgent: bool = False) -> None:
        """An event for the application got number ``cursor``."""
        self._update(self._policy.event_published(cursor, self._clock.time(), urgent=urgent))

    def app_needed(self, reason: str | None, *, answered: bool = False) -> None:
        """A task needs the application (``"credentials"``), or none does (None);
        ``answered``: the application answered one."""
        self._update(self._policy.app_needed(reason, self._clock.time(), answered=answered))

    def activity(self, busy: bool) -> None:
        """Whether a task of the session runs or is queued (not suspended)."""
        self._update(self._policy.activity(busy, self._clock.time()))

    def client_attached(self) -> None:
        self._update(self._policy.client_attached(self._clock.time()))

    def client_detached(self) -> None:
        self._update(self._policy.client_detached(self._clock.time()))

    def acknowledged(self, cursor: int) -> None:
        """The application acknowledged every event up to ``cursor``."""
        self._update(self._policy.acknowledge(cursor, self._clock.time()))

    # -- what it tells -----------------------------------------------------------------

    @property
    def status(self) -> LaunchPolicy:
        """The launch status now (a frozen value; ``.to_json()`` for scripts)."""
        return self._policy

    async def wait_status(self, predicate: Callable[[LaunchPolicy], bool]) -> LaunchPolicy:
        """Return the status once ``predicate(status)`` holds (checked on every change)."""
        while not predicate(self._policy):
            await self._changed.wait()
        return self._policy

    # -- inside ------------------------------------------------------------------------

    def _update(self, policy: LaunchPolicy) -> None:
        if policy == self._policy:
            return
        self._policy = policy
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._open:
            self._rearm()
            if self._persisted(policy) != self._saved and (
                self._saving is None or self._saving.done()
            ):
                self._saving = asyncio.ensure_future(self._save())

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self._policy.due
        if due is not None:  # (never while a launch runs: the policy says so)
            self._timer = self._clock.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._open:
            return
        now = self._clock.time()
        due = self._policy.due
        if due is None or now < due:  # (the wall clock went back, say)
            self._rearm()
            return
        policy, order = self._policy.begin(now)
        self._update(policy)
        self._launch = asyncio.ensure_future(self._run(order))

    async def _run(self, order: LaunchOrder) -> None:
        environment = launch_environment(
            self._identifier, state_dir=self._state_dir, cursor=order.cursor
        )
        try:
            started = await spawn(
                order.argv, environment=environment, log=self._directory / LOG_NAME
            )
        except Exception as exc:  # a bug, not the command: recorded, never the daemon's end
            logger.exception("%s: launching %r failed", self._identifier, order.argv)
            self._update(self._policy.ended(self._clock.time(), error=f"launch failed: {exc!r}"))
            return
        if isinstance(started, SpawnFailure):
            logger.warning("%s: %s", self._identifier, started.reason)
            self._update(self._policy.ended(self._clock.time(), error=started.reason))
            return
        self._update(self._policy.spawned(started.pid))
        status = await started.wait()
        self._update(self._policy.ended(self._clock.time(), status=status))

    @staticmethod
    def _persisted(policy: LaunchPolicy) -> object:
        return (policy.history, policy.delay, policy.launches)

    async def _save(self) -> None:
        while self._persisted(self._policy) != self._saved:
            await self._save_now()

    async def _save_now(self) -> None:
        policy = self._policy
        if self._persisted(policy) == self._saved:
            return
        try:
            await run_blocking(write_json, self._directory / STATUS_NAME, policy.to_json())
        except OSError as exc:
            logger.warning("%s: cannot write the launch status: %s", self._identifier, exc)
        self._saved = self._persisted(policy)
