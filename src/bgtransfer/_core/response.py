"""Reading a response's status and headers into a decision. Pure.

The shell hands over the status, reason and headers (a mapping that answers
lower-case names: aiohttp's case-insensitive one, or a dict so written); this
module says whether the body may be written and what the response promises
about it, or raises the error the task ends with.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .._exceptions import HTTPStatusError, ProtocolError
from .challenge import www_authenticate

__all__ = ["ResponseInfo", "check_response", "parse_content_length"]


@attrs.frozen(kw_only=True)
class ResponseInfo:
    """What a successful response says about its body."""

    status: int
    expected_length: int | None
    """Body length from Content-Length; None for a body delimited by close or chunks."""
    etag: str | None
    last_modified: str | None
    accept_ranges: bool
    content_encoding: str
    """As sent, lower-cased; ``"identity"`` when absent. Never decoded: bytes on disk
    are the representation's bytes, so offsets stay offsets of the representation."""


def parse_content_length(value: str | None, *, url: str) -> int | None:
    """Parse Content-Length strictly (RFC 9110 §8.6): digits only; equal duplicates allowed."""
    if value is None:
        return None
    parts = {p.strip() for p in value.split(",")}
    if len(parts) != 1:
        raise ProtocolError(f"conflicting Content-Length values {value!r}", url=url)
    (text,) = parts
    # 20 digits hold 2**64: longer is garbage, and int() would raise a plain
    # ValueError past Python's 4300-digit limit.
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise ProtocolError(f"invalid Content-Length {value[:40]!r}", url=url)
    return int(text)


def check_response(url: str, status: int, reason: str, headers: Mapping[str, str]) -> ResponseInfo:
    """Accept a full-body answer (2xx but 206) or raise the task's error.

    ``headers`` is looked up by lower-case names. A request that sent no ``Range`` never
    expects 206, so a 206 here is a :class:`ProtocolError`; 3xx (redirects already
    followed, or 304), 4xx and 5xx raise :class:`HTTPStatusError` with the status.
    """
    if status == 206:
        raise ProtocolError("server sent 206 Partial Content to a request without Range", url=url)
    if not 200 <= status < 300:
        raise HTTPStatusError(
            status,
            reason,
            url=url,
            retry_after=headers.get("retry-after"),
            www_authenticate=www_authenticate(status, headers),
        )
    encoding = headers.get("content-encoding", "identity").strip().lower() or "identity"
    if status in (204, 205):  # no body by definition (RFC 9110 §15.3.5-6): an empty file
        length: int | None = 0
    else:
        length = parse_content_length(headers.get("content-length"), url=url)
    ranges = headers.get("accept-ranges", "").strip().lower()
    return ResponseInfo(
        status=status,
        expected_length=length,
        etag=headers.get("etag"),
        last_modified=headers.get("last-modified"),
        accept_ranges=ranges == "bytes",
        content_encoding=encoding,
    )
