"""``Session.events(since=N)`` through the daemon: a stream fed by a request of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from .._core.events import SessionEvent
from .._engine.hub import EventHub, EventStream

__all__ = ["CursorStream"]


class CursorStream(EventStream[Any]):
    """An :class:`EventStream` of the client's hub (so handing out, and
    ``acknowledge="auto"``, work as for any stream) that ``feed`` fills from
    the daemon's own cursor stream (``POST .../events``), and ends with
    :meth:`end`. An error it ends with (a wrong cursor, the connection lost) is
    raised by the read after the last event."""

    def __init__(
        self,
        hub: EventHub,
        *,
        feed: Callable[[CursorStream], Coroutine[Any, Any, None]],
        on_finish: Callable[[CursorStream], None],
    ) -> None:
        super().__init__(hub, task_id=None)
        self._error: BaseException | None = None
        self._on_finish = on_finish
        self._feeder = asyncio.get_running_loop().create_task(feed(self))

    def push(self, event: SessionEvent) -> None:
        self._push(event)

    def end(self, error: BaseException | None = None) -> None:
        if error is not None and not self._finished:
            self._error = error
        self._close()

    async def __anext__(self) -> Any:
        try:
            return await super().__anext__()
        except StopAsyncIteration:
            error, self._error = self._error, None
            if error is not None:
                raise error from None
            raise

    def _finish(self) -> None:
        super()._finish()
        self._on_finish(self)
        self._feeder.cancel()
