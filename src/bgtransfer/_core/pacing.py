"""The bandwidth limit's arithmetic: a token bucket, time passed in.

``Configuration.max_bytes_per_second`` is kept by one :class:`TokenBucket` per
direction and session. The I/O shell tells it the bytes a transfer moves
(``take``: a download's chunk once read, an upload's piece before it is sent)
and sleeps the delay it answers; the bucket only counts. It is a *debt*
bucket: ``take`` always succeeds and may leave the bucket below zero, and the
delay is the time the rate needs to pay the debt back. Concurrent takers thus
queue in the order they took (each one's delay includes the debt of those
before it), a chunk larger than the burst needs no special case, and the bytes
of a task cancelled while it waits stay counted (a download's did cross the
network; an upload leaves at most one unsent piece).

Over any stretch of time starting with a full bucket, the bytes taken without a
delay, plus those whose delay has passed, are at most ``burst + rate * t``: the
lower bound on a transfer's duration, ``(size - burst) / rate``, that the tests
check.
"""

from __future__ import annotations

import attrs

__all__ = [
    "BURST_SECONDS",
    "PIECE_MAX_BYTES",
    "BucketStatistics",
    "TokenBucket",
    "burst_for",
    "piece_for",
]

BURST_SECONDS = 0.25
"""The bucket holds a quarter second's worth of bytes: after an idle moment a
transfer may go that far ahead at full speed, never more."""

PIECE_MAX_BYTES = 64 * 1024
"""The largest piece a paced upload hands to the connection at a time."""


def burst_for(rate: int) -> int:
    """The burst of a bucket of ``rate`` bytes per second: ``BURST_SECONDS`` of it
    (at least one byte)."""
    return max(1, int(rate * BURST_SECONDS))


def piece_for(rate: int) -> int:
    """The piece a paced upload sends at a time: the burst, at most
    ``PIECE_MAX_BYTES`` (so that its progress moves several times a second,
    even at a low rate)."""
    return min(burst_for(rate), PIECE_MAX_BYTES)


@attrs.frozen(kw_only=True)
class BucketStatistics:
    """What a :class:`TokenBucket` holds at a moment: its ``rate`` and ``burst``
    (bytes per second, bytes), ``tokens`` (bytes that may move at once; below
    zero: the debt the rate pays back) and ``taken`` (bytes counted so far)."""

    rate: int
    burst: int
    tokens: float
    taken: int


class TokenBucket:
    """``rate`` bytes per second, ``burst`` bytes at once; starts full at ``now``.

    ``take(n, now)`` counts ``n`` bytes and returns the seconds to wait before
    moving more (0.0: none). Time is passed in (seconds, any monotonic origin);
    a ``now`` earlier than the last one is taken as the last one.
    """

    __slots__ = ("_stamp", "_taken", "_tokens", "burst", "rate")

    def __init__(self, *, rate: int, burst: int, now: float) -> None:
        for name, value in (("rate", rate), ("burst", burst)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now
        self._taken = 0

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._stamp = now

    def take(self, nbytes: int, now: float) -> float:
        """Count ``nbytes`` moved at ``now``; the seconds until the bucket is out
        of debt again (0.0 when it is not in debt)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be at least 0, got {nbytes}")
        self._refill(now)
        self._tokens -= nbytes
        self._taken += nbytes
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

    def statistics(self, now: float) -> BucketStatistics:
        """The bucket as it stands at ``now``."""
        self._refill(now)
        return BucketStatistics(
            rate=self.rate, burst=self.burst, tokens=self._tokens, taken=self._taken
        )
