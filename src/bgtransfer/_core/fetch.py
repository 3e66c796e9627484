"""A data task (``Session.fetch``): its request checked, its response as a value.

Sans-IO: what ``fetch`` accepts (:func:`check_fetch`) and what it returns
(:class:`FetchResponse`). The request goes out through the same client, request
path, limits and retry policy as a download's (``_engine/fetch.py``,
``_io/fetch.py``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from .._exceptions import HTTPStatusError

__all__ = ["FETCH_METHODS", "FetchResponse", "check_fetch"]

FETCH_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
"""The methods a fetch may use: it sends no body (an upload sends one)."""

_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([A-Za-z0-9._:-]+)", re.IGNORECASE)


def check_fetch(method: object, max_bytes: object) -> str:
    """The method, upper-cased; ``TypeError``/``ValueError`` for a bad argument."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, not {type(method).__name__}")
    upper = method.upper()
    if upper not in FETCH_METHODS:
        raise ValueError(
            f"fetch() sends no body: method must be one of {', '.join(sorted(FETCH_METHODS))}, "
            f"not {method!r} (upload() sends a file)"
        )
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an int, not {type(max_bytes).__name__}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
    return upper


@attrs.frozen(kw_only=True)
class FetchResponse:
    """What the server answered a :meth:`~bgtransfer.Session.fetch`.

    ``status`` is any final status (a 404 is returned, not raised: check it, or
    call :meth:`raise_for_status`); ``url`` is the URL that answered (after
    redirects); ``headers`` leave out the secret ones (``Set-Cookie``,
    ``WWW-Authenticate``, any name the session's secret-header rule names), as
    an upload's reply does; ``body`` is the whole body.
    """

    status: int
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    request_url: str = ""

    @property
    def ok(self) -> bool:
        """Whether the status is a success (2xx)."""
        return 200 <= self.status < 300

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def charset(self) -> str:
        """The body's charset from ``Content-Type``, else ``utf-8``."""
        found = _CHARSET.search(self.header("Content-Type") or "")
        return found.group(1) if found else "utf-8"

    def text(self) -> str:
        """The body decoded by its charset (``utf-8`` when none is named);
        undecodable bytes become U+FFFD."""
        try:
            return self.body.decode(self.charset, errors="replace")
        except LookupError:  # an unknown charset the server named
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``json.JSONDecodeError`` if it is not)."""
        return json.loads(self.body)

    def raise_for_status(self) -> FetchResponse:
        """Raise :class:`~bgtransfer.HTTPStatusError` unless the status is 2xx;
        return the response otherwise."""
        if not self.ok:
            raise HTTPStatusError(self.status, url=self.request_url or self.url)
        return self
