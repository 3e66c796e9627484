"""``WWW-Authenticate`` parsed, without I/O (RFC 9110 section 11).

A header holds one or more challenges, each an auth scheme followed by a
token68 or by comma-separated ``name=value`` parameters (a value a token or a
quoted string). Commas separate both challenges and parameters: a token
followed by ``=`` is a parameter, any other token starts the next challenge.
Real servers bend the syntax (parameters without commas between them, stray
commas, empty headers); the parser takes what it can and skips what it cannot,
and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

__all__ = ["Challenge", "parse_challenges", "www_authenticate"]

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))")
_SPACE: Final = re.compile(r"[ \t]*")


@attrs.frozen
class Challenge:
    """One authentication challenge of a 401's ``WWW-Authenticate``.

    ``scheme`` is lower case (``"basic"``, ``"bearer"``...); ``params`` are the
    parameters in the order sent, names lower case, values unquoted;
    ``token68`` is the scheme's single token when it sent one instead.
    """

    scheme: str
    params: tuple[tuple[str, str], ...] = ()
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        """The ``realm`` parameter, if any."""
        return self.get("realm")

    def get(self, name: str, default: str | None = None) -> str | None:
        """The parameter ``name`` (any case), or ``default``."""
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return default


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """The quoted string starting at ``text[pos] == '"'``: its value and the
    position after it (an unterminated one runs to the end)."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    return "".join(out), pos


def _skip(text: str, pos: int) -> int:
    match = _SPACE.match(text, pos)
    assert match is not None  # (matches the empty string)
    return match.end()


def _params(text: str, pos: int) -> tuple[list[tuple[str, str]], int]:
    """Parameters from ``pos`` up to the next challenge's scheme (or the end)."""
    params: list[tuple[str, str]] = []
    while True:
        pos = _skip(text, pos)
        while pos < len(text) and text[pos] == ",":  # (empty list elements)
            pos = _skip(text, pos + 1)
        name = _TOKEN.match(text, pos)
        if name is None:
            if pos >= len(text):
                return params, pos
            # garbage: skip to the next comma
            comma = text.find(",", pos)
            pos = len(text) if comma < 0 else comma + 1
            continue
        after = _skip(text, name.end())
        if after >= len(text) or text[after] != "=":
            return params, pos  # a token alone: the next challenge's scheme
        after = _skip(text, after + 1)
        if after < len(text) and text[after] == '"':
            value, pos = _quoted(text, after)
        else:
            token = _TOKEN.match(text, after)
            value, pos = ("", after) if token is None else (token.group(), token.end())
        params.append((name.group().lower(), value))


def _parse_one(text: str, challenges: list[Challenge]) -> None:
    pos = 0
    while pos < len(text):
        pos = _skip(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        scheme = _TOKEN.match(text, pos)
        if scheme is None:
            if pos >= len(text):
                return
            comma = text.find(",", pos)
            pos = len(text) if comma < 0 else comma + 1
            continue
        pos = _skip(text, scheme.end())
        token68 = _TOKEN68.match(text, pos)
        if token68 is not None and pos > scheme.end():
            challenges.append(Challenge(scheme.group().lower(), token68=token68.group()))
            pos = token68.end()
            continue
        params, pos = _params(text, pos)
        challenges.append(Challenge(scheme.group().lower(), tuple(params)))


def parse_challenges(headers: Iterable[str] | str | None) -> tuple[Challenge, ...]:
    """Every challenge of the ``WWW-Authenticate`` header values ``headers``
    (one value, several, or None), in order. Tolerant: what cannot be parsed
    is skipped; never raises."""
    if headers is None:
        return ()
    values = [headers] if isinstance(headers, str) else list(headers)
    challenges: list[Challenge] = []
    for value in values:
        _parse_one(value[:8192], challenges)  # (a bound on a hostile header)
    return tuple(challenges)


def www_authenticate(status: int, headers: Mapping[str, str]) -> str | None:
    """A 401's ``WWW-Authenticate`` values joined by ``", "`` (None for another
    status or none sent). ``headers`` is looked up by lower-case names; a
    multidict's every value is taken."""
    if status != 401:
        return None
    getall = getattr(headers, "getall", None)
    values = getall("www-authenticate", []) if getall is not None else None
    if values is None:
        value = headers.get("www-authenticate")
        values = [] if value is None else [value]
    return ", ".join(values) if values else None
