"""The command line as a user runs it: the ``bgtransfer`` console script in a
real subprocess, with its own state directory, against a loopback server in
this process (whose statistics count what the command fetched)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_helpers import Cli

from bgtransfer.testing import ThreadedTestServer


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(tmp_path / "state", work)


@pytest.fixture
def threaded_server() -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer() as server:
        yield server
