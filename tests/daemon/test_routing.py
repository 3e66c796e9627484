"""The daemon's route table (``_daemon/routing.py``): paths to handlers, no sockets."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from bgtransfer._daemon.commands import COMMANDS
from bgtransfer._daemon.protocol import Refused
from bgtransfer._daemon.routing import SESSION, Routes, Target


def _handler(name: str) -> Any:
    async def handler(request: web.BaseRequest, target: Target) -> web.StreamResponse:
        raise AssertionError(name)  # never called: the table is what is tested

    handler.__name__ = name
    return handler


@pytest.fixture
def routes() -> Routes:
    table = Routes()
    table.add("GET", "/v1/hello", _handler("hello"))
    table.add("POST", "/v1/stop", _handler("stop"))
    table.add("POST", SESSION + "/attach", _handler("attach"))
    for path in COMMANDS:
        table.add("POST", SESSION + path, _handler(path))
    return table


@pytest.mark.parametrize(
    ("method", "path", "name", "target"),
    [
        ("GET", "/v1/hello", "hello", Target("", None)),
        ("HEAD", "/v1/hello", "hello", Target("", None)),
        ("POST", "/v1/stop", "stop", Target("", None)),
        ("POST", "/v1/sessions/app.bg/attach", "attach", Target("app.bg", None)),
        ("POST", "/v1/sessions/x/tasks", "/tasks", Target("x", None)),
        ("POST", "/v1/sessions/x/tasks/12/cancel", "/tasks/{n}/cancel", Target("x", 12)),
        ("POST", "/v1/sessions/x/tasks/0/wait", "/tasks/{n}/wait", Target("x", 0)),
        ("POST", "/v1/sessions/x/challenges/7", "/challenges/{n}", Target("x", 7)),
        ("POST", "/v1/sessions/x/events-delivered", "/events-delivered", Target("x", None)),
        # aiohttp's path_safe leaves %2F and %25 encoded; the identifier is decoded
        ("POST", "/v1/sessions/..%2F/attach", "attach", Target("../", None)),
        ("POST", "/v1/sessions/a%25b/tasks", "/tasks", Target("a%b", None)),
    ],
)
def test_a_path_resolves_to_its_handler_and_target(
    routes: Routes, method: str, path: str, name: str, target: Target
) -> None:
    handler, found = routes.resolve(method, path)
    assert handler.__name__ == name
    assert found == target


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/v1/sessions/x/attach", 405),
        ("POST", "/v1/hello", 405),
        ("POST", "/v1/sessions/x", 404),
        ("POST", "/v1/sessions//attach", 404),
        ("POST", "/v1/sessions/x/tasks/", 404),
        ("POST", "/v1/sessions/x/tasks/abc/cancel", 404),
        ("POST", "/v1/sessions/x/tasks/-1/cancel", 404),
        ("POST", "/v1/sessions/x/tasks/\u0661/cancel", 404),  # a digit, not [0-9]
        ("POST", "/v1/sessions/x/tasks/1/2/cancel", 404),
        ("POST", "/v1/sessions/x/v1/hello", 404),  # a session route never reaches another
        ("POST", "/v1/sessions/x/12", 404),
        ("POST", "/v1/sessions/x/tasks/{n}/cancel", 404),  # the placeholder: no number
    ],
)
def test_unknown_paths_and_methods_are_refused(
    routes: Routes, method: str, path: str, status: int
) -> None:
    with pytest.raises(Refused) as refused:
        routes.resolve(method, path)
    assert refused.value.status == status
