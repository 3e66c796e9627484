"""The redirect rule (``_core.redirects.next_hop``), without a network."""

from __future__ import annotations

import pytest

from bgtransfer import RedirectError
from bgtransfer._core.redirects import MAX_REDIRECTS, REDIRECT_STATUSES, RedirectRule, next_hop
from bgtransfer._core.secrets import SecretHeaders

TASK = "https://example.com/start"
SENT = {
    "Range": "bytes=10-",
    "If-Range": '"v1"',
    "Authorization": "Bearer a",
    "Cookie": "c=1",
    "Proxy-Authorization": "Basic p",
    "X-Api-Key": "k",
    "X-Partner": "p",
    "User-Agent": "ua",
}
RULE = RedirectRule()


def test_statuses_and_limit() -> None:
    assert frozenset({301, 302, 303, 307, 308}) == REDIRECT_STATUSES
    assert MAX_REDIRECTS == 10


@pytest.mark.parametrize(
    ("current", "location", "expected"),
    [
        ("https://example.com/a/b", "c", "https://example.com/a/c"),
        ("https://example.com/a/b", "/c?x=1", "https://example.com/c?x=1"),
        ("https://example.com/a/b", "../c", "https://example.com/c"),
        ("https://example.com/a/b", "//example.com/d", "https://example.com/d"),
        ("https://example.com/a/b", "https:other", "https://example.com/a/other"),
        ("https://example.com/a", " /spaced ", "https://example.com/spaced"),
        ("https://example.com/a", "HTTPS://EXAMPLE.com:443/z", "https://EXAMPLE.com:443/z"),
    ],
)
def test_a_same_origin_location_keeps_every_header(
    current: str, location: str, expected: str
) -> None:
    hop = next_hop([current], location, SENT, RULE, task_url=TASK)
    assert hop.url == expected
    assert hop.headers == SENT


@pytest.mark.parametrize(
    "location",
    [
        "https://other.example/x",  # host
        "https://example.com:8443/x",  # port
        "https://sub.example.com/x",
    ],
)
def test_another_origin_gets_no_secret_header(location: str) -> None:
    rule = RedirectRule(secrets=SecretHeaders(frozenset({"X-PARTNER"})))
    hop = next_hop(["https://example.com/a"], location, SENT, rule, task_url=TASK)
    assert hop.headers == {"Range": "bytes=10-", "If-Range": '"v1"', "User-Agent": "ua"}


def test_http_to_https_is_followed_and_counts_as_another_origin() -> None:
    hop = next_hop(["http://example.com/a"], "https://example.com/a", SENT, RULE, task_url=TASK)
    assert hop.url == "https://example.com/a"
    assert "Authorization" not in hop.headers


def test_userinfo_in_the_location_is_dropped() -> None:
    hop = next_hop(
        ["https://example.com/a"], "https://u:pw@example.com/b", SENT, RULE, task_url=TASK
    )
    assert hop.url == "https://example.com/b"


@pytest.mark.parametrize(
    "location",
    ["http://example.com/a?token=s3cret", "HTTP://user:s3cret@example.com/a#s3cret"],
)
def test_a_downgrade_is_refused_without_showing_secrets(location: str) -> None:
    with pytest.raises(RedirectError) as info:
        next_hop(["https://example.com/a"], location, SENT, RULE, task_url=TASK)
    assert info.value.url == TASK
    message = str(info.value)
    assert message.startswith(f"{TASK}: refused a redirect from https to http")
    assert "(http://example.com/a)" in message or "(HTTP://example.com/a)" in message
    assert "s3cret" not in message
    assert "allow_insecure_redirects=True" in message


def test_a_downgrade_is_followed_when_allowed() -> None:
    rule = RedirectRule(allow_insecure=True)
    hop = next_hop(["https://example.com/a"], "http://example.com/a", SENT, rule, task_url=TASK)
    assert hop.url == "http://example.com/a"
    assert "Authorization" not in hop.headers  # another origin (scheme)


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("ftp://u:s3cret@example.com/f", "refused a redirect to a ftp: URL (ftp://example.com/f)"),
        ("file:///etc/passwd", "refused a redirect to a file: URL (file:///etc/passwd)"),
        ("javascript:alert(1)", "refused a redirect to a javascript: URL"),
        ("https:///x", "refused a redirect to a URL without a host"),
        ("http://:80/x", "refused a redirect to a URL without a host"),
        ("https://example.com:99999/x", "not a valid URL"),
        ("http://[::1/x", "not a valid URL"),
    ],
)
def test_refused_targets(location: str, why: str) -> None:
    with pytest.raises(RedirectError) as info:
        next_hop(["http://example.com/a"], location, SENT, RULE, task_url=TASK)
    assert why in str(info.value)
    assert "s3cret" not in str(info.value)


def test_the_eleventh_redirect_is_refused() -> None:
    chain = [f"https://example.com/{n}" for n in range(MAX_REDIRECTS)]
    next_hop(chain, "/next", SENT, RULE, task_url=TASK)  # the tenth is followed
    with pytest.raises(
        RedirectError, match=r"too many redirects: more than 10 \(Configuration.max_redirects\);"
    ):
        next_hop([*chain, "https://example.com/x"], "/next", SENT, RULE, task_url=TASK)


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_max_redirects_is_the_rule_s(limit: int) -> None:
    rule = RedirectRule(max_redirects=limit)
    chain = [f"https://example.com/{n}" for n in range(limit)] or ["https://example.com/0"]
    if limit:
        next_hop(chain, "/next", SENT, rule, task_url=TASK)
    with pytest.raises(RedirectError, match=f"more than {limit} "):
        next_hop([*chain, "https://example.com/x"], "/next", SENT, rule, task_url=TASK)


@pytest.mark.parametrize(
    ("chain", "location"),
    [
        (["https://example.com/a"], "/a"),  # to itself
        (["https://example.com/a", "https://example.com/b"], "https://EXAMPLE.com/a"),
        (["https://example.com/a", "https://cdn.example.net/b"], "https://example.com/a"),
        (["https://example.com/a?x=1", "https://example.com/b"], "/a?x=1"),
        (["https://example.com/a"], "https://user:pw@example.com/a"),  # (userinfo dropped)
    ],
)
def test_a_loop_is_refused_at_once_and_named(chain: list[str], location: str) -> None:
    with pytest.raises(RedirectError, match="redirect loop: ") as info:
        next_hop(chain, location, SENT, RULE, task_url=TASK)
    assert "already requested in this chain" in str(info.value)
    assert "pw" not in str(info.value)


def test_the_same_path_with_another_query_is_no_loop() -> None:
    next_hop(["https://example.com/a?x=1"], "/a?x=2", SENT, RULE, task_url=TASK)
