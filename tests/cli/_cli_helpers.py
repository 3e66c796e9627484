"""Helpers of the command line's tests: the ``bgtransfer`` console script in a
real subprocess, with its own state directory, and its ``--json`` lines.

(A module of its own and no conftest.py here: ``from conftest import`` in
tests/daemon finds whichever conftest module was imported last, so a second one
beside it breaks those tests when both directories are named on the command
line. Each test module declares its fixtures from these.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


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


def make_cli(tmp_path: Path) -> Cli:
    """A :class:`Cli` working in ``tmp_path/work`` with the state in ``tmp_path/state``."""
    work = tmp_path / "work"
    work.mkdir()
    return Cli(tmp_path / "state", work)
