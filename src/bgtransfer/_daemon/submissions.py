"""``download()`` calls through the daemon, coalesced: the calls made while no
submission is on its way go to the daemon in one request (``{"each": [...]}``),
each call getting its own snapshot or its own error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from .connection import daemon_error

__all__ = ["SUBMIT_BATCH", "Submissions"]

SUBMIT_BATCH: Final = 512  # requests at most in one batch (the body stays far below MAX_BODY)

Send = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
Queued = tuple[dict[str, Any], "asyncio.Future[dict[str, Any]]"]


class Submissions:
    """A queue of encoded requests and one sender task: the first call starts
    it, and it runs from the next turn of the event loop, so every call made in
    the same turn (``asyncio.gather`` of a thousand ``download()``) goes in one
    request; calls made while a request is on its way go in the next. One
    request at a time: the daemon numbers the tasks in the order of the calls.

    ``send`` takes the batch and answers one result per request, in order:
    ``{"task": <snapshot>}`` or ``{"error": <exception>}``."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._queued: list[Queued] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, encoded: dict[str, Any]) -> dict[str, Any]:
        """The snapshot (wire form) of the task made of ``encoded``; or the
        daemon's error for this request alone."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._queued.append((encoded, future))
        if self._sender is None:
            self._sender = loop.create_task(self._run())
        return await future  # a caller cancelled before its batch left sends nothing

    async def _run(self) -> None:
        try:
            while self._queued:
                batch = [(e, f) for e, f in self._queued[:SUBMIT_BATCH] if not f.done()]
                del self._queued[:SUBMIT_BATCH]
                if batch:
                    await self._one(batch)
        finally:
            self._sender = None
            queued, self._queued = self._queued, []  # only when cancelled
            for _, future in queued:
                future.cancel()

    async def _one(self, batch: list[Queued]) -> None:
        try:
            results = await self._send([encoded for encoded, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            task = result.get("task") if isinstance(result, dict) else None
            if isinstance(task, dict):
                future.set_result(task)
            else:
                future.set_exception(daemon_error(result))
