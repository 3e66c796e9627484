"""Retries as data: the policy, which errors are transient, backoff, Retry-After, slow transfers."""

from __future__ import annotations

import errno
import math
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bgtransfer
from bgtransfer._core.retry import (
    DEFAULT_RETRY_STATUSES,
    ResumeMark,
    RetryPolicy,
    SpeedWatch,
    backoff,
    kept_progress,
    next_retry,
    parse_retry_after,
)

URL = "http://example.com/file.bin"
NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)


# -- RetryPolicy: defaults and validation ---------------------------------------------------------


def test_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 6
    assert policy.initial_delay == 0.5
    assert policy.max_delay == 30.0
    assert policy.multiplier == 2.0
    assert policy.jitter == 0.5
    assert policy.max_retry_after == 600.0
    assert policy.retry_statuses == frozenset({408, 429, 500, 502, 503, 504})
    assert isinstance(policy.retry_statuses, frozenset)
    assert policy.retry_statuses == DEFAULT_RETRY_STATUSES


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[misc]


def test_valid_values_are_kept() -> None:
    policy = RetryPolicy(
        max_attempts=1,
        initial_delay=0,
        max_delay=0.0,
        multiplier=1,
        jitter=1,
        max_retry_after=0,
        retry_statuses=[503, 100, 599],
    )
    assert policy.max_attempts == 1
    assert policy.initial_delay == 0
    assert policy.max_delay == 0.0
    assert policy.multiplier == 1
    assert policy.jitter == 1
    assert policy.max_retry_after == 0
    assert policy.retry_statuses == frozenset({100, 503, 599})


@pytest.mark.parametrize(
    "statuses", [[], (), set(), frozenset(), iter([503]), {503: "x"}, (503, 503)], ids=repr
)
def test_retry_statuses_accept_any_collection(statuses: object) -> None:
    policy = RetryPolicy(retry_statuses=statuses)  # type: ignore[arg-type]
    assert isinstance(policy.retry_statuses, frozenset)
    assert policy.retry_statuses <= {503}


_FLOAT_FIELDS = ["initial_delay", "max_delay", "multiplier", "jitter", "max_retry_after"]


@pytest.mark.parametrize("field", _FLOAT_FIELDS)
@pytest.mark.parametrize("value", [True, False, "1", None, b"1", [1], 1j])
def test_float_fields_reject_non_numbers(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=field):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", _FLOAT_FIELDS)
@pytest.mark.parametrize("value", [-1, -0.001, math.inf, -math.inf, math.nan])
def test_float_fields_reject_negative_and_non_finite(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1.0001, 1.5, 2, 100])
def test_jitter_above_one_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=value)


@pytest.mark.parametrize("value", [True, False, 3.0, "3", None])
def test_max_attempts_must_be_an_int(value: object) -> None:
    with pytest.raises(TypeError, match="max_attempts"):
        RetryPolicy(max_attempts=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, -100])
def test_max_attempts_at_least_one(value: int) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=value)


@pytest.mark.parametrize("value", ["503", b"503", "", 503, None, 5.0], ids=repr)
def test_retry_statuses_must_be_a_collection(value: object) -> None:
    with pytest.raises(TypeError, match="retry_statuses"):
        RetryPolicy(retry_statuses=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "statuses",
    [[503, "500"], [503.0], [True], [False], [None], [99], [600], [0], [-503], [1000]],
    ids=repr,
)
def test_retry_statuses_must_be_http_status_codes(statuses: list[object]) -> None:
    with pytest.raises(ValueError, match="not an HTTP status code"):
        RetryPolicy(retry_statuses=statuses)  # type: ignore[arg-type]


def test_policy_is_frozen_and_hashable() -> None:
    policy = RetryPolicy()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.max_attempts = 3  # type: ignore[misc]
    assert hash(policy) == hash(RetryPolicy())
    assert policy == RetryPolicy()
    assert policy != RetryPolicy(max_attempts=3)


def test_evolve_validates_again() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        attrs.evolve(RetryPolicy(), max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        attrs.evolve(RetryPolicy(), jitter=2)


# -- is_transient ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        bgtransfer.NetworkError("connection reset", url=URL),
        bgtransfer.IncompleteBodyError("body ended at 10 of 100 bytes", url=URL),
        bgtransfer.TransferTimeoutError("no byte for 30 s", url=URL),
    ],
    ids=lambda e: type(e).__name__,
)
def test_network_errors_and_timeouts_are_transient(error: bgtransfer.TransferError) -> None:
    assert RetryPolicy().is_transient(error) is True


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE], ids=errno.errorcode.get)
def test_out_of_descriptors_is_transient(code: int) -> None:
    """Other transfers give their descriptors back: wait and retry (issue 18, item 7)."""
    error = bgtransfer.LocalFileError("cannot open", url=URL, errno=code, filename="/p")
    assert RetryPolicy().is_transient(error) is True


@pytest.mark.parametrize(
    "error",
    [
        bgtransfer.ResourceTimeoutError("outlived resource_timeout", url=URL),
        bgtransfer.ProtocolError("bad Content-Range", url=URL),
        bgtransfer.LocalFileError("disk full", url=URL, errno=28, filename="/tmp/x"),
        bgtransfer.TransferError("something else", url=URL),
    ],
    ids=lambda e: type(e).__name__,
)
def test_final_errors_are_not_transient(error: bgtransfer.TransferError) -> None:
    assert RetryPolicy().is_transient(error) is False


@pytest.mark.parametrize("status", sorted(DEFAULT_RETRY_STATUSES))
def test_default_retry_statuses_are_transient(status: int) -> None:
    assert RetryPolicy().is_transient(bgtransfer.HTTPStatusError(status, url=URL)) is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 412, 416, 501, 505, 301, 304])
def test_other_statuses_are_not_transient(status: int) -> None:
    assert RetryPolicy().is_transient(bgtransfer.HTTPStatusError(status, url=URL)) is False


def test_custom_retry_statuses_replace_the_defaults() -> None:
    policy = RetryPolicy(retry_statuses={404, 418})
    assert policy.is_transient(bgtransfer.HTTPStatusError(404, url=URL)) is True
    assert policy.is_transient(bgtransfer.HTTPStatusError(418, url=URL)) is True
    assert policy.is_transient(bgtransfer.HTTPStatusError(503, url=URL)) is False
    # Statuses do not change what other errors are.
    assert policy.is_transient(bgtransfer.NetworkError("reset", url=URL)) is True
    assert policy.is_transient(bgtransfer.ProtocolError("bad", url=URL)) is False


def test_empty_retry_statuses_retry_no_status() -> None:
    policy = RetryPolicy(retry_statuses=())
    assert not any(
        policy.is_transient(bgtransfer.HTTPStatusError(s, url=URL)) for s in range(100, 600)
    )


# -- backoff -------------------------------------------------------------------------------------


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(jitter=0)
    delays = [backoff(policy, attempt) for attempt in range(1, 11)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_backoff_with_other_parameters() -> None:
    policy = RetryPolicy(jitter=0, initial_delay=1, multiplier=3, max_delay=100)
    assert [backoff(policy, a) for a in range(1, 7)] == [1, 3, 9, 27, 81, 100]


def test_backoff_multiplier_one_is_constant() -> None:
    policy = RetryPolicy(jitter=0, initial_delay=2, multiplier=1)
    assert {backoff(policy, a) for a in (1, 2, 10, 1000, 10**9)} == {2}


def test_backoff_zero_delay() -> None:
    policy = RetryPolicy(jitter=0, initial_delay=0)
    assert [backoff(policy, a) for a in range(1, 20)] == [0.0] * 19


def test_backoff_zero_initial_delay_stays_zero_for_huge_attempts() -> None:
    # 0 * 2.0 ** n is 0 for every n; an overflow of the power must not turn it into max_delay.
    policy = RetryPolicy(jitter=0, initial_delay=0)
    assert backoff(policy, 10_000) == 0.0


@pytest.mark.parametrize("attempt", [1025, 1100, 10**6, 10**18, 2**100])
def test_backoff_huge_attempt_does_not_overflow(attempt: int) -> None:
    assert backoff(RetryPolicy(jitter=0), attempt) == 30.0
    assert backoff(RetryPolicy(jitter=0.5), attempt, random.Random(0)) <= 30.0


@pytest.mark.parametrize("attempt", [1025, 1100, 10**5])
def test_backoff_huge_attempt_with_int_parameters(attempt: int) -> None:
    # int ** int does not overflow but grows without bound; the result is still the cap.
    assert backoff(RetryPolicy(jitter=0, multiplier=2, initial_delay=1), attempt) == 30


@pytest.mark.parametrize("attempt", [0, -1, -(10**9)])
def test_backoff_attempt_below_one_rejected(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff(RetryPolicy(), attempt)


@pytest.mark.parametrize("jitter", [0.1, 0.5, 1.0])
def test_backoff_with_jitter_stays_in_bounds(jitter: float) -> None:
    policy = RetryPolicy(jitter=jitter)
    rng = random.Random(1234)
    for attempt in range(1, 12):
        delay = min(30.0, 0.5 * 2.0 ** (attempt - 1))
        draws = [backoff(policy, attempt, rng) for _ in range(200)]
        assert all(delay * (1 - jitter) <= d <= delay for d in draws)
        # It really is random: not all equal, and it spreads across the interval.
        assert len(set(draws)) > 100
        assert max(draws) - min(draws) > 0.5 * delay * jitter


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy()
    first = [backoff(policy, a, random.Random(7)) for a in range(1, 10)]
    second = [backoff(policy, a, random.Random(7)) for a in range(1, 10)]
    assert first == second


def test_backoff_uses_the_given_rng() -> None:
    class Fixed(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b  # the top of the interval

    policy = RetryPolicy(jitter=0.5)
    assert backoff(policy, 3, Fixed()) == 2.0
    assert backoff(policy, 20, Fixed()) == 30.0


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(min_value=1, max_value=5000),
    initial=st.floats(min_value=0, max_value=100),
    multiplier=st.floats(min_value=0, max_value=10),
    cap=st.floats(min_value=0, max_value=1000),
    jitter=st.floats(min_value=0, max_value=1),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_never_exceeds_the_cap_and_is_never_negative(
    *, attempt: int, initial: float, multiplier: float, cap: float, jitter: float, seed: int
) -> None:
    policy = RetryPolicy(initial_delay=initial, multiplier=multiplier, max_delay=cap, jitter=jitter)
    delay = backoff(policy, attempt, random.Random(seed))
    assert 0.0 <= delay <= cap


# -- parse_retry_after ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 120 ", 120.0),
        ("007", 7.0),
        ("86400", 86400.0),
        ("0000000000005", 5.0),  # 1*DIGIT: leading zeros do not change the value
    ],
    ids=repr,
)
def test_retry_after_seconds(value: str, seconds: float) -> None:
    result = parse_retry_after(value, now=NOW)
    assert result == seconds
    assert isinstance(result, float)


def test_retry_after_huge_number_of_seconds_is_huge() -> None:
    # Far above any sane max_retry_after: the caller fails the task.
    result = parse_retry_after("9" * 5000, now=NOW)
    assert result is not None
    assert result >= 10**11


def test_retry_after_http_date_in_the_future() -> None:
    value = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert value == "Wed, 21 Oct 2015 07:29:30 GMT"
    assert parse_retry_after(value, now=NOW) == 90.0


def test_retry_after_http_date_in_another_zone() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 09:29:30 +0200", now=NOW) == 90.0


@pytest.mark.parametrize(
    "value",
    [
        "Wednesday, 21-Oct-15 07:29:30 GMT",  # obsolete RFC 850 format
        "Wed Oct 21 07:29:30 2015",  # obsolete asctime format, GMT by definition
    ],
)
def test_retry_after_obsolete_http_date_formats(value: str) -> None:
    # RFC 9110 §5.6.7: a recipient parsing a timestamp MUST accept all three HTTP-date formats.
    assert parse_retry_after(value, now=NOW) == 90.0


@pytest.mark.parametrize("seconds", [0, -1, -3600, -(86400 * 365)])
def test_retry_after_http_date_now_or_in_the_past_is_zero(seconds: int) -> None:
    value = format_datetime(NOW + timedelta(seconds=seconds), usegmt=True)
    assert parse_retry_after(value, now=NOW) == 0.0


def test_retry_after_http_date_without_now_uses_the_clock() -> None:
    # A date long past is 0 whatever the clock says; one far ahead is positive.
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    far = parse_retry_after("Fri, 01 Jan 9999 00:00:00 GMT")
    assert far is not None
    assert far > 86400 * 365 * 1000


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "soon",
        "garbage",
        "-5",
        "-0",
        "+5",
        "1.5",
        "0.0",
        "1e3",
        "5 seconds",
        "5s",
        "0x10",
        "\u0661\u0662",  # ARABIC-INDIC 12
        "\u00b2",  # SUPERSCRIPT TWO
        "Wed, 99 Foo 2015 07:28:00 GMT",
    ],
    ids=repr,
)
def test_retry_after_garbage_is_none(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_retry_after_none_is_none() -> None:
    assert parse_retry_after(None, now=NOW) is None
    assert parse_retry_after(None) is None


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10**11))
def test_retry_after_seconds_round_trip(seconds: int) -> None:
    assert parse_retry_after(str(seconds), now=NOW) == float(seconds)


# -- SpeedWatch ----------------------------------------------------------------------------------


def _watch(limit: int = 100, window: float = 10.0, start: float = 1000.0) -> SpeedWatch:
    return SpeedWatch(limit=limit, window=window, start=start)


def test_keyword_only_speed_watch() -> None:
    with pytest.raises(TypeError):
        SpeedWatch(100, 10.0, 0.0)  # type: ignore[misc]


def test_not_too_slow_before_a_full_window() -> None:
    watch = _watch()
    assert watch.feed(0, 1000.0) is False
    assert watch.feed(0, 1005.0) is False
    assert watch.feed(0, 1009.999) is False


def test_too_slow_after_a_full_window_with_too_few_bytes() -> None:
    watch = _watch()
    assert watch.feed(400, 1003.0) is False
    assert watch.feed(500, 1009.0) is False
    assert watch.feed(99, 1010.0) is True  # 999 bytes < 100 B/s * 10 s


def test_nothing_at_all_is_too_slow() -> None:
    assert _watch().feed(0, 1010.0) is True


def test_exactly_the_limit_is_fast_enough() -> None:
    watch = _watch()
    assert watch.feed(1000, 1010.0) is False  # 1000 == 100 * 10: not below the limit


def test_one_byte_short_of_the_limit_is_too_slow() -> None:
    watch = _watch()
    assert watch.feed(999, 1010.0) is True


def test_limit_applies_to_the_elapsed_time_not_the_window() -> None:
    watch = _watch()
    # 20 s elapsed: 1500 bytes would do for 10 s but not for 20.
    assert watch.feed(1500, 1020.0) is True
    watch = _watch()
    assert watch.feed(2000, 1020.0) is False


def test_fast_enough_resets_the_window() -> None:
    watch = _watch()
    assert watch.feed(5000, 1010.0) is False  # a fast window; the next starts at 1010
    assert watch.feed(0, 1015.0) is False  # only 5 s into the new window
    assert watch.feed(0, 1019.999) is False
    # The 5000 bytes of the old window do not count towards the new one.
    assert watch.feed(0, 1020.0) is True


def test_too_slow_also_starts_a_new_window() -> None:
    watch = _watch()
    assert watch.feed(0, 1010.0) is True
    assert watch.feed(0, 1015.0) is False  # a new window has begun at 1010
    assert watch.feed(1000, 1020.0) is False


def test_bytes_are_counted_across_feeds_within_a_window() -> None:
    watch = _watch()
    for moment in range(1001, 1010):
        assert watch.feed(111, float(moment)) is False  # 9 * 111 = 999 so far
    assert watch.feed(1, 1010.0) is False  # 1000: exactly fast enough


def test_zero_limit_is_never_too_slow() -> None:
    watch = _watch(limit=0)
    assert [watch.feed(0, 1000.0 + 10 * k) for k in range(1, 6)] == [False] * 5


# -- kept_progress: which failed attempts renew the budget ----------------------------------------

ETAG = '"v1"'


def test_bytes_past_the_mark_for_the_same_representation_are_kept() -> None:
    mark = ResumeMark(ETAG, 100)
    assert kept_progress(mark, validator=ETAG, offset=150, restarted=False) == (
        True,
        ResumeMark(ETAG, 150),
    )


def test_the_same_bytes_again_are_not_kept() -> None:
    mark = ResumeMark(ETAG, 100)
    assert kept_progress(mark, validator=ETAG, offset=100, restarted=False) == (False, mark)
    assert kept_progress(mark, validator=ETAG, offset=60, restarted=False) == (False, mark)


def test_without_a_validator_nothing_is_kept() -> None:
    mark = ResumeMark()
    assert kept_progress(mark, validator=None, offset=10**6, restarted=False) == (False, mark)


def test_a_restart_from_zero_is_never_progress_but_moves_the_mark() -> None:
    mark = ResumeMark(ETAG, 100)
    kept, new = kept_progress(mark, validator=ETAG, offset=500, restarted=True)
    assert not kept
    assert new == ResumeMark(ETAG, 500)


def test_a_new_representation_is_not_progress_until_it_passes_its_own_mark() -> None:
    kept, mark = kept_progress(ResumeMark(ETAG, 900), validator='"v2"', offset=100, restarted=False)
    assert not kept
    assert mark == ResumeMark('"v2"', 100)
    assert kept_progress(mark, validator='"v2"', offset=200, restarted=False)[0]


@given(
    steps=st.lists(
        st.tuples(st.sampled_from([None, '"a"', '"b"']), st.integers(0, 50), st.booleans()),
        max_size=60,
    )
)
def test_kept_progress_cannot_repeat_over_the_same_bytes(
    steps: list[tuple[str | None, int, bool]],
) -> None:
    """Each kept step raises the mark of its representation: at most one kept step
    per byte per validator, so a bounded file cannot renew the budget forever."""
    mark = ResumeMark()
    for validator, offset, restarted in steps:
        before = mark
        kept, mark = kept_progress(before, validator=validator, offset=offset, restarted=restarted)
        if kept:
            assert validator == before.validator
            assert offset > before.offset
            assert not restarted


def test_next_retry_is_the_one_decision() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=1, jitter=0, max_retry_after=60)
    rng = random.Random(1)
    # Not transient, or out of attempts: no retry.
    assert next_retry(policy, bgtransfer.HTTPStatusError(404, url=URL), 1, rng) is None
    assert next_retry(policy, bgtransfer.NetworkError("reset", url=URL), 3, rng) is None
    # The backoff, no hold.
    retry = next_retry(policy, bgtransfer.NetworkError("reset", url=URL), 2, rng)
    assert retry is not None
    assert (retry.delay, retry.hold) == (2.0, None)
    # A longer Retry-After wins; a 503 holds the origin for it, a 500 does not.
    busy = bgtransfer.HTTPStatusError(503, url=URL, retry_after="7")
    assert next_retry(policy, busy, 1, rng) == next_retry(policy, busy, 2, rng)
    retry = next_retry(policy, busy, 1, rng)
    assert retry is not None
    assert (retry.delay, retry.hold) == (7.0, 7.0)
    retry = next_retry(policy, bgtransfer.HTTPStatusError(500, url=URL, retry_after="7"), 1, rng)
    assert retry is not None
    assert (retry.delay, retry.hold) == (7.0, None)
    # A Retry-After beyond max_retry_after ends it.
    too_long = bgtransfer.HTTPStatusError(429, url=URL, retry_after="61")
    assert next_retry(policy, too_long, 1, rng) is None
