"""Fan-out of task events to any number of pull-based subscribers.

The engine publishes each event once; every subscriber has its own
:class:`~bgtransfer._core.progress.EventBuffer` (bounded, coalescing progress),
so a slow reader never slows a transfer or another reader. Observers pull:
:class:`EventStream` is an async iterator, there are no callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from .._core.events import (
    EventsDeliveredEvent,
    EventsGapEvent,
    ProgressEvent,
    SessionEvent,
    TaskEvent,
    is_terminal,
)
from .._core.progress import BufferStatistics, EventBuffer

__all__ = ["EventHub", "EventStream"]

E = TypeVar("E", bound=SessionEvent)


class EventStream(Generic[E]):
    """An async iterator over events; see ``DownloadTask.events()`` and ``Session.events()``.

    A task's stream ends after that task's terminal event; the session's stream
    ends when the session closes (or, opened with ``follow=False``, after its
    ``EventsDeliveredEvent``). Leaving the ``async for`` early is fine; call
    :meth:`aclose` (or use ``async with``) to unsubscribe at once rather than at
    garbage collection.

    With ``Configuration(acknowledge="auto")`` (the default) a terminal event
    counts as *delivered* (acknowledged, so a later process does not deliver it
    again) as soon as this stream returns it; the journal holds the task's end by
    then. With ``"explicit"`` a stream never acknowledges: the application does.
    """

    def __init__(self, hub: EventHub, *, task_id: int | None) -> None:
        self._hub = hub
        self._task_id = task_id
        self._buffer = EventBuffer()
        self._wakeup = asyncio.Event()
        self._closed = False  # no more events will be pushed
        self._finished = False  # the reader has seen the end
        self._error: BaseException | None = None  # raised after the last event

    # -- producer side (the hub) ------------------------------------------------

    def _push(self, event: SessionEvent) -> None:
        if self._closed:
            return
        self._buffer.push(event)
        if self._task_id is not None and is_terminal(event):
            self._closed = True
        self._wakeup.set()

    def _close(self, error: BaseException | None = None) -> None:
        """No more events; ``error``: what the read after the last one raises
        (the daemon's connection was lost for good, say)."""
        if error is not None and not self._closed and not self._finished:
            self._error = error
        self._closed = True
        self._wakeup.set()

    # -- consumer side ----------------------------------------------------------

    def __aiter__(self) -> EventStream[E]:
        return self

    async def __anext__(self) -> E:
        while not self._buffer:
            if self._closed or self._finished:
                self._finish()
                error, self._error = self._error, None
                if error is not None:
                    raise error
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        event = self._buffer.peek()
        if not isinstance(event, ProgressEvent | EventsDeliveredEvent | EventsGapEvent):
            # The journal holds the end before anyone sees it: a reader may act
            # on it at once (move the file away) and the process die next. The
            # event stays buffered meanwhile: a reader cancelled here gets it from
            # its next read. (Nothing else takes from the buffer's head.) A
            # numbered event waits for its number to be in the log (committed
            # with the task's end): a number a reader has seen is never reused.
            if event.seq is not None:
                await self._hub._logged(event.seq)
            elif is_terminal(event):
                await self._hub._durable(event.task_id)
            if is_terminal(event):
                self._hub._handed_out(event.task_id)  # auto: delivered from here on
        self._buffer.pop()
        return cast(E, event)

    async def aclose(self) -> None:
        """Stop receiving events; buffered ones are discarded."""
        self._buffer.clear()
        self._finish()

    async def __aenter__(self) -> EventStream[E]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def statistics(self) -> BufferStatistics:
        """How this subscriber's buffer is doing (buffered, coalesced, delivered...)."""
        return self._buffer.statistics()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._closed = True
            self._hub._unsubscribe(self)


class EventHub:
    """Routes each published event to the task's subscribers and the session's."""

    def __init__(
        self,
        *,
        on_delivered: Callable[[int], None] | None,
        durable: Callable[[int], Awaitable[None]] | None = None,
        logged: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """``on_delivered``: called with a task whose terminal event a stream has
        just handed out (automatic acknowledgement); None when only the
        application acknowledges. ``durable``: awaited before a terminal event is
        handed out, until the journal holds it; ``logged``: awaited before an
        event numbered in the event log is handed out, until the log holds it."""
        # Per task, weak references in a list: a task has a subscriber or two, and
        # is published to a few times (a WeakSet costs more than that traffic).
        # A stream dropped without aclose() leaves a dead reference until the
        # task's end.
        self._by_task: dict[int, list[weakref.ref[EventStream[Any]]]] = {}
        # The session's streams, the same way: a WeakSet's iteration, at every
        # event, cost the daemon (whose attachment is one) more than the push.
        self._all: list[weakref.ref[EventStream[Any]]] = []
        self._closed = False
        self._delivered = on_delivered
        self._durable_hook = durable
        self._logged_hook = logged

    def _handed_out(self, task_id: int) -> None:
        """A stream has returned the task's terminal event to its reader."""
        if self._delivered is not None:
            self._delivered(task_id)

    async def _durable(self, task_id: int) -> None:
        """Return once the task's end is journaled (no-op without a journal)."""
        if self._durable_hook is not None:
            await self._durable_hook(task_id)

    async def _logged(self, seq: int) -> None:
        """Return once the event log holds the event numbered ``seq``."""
        if self._logged_hook is not None:
            await self._logged_hook(seq)

    def subscribe(
        self,
        task_id: int | None,
        backlog: Iterable[TaskEvent | EventsGapEvent],
        *,
        replayed: int = 0,
        follow: bool = True,
        cursor: int | None = None,
    ) -> EventStream[Any]:
        """A new stream for one task (or all, with None), first fed ``backlog``;
        the session's stream then gets ``EventsDeliveredEvent(replayed=...,
        cursor=...)`` and, when ``follow`` is false, ends there."""
        stream: EventStream[Any] = EventStream(self, task_id=task_id)
        for event in backlog:
            stream._push(event)
        if task_id is None:
            stream._push(EventsDeliveredEvent(replayed=replayed, cursor=cursor))
            if self._closed or not follow:
                stream._close()
            else:
                self._all.append(weakref.ref(stream, self._forget))
        elif not stream._closed:
            self._by_task.setdefault(task_id, []).append(weakref.ref(stream))
        return stream

    def publish(self, event: TaskEvent) -> None:
        subscribers = self._by_task.get(event.task_id)
        if subscribers:
            for ref in tuple(subscribers):
                stream = ref()
                if stream is not None:
                    stream._push(event)
        if is_terminal(event):
            self._by_task.pop(event.task_id, None)
        for ref in tuple(self._all):
            stream = ref()
            if stream is not None:
                stream._push(event)

    def close(self, error: BaseException | None = None) -> None:
        """End every stream (the session is closing); with ``error``, each
        raises it after its last event."""
        self._closed = True
        for refs in self._by_task.values():
            for ref in refs:
                stream = ref()
                if stream is not None:
                    stream._close(error)
        for ref in tuple(self._all):
            stream = ref()
            if stream is not None:
                stream._close(error)
        self._by_task.clear()
        self._all.clear()

    def _forget(self, ref: weakref.ref[EventStream[Any]]) -> None:
        """A session stream dropped without ``aclose()`` was collected."""
        with contextlib.suppress(ValueError):
            self._all.remove(ref)

    def _unsubscribe(self, stream: EventStream[Any]) -> None:
        if stream._task_id is None:
            self._all[:] = [ref for ref in self._all if ref() not in (stream, None)]
        else:
            subscribers = self._by_task.get(stream._task_id)
            if subscribers is not None:
                subscribers[:] = [ref for ref in subscribers if ref() not in (stream, None)]


def snapshot_progress(last: ProgressEvent | None) -> list[TaskEvent]:
    """The backlog progress for a late subscriber: one event whose delta is the total so far."""
    if last is None or last.total_bytes_written == 0:
        return []
    return [
        ProgressEvent(
            task_id=last.task_id,
            bytes_written=last.total_bytes_written,
            total_bytes_written=last.total_bytes_written,
            total_bytes_expected=last.total_bytes_expected,
        )
    ]
