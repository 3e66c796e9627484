"""``bgtransfer demo``: the headless run in a real process, and the hook for the
interactive one."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from bgtransfer._cli import DEMO_FILES, headless, main


def test_demo_headless_downloads_and_verifies_five_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bgtransfer", "demo", "--headless", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("sha256 ok") == 5
    assert "all files verified" in result.stdout
    peak = int(result.stdout.split("peak connections seen by the server: ")[1].split()[0])
    assert 1 <= peak <= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        Path(file.path).name for file in DEMO_FILES
    )


def test_demo_on_a_terminal_without_the_interactive_app_says_so_and_runs_headless(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = []

    async def headless_run(args: object) -> int:
        ran.append(args)
        return 0

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setitem(sys.modules, "bgtransfer._demo", None)  # absent: import fails
    monkeypatch.setattr(headless, "run_headless", headless_run)
    assert main(["demo"]) == 0
    assert len(ran) == 1
    assert "interactive demo unavailable" in capsys.readouterr().err


def test_demo_calls_the_interactive_app_when_it_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    app = types.ModuleType("bgtransfer._demo")
    app.run = lambda args: calls.append(args) or 7  # type: ignore[attr-defined]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setitem(sys.modules, "bgtransfer._demo", app)
    assert main(["demo"]) == 7
    assert len(calls) == 1
