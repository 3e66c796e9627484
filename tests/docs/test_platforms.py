"""Supported platforms, as docs/platforms.md states them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Standard modules that exist on POSIX systems only.
POSIX_ONLY = ("fcntl", "resource", "termios", "pwd", "grp")

IMPORT_WITHOUT_POSIX = f"""
import sys
for name in {POSIX_ONLY!r}:
    sys.modules[name] = None  # "import fcntl" now raises ImportError, as on Windows
import bgtransfer
import bgtransfer.testing
"""


def test_the_package_imports_without_posix_only_modules() -> None:
    """``import bgtransfer`` must not fail on Windows; POSIX-only features fail when used."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_WITHOUT_POSIX],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_platforms_page_names_what_breaks_on_windows() -> None:
    page = (ROOT / "docs" / "platforms.md").read_text(encoding="utf-8")
    for claim in ("Linux", "macOS", "import bgtransfer", "fcntl"):
        assert claim in page


BACKGROUND_WITHOUT_FCNTL = """
import asyncio, sys
sys.modules["fcntl"] = None  # as on Windows
from bgtransfer import Session, SessionError

async def main():
    try:
        async with Session("com.example.nofcntl", state_dir=sys.argv[1]):
            pass
    except SessionError as exc:
        print(exc)
    else:
        raise AssertionError("a background session opened without flock")

asyncio.run(main())
"""


def test_a_background_session_without_flock_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BACKGROUND_WITHOUT_FCNTL, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "flock" in result.stdout
    assert "Linux and macOS" in result.stdout
