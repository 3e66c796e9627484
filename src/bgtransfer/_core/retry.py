"""Retries as data and pure functions: the policy, backoff, Retry-After, slow-transfer watch.

As in stamina, the retry loop lives in the engine and every decision it needs is a
pure function here: :meth:`RetryPolicy.is_transient` (retry this error?),
:func:`backoff` (how long to wait before attempt n), :func:`parse_retry_after`
(what the server asked for), :class:`SpeedWatch` (is the transfer too slow?),
:func:`kept_progress` (did a failed attempt leave bytes a later one builds on?),
and :func:`decide_retry`, which puts the first three together into the one
decision every job's retry loop takes after a failed attempt.
"""

from __future__ import annotations

import errno
import math
import random
from datetime import UTC, datetime
from typing import Any

import attrs

from .._exceptions import (
    AuthenticationError,
    HTTPStatusError,
    LocalFileError,
    NetworkError,
    ProxyError,
    ResourceTimeoutError,
    TLSError,
    TransferError,
    TransferTimeoutError,
)
from .ranges import parse_http_date

__all__ = [
    "ResumeMark",
    "RetryDecision",
    "RetryPolicy",
    "SpeedWatch",
    "backoff",
    "decide_retry",
    "kept_progress",
    "parse_retry_after",
]

DEFAULT_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
"""``errno`` values saying the process (or the system) has no file descriptor free."""


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


def _attempts(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1 (1 = no retries), got {value}")


def _statuses(value: object) -> frozenset[int]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise TypeError("retry_statuses must be a collection of ints")
    statuses = frozenset(value)
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"retry_statuses: {status!r} is not an HTTP status code")
    return statuses


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When and how a task retries by itself after a transient failure.

    ``max_attempts`` bounds consecutive attempts that made no *kept* progress, so
    a long download over a link that drops every few minutes still finishes,
    while a task that cannot get anywhere ends. An attempt's bytes renew the
    budget only when a later attempt can build on them: they take the task past
    the furthest offset it could resume from before (a strong validator, and the
    server honouring ``Range``). An attempt that starts again from byte 0 (no
    validator, a server that ignores ``Range``, a file that changed) never
    renews it, nor does one ended by ``Configuration.min_speed``, whatever it
    wrote. The backoff grows with the same count.
    """

    max_attempts: int = attrs.field(default=6, validator=_attempts)
    """Consecutive attempts without kept progress before the task fails (1: never retry)."""
    initial_delay: float = attrs.field(default=0.5, validator=_positive)
    """Backoff before the first retry, in seconds."""
    max_delay: float = attrs.field(default=30.0, validator=_positive)
    """Cap on the backoff."""
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    """Growth of the backoff per attempt."""
    jitter: float = attrs.field(default=0.5, validator=_positive)
    """Fraction of the delay randomised away (0: none, 1: full jitter)."""
    max_retry_after: float = attrs.field(default=600.0, validator=_positive)
    """The longest ``Retry-After`` honoured; a longer one fails the task."""
    retry_statuses: frozenset[int] = attrs.field(
        default=DEFAULT_RETRY_STATUSES, converter=_statuses
    )
    """HTTP statuses that are transient."""

    def __attrs_post_init__(self) -> None:
        if self.jitter > 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def is_transient(self, error: TransferError) -> bool:
        """Whether ``error`` is worth another attempt.

        Network errors (refused, reset, truncated body) and request timeouts are;
        so are the ``retry_statuses``, and a local file error for want of a
        file descriptor (``EMFILE``, ``ENFILE``: other transfers give theirs
        back). A proxy's error is when it did not answer or answered one of the
        ``retry_statuses`` (not a 407); a TLS error never is. A
        ``resource_timeout`` is final, as are other statuses, protocol and
        local file errors, and an ``AuthenticationError``.
        """
        if isinstance(error, AuthenticationError):
            return False  # the same credentials would be refused again
        if isinstance(error, HTTPStatusError):
            return error.status in self.retry_statuses
        if isinstance(error, TLSError):
            return False
        if isinstance(error, ProxyError) and error.status is not None:
            return error.status in self.retry_statuses
        if isinstance(error, ResourceTimeoutError):
            return False
        if isinstance(error, LocalFileError):
            return error.errno in OUT_OF_DESCRIPTORS
        return isinstance(error, NetworkError | TransferTimeoutError)


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    ``min(max_delay, initial_delay * multiplier ** (attempt - 1))``, of which a
    ``jitter`` fraction is drawn uniformly at random, so that many clients
    failing together do not come back together.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    try:
        delay = policy.initial_delay * policy.multiplier ** (attempt - 1)
    except OverflowError:
        delay = policy.max_delay if policy.initial_delay > 0 else 0.0
    delay = min(policy.max_delay, delay)
    fixed = delay * (1 - policy.jitter)
    return fixed + (rng or random).uniform(0, delay - fixed)


@attrs.frozen
class ResumeMark:
    """The furthest offset a later attempt could resume from, and the validator
    (the representation) it belongs to; ``(None, 0)`` before anything was kept."""

    validator: str | None = None
    offset: int = 0


def kept_progress(
    mark: ResumeMark, *, validator: str | None, offset: int, restarted: bool
) -> tuple[bool, ResumeMark]:
    """Whether a failed attempt made progress a later one keeps, and the new mark.

    ``validator`` and ``offset``: the task's after the attempt (its strong
    validator, the bytes on disk); ``restarted``: the attempt began at byte 0
    although the task had bytes (the server ignored ``Range``, the file changed,
    or nothing allowed asking for a range). Progress is kept only when the bytes
    go past the mark for the same representation and the attempt did not start
    over; without a validator nothing is resumable, so nothing is kept. The mark
    only grows for one representation, so kept progress cannot repeat forever
    over the same bytes.
    """
    if validator is None:
        return False, mark
    if restarted or validator != mark.validator:
        return False, ResumeMark(validator, offset)
    if offset > mark.offset:
        return True, ResumeMark(validator, offset)
    return False, mark


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0") or "0"
        return float(int(digits)) if len(digits) <= 15 else 1e15  # past any sane cap
    when = parse_http_date(text)
    if when is None:
        return None
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


class SpeedWatch:
    """Flags a transfer slower than ``limit`` bytes/s over a whole ``window`` (curl's
    ``--speed-limit``/``--speed-time``). Time is passed in."""

    def __init__(self, *, limit: int, window: float, start: float) -> None:
        self._limit = limit
        self._window = window
        self._window_start = start
        self._bytes = 0

    def feed(self, nbytes: int, now: float) -> bool:
        """Count bytes at ``now``; True when the last full window was too slow."""
        self._bytes += nbytes
        elapsed = now - self._window_start
        if elapsed < self._window:
            return False
        too_slow = self._bytes < self._limit * elapsed
        self._window_start = now
        self._bytes = 0
        return too_slow

    def hold(self, seconds: float) -> None:
        """The transfer held itself back ``seconds`` (the bandwidth limit): that
        time is not the server's, and does not count in the window."""
        self._window_start += seconds


HOLDING_STATUSES = frozenset({429, 503})
"""Statuses whose ``Retry-After`` holds the whole origin back, not only the task."""


@attrs.frozen
class RetryDecision:
    """What to do after a failed attempt: ``delay`` seconds before the next one
    (None: give up, the error is the task's end), and ``hold`` seconds to hold
    the task's origin back (the server's ``Retry-After`` on a 429 or 503), if any."""

    delay: float | None
    hold: float | None = None

    @property
    def give_up(self) -> bool:
        return self.delay is None


GIVE_UP = RetryDecision(None)


def decide_retry(
    policy: RetryPolicy,
    error: TransferError,
    failures: int,
    rng: random.Random | None = None,
    *,
    now: datetime | None = None,
) -> RetryDecision:
    """The retry decision after a failed attempt, ``failures`` counting it
    (consecutive failures, 1 after the first).

    Give up when ``error`` is not transient or the attempts are spent, or when
    the server asks (``Retry-After`` on an :class:`HTTPStatusError`) for a wait
    longer than ``max_retry_after``. Else wait the backoff, or what the server
    asked if longer; a 429 or 503 that asked holds the origin that long.
    """
    if not policy.is_transient(error) or failures >= policy.max_attempts:
        return GIVE_UP
    delay = backoff(policy, failures, rng)
    hold = None
    if isinstance(error, HTTPStatusError):
        asked = parse_retry_after(error.retry_after, now=now)
        if asked is not None:
            if asked > policy.max_retry_after:
                return GIVE_UP
            delay = max(delay, asked)
            if error.status in HOLDING_STATUSES:
                hold = asked
    return RetryDecision(delay, hold)
