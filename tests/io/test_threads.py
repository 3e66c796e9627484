"""The file thread: the write pipeline's calls run in one thread of their own.

``threads.submit_file_io`` sends every call of the write pipeline (open, write,
close, rename) to one process-wide thread, in order, instead of the loop's
default executor (see the module for why). These tests prove where the calls run,
that they run one after another in the order started, that a session's download
uses it, and that a forked child gets a working thread of its own.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from _helpers import sha256_file
from bgtransfer import Session
from bgtransfer._io import body_writer, threads
from bgtransfer.testing import TestServer

pytestmark = pytest.mark.asyncio


def _file_io(func: Callable[..., object], *args: object) -> asyncio.Future[object]:
    """``threads.submit_file_io``, with a future settled by its ``on_done``."""
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    def on_done(result: object, error: BaseException | None) -> None:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    threads.submit_file_io(on_done, func, *args)
    return future


async def test_file_calls_run_in_the_one_file_thread_in_the_order_started() -> None:
    """Calls started together do not overlap and run in the order started, all in
    one thread named ``bgtransfer-files``."""
    lock = threading.Lock()
    log: list[tuple[str, int, str]] = []
    release = threading.Event()

    def call(index: int) -> str:
        with lock:
            log.append(("start", index, threading.current_thread().name))
        if index == 0:  # the first call holds the thread while the others are queued
            assert release.wait(timeout=10)
        with lock:
            log.append(("end", index, threading.current_thread().name))
        return threading.current_thread().name

    futures = [_file_io(call, index) for index in range(5)]
    release.set()
    names = await asyncio.gather(*futures)
    assert [(event, index) for event, index, _ in log] == [
        (event, index) for index in range(5) for event in ("start", "end")
    ]
    assert len(set(names)) == threads.FILE_THREADS == 1
    assert names[0].startswith("bgtransfer-files")
    assert names[0] != threading.current_thread().name


async def test_a_download_writes_in_the_file_thread(
    server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every call of the write pipeline of a session's downloads runs in the file
    thread, never in the loop's default executor, except a small body's only
    call (open, write, close, rename), which runs on the loop."""
    files = [server.add_file(f"/t{n}.bin", size=20_000 + 70_000 * n) for n in range(4)]
    names: list[str] = []
    real = body_writer.write_chunks

    def recording(*args: object) -> object:
        names.append(threading.current_thread().name)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(body_writer, "write_chunks", recording)
    async with Session() as session:
        tasks = [
            await session.download(server.url(file.path), out_dir / file.path[1:]) for file in files
        ]
        for task in tasks:
            await task.wait()
    for file in files:
        assert sha256_file(out_dir / file.path[1:]) == file.sha256
    assert len(names) >= len(files)
    loop_thread = threading.current_thread().name
    assert names.count(loop_thread) == 1  # the 20,000-byte file's
    assert {name.split("_")[0] for name in names if name != loop_thread} == {"bgtransfer-files"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_a_forked_child_gets_a_file_thread_of_its_own() -> None:
    """The parent's file thread does not exist in a forked child; without the
    at-fork hook the child's first file call would wait forever on a pool whose
    thread is gone."""
    assert await _file_io(threading.current_thread) is not None  # pool made
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: no pytest from here on, only an exit code
        code = 1
        try:

            async def child() -> str:
                return await asyncio.wait_for(_file_io(lambda: threading.current_thread().name), 10)

            name = asyncio.run(child())
            code = 0 if name.startswith("bgtransfer-files") else 2
        except BaseException:  # reported through the exit code
            code = 3
        finally:
            sys.stdout.flush()
            os._exit(code)
    # The child exits within its own timeout whatever happens: wait for it.
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


async def test_submit_file_io_reports_result_or_error_on_the_loop_thread() -> None:
    """``on_done`` runs on the loop's thread with the call's result, or with what
    it raised (never both), in the order the calls were submitted."""
    loop_thread = threading.current_thread()
    reports: list[tuple[str, object, object, threading.Thread]] = []
    done = asyncio.Event()

    def boom() -> None:
        raise OSError(5, "disk on fire")

    def on_done(label: str) -> Callable[[object, BaseException | None], None]:
        def report(result: object, error: BaseException | None) -> None:
            reports.append((label, result, error, threading.current_thread()))
            if len(reports) == 2:
                done.set()

        return report

    threads.submit_file_io(on_done("ok"), lambda: "written")
    threads.submit_file_io(on_done("failed"), boom)
    await done.wait()
    assert [(label, result) for label, result, _, _ in reports] == [
        ("ok", "written"),
        ("failed", None),
    ]
    assert reports[0][2] is None
    error = reports[1][2]
    assert isinstance(error, OSError)
    assert error.errno == 5
    assert {thread for *_, thread in reports} == {loop_thread}


# -- inline calls: the shortest ones run on the loop, while they are fast ----------------


@attrs.define
class FakeClock:
    """``threads._clock``: moves only when a call says it took time."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(threads, "_clock", fake)
    monkeypatch.setattr(threads, "INLINE_SLOW", 0.005)  # conftest.py makes it infinite
    return fake


def _inline(func: Callable[..., object], *args: object) -> tuple[list[object], bool]:
    """``submit_file_io(..., inline=True)``: the outcomes ``on_done`` got before it
    returned, and whether the call ran on the loop's thread."""
    outcomes: list[object] = []
    ran_in: list[str] = []

    def recording(*args: object) -> object:
        ran_in.append(threading.current_thread().name)
        return func(*args)

    threads.submit_file_io(lambda *outcome: outcomes.append(outcome), recording, *args, inline=True)
    return outcomes, ran_in == [threading.current_thread().name]


async def test_an_inline_call_runs_on_the_loop_and_reports_before_returning(
    clock: FakeClock,
) -> None:
    outcomes, on_loop = _inline(lambda a, b: a + b, 2, 3)
    assert on_loop
    assert outcomes == [(5, None)]


async def test_an_inline_calls_error_goes_to_on_done_like_a_threads(clock: FakeClock) -> None:
    error = OSError(28, "No space left on device")

    def failing() -> None:
        raise error

    outcomes, on_loop = _inline(failing)
    assert on_loop
    assert outcomes == [(None, error)]


async def test_a_slow_inline_call_sends_the_next_ones_to_the_file_thread_for_a_while(
    clock: FakeClock,
) -> None:
    """A call that took longer than INLINE_SLOW (a stalled disk) must not be
    followed by more on the loop: for INLINE_PAUSE seconds the calls asked to
    run inline go to the file thread (on_done comes later, on the loop); then
    they run inline again. A call just under the limit changes nothing."""

    def taking(seconds: float) -> str:
        clock.now += seconds
        return threading.current_thread().name

    assert _inline(taking, threads.INLINE_SLOW)[1]  # at the limit: still fast
    assert _inline(taking, 0.0)[1]
    slow_outcomes, slow_on_loop = _inline(taking, threads.INLINE_SLOW * 2)
    assert slow_on_loop
    assert slow_outcomes[0][1] is None  # the slow call itself completed normally

    paused_from = clock.now
    for elapsed in (0.0, threads.INLINE_PAUSE / 2, threads.INLINE_PAUSE - 0.001):
        clock.now = paused_from + elapsed
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        threads.submit_file_io(
            lambda result, error, future=future: future.set_result((result, error)),
            taking,
            0.0,
            inline=True,
        )
        assert not future.done()  # not before returning: it went to the thread
        name, error = await future
        assert error is None
        assert name.startswith("bgtransfer-files")

    clock.now = paused_from + threads.INLINE_PAUSE
    assert _inline(taking, 0.0)[1]  # the pause is over


async def test_a_call_not_asked_to_run_inline_never_does(clock: FakeClock) -> None:
    name = await _file_io(lambda: threading.current_thread().name)
    assert name.startswith("bgtransfer-files")
