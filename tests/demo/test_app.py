"""``bgtransfer demo`` as a terminal app, driven by Textual's pilot on a real
loopback server, a real background session and real files."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

pytest.importorskip("textual", reason="the demo app needs textual (pip install 'bgtransfer[cli]')")

from textual.pilot import Pilot
from textual.widgets import Button, DataTable

from bgtransfer._demo.app import ALL_DONE, DemoApp
from bgtransfer._demo.controller import DemoController
from bgtransfer._demo.model import DemoFile, RowState
from bgtransfer.testing import Faults

# The five files at a tenth of their size: the same app, a quicker test.
FILES = (
    DemoFile("/demo/networking-overview.pdf", 70_000, "Networking overview"),
    DemoFile("/demo/session-video-480p.mp4", 440_000, "Session video (480p)"),
    DemoFile("/demo/sample-code.zip", 910_000, "Sample code"),
    DemoFile("/demo/session-video-720p.mp4", 1_730_000, "Session video (720p)"),
    DemoFile("/demo/session-video-1080p.mp4", 2_900_000, "Session video (1080p)"),
)
TIMEOUT = 60


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@asynccontextmanager
async def demo(
    state_dir: Path, out_dir: Path, *, hold: dict[int, int] | None = None
) -> AsyncIterator[tuple[DemoApp, Pilot[int]]]:
    """The app, open and reattached; ``hold`` holds row i's response after n bytes."""
    app = DemoApp(DemoController(state_dir, output=out_dir, files=FILES, throttle=None))
    async with app.run_test(size=(150, 30)) as pilot:
        async with asyncio.timeout(TIMEOUT):
            await app.wait_until(lambda: app.ready)
        for button in app.query(Button):
            button.active_effect_duration = 0  # (a button ignores clicks while it flashes)
        for index, offset in (hold or {}).items():
            app.controller.server.set_faults(FILES[index].path, Faults(hold_after=offset))
        yield app, pilot


async def until(app: DemoApp, predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        await app.wait_until(predicate)


def state(app: DemoApp, index: int) -> RowState:
    return app.controller.model.rows[index].state


def shown(app: DemoApp, index: int) -> str:
    """The State column of row ``index`` as the table shows it."""
    table = app.query_one(DataTable)
    return str(table.get_cell(FILES[index].path, "state"))


async def select(pilot: Pilot[int], index: int) -> None:
    table = pilot.app.query_one(DataTable)
    while table.cursor_row < index:
        await pilot.press("down")
    while table.cursor_row > index:
        await pilot.press("up")


def assert_ready(app: DemoApp, out_dir: Path, index: int) -> None:
    served = app.controller.server.file(FILES[index].path)
    assert sha256(out_dir / FILES[index].name) == served.sha256
    assert state(app, index) is RowState.READY
    assert shown(app, index) == "Ready"


@pytest.mark.asyncio
async def test_start_all_downloads_every_file_verified_and_notifies(
    state_dir: Path, out_dir: Path
) -> None:
    async with demo(state_dir, out_dir) as (app, pilot):
        assert [shown(app, i) for i in range(5)] == ["Not started"] * 5
        await pilot.press("a")
        await until(app, lambda: app.controller.model.all_ready)
        await pilot.pause()
        for index in range(5):
            assert_ready(app, out_dir, index)
        assert app.notices == [ALL_DONE]
        assert app.controller.server.statistics().peak_connections <= 2
        await pilot.pause()
        screen = app.export_screenshot()  # what the terminal shows
        assert screen.count("Ready") == 5


@pytest.mark.asyncio
async def test_pause_then_start_continues_from_the_offset(state_dir: Path, out_dir: Path) -> None:
    size = FILES[4].size
    async with demo(state_dir, out_dir, hold={4: 1_000_000}) as (app, pilot):
        server, row = app.controller.server, app.controller.model.rows[4]
        await select(pilot, 4)
        await pilot.press("space")
        await until(app, lambda: row.received > 0)
        await pilot.press("space")  # pause: cancel_with_resume_data()
        await until(app, lambda: row.resume_data is not None)
        assert shown(app, 4) == "Paused"
        offset = row.received
        assert 0 < offset <= 1_000_000
        assert not (out_dir / FILES[4].name).exists()
        server.set_faults(FILES[4].path, Faults())
        server.release(FILES[4].path)
        await server.wait_until(lambda stats: stats.in_flight == 0)
        server.reset_statistics()
        await pilot.press("space")  # download_with_resume_data()
        await until(app, lambda: state(app, 4) is RowState.READY)
        await pilot.pause()
        assert_ready(app, out_dir, 4)
        assert server.statistics().bytes_sent == size - offset
        assert server.requests[-1].headers["Range"] == f"bytes={offset}-"


@pytest.mark.asyncio
async def test_stop_forgets_the_row_and_leaves_no_file(state_dir: Path, out_dir: Path) -> None:
    async with demo(state_dir, out_dir, hold={1: 100_000, 3: 100_000}) as (app, pilot):
        rows = app.controller.model.rows
        for index in (1, 3):
            await select(pilot, index)
            await pilot.press("space")
        await until(app, lambda: rows[1].received > 0 and rows[3].received > 0)
        await select(pilot, 3)
        await pilot.press("space")  # pause row 3, then stop it: its resume data goes too
        await until(app, lambda: rows[3].resume_data is not None)
        await pilot.press("x")
        await select(pilot, 1)
        await pilot.press("x")
        await until(app, lambda: state(app, 1) is state(app, 3) is RowState.STOPPED)
        await pilot.pause()
        assert shown(app, 1) == shown(app, 3) == "Stopped"
        assert rows[1].received == rows[3].received == 0
        assert rows[3].resume_data is None
        assert list(out_dir.iterdir()) == []
        partials = app.controller.session.directory / "partials"
        assert not partials.exists() or list(partials.iterdir()) == []


@pytest.mark.asyncio
async def test_stop_all_then_reset_deletes_the_files(state_dir: Path, out_dir: Path) -> None:
    victim = out_dir / "victim.txt"
    victim.write_bytes(b"not the demo's")
    async with demo(state_dir, out_dir, hold={4: 200_000}) as (app, pilot):
        await pilot.press("a")
        await until(app, lambda: all(state(app, i) is RowState.READY for i in range(4)))
        await pilot.press("s")  # stop all: row 4 was still held
        await until(app, lambda: state(app, 4) is RowState.STOPPED)
        assert (out_dir / FILES[0].name).exists()
        await pilot.press("r")
        await until(app, lambda: all(state(app, i) is RowState.IDLE for i in range(5)))
        await pilot.pause()
        assert [shown(app, i) for i in range(5)] == ["Not started"] * 5
        assert sorted(out_dir.iterdir()) == [victim]
        assert victim.read_bytes() == b"not the demo's"
        app.controller.server.set_faults(FILES[4].path, Faults())
        await pilot.press("a")  # and it starts over
        await until(app, lambda: app.controller.model.all_ready)
        assert app.notices == [ALL_DONE]


@pytest.mark.asyncio
async def test_buttons_work_with_the_mouse(state_dir: Path, out_dir: Path) -> None:
    async with demo(state_dir, out_dir, hold={0: 20_000}) as (app, pilot):
        row = app.controller.model.rows[0]
        await pilot.click("#start_pause")  # the selected row: the first
        await until(app, lambda: row.received > 0)
        await pilot.click("#start_pause")
        await until(app, lambda: row.resume_data is not None)
        await pilot.click("#stop")
        await until(app, lambda: state(app, 0) is RowState.STOPPED)
        app.controller.server.set_faults(FILES[0].path, Faults())
        await pilot.click("#start_all")
        await until(app, lambda: app.controller.model.all_ready)
        await pilot.click("#reset")
        await until(app, lambda: all(state(app, i) is RowState.IDLE for i in range(5)))
        assert list(out_dir.iterdir()) == []


@pytest.mark.asyncio
async def test_quit_and_run_again_reattaches(state_dir: Path, out_dir: Path) -> None:
    async with demo(state_dir, out_dir, hold={2: 300_000, 4: 500_000}) as (app, pilot):
        rows = app.controller.model.rows
        port = app.controller.server.port
        for index in (0, 2, 4):
            await select(pilot, index)
            await pilot.press("space")
        await until(app, lambda: state(app, 0) is RowState.READY)
        await until(app, lambda: rows[2].received > 0 and rows[4].received > 0)
        await select(pilot, 2)
        await pilot.press("space")  # row 2 paused, row 4 left running
        await until(app, lambda: rows[2].resume_data is not None)
        paused_at = rows[2].received
        await pilot.press("q")
    assert not (out_dir / FILES[4].name).exists()

    async with demo(state_dir, out_dir) as (app, pilot):
        rows, server = app.controller.model.rows, app.controller.server
        assert server.port == port
        assert state(app, 0) is RowState.READY  # its file, verified again
        assert state(app, 2) is RowState.PAUSED
        assert rows[2].received == paused_at
        await until(app, lambda: state(app, 4) is RowState.READY)  # continued by itself
        resumed = [r for r in server.requests if r.path == FILES[4].path]
        assert [r.headers.get("Range", "").startswith("bytes=") for r in resumed] == [True]
        await select(pilot, 2)
        await pilot.press("space")
        await until(app, lambda: state(app, 2) is RowState.READY)
        await pilot.pause()
        for index in (0, 2, 4):
            assert_ready(app, out_dir, index)
        assert [r.headers["Range"] for r in server.requests if r.path == FILES[2].path] == [
            f"bytes={paused_at}-"
        ]
        assert [shown(app, i) for i in (1, 3)] == ["Not started"] * 2


@pytest.mark.asyncio
async def test_run_again_with_the_port_taken_restarts_the_rows(
    state_dir: Path, out_dir: Path
) -> None:
    async with demo(state_dir, out_dir, hold={2: 300_000, 4: 300_000}) as (app, pilot):
        rows = app.controller.model.rows
        port = app.controller.server.port
        for index in (2, 4):
            await select(pilot, index)
            await pilot.press("space")
        await until(app, lambda: rows[2].received > 0 and rows[4].received > 0)
        await select(pilot, 2)
        await pilot.press("space")  # row 2 paused (resume data naming the old port)
        await until(app, lambda: rows[2].resume_data is not None)
        await pilot.press("q")

    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        async with demo(state_dir, out_dir) as (app, pilot):
            assert app.controller.moved
            assert app.controller.server.port != port
            for index in (2, 4):
                assert state(app, index) is RowState.IDLE
                assert "server moved" in app.controller.model.rows[index].note
            partials = app.controller.session.directory / "partials"
            assert not partials.exists() or list(partials.iterdir()) == []
            await pilot.press("a")
            await until(app, lambda: app.controller.model.all_ready)
            for index in range(5):
                assert_ready(app, out_dir, index)


@pytest.mark.asyncio
async def test_a_second_demo_on_the_same_state_dir_exits_with_the_reason(
    state_dir: Path, out_dir: Path
) -> None:
    async with demo(state_dir, out_dir) as (app, first):
        second = DemoApp(DemoController(state_dir, output=out_dir, files=FILES, throttle=None))
        async with second.run_test() as pilot:
            await pilot.pause()
        assert second.return_code == 1
        assert not second.ready
        await first.press("a")  # the first one is unharmed
        await until(app, lambda: app.controller.model.all_ready)


@pytest.mark.asyncio
async def test_a_task_reattached_under_another_output_is_verified_where_it_landed(
    state_dir: Path, tmp_path: Path
) -> None:
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    first_out.mkdir()
    second_out.mkdir()
    async with demo(state_dir, first_out, hold={1: 100_000}) as (app, pilot):
        row = app.controller.model.rows[1]
        await select(pilot, 1)
        await pilot.press("space")
        await until(app, lambda: row.received > 0)
        await pilot.press("q")

    async with demo(state_dir, second_out) as (app, pilot):
        await until(app, lambda: state(app, 1) in (RowState.READY, RowState.FAILED))
        assert state(app, 1) is RowState.READY
        served = app.controller.server.file(FILES[1].path)
        assert sha256(first_out / FILES[1].name) == served.sha256  # the task's destination
        assert list(second_out.iterdir()) == []
