"""The daemon protocol's credential hand-over, as plain JSON values (no I/O).

A daemon task of a session whose application answers challenges (its
``Configuration.auth`` is a provider, which stays in the application's
process) asks the attached application on a 401: a *question* line on the
attach stream, naming the task and the parsed challenges (nothing secret: they
are the server's), and the application's *answer*, a command (docs/daemon.md,
"Credentials from the app")::

    {"type": "challenge", "id": 7, "task": {"id": 3, "url": ..., "description": ...},
     "challenges": [{"scheme": "basic", "params": [["realm", "files"]], "token68": null}]}

    {"credentials": {"kind": "basic", "user": ..., "password": ...}}  # or "bearer", or null
    {"failed": "ValueError"}      # the provider raised (its type, never its message)
    {"returned": "int"}           # the provider returned something else
"""

from __future__ import annotations

import re
from typing import Any, Final

from .auth import (
    BasicAuth,
    BearerToken,
    Credentials,
    ProviderFailed,
    TaskInfo,
    decode_credentials,
    encode_credentials,
)
from .challenge import Challenge

__all__ = [
    "Answer",
    "decode_answer",
    "decode_question",
    "encode_answer",
    "encode_question",
    "failed_answer",
    "provider_failed",
    "provider_returned",
]

Answer = Credentials | ProviderFailed | None

_TYPE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")
_MAX_CHALLENGES: Final = 32
_MAX_TEXT: Final = 8192


def provider_failed(type_name: str) -> str:
    """The error text of a provider that raised (the in-process one's wording)."""
    return f"the auth provider failed: {type_name}"


def provider_returned(type_name: str) -> str:
    """The error text of a provider that returned something else."""
    return f"the auth provider returned a {type_name}, not BasicAuth, BearerToken or None"


def encode_question(
    question_id: int, info: TaskInfo, challenges: tuple[Challenge, ...]
) -> dict[str, Any]:
    return {
        "type": "challenge",
        "id": question_id,
        "task": {"id": info.id, "url": info.url, "description": info.description},
        "challenges": [
            {"scheme": c.scheme, "params": [list(pair) for pair in c.params], "token68": c.token68}
            for c in challenges
        ],
    }


def decode_question(line: dict[str, Any]) -> tuple[int, TaskInfo, tuple[Challenge, ...]]:
    """What :func:`encode_question` wrote (``ValueError``/``TypeError`` otherwise)."""
    question_id = _int(line.get("id"), "id")
    task = line.get("task")
    if not isinstance(task, dict):
        raise TypeError("a challenge's task must be an object")
    description = task.get("description")
    info = TaskInfo(
        id=_int(task.get("id"), "task id"),
        url=_text(task.get("url"), "url"),
        description=None if description is None else _text(description, "description"),
    )
    given = line.get("challenges")
    if not isinstance(given, list) or len(given) > _MAX_CHALLENGES:
        raise TypeError(f"challenges must be a list of at most {_MAX_CHALLENGES}")
    challenges = []
    for item in given:
        if not isinstance(item, dict):
            raise TypeError("a challenge must be an object")
        params = item.get("params", [])
        if not isinstance(params, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p)
            for p in params
        ):
            raise TypeError("a challenge's params must be [name, value] pairs of str")
        token68 = item.get("token68")
        challenges.append(
            Challenge(
                _text(item.get("scheme"), "scheme").lower(),
                tuple((name, value) for name, value in params),
                None if token68 is None else _text(token68, "token68"),
            )
        )
    return question_id, info, tuple(challenges)


def encode_answer(answer: Credentials | None) -> dict[str, Any]:
    """The body of the answer command (credentials cross in memory only)."""
    return {"credentials": encode_credentials(answer)}


def failed_answer(kind: str, type_name: str) -> dict[str, Any]:
    """``{"failed": type}`` (the provider raised) or ``{"returned": type}``."""
    return {kind: type_name}


def decode_answer(body: dict[str, Any]) -> Answer:
    """What the application answered (``ValueError``/``TypeError`` otherwise;
    their messages never repeat a value given)."""
    if "failed" in body:
        return ProviderFailed(provider_failed(_type_name(body["failed"])))
    if "returned" in body:
        return ProviderFailed(provider_returned(_type_name(body["returned"])))
    if "credentials" not in body:
        raise ValueError("an answer needs 'credentials', 'failed' or 'returned'")
    credentials = decode_credentials(body["credentials"])
    if credentials is not None and not isinstance(credentials, BasicAuth | BearerToken):
        raise ValueError("an answer's credentials must be basic or bearer")
    return credentials


def _type_name(value: object) -> str:
    if not isinstance(value, str) or _TYPE_NAME.fullmatch(value) is None:
        raise ValueError("an answer's failure must name a type")
    return value


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"{what} must be an int of at least 0")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise TypeError(f"{what} must be a str of at most {_MAX_TEXT} characters")
    return value
