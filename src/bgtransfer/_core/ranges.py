"""HTTP range semantics for resuming (RFC 9110 §8.8, §13.1.5, §14, §15.3.7). Pure.

Five questions, five functions:

* :func:`plan_resume` — with N bytes on disk, what to ask for: ``Range`` and
  ``If-Range``, or (no safe validator) the whole file again.
* :func:`strong_validator` — which validator, if any, may go in ``If-Range``:
  a strong ETag, or a Last-Modified date only when it is itself strong (at least
  60 seconds older than the response's Date, §8.8.2.2); never a weak ETag.
* :func:`parse_content_range` — a strict parser for ``Content-Range``.
* :func:`judge_resumed_response` — given what was asked (``Range: bytes=N-`` with
  ``If-Range``) and what came back, what to do with the body: append at N,
  restart from zero, declare the file complete, or reject the answer.
* :func:`judge_unframed_end` — a body ended by the server closing the connection,
  with no length to check it against: is it whole, cut short, or unknowable, or
  should the server be asked once more from its end?
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import attrs

from .._exceptions import HTTPStatusError, ProtocolError
from .challenge import www_authenticate

__all__ = [
    "ContentRange",
    "EndVerdict",
    "ResumePlan",
    "Resumption",
    "Verdict",
    "judge_resumed_response",
    "judge_unframed_end",
    "parse_content_range",
    "plan_resume",
    "strong_validator",
]

_STRONG_DATE_MARGIN = 60  # seconds, RFC 9110 §8.8.2.2


@attrs.frozen(kw_only=True)
class ResumePlan:
    """The next request for a task with bytes on disk."""

    offset: int
    """Where a 206 body will go; 0 means the whole file is asked for again."""
    headers: Mapping[str, str]
    """``Range`` and ``If-Range`` to add; empty for a plain GET."""
    restart_reason: str | None = None
    """Why the bytes on disk are given up, when they are."""

    @property
    def ranged(self) -> bool:
        return bool(self.headers)


def plan_resume(*, offset: int, validator: str | None, total: int | None) -> ResumePlan:
    """What to ask for with ``offset`` confirmed bytes on disk.

    Nothing on disk: a plain GET. Bytes but no strong validator: a plain GET too,
    because without ``If-Range`` a changed file would be spliced onto old bytes.
    More bytes than the file has: start over. Otherwise ``Range: bytes=N-`` with
    ``If-Range`` (an ``N`` equal to the total asks the server to confirm a whole
    file with a 416).
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if offset == 0:
        return ResumePlan(offset=0, headers={})
    if validator is None:
        return ResumePlan(
            offset=0, headers={}, restart_reason="no strong validator to resume safely"
        )
    if total is not None and offset > total:
        return ResumePlan(
            offset=0,
            headers={},
            restart_reason=f"{offset} bytes on disk, more than the file's {total}",
        )
    return ResumePlan(offset=offset, headers={"Range": f"bytes={offset}-", "If-Range": validator})


def strong_validator(headers: Mapping[str, str]) -> str | None:
    """The value for a later ``If-Range``, from a response's (lower-cased) headers.

    A strong ETag. With no ETag at all, Last-Modified, but only if the response's
    Date is at least 60 seconds after it (the RFC's rule for a client to treat a
    date as strong). A weak ETag (``W/"..."``) never qualifies and, being an
    entity tag, also rules the date out (§13.1.5). Nor does a value that cannot
    be sent back byte for byte (see :func:`_sendable`). None means "no safe way
    to resume".
    """
    etag = headers.get("etag", "").strip()
    if etag:
        return etag if _is_entity_tag(etag) and _sendable(etag) else None
    last_modified = headers.get("last-modified", "").strip()
    date = headers.get("date", "").strip()
    if not last_modified or not date:
        return None
    modified = parse_http_date(last_modified)
    sent = parse_http_date(date)
    if modified is None or sent is None:
        return None
    if (sent - modified).total_seconds() >= _STRONG_DATE_MARGIN and _sendable(last_modified):
        return last_modified
    return None


_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _sendable(value: str) -> bool:
    """Whether ``value`` goes back into a request header as the bytes it came as.

    aiohttp decodes a header's bytes as UTF-8 with ``surrogateescape``, so an
    obs-text byte that is not UTF-8 (legal in a field value) becomes a lone
    surrogate; sending the value again, aiohttp's writer drops such characters
    (or refuses them), and refuses control characters. ``If-Range`` with any of
    those would name another validator, so it is not used: the task starts
    over rather than resume.
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return _UNSENDABLE.search(value) is None


def parse_http_date(value: str) -> datetime | None:
    """An HTTP-date in any of the three formats RFC 9110 §5.6.7 makes recipients
    accept (asctime has no zone and means GMT), or None."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _is_entity_tag(value: str) -> bool:
    return len(value) >= 2 and value[0] == '"' and value[-1] == '"' and '"' not in value[1:-1]


@attrs.frozen
class ContentRange:
    """A parsed ``Content-Range``: ``bytes first-last/complete`` or ``bytes */complete``."""

    first: int | None  # None for the unsatisfied form "*/complete"
    last: int | None
    complete: int | None  # None when the server wrote "*" (length unknown)


_RANGE = re.compile(r"bytes (?:([0-9]{1,20})-([0-9]{1,20})|(\*))/([0-9]{1,20}|\*)")


def parse_content_range(value: str) -> ContentRange:
    """Parse ``Content-Range`` strictly; raise :class:`ValueError` when malformed.

    Valid forms: ``bytes a-b/n`` (a <= b < n), ``bytes a-b/*``, ``bytes */n``.
    """
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"malformed Content-Range {value!r}")
    first_text, last_text, star, complete_text = match.groups()
    complete = None if complete_text == "*" else int(complete_text)
    if star is not None:
        if complete is None:
            raise ValueError(f"malformed Content-Range {value!r}: '*/*'")
        return ContentRange(None, None, complete)
    first, last = int(first_text), int(last_text)
    if last < first or (complete is not None and last >= complete):
        raise ValueError(f"inconsistent Content-Range {value!r}")
    return ContentRange(first, last, complete)


class Verdict(enum.Enum):
    """What to do with a response to a resumed request."""

    APPEND = "append"  # 206 for exactly our range: write the body at the offset
    RESTART = "restart"  # a full 200 body: truncate and write from zero
    COMPLETE = "complete"  # 416 confirming the file we hold is already whole
    RETRY_FROM_ZERO = "retry_from_zero"  # unusable answer: ask again without Range


@attrs.frozen(kw_only=True)
class Resumption:
    """The judgement on one response, with what it teaches about the representation."""

    verdict: Verdict
    offset: int  # where the body's first byte goes
    total: int | None  # the complete length, when known
    reason: str = ""  # why, for RETRY_FROM_ZERO and RESTART


def judge_resumed_response(
    *,
    url: str,
    offset: int,
    validator: str,
    total: int | None,
    encoding: str,
    status: int,
    reason: str,
    headers: Mapping[str, str],
    end: int | None = None,
) -> Resumption:
    """Judge the answer to ``Range: bytes={offset}-`` + ``If-Range: {validator}``
    (or ``bytes={offset}-{end - 1}`` for a segment, when ``end`` is given).

    ``total`` and ``encoding`` are what the earlier response said about the
    representation held on disk; ``headers`` have lower-case names. Raises
    :class:`HTTPStatusError` for statuses that are not about ranges (the caller
    decides whether to retry them).

    * 206 whose ``Content-Range`` starts exactly at ``offset``, with a complete
      length equal to ``total`` (when known), a body length matching the range,
      the same content coding and the same validator when one is sent:
      ``APPEND``. Any other 206 is never recombined: ``RETRY_FROM_ZERO``.
    * 200: the server ignored the range or the validator changed: ``RESTART``,
      never append.
    * 416: ``COMPLETE`` only if ``*/n`` has ``n == offset == total`` and the
      validator, if the answer repeats one, is unchanged; otherwise
      ``RETRY_FROM_ZERO``. The 416 body is never written anywhere.
    """
    response_encoding = headers.get("content-encoding", "identity").strip().lower() or "identity"
    if status == 200:
        return Resumption(
            verdict=Verdict.RESTART,
            offset=0,
            total=None,
            reason="the server sent the whole file instead of the requested range",
        )
    if status == 206:
        problem = _check_206(offset, validator, total, encoding, headers, response_encoding, end)
        if problem is not None:
            return Resumption(verdict=Verdict.RETRY_FROM_ZERO, offset=0, total=None, reason=problem)
        complete = parse_content_range(headers["content-range"]).complete
        return Resumption(verdict=Verdict.APPEND, offset=offset, total=complete or total)
    if status == 416:
        try:
            unsatisfied = parse_content_range(headers.get("content-range", ""))
        except ValueError:
            unsatisfied = None
        confirmed = (
            unsatisfied is not None
            and unsatisfied.first is None
            and unsatisfied.complete == offset
            and (total is None or total == offset)
            and not _validator_changed(validator, headers)
        )
        if confirmed:
            return Resumption(verdict=Verdict.COMPLETE, offset=offset, total=offset)
        return Resumption(
            verdict=Verdict.RETRY_FROM_ZERO,
            offset=0,
            total=None,
            reason="416 Range Not Satisfiable that does not confirm the partial file",
        )
    if 200 <= status < 300:
        raise ProtocolError(f"unexpected {status} answer to a range request", url=url)
    raise HTTPStatusError(
        status,
        reason,
        url=url,
        retry_after=headers.get("retry-after"),
        www_authenticate=www_authenticate(status, headers),
    )


def _check_206(  # noqa: PLR0917 -- a private helper over judge_resumed_response's inputs
    offset: int,
    validator: str,
    total: int | None,
    encoding: str,
    headers: Mapping[str, str],
    response_encoding: str,
    stop: int | None,
) -> str | None:
    value = headers.get("content-range")
    if value is None:
        return "206 without Content-Range"
    try:
        content_range = parse_content_range(value)
    except ValueError as exc:
        return str(exc)
    if content_range.first != offset:
        return f"206 starts at {content_range.first}, not at the requested {offset}"
    if total is not None and content_range.complete is not None and content_range.complete != total:
        return f"206 says the file is {content_range.complete} bytes, it was {total}"
    end = content_range.complete if content_range.complete is not None else total
    if stop is not None:
        if content_range.last != stop - 1:
            return f"206 stops at {content_range.last}, not at the requested {stop - 1}"
    elif end is not None and content_range.last != end - 1:
        return f"206 stops at {content_range.last}, not at the end of the file ({end} bytes)"
    length = headers.get("content-length")
    if length is not None and content_range.last is not None:
        expected = content_range.last - content_range.first + 1
        if length.strip() != str(expected):
            return f"206 Content-Length {length} does not match its range ({expected} bytes)"
    if response_encoding != encoding:
        return f"206 is {response_encoding}-coded, the partial file is {encoding}"
    if _validator_changed(validator, headers):
        return "206 carries a different validator than the partial file"
    return None


def _validator_changed(validator: str, headers: Mapping[str, str]) -> bool:
    """Whether the answer names a validator other than ours (weak or strong alike)."""
    if validator.startswith('"'):
        etag = headers.get("etag", "").strip()
        return bool(etag) and etag.removeprefix("W/") != validator
    modified = headers.get("last-modified", "").strip()
    return bool(modified) and modified != validator


class EndVerdict(enum.Enum):
    """What a body that ended with its connection, no length known, amounts to."""

    VERIFIED = "verified"  # a length announced for the same file agrees
    UNVERIFIED = "unverified"  # nothing can vouch for it: finish, and say so
    PROBE = "probe"  # ask for "bytes=N-" with If-Range: a 416 or a 206 will tell
    TRUNCATED = "truncated"  # cut short (a length or an earlier answer disagrees)


def judge_unframed_end(
    *,
    offset: int,
    validator: str | None,
    announced: tuple[str, int] | None,
    previous: tuple[str, int] | None,
    whole: bool,
) -> tuple[EndVerdict, str]:
    """Judge a body the server ended by closing the connection (no
    ``Content-Length``, no chunked framing, no complete length in a
    ``Content-Range``), with ``offset`` bytes on disk now.

    ``validator``: the task's strong validator (None: none). ``announced``: a
    complete length some response announced, with the validator it came with.
    ``previous``: the validator and offset of the previous such ending. ``whole``:
    this body began at byte 0 (not appended to earlier bytes).

    A length announced for the same representation decides: equal is
    ``VERIFIED``, anything else ``TRUNCATED``. Without a validator nothing can be
    asked safely: ``UNVERIFIED``. Two whole answers for the same representation
    (the server ignored the range of a probe) that end at the same byte are
    ``UNVERIFIED``; at different bytes, one of them was cut: ``TRUNCATED``.
    Otherwise ``PROBE``. Returns the verdict and, for ``TRUNCATED``, why.
    """
    if validator is not None and announced is not None and announced[0] == validator:
        total = announced[1]
        if offset == total:
            return EndVerdict.VERIFIED, ""
        return EndVerdict.TRUNCATED, (
            f"the body ended after {offset} bytes, but the server announced "
            f"{total} bytes for the same file"
        )
    if validator is None:
        return EndVerdict.UNVERIFIED, ""
    if whole and previous is not None and previous[0] == validator:
        if previous[1] == offset:
            return EndVerdict.UNVERIFIED, ""
        return EndVerdict.TRUNCATED, (
            f"two answers for the same file ended after {previous[1]} and {offset} bytes"
        )
    return EndVerdict.PROBE, ""
