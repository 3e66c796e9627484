"""Pure network rules: proxy URLs, ``no_proxy``, TLS checks' names, the User-Agent."""

from __future__ import annotations

import pytest

from bgtransfer._core.network import (
    ProxyURL,
    bypasses_proxy,
    parse_proxy,
    tls_check_for_verify_code,
    user_agent,
)


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypassed"),
    [
        ("example.org", 80, "example.org", True),
        ("files.example.org", 80, "example.org", True),
        ("files.example.org", 80, ".example.org", True),
        ("badexample.org", 80, "example.org", False),
        ("EXAMPLE.org", 80, " Example.ORG ,other", True),
        ("example.org", 8080, "example.org:8080", True),
        ("example.org", 80, "example.org:8080", False),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("127.0.0.1", 80, "127.0.0.1", True),
        ("::1", 80, "::1", True),
        ("[::1]", 443, "[::1]:443", True),
        ("anything", 80, "*", True),
        ("example.org", 80, "", False),
        ("example.org", 80, ",,", False),
    ],
)
def test_no_proxy_reads_as_curl_reads_it(
    host: str, port: int, no_proxy: str, bypassed: bool
) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypassed


def test_a_proxy_url_is_split_into_where_and_credentials() -> None:
    assert parse_proxy("http://proxy:3128") == ProxyURL("http://proxy:3128")
    assert parse_proxy("http://proxy") == ProxyURL("http://proxy:80")
    parsed = parse_proxy("http://al%40ice:p%3Ass@[::1]:3128/")
    assert parsed == ProxyURL("http://[::1]:3128", "al@ice", "p:ss")
    assert "p:ss" not in repr(parsed)


@pytest.mark.parametrize(
    ("code", "check"),
    [(20, "unknown_ca"), (18, "self_signed"), (62, "hostname_mismatch"), (None, "certificate")],
)
def test_verify_codes_name_the_check(code: int | None, check: str) -> None:
    assert tls_check_for_verify_code(code) == check


def test_the_user_agent() -> None:
    assert user_agent("1.0", "3.9", "3.12") == "bgtransfer/1.0 aiohttp/3.9 Python/3.12"
