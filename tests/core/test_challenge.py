"""``WWW-Authenticate`` parsing (RFC 9110 section 11), without I/O: table tests,
real-world headers included, and a parser that never raises."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from bgtransfer import Challenge
from bgtransfer._core.challenge import parse_challenges, www_authenticate


def c(scheme: str, *params: tuple[str, str], token68: str | None = None) -> Challenge:
    return Challenge(scheme, tuple(params), token68)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="simple"', [c("basic", ("realm", "simple"))]),
        ("basic REALM=simple", [c("basic", ("realm", "simple"))]),
        (
            'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
            [
                c("newauth", ("realm", "apps"), ("type", "1"), ("title", 'Login to "apps"')),
                c("basic", ("realm", "simple")),
            ],
        ),  # RFC 9110 section 11.6.1's example
        (
            'Bearer realm="example", error="invalid_token", '
            'error_description="The access token expired"',
            [
                c(
                    "bearer",
                    ("realm", "example"),
                    ("error", "invalid_token"),
                    ("error_description", "The access token expired"),
                )
            ],
        ),  # RFC 6750 section 3
        ("Negotiate abc+/d==", [c("negotiate", token68="abc+/d==")]),
        ("Negotiate", [c("negotiate")]),
        ("NTLM, Negotiate", [c("ntlm"), c("negotiate")]),
        ("Bearer", [c("bearer")]),
        ('Digest realm="a" nonce="b"', [c("digest", ("realm", "a"), ("nonce", "b"))]),
        (",,Basic ,, realm=foo", [c("basic", ("realm", "foo"))]),
        ('Basic realm = "spaced"', [c("basic", ("realm", "spaced"))]),
        ('Basic realm="unterminated', [c("basic", ("realm", "unterminated"))]),
        (
            'Basic realm="a,b", charset="UTF-8"',
            [c("basic", ("realm", "a,b"), ("charset", "UTF-8"))],
        ),
        ("Basic realm=", [c("basic", token68="realm=")]),  # (a token68, by the grammar)
        ('Basic realm="", x=1', [c("basic", ("realm", ""), ("x", "1"))]),
        ("", []),
        ("   ", []),
        ('"junk" Basic realm=x', []),  # (skipped to the next comma: there is none)
        ('"junk", Basic realm=x', [c("basic", ("realm", "x"))]),
        ("Bearer @@@, Basic realm=x", [c("bearer"), c("basic", ("realm", "x"))]),
    ],
)
def test_parse(header: str, expected: list[Challenge]) -> None:
    assert list(parse_challenges(header)) == expected


def test_several_header_values_and_none() -> None:
    assert parse_challenges(['Basic realm="a"', "Bearer"]) == (
        c("basic", ("realm", "a")),
        c("bearer"),
    )
    assert parse_challenges(None) == ()


def test_realm_and_get() -> None:
    (challenge,) = parse_challenges('Bearer realm="r", Error="invalid_token"')
    assert challenge.realm == "r"
    assert challenge.get("ERROR") == "invalid_token"
    assert challenge.get("scope", "none") == "none"
    assert parse_challenges("Basic")[0].realm is None


@pytest.mark.parametrize(
    "header",
    ["=", '"', "\\", ',=,="', "Basic ===", "a b c d", 'Basic realm="\\', "\x00\x01", "é realm=ü"],
)
def test_garbage_never_raises(header: str) -> None:
    parse_challenges(header)


def test_a_huge_header_is_bounded() -> None:
    challenges = parse_challenges("Basic realm=x, " * 100_000)
    assert 0 < len(challenges) < 1000


def test_www_authenticate_of_a_401_only_every_value_joined() -> None:
    headers = CIMultiDict([("WWW-Authenticate", 'Basic realm="a"'), ("www-authenticate", "Bearer")])
    assert www_authenticate(401, headers) == 'Basic realm="a", Bearer'
    assert www_authenticate(403, headers) is None
    assert www_authenticate(401, {"www-authenticate": "Basic"}) == "Basic"
    assert www_authenticate(401, {}) is None
