"""Credentials and the rules for answering a 401, without I/O.

``Configuration.auth`` takes static credentials (:class:`BasicAuth`,
:class:`BearerToken`) or a provider called on a 401 with a
:class:`TaskInfo` and the parsed challenges. The engine (``_engine/auth.py``)
keeps what was sent and asks :func:`judge_reply` what to do with a provider's
answer. Secrets never appear in a repr.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeAlias

import attrs

from .challenge import Challenge

__all__ = [
    "APP_ANSWERS",
    "AppAnswers",
    "AuthProvider",
    "AuthSetting",
    "BasicAuth",
    "BearerToken",
    "Credentials",
    "NetrcSetting",
    "ProviderFailed",
    "TaskInfo",
    "auth_repr",
    "convert_auth",
    "convert_netrc",
    "decode_credentials",
    "encode_credentials",
]


def _header_text(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a str, not {type(value).__name__}")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{attribute.name} must not contain CR, LF or NUL")


def _user(instance: Any, attribute: Any, value: Any) -> None:
    _header_text(instance, attribute, value)
    if ":" in value:
        raise ValueError("BasicAuth: the user name must not contain ':' (RFC 7617)")


def _token(instance: Any, attribute: Any, value: Any) -> None:
    _header_text(instance, attribute, value)
    if not value or any(c in value for c in " \t"):
        raise ValueError("BearerToken: the token must be non-empty, without spaces")


@attrs.frozen(repr=False)
class BasicAuth:
    """HTTP Basic credentials (RFC 7617), sent as ``Authorization: Basic ...``
    (UTF-8). The password is never shown in a repr."""

    user: str = attrs.field(validator=_user)
    password: str = attrs.field(validator=_header_text)

    def authorization(self) -> str:
        """The ``Authorization`` header's value."""
        raw = f"{self.user}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        return f"BasicAuth(user={self.user!r}, password='***')"


@attrs.frozen(repr=False)
class BearerToken:
    """A bearer token (RFC 6750), sent as ``Authorization: Bearer <token>``.
    The token is never shown in a repr."""

    token: str = attrs.field(validator=_token)

    def authorization(self) -> str:
        """The ``Authorization`` header's value."""
        return f"Bearer {self.token}"

    def __repr__(self) -> str:
        return "BearerToken(token='***')"


Credentials: TypeAlias = BasicAuth | BearerToken


@attrs.frozen
class TaskInfo:
    """What an auth provider or a redirect policy is told about the task: a
    frozen snapshot (never a live object of the engine)."""

    id: int
    """The task's id."""
    url: str
    """The task's URL (as given; the request that was answered may have been
    redirected)."""
    description: str | None
    """The task's description."""


AuthProvider: TypeAlias = Callable[
    [TaskInfo, tuple[Challenge, ...]], Awaitable[Credentials | None] | Credentials | None
]
"""``Configuration.auth`` as a provider: called on a 401 with the task and the
challenges of its ``WWW-Authenticate``; returns credentials or None."""

AuthSetting: TypeAlias = BasicAuth | BearerToken | AuthProvider | None

NetrcSetting: TypeAlias = bool | str


def convert_auth(value: object) -> AuthSetting:
    if value is None or isinstance(value, BasicAuth | BearerToken):
        return value
    if callable(value):
        return value  # (its signature is the caller's promise)
    raise TypeError(
        "auth must be BasicAuth, BearerToken, an async provider "
        f"(task_info, challenges) -> credentials or None, or None; not {type(value).__name__}"
    )


def auth_repr(value: AuthSetting) -> str:
    if value is None or isinstance(value, BasicAuth | BearerToken):
        return repr(value)
    return f"<provider {getattr(value, '__qualname__', type(value).__name__)}>"


def convert_netrc(value: object) -> NetrcSetting:
    """``Configuration.netrc``: False, True (``$NETRC`` or ``~/.netrc``, read
    when needed) or a file's path (made absolute now)."""
    if isinstance(value, bool):
        return value
    fspath = getattr(value, "__fspath__", None)
    text = value if isinstance(value, str) else fspath() if fspath is not None else None
    if not isinstance(text, str):
        raise TypeError(
            "netrc must be a bool or a file's path (str or os.PathLike), "
            f"not {type(value).__name__}"
        )
    if not text or "\0" in text:
        raise ValueError(f"netrc must be a file's path, got {text!r}")
    return str(Path(text).expanduser().absolute())


class AppAnswers:
    """``Configuration.auth`` in the daemon's copy of a session whose application
    answers challenges itself: its provider stayed in the application's process,
    and crossed as ``{"kind": "app"}`` (:func:`encode_credentials`). A stand-in
    (one instance, :data:`APP_ANSWERS`, so configurations compare equal): the
    daemon gives the session's engine its own provider in its place, which asks
    the attached application (``_daemon/credentials.py``). Called, it refuses."""

    __slots__ = ()

    def __call__(self, task: TaskInfo, challenges: tuple[Challenge, ...]) -> Credentials | None:
        raise RuntimeError("APP_ANSWERS stands for the application's provider: never called")

    def __repr__(self) -> str:
        return "<the application's provider>"

    def __reduce__(self) -> str:
        return "APP_ANSWERS"


APP_ANSWERS: Final = AppAnswers()


@attrs.frozen
class ProviderFailed:
    """A provider of another process failed: what the task's error says (the
    exception's type, never its message, which may hold a secret; or the type of
    a wrong answer). The daemon's provider answers this; the engine raises it
    as the in-process provider's failure."""

    message: str


def encode_credentials(auth: AuthSetting) -> dict[str, str] | None:
    """``Configuration.auth`` as it crosses to the daemon: static credentials
    (in memory only: the wire leaves them out of what is stored), or a
    provider as ``{"kind": "app"}``: it stays in the application, which the
    daemon asks on a 401 (docs/daemon.md, "Credentials from the app")."""
    if auth is None:
        return None
    if isinstance(auth, BasicAuth):
        return {"kind": "basic", "user": auth.user, "password": auth.password}
    if isinstance(auth, BearerToken):
        return {"kind": "bearer", "token": auth.token}
    return {"kind": "app"}


def decode_credentials(value: object) -> AuthSetting:
    """What :func:`encode_credentials` wrote (``ValueError``/``TypeError`` otherwise);
    ``{"kind": "app"}`` is :data:`APP_ANSWERS`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"auth must be an object, not {type(value).__name__}")
    doc = dict(value)
    kind = doc.pop("kind", None)
    if kind == "app" and not doc:
        return APP_ANSWERS
    if kind == "basic":
        return BasicAuth(**doc)
    if kind == "bearer":
        return BearerToken(**doc)
    raise ValueError(f"auth: unknown kind {kind!r}")
