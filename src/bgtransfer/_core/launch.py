"""When the daemon launches a session's application: a sans-IO policy.

The daemon runs ``Configuration.launch_command`` when events of a session wait
for an application that is not attached (Apple relaunches an app for its
background session, BITS runs a job's notify command line). This module
decides *when*; the daemon's controller (``_daemon/launching.py``) does the
I/O: it feeds the policy what happened, with the time, and starts the process
the policy asks for when its timer fires. Nothing here blocks, sleeps or reads
a clock.

The rules (docs/launch-events.md, docs/design.md "Launch events"):

* Events wait for the application when their cursor is above the last one it
  acknowledged. While none wait, or a client is attached, or a launch's process
  runs, no launch is due.
* While the session is *busy* (a task is still running or queued; suspended
  ones wait for the application and do not count), no launch is due either,
  unless an *urgent* event waits (one that needs the application before the
  rest can go on, such as credentials): as nsurlsessiond relaunches an app
  when all the tasks of its background session are complete, and BITS runs
  the notify command when the whole job is transferred or in error.
* A task may *need the application* (:meth:`LaunchPolicy.app_needed`: it
  waits for credentials only the application can give): that counts as an
  event waiting, urgent (the task cannot go on without it), until no task
  needs it any more. It lives in memory only: a restarted daemon's task asks
  again when it meets the same challenge.
* A launch is due ``delay`` seconds after its *anchor*: the first event that
  found nothing waiting, the end of the previous launch, or a client leaving
  with events still waiting. Events published meanwhile join that launch
  (coalescing): one launch per batch.
* Each launch doubles ``delay`` (up to ``max_delay``) for the next one; an
  acknowledgement from the application resets it to ``initial_delay``.
* A launch that cannot start (no such program, not executable) counts as a
  launch: recorded with its error, and the next one waits twice as long, so a
  broken command never runs in a loop.

The policy is a frozen value: every input returns a new one (as urllib3's
``Retry.increment``). It is also the launch status ``bgtransfer status`` shows
(each recent launch: time, argv, exit status; the next delay and due time),
and it round-trips through JSON (:meth:`LaunchPolicy.to_json`,
:meth:`LaunchPolicy.from_json`) so the daemon keeps it across restarts.
"""

from __future__ import annotations

import math
from typing import Any, Final

import attrs

from .config import Configuration

__all__ = ["HISTORY_LIMIT", "LaunchOrder", "LaunchPolicy", "LaunchRecord"]

HISTORY_LIMIT: Final = 16
"""Launches kept in the history (the oldest go first); ``launches`` counts them all."""

_FORMAT: Final = 1  # the version of :meth:`LaunchPolicy.to_json`'s format

LOST: Final = "lost: the daemon stopped while it ran"
"""The error of a launch whose process the daemon lost track of (a restart)."""


@attrs.frozen(kw_only=True)
class LaunchRecord:
    """One launch: when, what, and how it ended (a value, for the status)."""

    started_at: float  # seconds since the epoch
    argv: tuple[str, ...]
    cursor: int  # BGTRANSFER_CURSOR: the last event the application acknowledged
    through: int  # the newest event waiting when it started
    pid: int | None = None  # once started
    ended_at: float | None = None
    status: int | None = None  # the exit status; negative: killed by that signal
    error: str | None = None  # why it could not start, or was lost
    reason: str | None = None  # what the app was needed for ("credentials"); None: events

    @property
    def running(self) -> bool:
        return self.ended_at is None


@attrs.frozen(kw_only=True)
class LaunchOrder:
    """What to run now: the argument list and the cursor for ``BGTRANSFER_CURSOR``."""

    argv: tuple[str, ...]
    cursor: int


@attrs.frozen(kw_only=True)
class LaunchPolicy:
    """One session's launches, as a frozen state machine; see the module docstring.

    Build it with :meth:`from_config`; feed it :meth:`event_published`,
    :meth:`client_attached`, :meth:`client_detached`, :meth:`acknowledge`;
    when :attr:`due` has come, :meth:`begin` the launch, then report
    :meth:`spawned` and :meth:`ended`. Times are seconds since the epoch
    (persisted, and shown), passed in by the caller.
    """

    command: tuple[str, ...] | None  # None: this session launches nothing
    initial_delay: float
    max_delay: float
    delay: float  # how long the next launch waits after its anchor
    acknowledged: int = 0  # the cursor of the last event the application acknowledged
    latest: int = 0  # the cursor of the newest event published
    attached: bool = False  # a client of the session is connected
    busy: bool = False  # a task of the session is running or queued
    urgent: int = 0  # the cursor of the newest urgent event
    anchor: float | None = None  # when the wait for the next launch began
    needed: str | None = None  # what a task needs the application for now ("credentials")
    history: tuple[LaunchRecord, ...] = ()  # the last HISTORY_LIMIT launches
    launches: int = 0  # every launch begun, ever

    @classmethod
    def from_config(cls, config: Configuration) -> LaunchPolicy:
        return cls(
            command=config.launch_command,
            initial_delay=config.launch_delay,
            max_delay=config.launch_delay_max,
            delay=config.launch_delay,
        )

    # -- what the caller reads ---------------------------------------------------

    @property
    def waiting(self) -> bool:
        """Events wait for the application (published, not acknowledged), or a
        task needs it (:attr:`needed`)."""
        return self.latest > self.acknowledged or self.needed is not None

    @property
    def running(self) -> bool:
        """A launch's process runs (or is being started)."""
        return bool(self.history) and self.history[-1].running

    @property
    def due(self) -> float | None:
        """When the next launch is due (it may be in the past), or None: no launch."""
        if (
            self.command is None
            or self.attached
            or self.running
            or not self.waiting
            or self.anchor is None
            or (self.busy and self.urgent <= self.acknowledged and self.needed is None)
        ):
            return None
        return self.anchor + self.delay

    def explain(self, now: float) -> str:
        """Why the next launch is when it is, in a few words (for ``bgtransfer status``)."""
        if self.command is None:
            return "no launch_command"
        if self.running:
            pid = self.history[-1].pid
            return "launch running" + (f" (pid {pid})" if pid is not None else "")
        if not self.waiting:
            return "no event waits for the app"
        need = "" if self.needed is None else f" (a task needs it: {self.needed})"
        if self.attached:
            return "the app is attached" + need
        due = self.due
        if due is None:
            return "waiting for the session's tasks to end"
        if due <= now:
            return "launch due now" + need
        wait = f"next launch in {_seconds_text(due - now)} (delay {_seconds_text(self.delay)})"
        return wait + need

    # -- inputs --------------------------------------------------------------------

    def event_published(self, cursor: int, now: float, *, urgent: bool = False) -> LaunchPolicy:
        """An event for the application (a terminal event, say) has number
        ``cursor``; ``urgent``: it needs the application even while the
        session is busy."""
        _check_cursor(cursor)
        if cursor <= self.latest:
            return self
        changed = self if not urgent else attrs.evolve(self, urgent=cursor)
        if self.waiting:  # joins the launch already pending, or running
            return attrs.evolve(changed, latest=cursor)
        return attrs.evolve(changed, latest=cursor, anchor=now)

    def app_needed(self, reason: str | None, now: float, *, answered: bool = False) -> LaunchPolicy:
        """A task needs the application (``reason``, such as ``"credentials"``),
        or none does any more (None). ``answered``: the application answered
        (it is alive: the delay starts again from ``initial_delay``, as for an
        acknowledgement)."""
        policy = self
        if answered:
            policy = attrs.evolve(policy, delay=self.initial_delay)
        if reason == self.needed:
            return policy
        if reason is None:
            events = self.latest > self.acknowledged
            return attrs.evolve(policy, needed=None, anchor=self.anchor if events else None)
        anchor = self.anchor if self.waiting and self.anchor is not None else now
        return attrs.evolve(policy, needed=reason, anchor=anchor)

    def activity(self, busy: bool, now: float) -> LaunchPolicy:
        """Whether a task of the session is running or queued (suspended ones
        do not count): no launch is due while one is, but for urgent events."""
        return self if busy == self.busy else attrs.evolve(self, busy=busy)

    def client_attached(self, now: float) -> LaunchPolicy:
        """A client of the session connected: no launch while it stays."""
        return attrs.evolve(self, attached=True)

    def client_detached(self, now: float) -> LaunchPolicy:
        """The client left; what it did not acknowledge waits ``delay`` from now."""
        return attrs.evolve(self, attached=False, anchor=now if self.waiting else self.anchor)

    def acknowledge(self, cursor: int, now: float) -> LaunchPolicy:
        """The application acknowledged every event up to ``cursor``: it is alive
        and collecting, so the delay starts again from ``initial_delay``."""
        _check_cursor(cursor)
        acknowledged = max(self.acknowledged, cursor)
        latest = max(self.latest, acknowledged)
        anchor = self.anchor if latest > acknowledged or self.needed is not None else None
        return attrs.evolve(
            self, acknowledged=acknowledged, latest=latest, anchor=anchor, delay=self.initial_delay
        )

    def begin(self, now: float) -> tuple[LaunchPolicy, LaunchOrder]:
        """Start the launch that is due: the new policy and what to run.

        :class:`RuntimeError` when none is due at ``now`` (a caller's bug)."""
        due = self.due
        if due is None or now < due:
            raise RuntimeError(f"no launch is due at {now} (due: {due})")
        assert self.command is not None  # (due is None without one)
        record = LaunchRecord(
            started_at=now,
            argv=self.command,
            cursor=self.acknowledged,
            through=self.latest,
            reason=self.needed,
        )
        policy = attrs.evolve(
            self,
            delay=min(self.delay * 2, self.max_delay),
            anchor=None,
            history=(*self.history, record)[-HISTORY_LIMIT:],
            launches=self.launches + 1,
        )
        return policy, LaunchOrder(argv=record.argv, cursor=record.cursor)

    def spawned(self, pid: int) -> LaunchPolicy:
        """The running launch's process has this pid."""
        return self._with_last(pid=pid)

    def ended(
        self, now: float, *, status: int | None = None, error: str | None = None
    ) -> LaunchPolicy:
        """The running launch ended: its process exited with ``status``, or it
        could not start (``error``). The next launch, if events still wait, is
        due ``delay`` from now."""
        return attrs.evolve(self._with_last(ended_at=now, status=status, error=error), anchor=now)

    def restarted(self, now: float, *, latest: int, acknowledged: int, busy: bool) -> LaunchPolicy:
        """The policy as a new daemon process finds it (after :meth:`from_json`):
        no client is attached, a launch that was running is lost (its process is
        not the new daemon's child), the cursors are the event log's and
        ``busy`` says whether tasks of the session run."""
        _check_cursor(latest)
        _check_cursor(acknowledged)
        policy = self
        if policy.running:
            policy = policy.ended(now, error=LOST)
        latest = max(latest, acknowledged)
        anchor = policy.anchor
        if latest > acknowledged and anchor is None:
            anchor = now
        return attrs.evolve(
            policy,
            attached=False,
            busy=busy,
            latest=latest,
            acknowledged=acknowledged,
            anchor=anchor,
        )

    def reconfigured(self, config: Configuration) -> LaunchPolicy:
        """The same history under a (possibly changed) configuration."""
        return attrs.evolve(
            self,
            command=config.launch_command,
            initial_delay=config.launch_delay,
            max_delay=config.launch_delay_max,
            delay=min(max(self.delay, config.launch_delay), config.launch_delay_max),
        )

    def _with_last(self, **changes: Any) -> LaunchPolicy:
        if not self.running:
            raise RuntimeError("no launch is running")
        last = attrs.evolve(self.history[-1], **changes)
        return attrs.evolve(self, history=(*self.history[:-1], last))

    # -- persistence -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A plain JSON value of what survives a restart (not the settings, which
        come from the configuration, nor ``attached`` and ``busy``, which the
        new daemon knows better)."""
        return {
            "format": _FORMAT,
            "delay": self.delay,
            "acknowledged": self.acknowledged,
            "latest": self.latest,
            "urgent": self.urgent,
            "anchor": self.anchor,
            "needed": self.needed,  # (shown; not restored: a task asks again)
            "launches": self.launches,
            "history": [
                attrs.asdict(record, recurse=False) | {"argv": list(record.argv)}
                for record in self.history
            ],
        }

    @classmethod
    def from_json(cls, value: object, config: Configuration) -> LaunchPolicy:
        """The policy :meth:`to_json` wrote, under ``config``; :class:`ValueError`
        naming the field for anything else (a file on disk is not trusted)."""
        data = _object(value, "launch status")
        if data.get("format") != _FORMAT:
            raise ValueError(f"launch status: unknown format {data.get('format')!r}")
        history_value = data.get("history")
        if not isinstance(history_value, list) or len(history_value) > HISTORY_LIMIT:
            raise ValueError(
                f"launch status: history must be a list of at most {HISTORY_LIMIT} launches"
            )
        history = tuple(_record(item) for item in history_value)
        if any(record.running for record in history[:-1]):
            raise ValueError("launch status: only the last launch may be running")
        launches = _int(data, "launches")
        if launches < len(history):
            raise ValueError("launch status: launches is less than the history's length")
        policy = cls.from_config(config)
        return attrs.evolve(
            policy,
            delay=min(max(_seconds(data, "delay"), policy.initial_delay), policy.max_delay),
            acknowledged=_int(data, "acknowledged"),
            latest=_int(data, "latest"),
            urgent=_int(data, "urgent"),
            anchor=_time(data, "anchor", optional=True),
            history=history,
            launches=launches,
        )


def _seconds_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _check_cursor(cursor: int) -> None:
    if isinstance(cursor, bool) or not isinstance(cursor, int):
        raise TypeError(f"a cursor is an int, not {type(cursor).__name__}")
    if cursor < 0:
        raise ValueError(f"a cursor is at least 0, got {cursor}")


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        # (ValueError, as for every other flaw of a stored status: one error to catch)
        raise ValueError(f"{what} must be a JSON object, not {type(value).__name__}")  # noqa: TRY004
    return value


def _int(data: dict[str, Any], name: str, *, optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"launch status: {name} must be an int of at least 0, not {value!r}")
    return value


def _time(data: dict[str, Any], name: str, *, optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"launch status: {name} must be a finite number, not {value!r}")
    return float(value)


def _seconds(data: dict[str, Any], name: str) -> float:
    value: float = _time(data, name)
    if value <= 0:
        raise ValueError(f"launch status: {name} must be greater than 0, not {value!r}")
    return value


def _record(value: object) -> LaunchRecord:
    data = _object(value, "launch status: a launch")
    argv = data.get("argv")
    if (
        not isinstance(argv, list)
        or not argv
        or not all(isinstance(argument, str) for argument in argv)
    ):
        raise ValueError(f"launch status: argv must be a non-empty list of str, not {argv!r}")
    status = data.get("status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise ValueError(f"launch status: status must be an int or null, not {status!r}")
    error = data.get("error")
    if error is not None and not isinstance(error, str):
        raise ValueError(f"launch status: error must be a str or null, not {error!r}")
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"launch status: reason must be a str or null, not {reason!r}")
    return LaunchRecord(
        started_at=_time(data, "started_at"),
        argv=tuple(argv),
        cursor=_int(data, "cursor"),
        through=_int(data, "through"),
        pid=_int(data, "pid", optional=True),
        ended_at=_time(data, "ended_at", optional=True),
        status=status,
        error=error,
        reason=reason,
    )
