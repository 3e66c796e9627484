"""Pure HTTP semantics for the test server: HTTP-dates, Range and If-Range.

Everything here is synchronous and side-effect free, so it can be tested (and
read) independently of the server.  References are to RFC 9110.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final, Literal

import attrs

__all__ = [
    "ByteRange",
    "RangeOutcome",
    "format_http_date",
    "if_range_holds",
    "parse_http_date",
    "select_range",
]

_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# §5.6.7: IMF-fixdate, and the two obsolete forms recipients must still accept.
_IMF_FIXDATE: Final = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT"
)
_RFC850_DATE: Final = re.compile(
    r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    rf"([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT"
)
_ASCTIME_DATE: Final = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_MONTH} ([ 0-9][0-9]) {_TIME} ([0-9]{{4}})"
)

# §14.1.2: int-range = first-pos "-" [ last-pos ], suffix-range = "-" suffix-length.
_INT_RANGE: Final = re.compile(r"([0-9]+)-([0-9]*)")
_SUFFIX_RANGE: Final = re.compile(r"-([0-9]+)")
# §8.8.3: entity-tag = [ weak ] opaque-tag, opaque-tag = DQUOTE *etagc DQUOTE.
_ENTITY_TAG: Final = re.compile(r'(W/)?"[\x21\x23-\x7e\x80-\xff]*"')
_OWS: Final = " \t"


@attrs.frozen
class ByteRange:
    """A satisfiable byte range, resolved against a representation length."""

    first: int
    """Offset of the first byte sent."""
    last: int
    """Offset of the last byte sent (inclusive, as in ``Content-Range``)."""

    @property
    def length(self) -> int:
        """Number of bytes in the range."""
        return self.last - self.first + 1


RangeOutcome = ByteRange | Literal["full", "unsatisfiable"]
"""What to send: a 206 for a :class:`ByteRange`, a 200 or a 416."""


def format_http_date(value: datetime) -> str:
    """Format an aware datetime as an IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    return format_datetime(value.astimezone(UTC), usegmt=True)


def parse_http_date(value: str) -> datetime | None:
    """Parse any of the three HTTP-date forms of RFC 9110 §5.6.7.

    Returns an aware UTC datetime, or ``None`` when ``value`` is not a valid date.
    """
    text = value.strip(_OWS)
    try:
        if match := _IMF_FIXDATE.fullmatch(text):
            day, month, year, *clock = match.groups()
            return _build(int(year), month, day, clock)
        if match := _RFC850_DATE.fullmatch(text):
            day, month, short_year, *clock = match.groups()
            return _build(_expand_two_digit_year(int(short_year)), month, day, clock)
        if match := _ASCTIME_DATE.fullmatch(text):
            month, day, *clock, year = match.groups()
            return _build(int(year), month, day.strip(), clock)
    except ValueError:  # e.g. "31 Feb" or hour 25
        return None
    return None


def _build(year: int, month: str, day: str, clock: list[str]) -> datetime:
    hour, minute, second = (int(part) for part in clock)
    return datetime(year, _MONTHS.index(month) + 1, int(day), hour, minute, second, tzinfo=UTC)


def _expand_two_digit_year(short_year: int) -> int:
    """§5.6.7: a two-digit year more than 50 years ahead means the previous century."""
    this_year = datetime.now(UTC).year
    year = this_year - this_year % 100 + short_year
    if year > this_year + 50:
        year -= 100
    return year


def select_range(header: str | None, length: int) -> RangeOutcome:
    """Decide how to answer a GET with the given ``Range`` header value.

    Only a single ``bytes`` range is honoured.  A missing header, another range
    unit, a syntactically invalid ranges-specifier and a multi-range request are
    all answered with the full representation, which §14.2 allows.
    """
    if header is None:
        return "full"
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip(_OWS).lower() != "bytes":
        return "full"
    # range-set = 1#range-spec; list syntax (§5.6.1) tolerates empty elements.
    specs = [spec.strip(_OWS) for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]
    if len(specs) != 1:
        return "full"
    spec = specs[0]
    if match := _INT_RANGE.fullmatch(spec):
        first = int(match[1])
        last = int(match[2]) if match[2] else None
        if last is not None and last < first:
            return "full"  # an invalid range-spec (§14.1.1)
        if first >= length:
            return "unsatisfiable"
        return ByteRange(first, length - 1 if last is None else min(last, length - 1))
    if match := _SUFFIX_RANGE.fullmatch(spec):
        suffix = int(match[1])
        if suffix == 0:
            return "unsatisfiable"
        if length == 0:
            # A 206 cannot describe a range of an empty representation.
            return "full"
        return ByteRange(max(0, length - suffix), length - 1)
    return "full"


def if_range_holds(
    value: str,
    *,
    etag: str | None,
    last_modified: datetime | None,
    date_is_strong: bool,
) -> bool:
    """Evaluate an ``If-Range`` header value (§13.1.5).

    ``etag`` and ``last_modified`` are the validators the response carries
    (``None`` when the header is not sent).  An entity tag matches only by strong
    comparison, so a weak tag on either side never matches; a date matches only
    when it equals Last-Modified exactly and that date is a strong validator.
    Anything unparsable evaluates to false, which means "send the full body".
    """
    text = value.strip(_OWS)
    if text.startswith(("W/", '"')):
        if not _ENTITY_TAG.fullmatch(text) or text.startswith("W/"):
            return False
        if etag is None or etag.startswith("W/"):
            return False
        return text == etag
    if last_modified is None or not date_is_strong:
        return False
    return parse_http_date(text) == last_modified
