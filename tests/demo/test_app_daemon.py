"""``bgtransfer demo --daemon`` as a terminal app, driven by Textual's pilot: the
rows' downloads in the transfer daemon, the files on a detached server process;
quitting leaves both running, and the next run shows the rows where they are."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from _helpers import kill_daemon

pytest.importorskip("textual", reason="the demo app needs textual (pip install 'bgtransfer[cli]')")

from textual.pilot import Pilot
from textual.widgets import DataTable

from bgtransfer._demo.app import DemoApp
from bgtransfer._demo.controller import DemoController
from bgtransfer._demo.model import DemoFile, RowState
from bgtransfer._demo.server import read_log, running_server, stop_server
from bgtransfer.testing import TestServer

# Small files and a slow server (about 330 KB/s per connection): every row is
# still downloading when the test acts on its first progress.
FILES = (
    DemoFile("/demo/networking-overview.pdf", 70_000, "Networking overview"),
    DemoFile("/demo/session-video-480p.mp4", 440_000, "Session video (480p)"),
    DemoFile("/demo/sample-code.zip", 910_000, "Sample code"),
    DemoFile("/demo/session-video-720p.mp4", 1_730_000, "Session video (720p)"),
    DemoFile("/demo/session-video-1080p.mp4", 2_000_000, "Session video (1080p)"),
)
THROTTLE = (16_384, 0.05)
TIMEOUT = 60


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose detached server and daemon are stopped after the test."""
    state = tmp_path / "state"
    try:
        yield state
    finally:
        asyncio.run(stop_server(state))
        kill_daemon(state)


@asynccontextmanager
async def demo(state_dir: Path, out_dir: Path) -> AsyncIterator[tuple[DemoApp, Pilot[int]]]:
    controller = DemoController(
        state_dir, output=out_dir, files=FILES, throttle=THROTTLE, daemon=True
    )
    app = DemoApp(controller)
    async with app.run_test(size=(150, 30)) as pilot:
        async with asyncio.timeout(TIMEOUT):
            await app.wait_until(lambda: app.ready)
        yield app, pilot


async def until(app: DemoApp, predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        await app.wait_until(predicate)


def state(app: DemoApp, index: int) -> RowState:
    return app.controller.model.rows[index].state


async def select(pilot: Pilot[int], index: int) -> None:
    table = pilot.app.query_one(DataTable)
    while table.cursor_row < index:
        await pilot.press("down")
    while table.cursor_row > index:
        await pilot.press("up")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.asyncio
async def test_quit_and_reopen_through_the_daemon_shows_the_rows_where_they_were(
    state_dir: Path, out_dir: Path
) -> None:
    async with demo(state_dir, out_dir) as (app, pilot):
        rows = app.controller.model.rows
        served = app.controller.served
        assert served.pid is not None  # a process of its own
        for index in (0, 2, 4):
            await select(pilot, index)
            await pilot.press("space")
        await until(app, lambda: state(app, 0) is RowState.READY)
        await until(app, lambda: rows[2].received > 0 and rows[4].received > 0)
        await select(pilot, 2)
        await pilot.press("space")  # row 2 paused, row 4 left downloading
        await until(app, lambda: rows[2].resume_data is not None)
        paused_at = rows[2].received
        left_at = rows[4].received
        assert state(app, 4) is RowState.RUNNING
        await pilot.press("q")
    assert running_server(state_dir) == served  # it outlives the app

    async with demo(state_dir, out_dir) as (app, pilot):
        rows = app.controller.model.rows
        assert app.controller.served == served  # found and reused
        assert state(app, 0) is RowState.READY
        assert state(app, 2) is RowState.PAUSED
        assert rows[2].received == paused_at
        assert state(app, 4) in (RowState.RUNNING, RowState.READY)
        assert rows[4].received >= left_at
        await until(app, lambda: state(app, 4) is RowState.READY)
        await select(pilot, 2)
        await pilot.press("space")  # download_with_resume_data()
        await until(app, lambda: state(app, 2) is RowState.READY)
        await pilot.pause()
        assert [str(app.query_one(DataTable).get_cell(f.path, "state")) for f in FILES] == [
            "Ready",
            "Not started",
            "Ready",
            "Not started",
            "Ready",
        ]
    log = read_log(state_dir)
    # The daemon went on with row 4 while no app was open: one GET, never resumed.
    assert [rng for path, rng in log if path == FILES[4].path] == [None]
    assert [rng for path, rng in log if path == FILES[2].path] == [None, f"bytes={paused_at}-"]
    expected = expected_digests()
    for index in (0, 2, 4):
        assert sha256(out_dir / FILES[index].name) == expected[FILES[index].path]


def expected_digests() -> dict[str, str]:
    """What the demo's server serves, from the test server's own content."""
    reference = TestServer()
    return {f.path: reference.add_file(f.path, size=f.size).sha256 for f in FILES}


@pytest.mark.asyncio
async def test_reset_through_the_daemon_stops_the_detached_server(
    state_dir: Path, out_dir: Path
) -> None:
    async with demo(state_dir, out_dir) as (app, pilot):
        pid = app.controller.served.pid
        await pilot.press("a")
        await until(app, lambda: state(app, 0) is RowState.READY)
        await pilot.press("r")
        await until(app, lambda: all(state(app, i) is RowState.IDLE for i in range(5)))
        assert running_server(state_dir) is None
        assert list(out_dir.iterdir()) == []
        await select(pilot, 0)
        await pilot.press("space")  # a start after the reset starts a server again
        await until(app, lambda: state(app, 0) is RowState.READY)
        again = running_server(state_dir)
        assert again is not None
        assert again.pid != pid
        assert sha256(out_dir / FILES[0].name) == expected_digests()[FILES[0].path]
