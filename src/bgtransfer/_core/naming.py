"""Pure rules for names: URLs and their origins, session identifiers, file names."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from .._exceptions import InvalidURLError, UnsupportedSchemeError
from .secrets import check_no_userinfo, shown_url

__all__ = [
    "MAX_IDENTIFIER_LENGTH",
    "Origin",
    "filename_from_url",
    "origin_of",
    "parse_url",
    "unique_name",
    "validate_identifier",
]

MAX_IDENTIFIER_LENGTH = 200
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FALLBACK_NAME = "download"
_MAX_NAME_BYTES = 200  # leaves room for " (NNN)" and suffixes under the usual 255-byte limit


class Origin(NamedTuple):
    """Where connections go: the key of the per-host connection limit.

    A named tuple: the supervisor hashes and compares it a dozen times per task,
    and a tuple does both in C (an attrs class, even with a cached hash, runs
    Python code each time)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def parse_url(url: object, cache: dict[str, Origin] | None = None) -> tuple[str, Origin]:
    """Validate a download URL; return it (stripped) with its :class:`Origin`.

    Raises :class:`TypeError` when ``url`` is not a string,
    :class:`InvalidURLError` when it cannot be parsed, has no host or holds
    credentials (``user:password@``; the message shows no password), and
    :class:`UnsupportedSchemeError` for a scheme other than http or https.

    ``cache`` remembers the origin of each scheme and authority accepted: a URL
    that starts like one accepted before is checked for whitespace and control
    characters only (the rest of a URL cannot make it fail). Thousands of
    downloads from a few hosts then parse a few URLs.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    text = url.strip()
    if not text:
        raise InvalidURLError("empty URL")
    if _CONTROL_OR_SPACE.search(text):
        check_no_userinfo(text)  # (that error first: it says how to pass credentials)
        shown = shown_url(text)
        raise InvalidURLError(f"{shown!r}: URL contains whitespace or control characters")
    key = None if cache is None else _authority(text)
    if cache is not None and key is not None and key in cache:
        return text, cache[key]  # (an authority with userinfo is never cached)
    check_no_userinfo(text)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidURLError(f"{text!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidURLError(f"{text!r}: URL has no scheme (expected http:// or https://)")
    if scheme not in _DEFAULT_PORTS:
        raise UnsupportedSchemeError(
            f"{text!r}: scheme {scheme!r} is not supported (use http or https)"
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidURLError(f"{text!r}: URL has no host")
    if port == 0:
        raise InvalidURLError(f"{text!r}: port 0 is not a port one can connect to")
    origin = Origin(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])
    if cache is not None and key is not None:
        if len(cache) >= _ORIGIN_CACHE_SIZE:
            cache.clear()
        cache[key] = origin
    return text, origin


_ORIGIN_CACHE_SIZE = 1024


def _authority(url: str) -> str | None:
    """``scheme://authority`` of ``url`` (None without ``://``): what its origin
    depends on. What follows it (path, query, fragment) cannot make
    :func:`~urllib.parse.urlsplit` fail."""
    start = url.find("://")
    if start == -1:
        return None
    end = len(url)
    for mark in "/?#":
        found = url.find(mark, start + 3)
        if found != -1:
            end = min(end, found)
    return url[:end]


def origin_of(url: str, cache: dict[str, Origin]) -> Origin:
    """The :class:`Origin` of a URL that :func:`parse_url` already accepted, parsed
    once per scheme and authority (``cache`` remembers them): reopening a session
    with thousands of tasks from a few hosts need not parse every URL again."""
    key = _authority(url)
    origin = cache.get(key) if key is not None else None
    if origin is None:
        origin = parse_url(url, cache)[1]
    return origin


def validate_identifier(identifier: object) -> str:
    """Check a background session identifier; return it unchanged.

    An identifier names a directory, so it must be a non-empty string of at most
    :data:`MAX_IDENTIFIER_LENGTH` characters with no path separator, no ``..``, no
    control character, and not starting with a dot.
    """
    if not isinstance(identifier, str):
        raise TypeError(
            f"session identifier must be a str or None, not {type(identifier).__name__}"
        )
    if not identifier:
        raise ValueError("session identifier must not be empty")
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise ValueError(
            f"session identifier is {len(identifier)} characters long; "
            f"the limit is {MAX_IDENTIFIER_LENGTH}"
        )
    if "/" in identifier or "\\" in identifier:
        raise ValueError(f"session identifier {identifier!r} must not contain a path separator")
    if ".." in identifier:
        raise ValueError(f"session identifier {identifier!r} must not contain '..'")
    if identifier.startswith("."):
        raise ValueError(f"session identifier {identifier!r} must not start with '.'")
    if any(unicodedata.category(c).startswith("C") for c in identifier):
        raise ValueError(f"session identifier {identifier!r} must not contain control characters")
    return identifier


_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')


def filename_from_url(url: str) -> str:
    """A safe file name for ``url``: the last path segment, percent-decoded, sanitised.

    No directory part, no ``..``, no leading dot, no characters that are unsafe on
    common file systems; ``"download"`` when nothing usable is left.
    """
    path = unquote(urlsplit(url).path)
    # Decoding may reveal separators ("%2F"); only the final segment can be a name.
    name = PurePosixPath(path.replace("\\", "/")).name
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name or set(name) <= {"_", "."}:
        return _FALLBACK_NAME
    encoded = name.encode("utf-8")
    if len(encoded) > _MAX_NAME_BYTES:
        _, dot, suffix = name.rpartition(".")
        keep = suffix if dot and len(suffix) <= 16 else ""
        budget = _MAX_NAME_BYTES - len(keep.encode()) - (1 if keep else 0)
        head = encoded[:budget].decode("utf-8", "ignore")
        name = f"{head}.{keep}" if keep else head
    return name


def unique_name(name: str, taken: Callable[[str], bool]) -> str:
    """Return ``name``, or ``"stem (N).ext"`` with the smallest N for which ``taken`` is False."""
    if not taken(name):
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    for n in range(1, 100_000):
        candidate = f"{stem} ({n}).{suffix}" if suffix else f"{stem} ({n})"
        if not taken(candidate):
            return candidate
    raise ValueError(f"no free file name like {name!r}")
