"""The command line as a user runs it: the ``bgtransfer`` console script in a
real subprocess, with its own state directory, against a loopback server in
this process (whose statistics count what the command fetched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bgtransfer.testing import ThreadedTestServer


def console_script() -> list[str]:
    """The installed ``bgtransfer`` script (``python -m bgtransfer`` without one)."""
    script = Path(sys.executable).with_name("bgtransfer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bgtransfer"]


class Cli:
    """Runs ``bgtransfer ARGS...`` with ``BGTRANSFER_STATE_DIR`` set to ``state``."""

    def __init__(self, state: Path, cwd: Path) -> None:
        self.state = state
        self.cwd = cwd
        self.env = {**os.environ, "BGTRANSFER_STATE_DIR": str(state)}

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*console_script(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
            cwd=self.cwd,
            env=self.env,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*console_script(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
            env=self.env,
        )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_until(process: subprocess.Popen[str], wanted: Any) -> list[dict[str, Any]]:
    """Read ``--json`` lines of a running ``get`` until ``wanted(record)`` holds."""
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        record = json.loads(line)
        seen.append(record)
        if wanted(record):
            return seen
    raise AssertionError(f"the command ended before the awaited line; it printed {seen}")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(tmp_path / "state", work)


@pytest.fixture
def threaded_server() -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer() as server:
        yield server
