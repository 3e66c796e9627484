"""decide_retry: the one retry decision every job's loop takes, as a table."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from bgtransfer import (
    HTTPStatusError,
    NetworkError,
    ProtocolError,
    TransferError,
    TransferTimeoutError,
)
from bgtransfer._core.retry import RetryDecision, RetryPolicy, decide_retry

URL = "http://example.com/file.bin"
NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
# No jitter: the backoff is exact (0.5, 1, 2, ... capped at 30).
POLICY = RetryPolicy(max_attempts=4, jitter=0, max_retry_after=60)


def status(code: int, retry_after: str | None = None) -> HTTPStatusError:
    return HTTPStatusError(code, url=URL, retry_after=retry_after)


CASES: list[tuple[str, TransferError, int, RetryDecision]] = [
    ("network error, first failure", NetworkError("reset", url=URL), 1, RetryDecision(0.5)),
    ("timeout, second failure", TransferTimeoutError("slow", url=URL), 2, RetryDecision(1.0)),
    ("attempts spent", NetworkError("reset", url=URL), 4, RetryDecision(None)),
    ("not transient", ProtocolError("bad", url=URL), 1, RetryDecision(None)),
    ("404 is final", status(404), 1, RetryDecision(None)),
    ("500 without Retry-After", status(500), 3, RetryDecision(2.0)),
    ("503 asks longer: waits and holds", status(503, "7"), 1, RetryDecision(7.0, hold=7.0)),
    ("429 asks shorter: backoff, holds", status(429, "0"), 2, RetryDecision(1.0, hold=0.0)),
    ("500 asks: waits, no hold", status(500, "5"), 1, RetryDecision(5.0)),
    ("Retry-After past the cap", status(503, "61"), 1, RetryDecision(None)),
    ("Retry-After at the cap", status(503, "60"), 1, RetryDecision(60.0, hold=60.0)),
    ("unreadable Retry-After", status(503, "soon"), 1, RetryDecision(0.5)),
    (
        "HTTP-date Retry-After",
        status(503, format_datetime(NOW + timedelta(seconds=30), usegmt=True)),
        1,
        RetryDecision(30.0, hold=30.0),
    ),
    ("spent, even if asked", status(503, "1"), 4, RetryDecision(None)),
]


@pytest.mark.parametrize(
    ("error", "failures", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide_retry(error: TransferError, failures: int, expected: RetryDecision) -> None:
    decision = decide_retry(POLICY, error, failures, random.Random(0), now=NOW)
    assert decision == expected
    assert decision.give_up is (expected.delay is None)


def test_jitter_stays_within_the_backoff() -> None:
    policy = RetryPolicy(jitter=1, initial_delay=2)
    rng = random.Random(7)
    for _ in range(50):
        delay = decide_retry(policy, NetworkError("reset", url=URL), 1, rng).delay
        assert delay is not None
        assert 0 <= delay <= 2
