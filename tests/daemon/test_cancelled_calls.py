"""The daemon client's commands sent without waiting (``suspend()``,
``resume()``, acknowledgements) and the calls after them.

A caller cancelled while it waits for those commands does not cancel them: they
still reach the daemon, and the next call waits for them, in order
(``asyncio.gather`` over them would cancel them with the caller: a ``suspend()``
followed by a ``wait()`` under a timeout could be lost without a word). A
``wait()`` waits for the state commands, not for the acknowledgements.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from _helpers import wait_for_bytes
from bgtransfer import FinishedEvent, Session, TaskSuspendedError
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

TIMEOUT = 60


async def _daemon_state_of(state_dir: Path, task_id: int) -> str:
    """The task's state as the daemon tells it (``bgtransfer status --json``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bgtransfer",
        "status",
        "--json",
        "--state-dir",
        str(state_dir),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0
    [session] = json.loads(out)["sessions"]
    [task] = [task for task in session["tasks"] if task["id"] == task_id]
    return str(task["state"])


def _gate_requests(
    session: Session, ending: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the daemon client's requests whose path ends with ``ending`` until
    the first event is set (as a busy connection pool would); the second is set
    when one is held."""
    link = session._backend._link  # type: ignore[union-attr]
    send = link.send
    gate, at_gate = asyncio.Event(), asyncio.Event()

    async def gated(path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if path.endswith(ending):
            at_gate.set()
            await gate.wait()
        return await send(path, *args, **kwargs)

    monkeypatch.setattr(link, "send", gated)
    return gate, at_gate


@pytest.mark.parametrize("cancelled", ["wait", "metrics"])
async def test_a_suspend_reaches_the_daemon_when_the_next_call_is_cancelled(
    server: TestServer,
    daemon_state: Path,
    out_dir: Path,
    cancelled: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = server.add_file("/held.bin", size=300_000)
    server.set_faults(held.path, Faults(hold_after=100_000))
    async with Session("cancelled", state_dir=daemon_state, daemon=True) as session:
        task = await session.download(server.url(held.path), out_dir / "held.bin")
        await asyncio.wait_for(wait_for_bytes(task, 100_000), TIMEOUT)
        # The suspend's request waits at a gate (a busy connection pool would):
        # the call after it is cancelled while it waits for that request.
        gate, at_gate = _gate_requests(session, "/suspend", monkeypatch)
        task.suspend()  # sent in the background: the next call waits for its answer
        await asyncio.wait_for(at_gate.wait(), TIMEOUT)
        with anyio.move_on_after(0):  # cancelled while it waits for the suspend
            if cancelled == "wait":
                await task.wait()
            else:
                await session.metrics()
        gate.set()
        await asyncio.wait_for(session.metrics(), TIMEOUT)  # a request: it waits for them
        assert await _daemon_state_of(daemon_state, task.id) == "suspended"
        with pytest.raises(TaskSuspendedError):
            await task.wait()


async def test_a_wait_does_not_wait_for_the_acknowledgements_before_it(
    server: TestServer, daemon_state: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop of ``wait()`` calls: each acknowledges its task (``"auto"``), in a
    request of its own; the next ``wait()`` does not wait for that request (an
    acknowledgement settles nothing a wait reads), while a request does."""
    files = [server.add_file(f"/a{n}.bin", size=1000 + n) for n in range(2)]
    async with Session("acks", state_dir=daemon_state, daemon=True) as session:
        tasks = [
            await session.download(server.url(file.path), out_dir / f"a{n}.bin")
            for n, file in enumerate(files)
        ]
        gate, at_gate = _gate_requests(session, "/acknowledge", monkeypatch)
        first = await asyncio.wait_for(tasks[0].wait(), TIMEOUT)
        await asyncio.wait_for(at_gate.wait(), TIMEOUT)  # its acknowledgement, held
        second = await asyncio.wait_for(tasks[1].wait(), TIMEOUT)
        assert isinstance(first, FinishedEvent)
        assert isinstance(second, FinishedEvent)
        gate.set()
        await asyncio.wait_for(session.metrics(), TIMEOUT)  # a request waits for them
    async with Session("acks", state_dir=daemon_state, daemon=True) as again:
        assert again.tasks() == []  # both acknowledged: nothing is handed out again
