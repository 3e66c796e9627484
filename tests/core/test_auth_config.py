"""Configuration(auth=..., netrc=..., max_redirects=..., redirect_policy=...):
validated when built, secrets never in a repr, what crosses to the daemon (and
what is refused there), without I/O."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from bgtransfer import (
    AuthenticationError,
    BasicAuth,
    BearerToken,
    Configuration,
    HTTPStatusError,
    RetryPolicy,
    Session,
    TaskInfo,
)
from bgtransfer._core.auth import APP_ANSWERS
from bgtransfer._core.codec import decode_error, encode_error
from bgtransfer._core.wire import decode_config, encode_config

SECRET = "s3cret-pa55"


async def provider(info: TaskInfo, challenges: object) -> None:
    return None


def test_credentials_hide_their_secret_in_reprs() -> None:
    basic = BasicAuth("alice", SECRET)
    bearer = BearerToken(SECRET)
    for value in (basic, bearer, Configuration(auth=basic), Configuration(auth=bearer)):
        assert SECRET not in repr(value)
        assert SECRET not in str(value)
    assert "alice" in repr(basic)
    assert basic.authorization() == "Basic YWxpY2U6czNjcmV0LXBhNTU="
    assert bearer.authorization() == f"Bearer {SECRET}"
    assert BasicAuth("ü", "p").authorization() == "Basic w7w6cA=="  # UTF-8
    assert "provider" in repr(Configuration(auth=provider))


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: BasicAuth("a:b", "p"), ValueError, "must not contain ':'"),
        (lambda: BasicAuth("a", "p\r\nX: y"), ValueError, "CR, LF or NUL"),
        (lambda: BasicAuth(1, "p"), TypeError, "user must be a str"),  # type: ignore[arg-type]
        (lambda: BearerToken(""), ValueError, "non-empty"),
        (lambda: BearerToken("a b"), ValueError, "without spaces"),
        (lambda: BearerToken(b"t"), TypeError, "token must be a str"),  # type: ignore[arg-type]
        (lambda: Configuration(auth="user:pw"), TypeError, "auth must be"),  # type: ignore[arg-type]
        (lambda: Configuration(netrc=1), TypeError, "netrc must be"),  # type: ignore[arg-type]
        (lambda: Configuration(netrc=""), ValueError, "netrc must be a file"),
        (lambda: Configuration(max_redirects=-1), ValueError, "max_redirects"),
        (lambda: Configuration(max_redirects=2.0), TypeError, "max_redirects"),  # type: ignore[arg-type]
        (lambda: Configuration(max_redirects=True), TypeError, "max_redirects"),
        (lambda: Configuration(redirect_policy=3), TypeError, "redirect_policy"),  # type: ignore[arg-type]
    ],
)
def test_wrong_values_are_refused(build: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()  # type: ignore[operator]


def test_defaults_and_netrc_paths_made_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = Configuration()
    assert (config.auth, config.netrc, config.max_redirects, config.redirect_policy) == (
        None,
        False,
        10,
        None,
    )
    monkeypatch.chdir(tmp_path)
    assert Configuration(netrc="my.netrc").netrc == str(tmp_path / "my.netrc")
    assert Configuration(netrc=True).netrc is True
    assert Configuration(max_redirects=0).max_redirects == 0


def through_json(value: object) -> object:
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("auth", [BasicAuth("alice", SECRET), BearerToken(SECRET), None])
def test_static_credentials_cross_in_memory_and_are_never_stored(auth: object) -> None:
    config = Configuration(auth=auth, netrc=True, max_redirects=3)  # type: ignore[arg-type]
    assert decode_config(through_json(encode_config(config))) == config
    stored = json.dumps(encode_config(config, keep_secrets=False))
    assert SECRET not in stored
    assert decode_config(json.loads(stored)).auth is None
    assert decode_config(json.loads(stored)).max_redirects == 3


def test_a_provider_crosses_as_the_app_answering_and_is_stored_so() -> None:
    """The provider stays in the application; the daemon learns only that the
    app answers challenges (no secret: kept in daemon-session.json)."""
    for keep_secrets in (True, False):
        encoded = encode_config(Configuration(auth=provider), keep_secrets=keep_secrets)
        assert encoded["auth"] == {"kind": "app"}
        decoded = decode_config(through_json(encoded))
        assert decoded.auth is APP_ANSWERS
        assert decoded == decode_config(through_json(encoded))  # (one stand-in: equal)
    with pytest.raises(RuntimeError, match="never called"):
        APP_ANSWERS(TaskInfo(id=1, url="https://h/f", description=None), ())
    with pytest.raises(ValueError, match="unknown kind"):
        decode_config({"auth": {"kind": "app", "extra": 1}})


def test_callables_cannot_cross() -> None:
    with pytest.raises(TypeError, match="redirect_policy"):
        encode_config(Configuration(redirect_policy=lambda *args: True))


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (Configuration(redirect_policy=lambda *a: True), "redirect_policy cannot be used"),
    ],
)
def test_a_daemon_session_refuses_callables_clearly(
    config: Configuration, match: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=match):
        Session("com.example.auth", state_dir=tmp_path, config=config, daemon=True)


def test_authentication_error_is_a_status_error_never_retried_and_crosses() -> None:
    error = AuthenticationError(
        401, "Unauthorized", url="https://h/f", www_authenticate='Basic realm="r"', scheme="Basic"
    )
    assert isinstance(error, HTTPStatusError)
    assert error.status == 401
    assert str(error) == (
        "https://h/f: HTTP 401 Unauthorized: the server refused the credentials given (Basic)"
    )
    policy = RetryPolicy(retry_statuses=frozenset({401}))
    assert not policy.is_transient(error)
    for back in (
        decode_error(through_json(encode_error(error))),
        pickle.loads(pickle.dumps(error)),
    ):
        assert type(back) is AuthenticationError
        assert str(back) == str(error)
        assert back.www_authenticate == 'Basic realm="r"'
