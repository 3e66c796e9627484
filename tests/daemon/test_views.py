"""What ``bgtransfer status`` shows of a served session (``views.session_status``),
from the session's parts at one moment. No socket, no daemon process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bgtransfer import TaskState
from bgtransfer._core.auth import TaskInfo
from bgtransfer._core.supervisor import SupervisorStatistics
from bgtransfer._daemon.credentials import AppCredentials
from bgtransfer._daemon.sessions import Served
from bgtransfer._daemon.views import session_status
from bgtransfer._engine.backend import TaskSnapshot


def snapshot(task_id: int, state: TaskState) -> TaskSnapshot:
    return TaskSnapshot(
        id=task_id,
        url=f"http://h/{task_id}",
        description=None,
        destination=Path(f"/o/{task_id}"),
        state=state,
        bytes_received=0,
        bytes_expected=None,
        terminal=None,
    )


def served(tasks: list[TaskSnapshot], credentials: AppCredentials) -> Served:
    engine = SimpleNamespace(records=list, clock=lambda: 0.0)
    backend = SimpleNamespace(
        engine=engine,
        tasks=lambda: tasks,
        statistics=lambda: SupervisorStatistics(
            active=0, queued=0, active_by_origin={}, queued_by_origin={}
        ),
    )
    fake: Any = SimpleNamespace(
        identifier="s",
        backend=backend,
        lease=None,
        client_pid=None,
        launch=None,
        credentials=credentials,
    )
    return cast(Served, fake)


@pytest.mark.asyncio
async def test_a_task_no_longer_running_is_not_shown_waiting_for_the_app() -> None:
    """Suspended (or cancelled) while its question waits, a task withdraws the
    question only when its runner next runs; a status taken between the two shows
    it as what it is now, not as waiting for the app."""
    credentials = AppCredentials("s")
    asks = [
        asyncio.create_task(
            credentials.ask(TaskInfo(id=n, url=f"http://h/{n}", description=None), ())
        )
        for n in (1, 2)
    ]
    await asyncio.sleep(0)  # (both questions are asked and wait)
    assert credentials.waiting == 2
    try:
        status = session_status(
            served([snapshot(1, TaskState.RUNNING), snapshot(2, TaskState.SUSPENDED)], credentials)
        )
        running, suspended = status["tasks"]
        assert (running["waiting_for"], running["activity"]) == (
            "credentials",
            "waiting for the app: credentials",
        )
        assert (suspended["waiting_for"], suspended["activity"]) == (None, "suspended")
    finally:
        for ask in asks:
            ask.cancel()
        await asyncio.gather(*asks, return_exceptions=True)
    assert credentials.waiting == 0
