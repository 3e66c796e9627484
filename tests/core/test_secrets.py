"""Which headers are secret, and URLs' userinfo (``_core.secrets``)."""

from __future__ import annotations

import pytest

from bgtransfer import Configuration, InvalidURLError
from bgtransfer._core.naming import parse_url
from bgtransfer._core.secrets import (
    DEFAULT_SECRETS,
    SecretHeaders,
    check_no_userinfo,
    redacted_url,
    shown_url,
    strip_userinfo,
)


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "COOKIE",
        "X-Api-Key",
        "Api-Key",
        "X-Auth-Token",
        "X-Amz-Security-Token",
        "X-Session-Id",
        "X-Client-Secret",
        "X-Password",
        "X-Passwd",
        "X-Signature",
        "X-Credential",
        "Set-Cookie",
    ],
)
def test_secret_by_default(name: str) -> None:
    assert DEFAULT_SECRETS.is_secret(name)


@pytest.mark.parametrize(
    "name",
    ["User-Agent", "Accept", "Accept-Encoding", "Range", "If-Range", "Referer", "X-Trace"],
)
def test_not_secret_by_default(name: str) -> None:
    assert not DEFAULT_SECRETS.is_secret(name)


def test_more_names_are_secret_by_configuration_in_any_case() -> None:
    config = Configuration(secret_headers=["X-Partner", "x-TENANT"])
    assert config.secret_headers == frozenset({"x-partner", "x-tenant"})
    rule = SecretHeaders(config.secret_headers)
    pairs = [("X-PARTNER", "1"), ("x-tenant", "2"), ("X-Trace", "3"), ("X-Api-Key", "4")]
    assert rule.public(pairs) == (("X-Trace", "3"),)
    assert DEFAULT_SECRETS.public(pairs) == (
        ("X-PARTNER", "1"),
        ("x-tenant", "2"),
        ("X-Trace", "3"),
    )


@pytest.mark.parametrize(
    ("value", "error"),
    [("X-Partner", TypeError), (b"x", TypeError), ([1], TypeError), (["a b"], ValueError)],
)
def test_secret_headers_are_checked(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="secret_headers"):
        Configuration(secret_headers=value)  # type: ignore[arg-type]


def test_allow_insecure_redirects_is_a_bool() -> None:
    assert Configuration(allow_insecure_redirects=True).allow_insecure_redirects is True
    with pytest.raises(TypeError, match="allow_insecure_redirects must be a bool"):
        Configuration(allow_insecure_redirects=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "shown", "stripped"),
    [
        ("http://u:pw@h/x", "http://u:***@h/x", "http://h/x"),
        ("http://u:p@w@h:81/x?q=@#@", "http://u:***@h:81/x?q=@#@", "http://h:81/x?q=@#@"),
        ("http://:pw@h", "http://:***@h", "http://h"),
        ("http://u@h/", "http://u@h/", "http://h/"),
        ("http://h/a@b", "http://h/a@b", "http://h/a@b"),
        ("http://h?x=u:p@h", "http://h?x=u:p@h", "http://h?x=u:p@h"),
        ("no scheme@host", "no scheme@host", "no scheme@host"),
    ],
)
def test_userinfo(url: str, shown: str, stripped: str) -> None:
    assert shown_url(url) == shown
    assert strip_userinfo(url) == stripped


@pytest.mark.parametrize(
    "url", ["http://u:pw-s3cret@example.com/x", "https://s3cret@example.com", "http://@example.com"]
)
def test_parse_url_refuses_userinfo_without_showing_the_password(url: str) -> None:
    with pytest.raises(InvalidURLError, match="credentials in the URL are not accepted") as info:
        parse_url(url, {})
    assert "pw-s3cret" not in str(info.value)
    assert "'Authorization' header" in str(info.value)
    with pytest.raises(InvalidURLError):
        check_no_userinfo(url)


def test_redacted_url_shows_scheme_host_and_path_only() -> None:
    assert redacted_url("https://u:p@Example.com:8443/a/b?t=s#f") == "https://example.com:8443/a/b"
    assert redacted_url("file:///etc/passwd") == "file:///etc/passwd"
    assert redacted_url("http://[::1]:80/x") == "http://[::1]:80/x"
    assert redacted_url("http://[::1/x") == "<an unparsable URL>"
