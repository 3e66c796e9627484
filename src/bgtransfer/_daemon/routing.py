"""The daemon's routes: a request's method and path to its handler, by one dict look-up.

The daemon serves with aiohttp's low-level server (``web.Server``) and this
table instead of ``web.Application`` and its router: about twenty routes, all
of one shape (``/v1/<name>`` or ``/v1/sessions/<identifier>/<command>``), where
the router tried the session routes' patterns one after another on every
request (docs/design.md, "The daemon routes by itself"). A path is cut at its
slashes once: the session's identifier, and a task's (or a question's) number,
come out of it, and what is left is the route's key (``/tasks/{n}/cancel``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, NamedTuple

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from .protocol import Refused

__all__ = [
    "NUMBER",
    "SESSION",
    "Handler",
    "Routes",
    "Target",
    "command_key",
    "request_factory",
]

SESSION: Final = "/v1/sessions/{identifier}"  # the start of a session route's key
NUMBER: Final = "{n}"  # a task's (or a question's) id in a route's key
_SESSIONS: Final = "/v1/sessions/"


class Target(NamedTuple):
    """What a request's path names besides its route."""

    identifier: str  # the session's, decoded ("" for the daemon's own routes)
    number: int | None  # the task's or the question's id in the path


Handler = Callable[[web.BaseRequest, Target], Awaitable[web.StreamResponse]]

_NO_TARGET: Final = Target("", None)


class Routes:
    """``(method, key)`` to handler. A key is the route's path as the
    protocol's page writes it, the session's identifier ``{identifier}`` and
    a number ``{n}`` (``/v1/sessions/{identifier}/tasks/{n}/wait``)."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._keys: set[str] = set()

    def add(self, method: str, key: str, handler: Handler) -> None:
        self._handlers[method, key] = handler
        self._keys.add(key)
        if method == "GET":  # as aiohttp's add_get: HEAD answers too (without a body)
            self._handlers["HEAD", key] = handler

    def resolve(self, method: str, path: str) -> tuple[Handler, Target]:
        """The handler of ``path`` (aiohttp's ``path_safe``: decoded but for
        ``%2F`` and ``%25``) and what it names; :class:`Refused` 404 for a path
        no route has, 405 for a method it does not take."""
        key, target = _split(path)
        handler = self._handlers.get((method, key))
        if handler is not None:
            return handler, target
        if key in self._keys:
            raise Refused(405, RuntimeError("Method Not Allowed"))
        raise Refused(404, RuntimeError("Not Found"))


def _split(path: str) -> tuple[str, Target]:
    if not path.startswith(_SESSIONS):
        return path, _NO_TARGET
    identifier, slash, rest = path[len(_SESSIONS) :].partition("/")
    found = command_key(rest) if identifier and slash else None
    if found is None:
        return path, _NO_TARGET  # (no such route)
    key, number = found
    return SESSION + key, Target(_unquote(identifier), number)


def command_key(rest: str) -> tuple[str, int | None] | None:
    """A session route's key below ``/v1/sessions/{identifier}`` and the
    number in it, from the path after the identifier's slash (``tasks/12/cancel``:
    ``/tasks/{n}/cancel`` and 12); None for a path with two numbers (no route
    has two) or with the placeholder ``{n}`` itself. The command channel names
    its commands by these paths too."""
    number = None
    parts = rest.split("/")
    for index, part in enumerate(parts):
        if part == NUMBER:  # the table's placeholder itself names no task
            return None
        if part.isascii() and part.isdigit():  # [0-9]+, as the router's patterns were
            if number is not None:
                return None
            number = int(part)
            parts[index] = NUMBER
    return "/" + "/".join(parts), number


def _unquote(value: str) -> str:
    """What aiohttp's router made of a path segment (``%2F`` and ``%25``
    are all ``path_safe`` leaves encoded)."""
    if "%" not in value:
        return value
    return value.replace("%2F", "/").replace("%25", "%")


RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, AbstractStreamWriter, "asyncio.Task[None]"],
    web.BaseRequest,
]


def request_factory(max_body: int) -> RequestFactory:
    """``web.Server``'s requests, their bodies bounded by ``max_body`` (beyond:
    aiohttp's 413 when read, as ``web.Application(client_max_size=...)``'s)."""

    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        loop = asyncio.get_running_loop()
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=max_body
        )

    return make
