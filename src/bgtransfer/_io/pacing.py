"""The bandwidth limit in the I/O shell: the core's token bucket on the real clock.

A session has one :class:`Pacer` per direction when
``Configuration.max_bytes_per_second`` is set, and none otherwise (the
transfers then check one ``None`` per chunk and nothing more). A transfer
counts the bytes it moves (``pace``) and sleeps the delay the bucket answers: a
download counts each chunk once read, and stops reading the socket meanwhile
(aiohttp's flow control then stops the transport, and TCP the server); an
upload counts each piece before handing it to the connection (aiohttp asks for
no more once the body's length is sent, so a count after the last piece would
never be waited for). The sleep is an ``anyio.sleep``: the loop keeps
running, and a cancelled or suspended task stops at once, its debt left to the
bucket.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import anyio

from .._core.pacing import BucketStatistics, TokenBucket, burst_for, piece_for
from .watchdog import Watchdog, paused

__all__ = ["Pacer", "pacer_for", "pieces"]


class Pacer:
    """``rate`` bytes per second over every transfer that shares it.

    Its clock is the real one (time.monotonic) whatever the engine's: the
    sleeps it asks for are real.
    """

    __slots__ = ("_bucket", "_clock", "piece_bytes")

    def __init__(self, rate: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._bucket = TokenBucket(rate=rate, burst=burst_for(rate), now=clock())
        self.piece_bytes = piece_for(rate)
        """The most a paced upload hands to its connection at a time."""

    async def pace(self, nbytes: int, watchdog: Watchdog | None = None) -> float:
        """Count ``nbytes`` (a download's just read, an upload's about to go);
        wait until the limit allows them. Returns the seconds waited (0.0:
        none). ``request_timeout``'s ``watchdog`` does not count the wait: it
        is ours, not the server's."""
        delay = self._bucket.take(nbytes, self._clock())
        if delay > 0.0:
            with paused(watchdog):
                await anyio.sleep(delay)
        return delay

    def statistics(self) -> BucketStatistics:
        """The bucket now: its rate, burst, tokens (below 0: debt) and bytes counted."""
        return self._bucket.statistics(self._clock())


def pacer_for(rate: int | None) -> Pacer | None:
    """The pacer of a limit (``Configuration.max_bytes_per_second``), None for none."""
    return None if rate is None else Pacer(rate)


def pieces(chunk: bytes, size: int) -> Iterator[bytes]:
    """``chunk`` in pieces of at most ``size`` bytes (a paced upload's)."""
    if len(chunk) <= size:
        yield chunk
        return
    for start in range(0, len(chunk), size):
        yield chunk[start : start + size]
