"""``bgtransfer demo`` on a terminal: the seed tutorials' five-file app, in Textual."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Footer, Header, Static

from .controller import DemoController
from .model import Row, RowState

__all__ = ["DemoApp"]

BAR_WIDTH = 30
_STYLES = {
    RowState.READY: "bold green",
    RowState.RUNNING: "cyan",
    RowState.PAUSED: "yellow",
    RowState.FAILED: "bold red",
    RowState.STOPPED: "magenta",
}
ALL_DONE = "All downloads finished"


def _shown(path: Path) -> str:
    """``path`` with the home directory as ``~``."""
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def progress_bar(row: Row, width: int = BAR_WIDTH) -> Text:
    filled = round(width * row.fraction)
    bar = Text("━" * filled, style=_STYLES.get(row.state, "white"))
    bar.append("━" * (width - filled), style="grey23")
    bar.append(f" {100 * row.fraction:5.1f}%")
    return bar


class DemoApp(App[int]):
    """A table of the five files, each row with its progress and state; keys and
    buttons to start/pause and stop the selected row, start all, stop all, reset."""

    TITLE = "bgtransfer demo"
    CSS = """
    DataTable { height: auto; margin: 1 1; }
    #buttons { height: auto; margin: 0 1; }
    #buttons Button { margin-right: 1; }
    #status { margin: 1 1; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "start_pause", "Start/Pause", priority=True),
        Binding("x", "stop", "Stop"),
        Binding("a", "start_all", "Start all"),
        Binding("s", "stop_all", "Stop all"),
        Binding("r", "reset", "Reset"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, controller: DemoController) -> None:
        super().__init__()
        self.controller = controller
        controller.on_change = self.refresh_rows
        self.notices: list[str] = []
        self.ready = False  # the session is open and the rows reattached
        self._changed = asyncio.Event()

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(cursor_type="row", zebra_stripes=True)
        with Horizontal(id="buttons"):
            yield Button("Start/Pause", id="start_pause", variant="primary")
            yield Button("Stop", id="stop")
            yield Button("Start All Downloads", id="start_all", variant="success")
            yield Button("Stop All Downloads", id="stop_all", variant="warning")
            yield Button("Reset", id="reset", variant="error")
        yield Static("Opening the demo session...", id="status")
        yield Footer()

    async def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("File", key="file")
        table.add_column("Size", key="size")
        table.add_column("Progress", key="progress", width=BAR_WIDTH + 7)
        table.add_column("State", key="state")
        table.add_column("", key="note")
        for row in self.controller.model.rows:
            table.add_row(*self._cells(row), key=row.file.path)
        try:
            await self.controller.open()
        except Exception as exc:
            self.exit(1, return_code=1, message=f"bgtransfer demo: {exc}")
            return
        self.ready = True
        self._changed.set()
        served = self.controller.served
        moved = " (a new port: the earlier one was taken)" if self.controller.moved else ""
        daemon = (
            f"; through the daemon: downloads go on after you quit (server pid {served.pid}: "
            "reset or bgtransfer demo --stop-server stops it)"
            if self.controller.daemon
            else ""
        )
        self.query_one("#status", Static).update(
            f"Serving from {served.base_url}{moved}, throttled; "
            f"state in {_shown(self.controller.state_dir)}; "
            f"files in {_shown(self.controller.output)}{daemon}"
        )
        self.refresh_rows()

    async def on_unmount(self) -> None:
        await self.controller.close()

    def _cells(self, row: Row) -> tuple[Text, str, Text, Text, str]:
        return (
            Text(row.file.label),
            f"{row.file.size / 1e6:.1f} MB",
            progress_bar(row),
            Text(row.label, style=_STYLES.get(row.state, "")),
            row.note,
        )

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checking it after each change of the rows."""
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def refresh_rows(self) -> None:
        self._changed.set()
        table = self.query_one(DataTable)
        for row in self.controller.model.rows:
            for column, value in zip(table.columns, self._cells(row), strict=True):
                table.update_cell(row.file.path, column, value, update_width=True)
        if self.controller.model.take_all_done_notice():
            self.notices.append(ALL_DONE)
            self.notify("Every file is downloaded and verified.", title=ALL_DONE, timeout=10)

    @property
    def selected(self) -> int:
        return self.query_one(DataTable).cursor_row

    async def action_start_pause(self) -> None:
        if self.ready:
            await self.controller.toggle(self.selected)

    async def action_stop(self) -> None:
        if self.ready:
            await self.controller.stop(self.selected)

    async def action_start_all(self) -> None:
        if self.ready:
            await self.controller.start_all()

    async def action_stop_all(self) -> None:
        if self.ready:
            await self.controller.stop_all()

    async def action_reset(self) -> None:
        if self.ready:
            await self.controller.reset()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        await self.run_action(event.button.id or "")

    async def on_data_table_row_selected(self, _event: DataTable.RowSelected) -> None:
        await self.action_start_pause()  # enter or a click on the selected row
