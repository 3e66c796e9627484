"""The command line, run as a user would: a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bgtransfer._cli import DEMO_FILES, main
from bgtransfer.testing import ThreadedTestServer


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
        Path(p).name for p, _, _ in DEMO_FILES
    )


def test_get_downloads_into_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadedTestServer() as server:
        file = server.add_file("/x/data.bin", size=5_000)
        missing = server.url("/x/missing.bin")
        assert main(["get", "-o", str(tmp_path), server.url(file.path)]) == 0
        assert (tmp_path / "data.bin").read_bytes() == file.data
        assert main(["get", "-o", str(tmp_path), missing]) == 1
    captured = capsys.readouterr()
    assert f"{missing}: HTTP 404" in captured.err


def test_get_rejects_a_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "ftp://example.com/f"]) == 2
    assert "scheme 'ftp' is not supported" in capsys.readouterr().err
