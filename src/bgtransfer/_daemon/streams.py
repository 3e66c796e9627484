"""``Session.events(since=N)`` through the daemon: a stream fed by a request of
its own, asked again from where it stood after the daemon came back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._core.events import EventsDeliveredEvent, ProgressEvent, SessionEvent
from .._engine.hub import EventHub, EventStream
from .._exceptions import SessionClosedError, SessionInUseError
from .attachment import ATTEMPTS, LOST, read_line
from .connection import STOPPING, daemon_error

if TYPE_CHECKING:
    from .attachment import Attachment
    from .snapshots import Snapshots

__all__ = ["CursorStream", "feed"]


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
        self._on_finish = on_finish
        self._feeder = asyncio.get_running_loop().create_task(feed(self))

    def push(self, event: SessionEvent) -> None:
        self._push(event)

    def end(self, error: BaseException | None = None) -> None:
        self._close(error)

    def stop(self) -> None:
        """The session closes: no more events, the ones buffered still read (as
        an in-process session's streams end when it closes)."""
        self._feeder.cancel()
        self._close()

    def _finish(self) -> None:
        super()._finish()
        self._on_finish(self)
        self._feeder.cancel()


async def feed(
    link: Attachment, book: Snapshots, stream: CursorStream, since: int, follow: bool
) -> None:
    """A cursor stream's events: the daemon's answer to ``POST .../events``.
    After a reconnection it asks again from the last number it passed on, and
    skips the repeated backlog's progress and ``EventsDeliveredEvent``."""
    error: BaseException | None = None
    again = False  # asked again after a reconnection: its backlog was seen
    failures = 0  # ends in a row with nothing passed on (bounded)
    try:
        while True:
            await link.ready()
            generation = link.generation
            delivered = False
            try:
                async with link.http.post(
                    link.prefix + "/events",
                    json={"since": since, "follow": follow},
                    headers=link.headers,
                ) as response:
                    if response.status != 200:
                        error = daemon_error(await response.json(content_type=None))
                        stopping = response.status == STOPPING  # asked again of the next
                        lease = response.status == 409 and type(error) is SessionClosedError
                        if not (stopping or lease):
                            return  # (a wrong cursor: the stream's error)
                    while response.status == 200 and (line := await read_line(response)):
                        if line.get("type") != "event":
                            continue
                        event = book.apply(line)
                        seq = getattr(event, "seq", None)
                        end = isinstance(event, EventsDeliveredEvent)
                        repeated = end or (isinstance(event, ProgressEvent) and not delivered)
                        delivered = delivered or end
                        if again and repeated:
                            continue  # the repeated backlog's progress, and its end
                        if seq is not None:
                            since = max(since, seq)
                        stream.push(event)
                        failures = 0
                if delivered and not follow:
                    return
                error = SessionClosedError(f"session {link.identifier!r}: its stream ended")
            except LOST as exc:
                error = exc
            failures += 1
            if failures == ATTEMPTS:
                error = SessionClosedError(
                    f"session {link.identifier!r}: its event stream from cursor {since} "
                    f"broke {failures} times in a row ({error})"
                )
                return
            await link.recover(generation, error)
            error = None
            again = True
    except (SessionClosedError, SessionInUseError) as exc:
        closing = link.closed and link.lost is None and not link.invalidated
        error = None if closing else exc  # (closed by the application: a plain end)
    finally:
        stream.end(error)
