"""Fixtures for the daemon's tests: state directories whose daemon is always
stopped (SIGKILL, if it must) when the test ends, and the application process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
import pytest_asyncio

from _helpers import kill_daemon
from bgtransfer._daemon.connection import connect

APP = Path(__file__).with_name("_app.py")
LINE_TIMEOUT = 30.0


@pytest.fixture
def daemon_state(tmp_path: Path) -> Iterator[Path]:
    """A state dir; whatever daemon serves it is killed when the test ends."""
    state = tmp_path / "state"
    try:
        yield state
    finally:
        kill_daemon(state)


@attrs.define
class App:
    """One run of ``_app.py``."""

    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = attrs.Factory(list)

    async def line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), LINE_TIMEOUT)
        assert raw, f"the app ended early; it said {self.lines}"
        line: dict[str, Any] = json.loads(raw)
        self.lines.append(line)
        return line

    async def until(self, key: str) -> dict[str, Any]:
        while True:
            line = await self.line()
            if key in line:
                return line

    async def finish(self) -> int:
        assert self.process.stdout is not None
        rest = await asyncio.wait_for(self.process.stdout.read(), LINE_TIMEOUT)
        self.lines.extend(json.loads(raw) for raw in rest.splitlines() if raw.strip())
        return await asyncio.wait_for(self.process.wait(), LINE_TIMEOUT)

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)


@pytest_asyncio.fixture
async def run_app() -> AsyncIterator[Any]:
    """``await run_app({...})``: start ``_app.py``; every one is killed at the end."""
    apps: list[App] = []

    async def start(args: dict[str, Any]) -> App:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(APP),
            json.dumps(args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        app = App(process)
        apps.append(app)
        return app

    try:
        yield start
    finally:
        for app in apps:
            app.kill()
            with contextlib.suppress(Exception):
                await app.finish()


@pytest_asyncio.fixture
async def http(daemon_state: Path) -> AsyncIterator[aiohttp.ClientSession]:
    """A raw HTTP client of the state dir's daemon (launched for the test)."""
    session, _hello = await connect(daemon_state, default=False)
    async with session:
        yield session
