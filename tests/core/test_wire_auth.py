"""The credential hand-over's JSON values (``_core/wire_auth.py``), without I/O:
a question round-trips, answers decode to what the engine judges, and what is
malformed is refused without repeating a secret."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bgtransfer import BasicAuth, BearerToken, TaskInfo
from bgtransfer._core.auth import ProviderFailed
from bgtransfer._core.challenge import parse_challenges
from bgtransfer._core.wire_auth import (
    decode_answer,
    decode_question,
    encode_answer,
    encode_question,
    failed_answer,
)

SECRET = "pw-0b5e-secret"


def through_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def test_a_question_round_trips() -> None:
    info = TaskInfo(id=3, url="https://h/f", description="the file")
    challenges = parse_challenges(
        ['Basic realm="files", charset="UTF-8"', 'Bearer error="invalid_token"', "Negotiate abc=="]
    )
    line = through_json(encode_question(7, info, challenges))
    assert line["type"] == "challenge"
    assert decode_question(line) == (7, info, challenges)


@pytest.mark.parametrize(
    "answer",
    [BasicAuth("alice", SECRET), BearerToken(SECRET), None],
)
def test_credentials_and_none_round_trip(answer: Any) -> None:
    assert decode_answer(through_json(encode_answer(answer))) == answer


def test_a_failure_names_a_type_only() -> None:
    assert decode_answer(failed_answer("failed", "ValueError")) == ProviderFailed(
        "the auth provider failed: ValueError"
    )
    assert decode_answer(failed_answer("returned", "int")) == ProviderFailed(
        "the auth provider returned a int, not BasicAuth, BearerToken or None"
    )
    with pytest.raises(ValueError, match="must name a type") as caught:
        decode_answer({"failed": f"ValueError: {SECRET}"})
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"credentials": {"kind": "app"}},
        {"credentials": {"kind": "basic", "user": "a:b", "password": SECRET}},
        {"credentials": {"kind": "basic", "user": "a", "password": SECRET, "x": 1}},
        {"credentials": {"kind": "bearer", "token": f"two {SECRET}"}},
        {"credentials": "Basic abc"},
    ],
)
def test_malformed_answers_are_refused_without_their_secret(body: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)) as caught:
        decode_answer(body)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "line",
    [
        {"id": -1, "task": {"id": 1, "url": "u"}, "challenges": []},
        {"id": 1, "task": None, "challenges": []},
        {"id": 1, "task": {"id": 1, "url": "u"}, "challenges": [{"scheme": 5}]},
        {"id": 1, "task": {"id": 1, "url": "u"}, "challenges": [{"scheme": "b", "params": [1]}]},
        {"id": 1, "task": {"id": 1, "url": "u"}, "challenges": [{}] * 33},
    ],
)
def test_malformed_questions_are_refused(line: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        decode_question(line)
