"""``bgtransfer demo``: the headless scenario in real processes (the app's first
run killed with SIGKILL, or leaving the daemon to go on; a new process
reattaching), and the hook for the interactive one."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from bgtransfer._cli import DEMO_FILES, headless, main
from bgtransfer.testing import TestServer


def run_demo(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bgtransfer", "demo", "--headless", *options],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def served_sha256() -> dict[str, str]:
    """What the demo's server serves, from the test server's own content."""
    reference = TestServer()
    return {f.name: reference.add_file(f.path, size=f.size).sha256 for f in DEMO_FILES}


def server_log(stdout: str) -> dict[str, list[str]]:
    """The run's printed server log: file name -> each GET's range ("whole file")."""
    log = stdout.split("the server's log")[1].split("\n\n", maxsplit=1)[0].splitlines()[1:]
    return {name: asked.split(", ") for name, asked in (line.split(None, 1) for line in log)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def check_the_scenario(result: subprocess.CompletedProcess[str], out: Path) -> None:
    """What both ways must show: each step, every file verified, the ranges."""
    stdout = result.stdout
    assert result.returncode == 0, stdout + result.stderr
    paused = re.search(r"Session video \(480p\)\s+paused at ([\d,]+) bytes", stdout)
    assert paused is not None, stdout
    offset = int(paused[1].replace(",", ""))
    assert 0 < offset < DEMO_FILES[1].size
    assert f"resumed: asks the server for bytes={offset}-" in stdout
    assert re.search(r"Sample code\s+stopped at [\d,]+ bytes", stdout)
    assert re.search(r"Sample code\s+started again from zero", stdout)
    assert "reattached in process" in stdout
    log = server_log(stdout)
    assert log["networking-overview.pdf"] == ["whole file"]
    assert log["session-video-480p.mp4"] == ["whole file", f"bytes={offset}-"]
    assert log["sample-code.zip"] == ["whole file", "whole file"]  # the stop, from zero again
    expected = served_sha256()
    table = stdout.split("sha256\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in table] == [f.name for f in DEMO_FILES]
    assert all(line.endswith(" ok") for line in table), table
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, digest in expected.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert stdout.rstrip().endswith("all files verified")


def test_demo_headless_runs_the_scenario_across_a_sigkill(tmp_path: Path) -> None:
    result = run_demo("--output", str(tmp_path))
    check_the_scenario(result, tmp_path)
    stdout = result.stdout
    killed = re.search(r"app process (\d+): killed with SIGKILL while files are mid-way", stdout)
    assert killed is not None, stdout
    assert not alive(int(killed[1]))
    # The files the kill caught mid-way continue from what the journal kept.
    continued = re.findall(r"  (\S.*?)\s+continues at ([\d,]+) bytes", stdout)
    names = {f.label: f.name for f in DEMO_FILES}
    log = server_log(stdout)
    assert {label for label, _ in continued} >= {"Session video (480p)"}
    for label, at in continued:
        assert log[names[label]][-1] == f"bytes={at.replace(',', '')}-"
    assert any(label != "Session video (480p)" for label, _ in continued), stdout


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_demo_headless_through_the_daemon_goes_on_while_the_app_is_gone(
    tmp_path: Path,
) -> None:
    result = run_demo("--daemon", "--output", str(tmp_path))
    check_the_scenario(result, tmp_path)
    stdout = result.stdout
    left = re.search(
        r"app process (\d+): exited while files are mid-way; the daemon goes on", stdout
    )
    assert left is not None, stdout
    # The daemon never stopped the big files: one GET each, no range to continue.
    log = server_log(stdout)
    assert log["session-video-720p.mp4"] == log["session-video-1080p.mp4"] == ["whole file"]
    # Nothing left running: the server's process, the daemon of the run's state dir.
    server = re.search(r"\(a detached process, pid (\d+)\)", stdout)
    assert server is not None, stdout
    assert not alive(int(server[1]))
    state = re.search(r"the daemon of (\S+): started by the app", stdout)
    assert state is not None, stdout
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert state[1].encode() not in cmdline.read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue


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


def test_stop_server_with_none_running_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--stop-server", "--state-dir", str(tmp_path)]) == 0
    assert f"no demo server runs for {tmp_path}" in capsys.readouterr().out


def test_the_report_does_not_point_at_a_temporary_directory_it_removes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bgtransfer._cli.headless_report import report  # noqa: PLC0415

    assert report(tmp_path, {}, [], kept=True) != 0  # no file there: none verified
    assert f"files in {tmp_path}" in capsys.readouterr().out
    report(tmp_path, {}, [], kept=False)
    out = capsys.readouterr().out
    assert str(tmp_path) not in out
    assert "removed now (keep them: --output DIR)" in out
