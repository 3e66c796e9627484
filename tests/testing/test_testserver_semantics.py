"""The pure HTTP helpers behind the test server: HTTP-dates, Range and If-Range."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bgtransfer.testing._http import (
    ByteRange,
    format_http_date,
    if_range_holds,
    parse_http_date,
    select_range,
)

EXAMPLE = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850 format
        "Sun Nov  6 08:49:37 1994",  # ANSI C asctime() format
        " Sun, 06 Nov 1994 08:49:37 GMT\t",
    ],
)
def test_parse_http_date_accepts_the_three_formats(text: str) -> None:
    assert parse_http_date(text) == EXAMPLE


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "sun, 06 nov 1994 08:49:37 gmt",
        "1994-11-06T08:49:37Z",
    ],
)
def test_parse_http_date_rejects_anything_else(text: str) -> None:
    assert parse_http_date(text) is None


def test_format_http_date_round_trips() -> None:
    assert format_http_date(EXAMPLE) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date(format_http_date(EXAMPLE)) == EXAMPLE


def test_rfc850_two_digit_years_prefer_the_past() -> None:
    this_year = datetime.now(UTC).year
    far_ahead = (this_year + 60) % 100
    parsed = parse_http_date(f"Monday, 01-Jan-{far_ahead:02d} 00:00:00 GMT")
    assert parsed is not None
    assert this_year - 100 < parsed.year <= this_year + 50


@pytest.mark.parametrize(
    ("header", "length", "expected"),
    [
        (None, 10, "full"),
        ("bytes=0-4", 10, ByteRange(0, 4)),
        ("bytes=5-", 10, ByteRange(5, 9)),
        ("bytes=-3", 10, ByteRange(7, 9)),
        ("bytes=-30", 10, ByteRange(0, 9)),
        ("bytes=8-100", 10, ByteRange(8, 9)),
        ("bytes = 2-3", 10, ByteRange(2, 3)),
        ("bytes=10-", 10, "unsatisfiable"),
        ("bytes=-0", 10, "unsatisfiable"),
        ("bytes=0-0", 0, "unsatisfiable"),
        ("bytes=-1", 0, "full"),
        ("bytes=0-1,3-4", 10, "full"),
        ("bytes=4-3", 10, "full"),
        ("bytes=٣-4", 10, "full"),  # only ASCII digits
        ("octets=0-1", 10, "full"),
    ],
)
def test_select_range(header: str | None, length: int, expected: object) -> None:
    assert select_range(header, length) == expected


def test_byte_range_length() -> None:
    assert ByteRange(3, 3).length == 1
    assert ByteRange(0, 9).length == 10


@pytest.mark.parametrize(
    ("value", "etag", "last_modified", "strong", "expected"),
    [
        ('"abc"', '"abc"', None, True, True),
        ('"abc"', '"abd"', None, True, False),
        ('W/"abc"', '"abc"', None, True, False),
        ('"abc"', 'W/"abc"', None, True, False),
        ('W/"abc"', 'W/"abc"', None, True, False),
        ('"abc"', None, EXAMPLE, True, False),
        ('"unterminated', '"unterminated', None, True, False),
        ("Sun, 06 Nov 1994 08:49:37 GMT", '"abc"', EXAMPLE, True, True),
        ("Sun, 06 Nov 1994 08:49:37 GMT", '"abc"', EXAMPLE, False, False),
        ("Sun, 06 Nov 1994 08:49:38 GMT", '"abc"', EXAMPLE, True, False),
        ("Sun, 06 Nov 1994 08:49:37 GMT", '"abc"', None, True, False),
        ("garbage", '"abc"', EXAMPLE, True, False),
    ],
)
def test_if_range_holds(
    value: str, etag: str | None, last_modified: datetime | None, strong: bool, expected: bool
) -> None:
    result = if_range_holds(value, etag=etag, last_modified=last_modified, date_is_strong=strong)
    assert result is expected
