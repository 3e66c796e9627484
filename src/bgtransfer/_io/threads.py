"""Blocking calls off the event loop, at the cost of one thread hop.

``anyio.to_thread.run_sync`` checks a capacity limiter, builds a cancel scope
and looks up the backend on every call; on the hot path (a few calls per file,
thousands of files a second) that costs more than the system calls themselves.
The engine only ever runs on asyncio (aiohttp needs it), so file operations go
straight to the loop's default executor, the pool aiofiles uses too.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio

__all__ = ["run_blocking", "start_blocking", "start_thread"]

T = TypeVar("T")


def start_blocking(func: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """Start ``func(*args)`` in a worker thread; the future completes on the loop.

    The call runs to its end whatever happens to the caller: cancelling the
    returned future does not stop the thread.
    """
    return asyncio.get_running_loop().run_in_executor(None, func, *args)


async def run_blocking(func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` in a worker thread, waited for even when the caller is cancelled.

    The wait is shielded: a file operation that has started always finishes
    (and its outcome is known) before a cancellation goes on; the cancellation
    is delivered at the caller's next checkpoint.
    """
    future = start_blocking(func, *args)
    with anyio.CancelScope(shield=True):
        await asyncio.wait([future])
    return future.result()


def start_thread(func: Callable[..., T], *args: object, name: str) -> asyncio.Future[T]:
    """Start ``func(*args)`` in a new thread of its own; the future completes on the loop.

    For a call that lasts (a whole body): in the executor it would hold one of a
    few shared threads. The thread is a daemon, like the executor's, and the call
    runs to its end whatever happens to the caller.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = func(*args)
        except BaseException as exc:  # handed to the loop, not swallowed
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
