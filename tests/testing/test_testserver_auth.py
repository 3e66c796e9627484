"""The test server's auth knob (``require_auth``): 401 with challenges until a
request carries the credentials the path accepts; the threaded server too."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request

import pytest

from bgtransfer.testing import AuthRequirement, ThreadedTestServer


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(url: str, authorization: str | None = None) -> tuple[int, list[str], bytes]:
    headers = {} if authorization is None else {"Authorization": authorization}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, [], response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get_all("WWW-Authenticate") or [], b""


def test_basic_and_bearer_challenges_until_the_right_credentials() -> None:
    with ThreadedTestServer() as server:
        server.add_file("/f", data=b"hello")
        url = server.url("/f")
        both = AuthRequirement(basic=("u", "p"), bearer="tok", realm="files")
        server.require_auth("/f", both)
        status, challenges, _ = get(url)
        assert status == 401
        assert challenges == ['Basic realm="files", charset="UTF-8"', 'Bearer realm="files"']
        status, challenges, _ = get(url, "Bearer old")
        assert challenges[1] == 'Bearer realm="files", error="invalid_token"'
        assert get(url, basic("u", "wrong"))[0] == 401
        assert get(url, "Basic !!notbase64")[0] == 401
        assert get(url, basic("u", "p"))[::2] == (200, b"hello")
        assert get(url, "bearer tok")[::2] == (200, b"hello")
        server.require_auth("/f", None)
        assert get(url)[::2] == (200, b"hello")


def test_a_requirement_with_no_credentials_accepts_nothing() -> None:
    with ThreadedTestServer() as server:
        server.add_file("/f", data=b"x")
        server.require_auth("/f", AuthRequirement())
        assert get(server.url("/f"), basic("a", "b"))[0] == 401


def test_a_user_with_a_colon_is_refused() -> None:
    with pytest.raises(ValueError, match="user, password"):
        AuthRequirement(basic=("a:b", "c"))
