"""The bandwidth limit's token bucket (``_core/pacing.py``), on a fake clock:
every delay is exact, no sleeps."""

from __future__ import annotations

import pytest

from bgtransfer._core.pacing import (
    PIECE_MAX_BYTES,
    BucketStatistics,
    TokenBucket,
    burst_for,
    piece_for,
)
from bgtransfer._core.retry import SpeedWatch


def test_a_full_bucket_lets_the_burst_through_at_once() -> None:
    bucket = TokenBucket(rate=1000, burst=500, now=0.0)
    assert bucket.take(300, 0.0) == 0.0
    assert bucket.take(200, 0.0) == 0.0  # exactly empty: no wait yet


def test_past_the_burst_the_delay_pays_the_debt_back_at_the_rate() -> None:
    bucket = TokenBucket(rate=1000, burst=500, now=0.0)
    assert bucket.take(750, 0.0) == 0.25  # 250 bytes of debt at 1000 bytes/s
    assert bucket.statistics(0.0) == BucketStatistics(
        rate=1000, burst=500, tokens=-250.0, taken=750
    )
    # Waited the delay: out of debt, and the next bytes wait their own time.
    assert bucket.take(250, 0.25) == 0.25
    assert bucket.take(0, 0.5) == 0.0


def test_concurrent_takers_queue_behind_each_others_debt() -> None:
    """Two transfers sharing the bucket: the second one's delay includes the
    first one's debt, so together they keep the rate."""
    bucket = TokenBucket(rate=1000, burst=100, now=0.0)
    first = bucket.take(300, 0.0)
    second = bucket.take(300, 0.0)
    assert (first, second) == (0.2, 0.5)


def test_an_idle_bucket_refills_to_the_burst_and_no_more() -> None:
    bucket = TokenBucket(rate=1000, burst=500, now=0.0)
    bucket.take(500, 0.0)
    assert bucket.statistics(0.125).tokens == 125.0
    assert bucket.statistics(60.0).tokens == 500.0  # an idle minute saves no more than the burst
    assert bucket.take(600, 60.0) == 0.1


def test_the_lower_bound_on_a_transfers_duration() -> None:
    """Whatever the chunk sizes, taking ``size`` bytes and waiting each delay
    ends no earlier than (size - burst) / rate after the start."""
    rate, burst, size = 4096, 1024, 100_000
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    now = 0.0
    sent = 0
    chunks = [1, 7000, 333, 65536, 4096, 2]
    while sent < size:
        n = min(chunks[sent % len(chunks)], size - sent)
        sent += n
        now += bucket.take(n, now)
    assert now == pytest.approx((size - burst) / rate)
    assert now >= (size - burst) / rate - 1e-9


def test_a_clock_going_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=1000, burst=500, now=10.0)
    bucket.take(500, 10.0)
    assert bucket.take(100, 9.0) == 0.1  # as if at 10.0
    assert bucket.statistics(10.1).tokens == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("rate", "burst", "error"),
    [
        (0, 1, ValueError),
        (1, 0, ValueError),
        (-5, 10, ValueError),
        (1.5, 10, TypeError),
        (True, 10, TypeError),
        (10, None, TypeError),
    ],
)
def test_a_bucket_refuses_what_is_not_a_positive_int(
    rate: object, burst: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"rate|burst"):
        TokenBucket(rate=rate, burst=burst, now=0.0)  # type: ignore[arg-type]


def test_taking_a_negative_count_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        TokenBucket(rate=1, burst=1, now=0.0).take(-1, 0.0)


def test_the_burst_and_the_upload_piece_follow_the_rate() -> None:
    assert burst_for(1_000_000) == 250_000
    assert burst_for(3) == 1  # never empty
    assert piece_for(1_000_000) == PIECE_MAX_BYTES
    assert piece_for(4000) == 1000


def test_time_held_by_the_limit_is_not_the_servers() -> None:
    """``min_speed``'s watch: a transfer held back by the bandwidth limit is not
    slow; the held seconds do not count in its window."""
    watch = SpeedWatch(limit=1000, window=10.0, start=0.0)
    watch.hold(9.0)  # paced: waited 9 s of the 10
    assert watch.feed(2000, 10.0) is False  # 2000 bytes in the 1 s of the server's time
    # The window ends at 19 (9 + 10): 10,000 bytes in 10 s of the server's time.
    assert watch.feed(8000, 19.0) is False
    slow = SpeedWatch(limit=1000, window=10.0, start=0.0)
    assert slow.feed(2000, 10.0) is True  # unheld: 200 bytes/s is too slow
