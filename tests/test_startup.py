"""What each way of starting imports, pinned without timing (docs/benchmarks.md, "Start-up").

A path that does not need a heavy module must not import it: the daemon's client
and server, aiohttp's server side (``aiohttp.web``), the test server
(``bgtransfer.testing``), the command line, the terminal libraries. Each path
runs in a fresh interpreter that writes, as it exits, the modules it imported;
each test also names a module the path must have imported, so that a path that
failed early cannot pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtransfer.testing import ThreadedTestServer

# Written into each probe: at exit, the imported modules' names go to a file.
PROBE = """\
import atexit, json, os, sys
def _dump():
    with open(os.environ["STARTUP_MODULES_OUT"], "w", encoding="utf-8") as out:
        json.dump(sorted(sys.modules), out)
atexit.register(_dump)
"""

CLI = PROBE + "import runpy\nsys.argv = ['bgtransfer', *sys.argv[1:]]\n"
CLI += "runpy.run_module('bgtransfer', run_name='__main__', alter_sys=True)\n"

# What no path but its own may import.
DAEMON_CLIENT = {
    "bgtransfer._daemon.client",
    "bgtransfer._daemon.attachment",
    "bgtransfer._daemon.connection",
    "bgtransfer._daemon.channel_client",
}
DAEMON_SERVER = {
    "bgtransfer._daemon.server",
    "bgtransfer._daemon.commands",
    "bgtransfer._daemon.channel_server",
    "bgtransfer._daemon.process",
}
SERVER_SIDE = {"aiohttp.web", "bgtransfer.testing"}
TERMINAL = {"rich", "textual", "bgtransfer._demo.app"}
CLI_MODULES = {"bgtransfer._cli"}
# The installed distribution's metadata (zipfile, csv, importlib.resources under it):
# the version comes from a constant (_core/version.py).
METADATA = {"importlib.metadata"}

TRANSFERS = """\
import asyncio
from pathlib import Path

import bgtransfer


async def main() -> None:
    url, work = sys.argv[1], Path(sys.argv[2])
    source = work / "source.bin"
    source.write_bytes(b"u" * 10_000)
    async with bgtransfer.Session("startup.probe", state_dir=work / "state") as session:
        down = await session.download(url + "/file.bin", work / "file.bin")
        up = await session.upload(url + "/upload", source)
        for task in (down, up):
            assert isinstance(await task.wait(), bgtransfer.FinishedEvent)
    async with bgtransfer.Session() as session:
        task = await session.download(url + "/file.bin", work / "again.bin")
        assert isinstance(await task.wait(), bgtransfer.FinishedEvent)


asyncio.run(main())
"""


def imported(tmp_path: Path, code: str, *args: str, status: int = 0) -> set[str]:
    """The modules a fresh interpreter running ``code`` (with ``args``) imported;
    it must exit with ``status``."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "STARTUP_MODULES_OUT": str(out)}
    env.pop("BGTRANSFER_STATE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == status, done.stderr
    modules: list[str] = json.loads(out.read_text(encoding="utf-8"))
    return set(modules)


def found(modules: set[str], unwanted: set[str]) -> set[str]:
    """The unwanted modules (or submodules of them) among ``modules``."""
    return {m for m in modules for u in unwanted if m == u or m.startswith(u + ".")}


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer() as served:
        served.add_file("/file.bin", size=50_000)
        yield served


def test_import_bgtransfer_imports_no_daemon_no_server_side_no_cli(tmp_path: Path) -> None:
    modules = imported(tmp_path, PROBE + "import bgtransfer\n")
    assert "bgtransfer._session" in modules
    unwanted = DAEMON_CLIENT | DAEMON_SERVER | SERVER_SIDE | TERMINAL | CLI_MODULES | METADATA
    assert found(modules, unwanted) == set()


def test_in_process_transfers_import_no_daemon_and_no_server_side(
    tmp_path: Path, server: ThreadedTestServer
) -> None:
    modules = imported(tmp_path, PROBE + TRANSFERS, server.base_url, str(tmp_path))
    assert {"bgtransfer._engine.upload", "bgtransfer._io.journal"} <= modules
    unwanted = DAEMON_CLIENT | DAEMON_SERVER | SERVER_SIDE | TERMINAL | CLI_MODULES | METADATA
    assert found(modules, unwanted) == set()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--help"], id="help"),
        pytest.param(["ls", "--session", "startup.probe", "--state-dir", "state"], id="ls"),
    ],
)
def test_cli_commands_import_no_daemon_and_no_test_server(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "state" / "startup.probe").mkdir(parents=True)
    modules = imported(tmp_path, CLI, *args)
    assert "bgtransfer._cli" in modules
    unwanted = DAEMON_CLIENT | DAEMON_SERVER | SERVER_SIDE | TERMINAL | METADATA
    assert found(modules, unwanted) == set()


def test_cli_get_imports_no_daemon_and_no_test_server(
    tmp_path: Path, server: ThreadedTestServer
) -> None:
    url = server.url("/file.bin")
    modules = imported(tmp_path, CLI, "get", "-q", "--state-dir", "state", "-d", "out", url)
    assert (tmp_path / "out" / "file.bin").stat().st_size == 50_000
    unwanted = DAEMON_CLIENT | DAEMON_SERVER | SERVER_SIDE | TERMINAL | METADATA
    assert found(modules, unwanted) == set()


def test_cli_status_imports_no_daemon_server_and_no_server_side(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    modules = imported(tmp_path, CLI, "status", "--state-dir", state, status=1)  # no daemon
    assert "bgtransfer._daemon.control" in modules
    unwanted = DAEMON_SERVER | SERVER_SIDE | TERMINAL | METADATA
    assert found(modules, unwanted) == set()


DAEMON_SESSION = """\
import asyncio
from pathlib import Path

import bgtransfer
from bgtransfer._daemon.control import stop_daemon


async def main() -> None:
    state = Path(sys.argv[1])
    try:
        async with bgtransfer.Session("startup.probe", state_dir=state, daemon=True) as session:
            assert list(session.tasks()) == []
    finally:
        assert await stop_daemon(state) == 0


asyncio.run(main())
"""


def test_a_daemon_session_s_client_imports_no_server_side(tmp_path: Path) -> None:
    modules = imported(tmp_path, PROBE + DAEMON_SESSION, str(tmp_path / "state"))
    assert "bgtransfer._daemon.client" in modules
    unwanted = DAEMON_SERVER | SERVER_SIDE | TERMINAL | CLI_MODULES | METADATA
    assert found(modules, unwanted) == set()


def test_the_daemon_imports_no_client_and_no_test_server(tmp_path: Path) -> None:
    state = tmp_path / "state"
    modules = imported(tmp_path, CLI, "daemon", "--state-dir", str(state), "--idle-timeout", "0.01")
    assert "bgtransfer._daemon.server" in modules
    unwanted = DAEMON_CLIENT | {"bgtransfer.testing"} | TERMINAL | METADATA
    assert found(modules, unwanted) == set()
