"""How the daemon's client closes: the commands it waits for (acknowledgements,
the detach) get their answer even when the closing caller is cancelled, and
within a bound (``client._finish``). No socket."""

from __future__ import annotations

import asyncio

import pytest

from bgtransfer._daemon.client import _finish

pytestmark = pytest.mark.asyncio


async def test_a_cancelled_caller_still_waits_for_the_command_then_is_cancelled() -> None:
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    started = asyncio.Event()

    async def command() -> str:
        started.set()
        return await answer

    async def closing() -> None:
        await _finish(command(), 10.0)

    closer = asyncio.create_task(closing())
    await started.wait()
    closer.cancel()
    await asyncio.sleep(0)  # (the cancel reached the closer's wait)
    assert not closer.done()  # it waits for the command's answer
    answer.set_result("answered")
    with pytest.raises(asyncio.CancelledError):
        await closer
    assert answer.result() == "answered"


async def test_a_command_past_the_bound_is_cancelled_and_closing_goes_on() -> None:
    gate = asyncio.Event()
    cancelled = False

    async def command() -> None:
        nonlocal cancelled
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled = True
            raise

    await _finish(command(), 0.01)  # returns: the bound passed
    assert cancelled


async def test_the_commands_error_is_the_callers() -> None:
    async def command() -> None:
        raise ConnectionError("gone")

    with pytest.raises(ConnectionError, match="gone"):
        await _finish(command(), 10.0)
    assert await asyncio.wait_for(_finish(asyncio.sleep(0, "done"), 10.0), 5) is None
