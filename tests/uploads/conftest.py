"""Servers nobody here wrote, started on loopback for the resumable-upload tests.

``tus_node``: the tus project's own Node server (``@tus/server`` with
``@tus/file-store``), from ``tests/uploads/tus_node`` (``npm ci`` there installs
it; ``.ci/run`` does). Like the nginx tests, these skip with the reason when Node
or the packages are missing, and fail under ``CI=true``, where they must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _upload_helpers import TusNodeServer

TUS_NODE_DIR = Path(__file__).parent / "tus_node"


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason}, but CI=true: CI must install it (see .ci/run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def tus_node(tmp_path: Path) -> Iterator[TusNodeServer]:
    """``@tus/server`` on 127.0.0.1, storing uploads under a fresh directory."""
    node = shutil.which("node")
    if node is None:
        _missing("node is not installed (the @tus/server tests need Node 20)")
    if not (TUS_NODE_DIR / "node_modules" / "@tus" / "server").is_dir():
        _missing(f"@tus/server is not installed: run `npm ci` in {TUS_NODE_DIR}")
    assert node is not None
    directory = tmp_path / "tus-store"
    directory.mkdir()
    process = subprocess.Popen(
        [node, str(TUS_NODE_DIR / "server.mjs"), str(directory)],
        cwd=TUS_NODE_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening "):
            pytest.fail(f"@tus/server did not start (said {line!r})", pytrace=False)
        port = int(line.split()[1])
        yield TusNodeServer(url=f"http://127.0.0.1:{port}/files", directory=directory)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
