"""Pure rules for secrets: which request headers are never stored, and URLs' userinfo.

A *secret header* is sent with the request but never written to the journal
(nor its WAL), to resume data, to a repr, an error message or a log, and is
dropped when a redirect leads to another origin. The default rule
(:data:`DEFAULT_SECRETS`) names the usual credential headers and every name
containing a word that commonly marks one (``X-Api-Key``, ``X-Auth-Token``,
``X-Session-Id``...); ``Configuration.secret_headers`` names more.

A URL's userinfo (``user:password@``) is never accepted: :func:`check_no_userinfo`
refuses it with a message that shows no password, :func:`strip_userinfo` drops it
(journal rows written by earlier versions, redirect targets), and
:func:`redacted_url` shows a URL that may hold secrets as ``scheme://host/path``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import attrs

from .._exceptions import InvalidURLError

__all__ = [
    "DEFAULT_SECRETS",
    "SECRET_HEADERS",
    "SECRET_WORDS",
    "SecretHeaders",
    "check_no_userinfo",
    "redacted_url",
    "shown_url",
    "strip_userinfo",
]

SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Header names (lower case) that are always secret, whatever their spelling."""

SECRET_WORDS: Final = (
    "auth",
    "token",
    "secret",
    "key",
    "password",
    "passwd",
    "session",
    "cookie",
    "signature",
    "credential",
)
"""A header whose name contains one of these (case-insensitively) is secret:
``X-Api-Key``, ``X-Auth-Token``, ``X-Amz-Security-Token``, ``X-Session-Id``..."""


def _lowered(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.lower() for name in names)


@attrs.frozen
class SecretHeaders:
    """The rule saying which request headers are secret: :data:`SECRET_HEADERS`,
    names containing one of :data:`SECRET_WORDS`, and ``extra`` (any case)."""

    extra: frozenset[str] = attrs.field(default=frozenset(), converter=_lowered)

    def is_secret(self, name: str) -> bool:
        """Whether a header called ``name`` (any case) is secret."""
        return _is_secret(name.lower(), self.extra)

    def public(self, headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """``headers`` without the secret ones: what may be stored or shown."""
        extra = self.extra
        return tuple(
            (name, value) for name, value in headers if not _is_secret(name.lower(), extra)
        )


@functools.lru_cache(maxsize=1024)
def _is_secret(lowered: str, extra: frozenset[str]) -> bool:
    # Cached: a session sends the same few names thousands of times.
    if lowered in SECRET_HEADERS or lowered in extra:
        return True
    return any(word in lowered for word in SECRET_WORDS)


DEFAULT_SECRETS: Final = SecretHeaders()
"""The rule without ``Configuration.secret_headers``."""


def _userinfo_end(url: str) -> tuple[int, int]:
    """Where the authority of ``url`` starts, and where its userinfo's ``@`` is
    (-1: no userinfo). The last ``@`` of the authority, as ``urlsplit`` reads it."""
    scheme_end = url.find("://")
    if scheme_end == -1:
        return 0, -1
    start = scheme_end + 3
    end = len(url)
    for mark in "/?#":
        found = url.find(mark, start)
        if found != -1:
            end = min(end, found)
    return start, url.rfind("@", start, end)


def _has_userinfo(url: str) -> bool:
    return _userinfo_end(url)[1] != -1


def redacted_url(url: str) -> str:
    """``url`` as ``scheme://host[:port]/path``: no userinfo, query or fragment
    (any of which may hold a secret); for messages about URLs from outside."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<an unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    if port is not None:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def shown_url(url: str) -> str:
    """``url`` as a message may show it: its password (if any) as ``***``."""
    start, at = _userinfo_end(url)
    if at == -1:
        return url
    user, colon, _ = url[start:at].partition(":")
    return f"{url[:start]}{user}{':***' if colon else ''}{url[at:]}"


def check_no_userinfo(url: str) -> None:
    """Refuse a URL with userinfo (``user:password@host``) with
    :class:`InvalidURLError`; its message shows the password as ``***``."""
    if _has_userinfo(url):
        raise InvalidURLError(
            f"{shown_url(url)!r}: credentials in the URL are not accepted "
            "(they would be stored in the journal and shown in errors); send them as an "
            "'Authorization' header instead, or from Configuration.headers_provider so "
            "that a reattached task gets them again"
        )


def strip_userinfo(url: str) -> str:
    """``url`` without its userinfo (unchanged when it has none)."""
    start, at = _userinfo_end(url)
    return url if at == -1 else url[:start] + url[at + 1 :]
