"""Blocking calls off the event loop, at the cost of one thread hop.

``anyio.to_thread.run_sync`` checks a capacity limiter, builds a cancel scope
and looks up the backend on every call; on the hot path (a few calls per file,
thousands of files a second) that costs more than the system calls themselves.
The engine only ever runs on asyncio (aiohttp needs it), so blocking calls go
straight to an executor.

The write pipeline's calls (open, write, close, rename: short, and many) go to
one thread of their own (``submit_file_io``). Every system call a thread makes
releases the GIL and must take it back; with the loop's default executor's
threads busy with several transfers' writes, the loop thread and the workers
keep waiting for each other (``futex``; see "One file thread" in
``docs/design.md``). Calls that may take long (a copy to another file system, journal
commits that fsync, removals) keep using the default executor (``run_blocking``),
so they never hold up the transfers' writes.

A hop still costs more than a small file's whole life on disk: the loop and the
file thread hand the GIL back and forth at every system call, the more so on a
machine whose CPUs are shared. So the shortest calls (a small body that arrived
at once: open, write, close, rename) may run on the loop itself
(``submit_file_io(..., inline=True)``), as nginx, curl and aria2c write, while
they are fast: one that takes longer than ``INLINE_SLOW`` seconds (a stalled
disk, a network file system) sends them all to the file thread for the next
``INLINE_PAUSE`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio

__all__ = [
    "FILE_THREADS",
    "INLINE_PAUSE",
    "INLINE_SLOW",
    "run_blocking",
    "start_blocking",
    "start_thread",
    "submit_file_io",
]

T = TypeVar("T")

FILE_THREADS = 1
"""Threads for the write pipeline's calls, shared by every session of the process."""

INLINE_SLOW = 0.005
"""Seconds an inline call may take before inline calls stop for a while."""

INLINE_PAUSE = 10.0
"""Seconds inline calls go to the file thread after one was slow."""

_inline_paused_until = 0.0  # _clock(); the process's, like the file thread
_clock = time.monotonic

_file_executor: ThreadPoolExecutor | None = None
_file_executor_lock = threading.Lock()


def _file_threads() -> ThreadPoolExecutor:
    global _file_executor  # noqa: PLW0603 - one pool per process, made on first use
    with _file_executor_lock:
        if _file_executor is None:
            _file_executor = ThreadPoolExecutor(
                max_workers=FILE_THREADS, thread_name_prefix="bgtransfer-files"
            )
        return _file_executor


def _forget_file_threads() -> None:
    """In a forked child: the parent's pool has no thread here; make a new one."""
    global _file_executor, _file_executor_lock  # noqa: PLW0603
    _file_executor = None
    _file_executor_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_file_threads)


def submit_file_io(
    on_done: Callable[[T | None, BaseException | None], object],
    func: Callable[..., T],
    *args: object,
    inline: bool = False,
) -> None:
    """Run ``func(*args)`` in the file thread, then ``on_done(result, error)`` on
    the loop (``error`` is what the call raised, else None).

    ``inline``: the caller knows the call is short and touches no file another
    call in flight uses. It runs here, on the loop, and ``on_done`` is called
    before this returns, unless inline calls are paused (a recent one was slow).

    The write pipeline's own primitive: the loop runs ``on_done`` in the
    iteration that notices the call's end. ``run_in_executor`` takes one more:
    it settles a future there, and the future's callbacks (and so whatever
    waits on it) only run in the iteration after. With one write per small
    file, that iteration was a measurable part of a file's cost. If the loop is
    closed when the call ends, ``on_done`` is not called: nobody waits.
    Calls run one after another, in the order they were submitted, each to its
    end whatever happens to the caller.
    """
    if inline and _clock() >= _inline_paused_until:
        _run_inline(on_done, func, args)
        return
    _file_threads().submit(_reporting(asyncio.get_running_loop(), on_done, func, args))


def _run_inline(
    on_done: Callable[[T | None, BaseException | None], object],
    func: Callable[..., T],
    args: tuple[object, ...],
) -> None:
    global _inline_paused_until  # noqa: PLW0603 - the process's, like the file thread
    started = _clock()
    result, error = _outcome(func, args)
    finished = _clock()
    if finished - started > INLINE_SLOW:
        _inline_paused_until = finished + INLINE_PAUSE
    on_done(result, error)


def _outcome(
    func: Callable[..., T], args: tuple[object, ...]
) -> tuple[T | None, BaseException | None]:
    """``func(*args)`` as ``(result, None)``, or ``(None, what it raised)``."""
    try:
        return func(*args), None
    except BaseException as exc:  # handed to on_done, not swallowed
        return None, exc


def _reporting(
    loop: asyncio.AbstractEventLoop,
    on_done: Callable[[T | None, BaseException | None], object],
    func: Callable[..., T],
    args: tuple[object, ...],
) -> Callable[[], None]:
    """A thread's body: ``func(*args)``, then ``on_done(result, error)`` on ``loop``."""

    def run() -> None:
        result, error = _outcome(func, args)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(on_done, result, error)

    return run


def _settler(future: asyncio.Future[T]) -> Callable[[T | None, BaseException | None], None]:
    """An ``on_done`` that settles ``future`` (unless its waiter gave up on it)."""

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    return settle


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
    is delivered at the caller's next cancellation point.
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
    run = _reporting(loop, _settler(future), func, args)
    threading.Thread(target=run, name=name, daemon=True).start()
    return future
