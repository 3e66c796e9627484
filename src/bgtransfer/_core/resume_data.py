"""``ResumeData``: everything needed to continue a download elsewhere, as a value.

The ``cancelByProducingResumeData:`` analog. Serialised as UTF-8 JSON with a
format tag and a version, so a blob is self-describing, readable when debugging,
and checked field by field when read back. Pure: whether the partial file still
exists is checked by the session that uses the data.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Final

import attrs

from .._exceptions import InvalidRequestError

__all__ = ["FORMAT", "InvalidResumeDataError", "ResumeData"]

FORMAT: Final = "bgtransfer.resume-data"


class InvalidResumeDataError(InvalidRequestError):
    """Resume data that cannot be used: garbage, truncated, from a newer version,
    or pointing at a partial file that is gone (or already taken by another task)."""


@attrs.frozen(kw_only=True)
class ResumeData:
    """A paused download: where its bytes are and how to ask for the rest safely."""

    VERSION: ClassVar[int] = 1

    url: str
    """The URL the bytes came from (after redirects, the original URL is kept)."""
    partial: str
    """Absolute path of the partial file holding the first ``offset`` bytes."""
    offset: int
    """Bytes already in the partial file."""
    validator: str
    """The strong ETag or strong Last-Modified date sent as ``If-Range``."""
    total: int | None
    """The representation's complete length, when the server said."""
    encoding: str = "identity"
    """The content coding of the stored bytes; a resumed answer must match it."""
    destination: str | None = None
    """Where the finished file was to go."""
    description: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """Request headers to send again; never credentials (Authorization,
    Proxy-Authorization, Cookie), which the application supplies again."""

    def to_bytes(self) -> bytes:
        """The serialised form (UTF-8 JSON with a format tag and version)."""
        body = attrs.asdict(self)
        body["headers"] = [list(pair) for pair in self.headers]
        return json.dumps(
            {"format": FORMAT, "version": self.VERSION, **body}, separators=(",", ":")
        ).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ResumeData:
        """Read resume data; raise :class:`InvalidResumeDataError` saying what is wrong."""
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise TypeError(f"resume data must be bytes, not {type(blob).__name__}")
        try:
            document = json.loads(bytes(blob).decode("utf-8"))
        except (ValueError, RecursionError):  # bad UTF-8, bad JSON, absurd nesting/numbers
            raise InvalidResumeDataError(
                "not bgtransfer resume data (not JSON: garbage or truncated)"
            ) from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise InvalidResumeDataError("not bgtransfer resume data (no format tag)")
        version = document.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidResumeDataError("resume data without a valid version")
        if version > cls.VERSION:
            raise InvalidResumeDataError(
                f"resume data version {version} is newer than this bgtransfer "
                f"understands ({cls.VERSION}); upgrade bgtransfer"
            )
        try:
            return cls(
                url=_field(document, "url", str),
                partial=_field(document, "partial", str),
                offset=_offset(document),
                validator=_field(document, "validator", str),
                total=_optional(document, "total", int),
                encoding=_field(document, "encoding", str),
                destination=_optional(document, "destination", str),
                description=_optional(document, "description", str),
                headers=_headers(document),
            )
        except KeyError as exc:
            raise InvalidResumeDataError(
                f"resume data lacks {exc.args[0]!r} (truncated?)"
            ) from None


def _field(document: dict[str, Any], name: str, kind: type) -> Any:
    value = document[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidResumeDataError(f"resume data field {name!r} has the wrong type")
    return value


def _optional(document: dict[str, Any], name: str, kind: type) -> Any:
    return None if document.get(name) is None else _field(document, name, kind)


def _offset(document: dict[str, Any]) -> int:
    offset: int = _field(document, "offset", int)
    total = document.get("total")
    if offset < 0 or (isinstance(total, int) and offset > total):
        raise InvalidResumeDataError(f"resume data offset {offset} is out of range")
    return offset


def _headers(document: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = document.get("headers", [])
    if not isinstance(raw, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        for pair in raw
    ):
        raise InvalidResumeDataError("resume data field 'headers' has the wrong type")
    return tuple((name, value) for name, value in raw)
