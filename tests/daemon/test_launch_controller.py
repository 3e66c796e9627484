"""The launch controller: a real background session, real downloads, a real command.

The session runs in process (``open_backend``, as the daemon will open it);
the test plays the daemon's part, telling the controller about each terminal
event it follows on the backend's stream. Time is a manual clock: a launch
happens when the test moves the clock to its due time, never after a sleep.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_asyncio

from _helpers import sha256_file
from bgtransfer import Configuration, DownloadRequest, Session
from bgtransfer._core.events import is_terminal
from bgtransfer._core.launch import LaunchPolicy
from bgtransfer._core.states import TaskState
from bgtransfer._daemon import launching
from bgtransfer._daemon.launching import LOG_NAME, STATUS_NAME, LaunchController
from bgtransfer._engine.backend import TaskBackend
from bgtransfer._engine.startup import open_backend
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

ID = "com.example.launch"
TIMEOUT = 30.0
T0 = 1_000_000.0

# The launched application: writes what it was given to reports/launch-<n>.json;
# with a socket path, says hello there and waits for "go" before it exits.
APP = r"""
import json, os, socket, sys
reports = sys.argv[1]
n = len(os.listdir(reports))
with open(os.path.join(reports, f"launch-{n}.json"), "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith("BGTRANSFER_")}, f)
print("launched", n, flush=True)
if len(sys.argv) > 2:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[2])
    s.sendall(b"hello\n")
    assert s.recv(3) == b"go\n"
"""


class ManualClock:
    """Time moves only when the test says; timers fire in :meth:`advance`."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self._timers: list[tuple[float, int, _Timer]] = []
        self._count = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(when, callback)
        self._count += 1
        heapq.heappush(self._timers, (when, self._count, timer))
        return timer

    @property
    def pending(self) -> list[float]:
        return sorted(when for when, _, timer in self._timers if not timer.cancelled)

    def advance(self, to: float) -> None:
        self.now = to
        while self._timers and self._timers[0][0] <= to:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()


class _Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    path = tmp_path / "reports"
    path.mkdir()
    return path


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bgt") as name:
        yield Path(name)


@pytest_asyncio.fixture
async def listener(short_dir: Path) -> AsyncIterator[tuple[Path, asyncio.Queue[Any]]]:
    connections: asyncio.Queue[Any] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await connections.put((reader, writer))

    path = short_dir / "s"
    async with await asyncio.start_unix_server(accept, path):
        yield path, connections


def configuration(*command: str, **changes: Any) -> Configuration:
    settings: dict[str, Any] = {
        "launch_command": [sys.executable, *command],
        "launch_delay": 10,
        "launch_delay_max": 1000,
        "acknowledge": "explicit",  # (the test's own stream must not acknowledge)
        "progress_interval": 0,
    }
    return Configuration(**(settings | changes))


async def launched(controller: LaunchController, count: int) -> LaunchPolicy:
    """The status once ``count`` launches have begun and the last has ended."""
    return await asyncio.wait_for(
        controller.wait_status(lambda s: s.launches == count and not s.running), TIMEOUT
    )


def busy(backend: TaskBackend) -> bool:
    """What the daemon tells the controller: a task runs or is queued."""
    return any(t.state in {TaskState.RUNNING, TaskState.CANCELING} for t in backend.tasks())


class Follower:
    """The daemon's part: numbers the session's terminal events (as its event
    log would) and tells the controller about each, and about the activity."""

    def __init__(self, backend: TaskBackend, controller: LaunchController, clock: ManualClock):
        self._backend = backend
        self._controller = controller
        self._clock = clock
        self._stream = backend.subscribe(None)
        self.cursor = 0

    async def terminal_events(self, count: int) -> int:
        """Follow ``count`` more terminal events; the cursor of the last."""
        last = self.cursor + count
        async for event in self._stream:
            if is_terminal(event):
                self.cursor += 1
                self._controller.event_published(self.cursor)
                self._controller.activity(busy(self._backend))
                assert len(self._clock.pending) <= 1  # one timer, whatever happens
                if self.cursor == last:
                    return self.cursor
        raise AssertionError("the stream ended")

    async def aclose(self) -> None:
        await self._stream.aclose()


async def test_five_downloads_one_launch_then_a_doubling_delay(
    server: TestServer, state_dir: Path, out_dir: Path, reports: Path, app: Path
) -> None:
    config = configuration(str(app), str(reports))
    files = [server.add_file(f"/five/{i}.bin", size=10_000 + i) for i in range(5)]
    server.set_faults(files[4].path, Faults(hold_after=5000))  # the last of the batch
    clock = ManualClock()
    async with (
        open_backend(ID, state_dir=state_dir, config=config) as backend,
        LaunchController(ID, state_dir=state_dir, config=config, clock=clock) as controller,
    ):
        await backend.submit_many(
            [DownloadRequest(server.url(f.path), out_dir / f"{i}.bin") for i, f in enumerate(files)]
        )
        controller.activity(busy(backend))
        follower = Follower(backend, controller, clock)
        assert await follower.terminal_events(4) == 4
        # Four wait, the batch runs on: no launch yet, no timer.
        assert controller.status.busy
        assert controller.status.due is None
        assert clock.pending == []
        server.release(files[4].path)
        assert await follower.terminal_events(1) == 5
        await follower.aclose()
        for i, served in enumerate(files):
            assert sha256_file(out_dir / f"{i}.bin") == served.sha256
        # All five wait: one launch, due a delay after the first of them.
        assert controller.status.due == T0 + 10
        assert clock.pending == [T0 + 10]
        assert controller.status.launches == 0
        clock.advance(T0 + 10)
        status = await launched(controller, 1)
        (record,) = status.history
        assert record.status == 0
        assert record.started_at == T0 + 10
        assert record.cursor == 0
        assert record.through == 5
        assert record.pid is not None
        assert [p.name for p in reports.iterdir()] == ["launch-0.json"]  # once
        assert json.loads((reports / "launch-0.json").read_text()) == {
            "BGTRANSFER_IDENTIFIER": ID,
            "BGTRANSFER_STATE_DIR": str(state_dir),
            "BGTRANSFER_CURSOR": "0",
        }
        # Nobody acknowledged: the next waits twice as long (from the end).
        assert status.due == T0 + 10 + 20
        assert clock.pending == [T0 + 30]
        clock.advance(T0 + 29.5)
        assert controller.status.launches == 1
        clock.advance(T0 + 30)
        assert controller.status.running  # begun at once, from the timer
        status = await launched(controller, 2)
        assert status.due == T0 + 30 + 40
        assert len(list(reports.iterdir())) == 2
        # The application comes back and acknowledges: no launch, the delay resets.
        controller.client_attached()
        controller.acknowledged(5)
        controller.client_detached()
        assert controller.status.due is None
        assert controller.status.delay == 10
        assert clock.pending == []
        log = (state_dir / ID / LOG_NAME).read_text()
        assert log.count("--- ") == 2
        assert "launched 0" in log
        assert "launched 1" in log
    stored = json.loads((state_dir / ID / STATUS_NAME).read_text())
    assert LaunchPolicy.from_json(stored, config).history == controller.status.history


async def test_events_while_the_launch_runs_join_it(
    server: TestServer,
    *,
    state_dir: Path,
    out_dir: Path,
    reports: Path,
    app: Path,
    listener: tuple[Path, asyncio.Queue[Any]],
) -> None:
    path, connections = listener
    config = configuration(str(app), str(reports), str(path))
    quick = [server.add_file(f"/quick/{i}.bin", size=5000) for i in range(3)]
    slow = server.add_file("/slow.bin", size=50_000)
    server.set_faults(slow.path, Faults(hold_after=1000))
    clock = ManualClock()
    async with (
        open_backend(ID, state_dir=state_dir, config=config) as backend,
        LaunchController(ID, state_dir=state_dir, config=config, clock=clock) as controller,
    ):
        requests = [
            DownloadRequest(server.url(f.path), out_dir / f.path[1:].replace("/", "-"))
            for f in (*quick, slow)
        ]
        *_, slow_task = await backend.submit_many(requests)
        follower = Follower(backend, controller, clock)
        await follower.terminal_events(3)
        assert controller.status.due is None  # the slow one runs: the batch is not done
        # Suspended, it waits for the application: the launch is due.
        backend.suspend(slow_task.id)
        controller.activity(busy(backend))
        assert controller.status.due == T0 + 10
        clock.advance(T0 + 10)
        reader, writer = await asyncio.wait_for(connections.get(), TIMEOUT)
        assert await reader.readline() == b"hello\n"  # the launched app runs
        backend.resume(slow_task.id)  # (as the application would)
        controller.activity(busy(backend))
        server.release(slow.path)
        await follower.terminal_events(1)
        await follower.aclose()
        assert controller.status.running
        assert controller.status.due is None  # joins the running launch
        assert clock.pending == []
        writer.write(b"go\n")
        await writer.drain()
        status = await launched(controller, 1)
        writer.close()
        assert status.launches == 1
        assert status.due == T0 + 30  # not acknowledged: a second, twice as late
        clock.advance(T0 + 30)
        reader, writer = await asyncio.wait_for(connections.get(), TIMEOUT)
        writer.write(b"go\n")
        status = await launched(controller, 2)
        writer.close()
        assert [r.through for r in status.history] == [3, 4]
        assert len(list(reports.iterdir())) == 2


async def test_a_command_that_cannot_start_is_recorded_and_backs_off(state_dir: Path) -> None:
    (state_dir / ID).mkdir(parents=True)
    missing = str(state_dir / "no-such-app")
    config = configuration().replace(launch_command=[missing])
    clock = ManualClock()
    async with LaunchController(ID, state_dir=state_dir, config=config, clock=clock) as controller:
        controller.event_published(1)
        clock.advance(T0 + 10)
        status = await launched(controller, 1)
        assert status.history[0].error == (
            f"cannot run {missing!r}: No such file or directory (ENOENT)"
        )
        assert status.history[0].status is None
        assert status.due == T0 + 30
        clock.advance(T0 + 30)
        status = await launched(controller, 2)
        assert status.due == T0 + 70


async def test_restore_keeps_the_history_and_loses_a_running_launch(
    state_dir: Path, reports: Path, app: Path, listener: tuple[Path, asyncio.Queue[Any]]
) -> None:
    path, connections = listener
    (state_dir / ID).mkdir(parents=True)
    config = configuration(str(app), str(reports), str(path))
    clock = ManualClock()
    async with LaunchController(ID, state_dir=state_dir, config=config, clock=clock) as controller:
        controller.event_published(1)
        clock.advance(T0 + 10)
        reader, writer = await asyncio.wait_for(connections.get(), TIMEOUT)
        assert await reader.readline() == b"hello\n"
        running = controller.status
    assert running.running  # the daemon stops while its launch runs
    clock.advance(T0 + 100)
    restored = await LaunchController.restore(
        ID, state_dir=state_dir, config=config, latest=2, acknowledged=0, busy=False, clock=clock
    )
    status = restored.status
    assert status.history[0].pid == running.history[0].pid
    assert status.history[0].error == "lost: the daemon stopped while it ran"
    assert status.launches == 1
    assert status.latest == 2
    assert status.due == T0 + 100 + 20
    async with restored:
        pass
    stored = json.loads((state_dir / ID / STATUS_NAME).read_text())
    assert LaunchPolicy.from_json(stored, config).history == status.history  # lost, written
    writer.write(b"go\n")  # the application outlived the controller
    await writer.drain()
    assert await reader.read() == b""
    writer.close()


async def test_a_damaged_status_file_is_ignored(state_dir: Path) -> None:
    (state_dir / ID).mkdir(parents=True)
    (state_dir / ID / STATUS_NAME).write_text('{"format": 1, "history": "no"')
    restored = await LaunchController.restore(
        ID, state_dir=state_dir, config=configuration(), latest=0, acknowledged=0, busy=False
    )
    assert restored.status == LaunchPolicy.from_config(configuration())


async def test_the_real_clock_launches_after_the_delay(
    state_dir: Path, reports: Path, app: Path
) -> None:
    (state_dir / ID).mkdir(parents=True)
    config = configuration(str(app), str(reports), launch_delay=0.05)
    async with LaunchController(ID, state_dir=state_dir, config=config) as controller:
        controller.event_published(1)
        published = controller.status.anchor
        status = await launched(controller, 1)
    assert published is not None
    assert status.history[0].started_at >= published + 0.05
    assert status.history[0].status == 0


async def test_an_in_process_session_launches_nothing(
    server: TestServer, state_dir: Path, out_dir: Path, reports: Path, app: Path
) -> None:
    """It has its application attached by definition: the field is kept, unused."""
    served = server.add_file("/one.bin", size=1000)
    config = configuration(str(app), str(reports), launch_delay=0.001, launch_delay_max=0.001)
    async with Session(ID, state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(served.path), out_dir / "one.bin")
        await task.wait()
        assert session.config.launch_command == (sys.executable, str(app), str(reports))
    assert os.listdir(reports) == []
    assert not (state_dir / ID / LOG_NAME).exists()


async def test_closing_waits_for_a_status_write_in_progress(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status write runs in a thread that cancelling its task does not stop:
    closing must not start a second write of the same file beside it."""
    real_write = launching.write_json
    gate, first, second = threading.Event(), threading.Event(), threading.Event()
    writing: list[int] = []  # writers in progress
    most: list[int] = [0]

    def slow_write(path: Path, value: object) -> None:
        writing.append(1)
        most[0] = max(most[0], len(writing))
        (second if first.is_set() else first).set()
        gate.wait(30)
        try:
            real_write(path, value)
        finally:
            writing.pop()

    monkeypatch.setattr(launching, "write_json", slow_write)
    (state_dir / ID).mkdir(parents=True)
    config = configuration()
    policy = attrs.evolve(LaunchPolicy.from_config(config), delay=40.0)
    controller = LaunchController(ID, state_dir=state_dir, config=config, policy=policy)
    await controller.__aenter__()
    controller.acknowledged(0)  # the delay resets: a status write begins
    assert await asyncio.to_thread(first.wait, 30)
    closing = asyncio.create_task(controller.__aexit__(None, None, None))
    # A second writer would start now, beside the first (bounded: it must not).
    assert not await asyncio.to_thread(second.wait, 1.0)
    gate.set()
    await closing
    assert most[0] == 1
    stored = json.loads((state_dir / ID / STATUS_NAME).read_text())
    assert stored["delay"] == 10
