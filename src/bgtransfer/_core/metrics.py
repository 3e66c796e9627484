"""Task metrics (``URLSessionTaskMetrics``): what each attempt of a task did on
the network, as frozen values, and the bookkeeping that gathers them.

The I/O shell feeds an :class:`AttemptRecorder` the times aiohttp's trace
signals give (DNS, connect, request, response head), each as a monotonic time
it reads itself; the engine begins and ends attempts and counts their bytes.
Nothing here reads a clock or touches a socket. Values are built only when
asked (:meth:`TaskMetricsLog.snapshot`): an attempt costs one recorder and a
few stores, never a redacted URL or a frozen value, unless somebody looks.

Every URL a value shows is redacted (``scheme://host[:port]/path``, as the
logs show a redirect target: no userinfo, query or fragment), and so is a
proxy's (its credentials never reach a recorder).
"""

from __future__ import annotations

from typing import Final, Literal, final

import attrs

from .secrets import redacted_url

__all__ = [
    "MAX_ATTEMPTS",
    "AttemptMetrics",
    "AttemptRecorder",
    "Outcome",
    "SessionMetrics",
    "SessionTally",
    "TaskMetrics",
    "TaskMetricsLog",
    "TimingSummary",
]

MAX_ATTEMPTS: Final = 16
"""Attempts a task's metrics keep (the latest; older ones are counted, not kept)."""

Outcome = Literal["running", "ok", "retried", "failed", "stopped"]
"""How an attempt ended: still ``running``; ``ok`` (its answer was used);
``retried`` (it failed and another attempt followed); ``failed`` (its error
ended the task); ``stopped`` (cancelled, suspended, the session closed, or
``resource_timeout`` ran out)."""


@final
@attrs.frozen(kw_only=True)
class AttemptMetrics:
    """One attempt of a task: one request, with the redirects it followed (and,
    for a segmented download, the segments' requests it started).

    Times are seconds since the attempt began (monotonic clock), None for a
    step that did not happen: no DNS lookup (an IP address, aiohttp's DNS
    cache, a reused connection), no new connection (a reused one). With several
    requests in one attempt, a step's ``*_start`` is the first time it started
    and its end the last time it ended. ``connect_end`` includes the TLS
    handshake for ``https`` (and a proxy's ``CONNECT``): aiohttp signals no
    separate TLS step. ``response_start`` is when the response's head had
    arrived (aiohttp signals no earlier byte): the time to first byte.
    """

    number: int  # 1 for a task's first attempt in this process
    url: str  # redacted
    started_at: float  # wall clock (time.time()) when it began
    ended_at: float | None  # wall clock when it ended; None while it runs
    duration: float | None  # seconds from its beginning to its end; None while it runs
    dns_start: float | None
    dns_end: float | None
    connect_start: float | None
    connect_end: float | None  # connected, TLS included for https
    request_start: float | None
    request_sent: float | None  # the request's head was sent
    response_start: float | None  # the response's head had arrived
    requests: int  # HTTP requests made (redirects, segments, an upload's exchanges)
    reused_connection: bool | None  # its first request's; None before it had one
    connections_opened: int
    connections_reused: int
    bytes_sent: int  # the body bytes sent (an upload's file); no headers
    bytes_received: int  # the body bytes received and written (a download's); no headers
    status: int | None  # the last response's status
    proxy: str | None  # the proxy its requests went through (redacted), None: direct
    redirects: tuple[str, ...]  # the redirect targets it followed, in order (redacted)
    outcome: Outcome
    error: str | None  # the error's class name (retried, failed), else None


@final
@attrs.frozen(kw_only=True)
class TaskMetrics:
    """What a task's attempts did, in this process (``task.metrics()``).

    ``attempts`` holds the latest 16 (``MAX_ATTEMPTS``), oldest first, the
    running one included; ``dropped_attempts`` counts the older ones no longer
    kept (the totals include them). ``redirects`` is the chain of the latest
    attempt that followed any (redacted targets), else empty.
    """

    task_id: int
    attempts: tuple[AttemptMetrics, ...]
    dropped_attempts: int
    redirects: tuple[str, ...]
    bytes_sent: int  # over every attempt
    bytes_received: int  # over every attempt

    @property
    def attempt_count(self) -> int:
        """Attempts made in this process, dropped ones included."""
        return len(self.attempts) + self.dropped_attempts


@final
@attrs.frozen(kw_only=True)
class TimingSummary:
    """A summary of durations (seconds): how many, the least, the mean, the most."""

    count: int = 0
    minimum: float | None = None
    mean: float | None = None
    maximum: float | None = None


@final
@attrs.frozen(kw_only=True)
class SessionMetrics:
    """The session's attempts that have ended, added up (``session.metrics()``).

    Counts from the session's opening in this process (the daemon's: since it
    began serving the session). ``time_to_first_byte`` summarises the
    attempts that had a response (``AttemptMetrics.response_start``).
    """

    attempts: int
    retries: int  # attempts that failed with another one after them
    failures: int  # attempts whose error ended their task
    redirects: int  # redirects followed
    bytes_sent: int
    bytes_received: int
    connections_opened: int
    connections_reused: int
    time_to_first_byte: TimingSummary


class AttemptRecorder:
    """One attempt as it happens: times (monotonic, as the I/O shell read them)
    and counts. Made by :meth:`TaskMetricsLog.begin`; the shell's trace calls
    the ``*_started``/``*_ended`` methods, the engine :meth:`TaskMetricsLog.end`."""

    __slots__ = (
        "_url",
        "bytes_before",
        "bytes_moved",
        "connect_end",
        "connect_start",
        "dns_end",
        "dns_start",
        "end",
        "ended_at",
        "error",
        "number",
        "opened",
        "outcome",
        "proxy",
        "redirects",
        "request_sent",
        "request_start",
        "requests",
        "response_start",
        "reused",
        "reused_first",
        "start",
        "started_at",
        "status",
    )

    def __init__(self, number: int, url: str, *, now: float, wall: float, counted: int) -> None:
        self.number = number
        self._url = url  # as the task has it: redacted when shown
        self.start = now
        self.started_at = wall
        self.bytes_before = counted  # the task's byte count when it began
        self.bytes_moved = 0  # set when it ends
        self.end: float | None = None
        self.ended_at: float | None = None
        self.dns_start: float | None = None
        self.dns_end: float | None = None
        self.connect_start: float | None = None
        self.connect_end: float | None = None
        self.request_start: float | None = None
        self.request_sent: float | None = None
        self.response_start: float | None = None
        self.requests = 0
        self.reused_first: bool | None = None
        self.opened = 0
        self.reused = 0
        self.status: int | None = None
        self.proxy: str | None = None
        self.redirects: tuple[str, ...] = ()  # as requested: redacted when shown
        self.outcome: Outcome = "running"
        self.error: str | None = None

    # -- fed by the I/O shell's trace ------------------------------------------------

    def request_started(self, now: float, proxy: str | None) -> None:
        """A request begins; ``proxy``: the one it goes through (no credentials)."""
        self.requests += 1
        if self.request_start is None:
            self.request_start = now
        if proxy is not None:
            self.proxy = proxy

    def dns_started(self, now: float) -> None:
        if self.dns_start is None:
            self.dns_start = now

    def dns_ended(self, now: float) -> None:
        self.dns_end = now

    def connect_started(self, now: float) -> None:
        if self.connect_start is None:
            self.connect_start = now

    def connect_ended(self, now: float) -> None:
        self.connect_end = now
        self.opened += 1
        if self.reused_first is None:
            self.reused_first = False

    def connection_reused(self) -> None:
        self.reused += 1
        if self.reused_first is None:
            self.reused_first = True

    def request_head_sent(self, now: float) -> None:
        self.request_sent = now

    def response_started(self, now: float, status: int) -> None:
        self.response_start = now
        self.status = status

    # -- fed by the engine -------------------------------------------------------------

    def redirected(self, chain: list[str]) -> None:
        """The URLs one request asked for (its own first, then each redirect's)."""
        if len(chain) > 1:
            self.redirects = self.redirects + tuple(chain[1:])

    def value(self, *, counted: int, kind: str) -> AttemptMetrics:
        """The attempt as a frozen value; ``counted``: the task's byte count now
        (for a running attempt), ``kind``: ``"upload"`` counts bytes sent."""
        moved = self.bytes_moved if self.end is not None else counted - self.bytes_before
        start = self.start

        def since(at: float | None) -> float | None:
            return None if at is None else max(0.0, at - start)

        return AttemptMetrics(
            number=self.number,
            url=redacted_url(self._url),
            started_at=self.started_at,
            ended_at=self.ended_at,
            duration=since(self.end),
            dns_start=since(self.dns_start),
            dns_end=since(self.dns_end),
            connect_start=since(self.connect_start),
            connect_end=since(self.connect_end),
            request_start=since(self.request_start),
            request_sent=since(self.request_sent),
            response_start=since(self.response_start),
            requests=self.requests,
            reused_connection=self.reused_first,
            connections_opened=self.opened,
            connections_reused=self.reused,
            bytes_sent=moved if kind == "upload" else 0,
            bytes_received=0 if kind == "upload" else moved,
            status=self.status,
            proxy=self.proxy,
            redirects=tuple(redacted_url(url) for url in self.redirects),
            outcome=self.outcome,
            error=self.error,
        )

    def __repr__(self) -> str:  # (no URL: the value, when asked, redacts it)
        return f"<AttemptRecorder {self.number} {self.outcome}>"


class TaskMetricsLog:
    """One task's attempts in this process: at most :data:`MAX_ATTEMPTS` kept
    (the oldest dropped first, and counted), the running one included."""

    __slots__ = ("_attempts", "_moved_before", "current", "dropped")

    def __init__(self) -> None:
        # (A list: most tasks make one attempt, and a deque allocates a block of
        # 64 slots whatever its maxlen; dropping the first of 16 is cheap.)
        self._attempts: list[AttemptRecorder] = []
        self.dropped = 0
        self._moved_before = 0  # bytes moved by the dropped attempts
        self.current: AttemptRecorder | None = None  # the running attempt

    def begin(self, url: str, *, now: float, wall: float, counted: int) -> AttemptRecorder:
        """A new attempt of the task (its URL as given: redacted when shown)."""
        attempts = self._attempts
        number = self.dropped + len(attempts) + 1
        if len(attempts) == MAX_ATTEMPTS:
            self.dropped += 1
            self._moved_before += attempts.pop(0).bytes_moved
        self.current = AttemptRecorder(number, url, now=now, wall=wall, counted=counted)
        attempts.append(self.current)
        return self.current

    def end(
        self, *, now: float, wall: float, counted: int, outcome: Outcome, error: str | None = None
    ) -> AttemptRecorder | None:
        """The running attempt has ended so (None if none was running)."""
        attempt, self.current = self.current, None
        if attempt is None:
            return None
        attempt.end = now
        attempt.ended_at = wall
        attempt.bytes_moved = counted - attempt.bytes_before
        attempt.outcome = outcome
        attempt.error = error
        return attempt

    def snapshot(self, task_id: int, *, counted: int, kind: str) -> TaskMetrics:
        """Every attempt kept, as values (``counted``: the task's byte count now)."""
        attempts = tuple(a.value(counted=counted, kind=kind) for a in self._attempts)
        redirects: tuple[str, ...] = ()
        for attempt in reversed(attempts):
            if attempt.redirects:
                redirects = attempt.redirects
                break
        moved = self._moved_before + sum(a.bytes_sent + a.bytes_received for a in attempts)
        return TaskMetrics(
            task_id=task_id,
            attempts=attempts,
            dropped_attempts=self.dropped,
            redirects=redirects,
            bytes_sent=moved if kind == "upload" else 0,
            bytes_received=0 if kind == "upload" else moved,
        )


class SessionTally:
    """The session's ended attempts, added up (one fold per attempt)."""

    __slots__ = (
        "attempts",
        "bytes_received",
        "bytes_sent",
        "failures",
        "first_byte_count",
        "first_byte_max",
        "first_byte_min",
        "first_byte_total",
        "opened",
        "redirects",
        "retries",
        "reused",
    )

    def __init__(self) -> None:
        self.attempts = self.retries = self.failures = self.redirects = 0
        self.bytes_sent = self.bytes_received = self.opened = self.reused = 0
        self.first_byte_count = 0
        self.first_byte_total = 0.0
        self.first_byte_min: float | None = None
        self.first_byte_max: float | None = None

    def fold(self, attempt: AttemptRecorder, *, kind: str) -> None:
        """Add an attempt that has ended."""
        self.attempts += 1
        if attempt.outcome == "retried":
            self.retries += 1
        elif attempt.outcome == "failed":
            self.failures += 1
        self.redirects += len(attempt.redirects)
        if kind == "upload":
            self.bytes_sent += attempt.bytes_moved
        else:
            self.bytes_received += attempt.bytes_moved
        self.opened += attempt.opened
        self.reused += attempt.reused
        if attempt.response_start is not None:
            first = max(0.0, attempt.response_start - attempt.start)
            self.first_byte_count += 1
            self.first_byte_total += first
            if self.first_byte_min is None or first < self.first_byte_min:
                self.first_byte_min = first
            if self.first_byte_max is None or first > self.first_byte_max:
                self.first_byte_max = first

    def value(self) -> SessionMetrics:
        count = self.first_byte_count
        return SessionMetrics(
            attempts=self.attempts,
            retries=self.retries,
            failures=self.failures,
            redirects=self.redirects,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            connections_opened=self.opened,
            connections_reused=self.reused,
            time_to_first_byte=TimingSummary(
                count=count,
                minimum=self.first_byte_min,
                mean=self.first_byte_total / count if count else None,
                maximum=self.first_byte_max,
            ),
        )
