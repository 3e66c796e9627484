"""The redirect rule, without I/O: where a 3xx leads, and whether to go there.

The I/O shell (``_io.transfer``) asks aiohttp not to follow redirects and calls
:func:`next_hop` for each redirect response. The rule resolves the ``Location``
against the URL that answered, refuses what must not be followed
(:class:`~bgtransfer.RedirectError`, never retried), and says which request
headers go along: all of them to the same origin (so ``Range`` and ``If-Range``
follow the file), none of the secret ones (see ``_core.secrets``) to another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import urljoin, urlsplit

import attrs

from .._exceptions import RedirectError
from .secrets import DEFAULT_SECRETS, SecretHeaders, redacted_url, strip_userinfo

__all__ = [
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "Hop",
    "RedirectRule",
    "next_hop",
    "origin_of",
]

REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
"""The statuses that are followed (with their ``Location``); a GET stays a GET."""

MAX_REDIRECTS: Final = 10
"""Redirects followed for one request at most."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@attrs.frozen
class RedirectRule:
    """What a session allows of redirects (from its ``Configuration``)."""

    allow_insecure: bool = False
    """Follow a redirect from https to http (``allow_insecure_redirects``)."""
    secrets: SecretHeaders = DEFAULT_SECRETS
    """Headers dropped when a redirect leads to another origin."""
    max_redirects: int = MAX_REDIRECTS


@attrs.frozen
class Hop:
    """Where a redirect leads: the next ``url``, with the ``headers`` to send there."""

    url: str
    headers: Mapping[str, str]


def origin_of(url: str) -> tuple[str, str, int]:
    """``url``'s origin: (scheme, host, port), lower case, the port explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme, 0)


def _url_key(url: str) -> tuple[tuple[str, str, int], str, str]:
    """What makes two URLs the same request: the origin, the path and the query
    (the scheme's and host's case, a default port and a fragment do not)."""
    parts = urlsplit(url)
    try:
        origin = origin_of(url)
    except ValueError:  # (a bad port: never equal to a followed URL)
        origin = ("", url, -1)
    return origin, parts.path or "/", parts.query


def next_hop(
    chain: Sequence[str],
    location: str,
    headers: Mapping[str, str],
    rule: RedirectRule,
    *,
    task_url: str,
) -> Hop:
    """The request to make after a redirect to ``location``.

    ``chain`` holds the URLs requested so far, the one that answered last;
    ``headers`` are what was sent to it. Raises :class:`RedirectError` (naming
    ``task_url``, and the target as ``scheme://host/path`` only) for too many
    redirects, a target that is not http(s) or has no host, or a downgrade from
    https to http unless ``rule.allow_insecure``. A target's userinfo is
    dropped, never sent.
    """
    current = chain[-1]
    if len(chain) > rule.max_redirects:
        raise RedirectError(
            f"too many redirects: more than {rule.max_redirects} (Configuration."
            "max_redirects); "
            f"the last one led to {redacted_url(urljoin(current, location))}",
            url=task_url,
        )
    try:
        target = strip_userinfo(urljoin(current, location.strip()))
        parts = urlsplit(target)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise RedirectError(
            "refused a redirect to a Location that is not a valid URL", url=task_url
        ) from None
    key = _url_key(target)
    if any(_url_key(url) == key for url in chain):
        raise RedirectError(
            f"redirect loop: {redacted_url(current)} led back to {redacted_url(target)}, "
            "already requested in this chain",
            url=task_url,
        )
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        shown = f"{scheme}: URL" if scheme else "URL without a scheme"
        raise RedirectError(
            f"refused a redirect to a {shown} ({redacted_url(target)}): only http and "
            "https are followed",
            url=task_url,
        )
    if not parts.hostname:
        raise RedirectError(
            f"refused a redirect to a URL without a host ({redacted_url(target)})", url=task_url
        )
    if scheme == "http" and urlsplit(current).scheme.lower() == "https" and not rule.allow_insecure:
        raise RedirectError(
            f"refused a redirect from https to http ({redacted_url(target)}): a downgrade "
            "would send the request and the file unencrypted; set "
            "Configuration(allow_insecure_redirects=True) to allow it",
            url=task_url,
        )
    if origin_of(target) != origin_of(current):
        headers = {
            name: value for name, value in headers.items() if not rule.secrets.is_secret(name)
        }
    return Hop(url=target, headers=headers)
