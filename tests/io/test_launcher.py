"""The launch spawner: a real process, its environment, its isolation, its status.

The command is a tiny Python script that writes what it sees (environment,
descriptors, session, working directory, stdin) to a JSON file, prints to its
stdout and stderr (the launch log), and then exits, kills itself, or talks to
the test over a Unix socket (to show it outlives whoever launched it).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bgtransfer._io.files import read_json, write_json
from bgtransfer._io.launcher import (
    LOG_LIMIT,
    LaunchedProcess,
    SpawnFailure,
    launch_environment,
    spawn,
)

pytestmark = pytest.mark.asyncio

TIMEOUT = 30.0

APP = r"""
import json, os, socket, sys

report, mode, arg = sys.argv[1], sys.argv[2], sys.argv[3]
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
with open(report, "w") as f:
    json.dump({
        "argv": sys.argv[1:],
        "env": {k: v for k, v in os.environ.items() if k.startswith(("BGTRANSFER_", "LAUNCH_"))},
        "fds": fds,
        "own_session": os.getsid(0) == os.getpid(),
        "cwd": os.getcwd(),
        "stdin": sys.stdin.read(),
        "stdin_is_tty": sys.stdin.isatty(),
    }, f)
print("out: hello", flush=True)
print("err: hello", file=sys.stderr, flush=True)
if mode == "exit":
    sys.exit(int(arg))
if mode == "signal":
    os.kill(os.getpid(), int(arg))
if mode == "talk":
    s = socket.socket(socket.AF_UNIX)
    s.connect(arg)
    s.sendall(b"hello %d\n" % os.getpid())
    assert s.recv(3) == b"go\n"
    s.sendall(b"done\n")
    s.close()
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, for Unix sockets (at most 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="bgt") as name:
        yield Path(name)


@pytest_asyncio.fixture
async def listener(short_dir: Path) -> AsyncIterator[tuple[Path, asyncio.Queue[Any]]]:
    """A Unix socket the app connects to; each connection arrives on the queue."""
    connections: asyncio.Queue[Any] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await connections.put((reader, writer))

    path = short_dir / "s"
    server = await asyncio.start_unix_server(accept, path)
    async with server:
        yield path, connections


def command(app: Path, report: Path, mode: str, arg: object = 0) -> list[str]:
    return [sys.executable, str(app), str(report), mode, str(arg)]


def environment(cursor: int = 7) -> dict[str, str]:
    return launch_environment(
        "com.example.launch", state_dir=Path("/state dir"), cursor=cursor, base=os.environ
    ) | {"LAUNCH_MARK": "daemon's own"}


async def launched(
    argv: list[str], *, log: Path | None, cwd: Path | None = None
) -> LaunchedProcess:
    result = await spawn(argv, environment=environment(), log=log, cwd=cwd)
    assert isinstance(result, LaunchedProcess), result
    return result


async def test_environment_isolation_and_exit_status(app: Path, tmp_path: Path) -> None:
    report, log = tmp_path / "report.json", tmp_path / "launch.log"
    # An inheritable descriptor of the daemon, at a number the child would not reuse.
    read_end, write_end = os.pipe()
    os.dup2(read_end, 60, inheritable=True)
    try:
        process = await launched(command(app, report, "exit", 3), log=log, cwd=tmp_path)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 3
    finally:
        for fd in (read_end, write_end, 60):
            os.close(fd)
    seen = json.loads(report.read_text())
    assert seen["argv"] == [str(report), "exit", "3"]
    assert seen["env"] == {
        "BGTRANSFER_IDENTIFIER": "com.example.launch",
        "BGTRANSFER_STATE_DIR": "/state dir",
        "BGTRANSFER_CURSOR": "7",
        "LAUNCH_MARK": "daemon's own",
    }
    assert seen["own_session"] is True
    assert seen["cwd"] == str(tmp_path)
    assert seen["stdin"] == ""
    assert seen["stdin_is_tty"] is False
    assert 60 not in seen["fds"]
    assert len([fd for fd in seen["fds"] if fd > 2]) <= 1  # (the listing's own)
    lines = log.read_text().splitlines()
    assert lines[0].startswith("--- ")
    assert lines[0].endswith(f"launch: {command(app, report, 'exit', 3)!r}")
    assert sorted(lines[1:]) == ["err: hello", "out: hello"]
    assert log.stat().st_mode & 0o777 == 0o600


async def test_the_default_working_directory_is_home(app: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    process = await launched(command(app, report, "exit", 0), log=None)
    assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
    assert json.loads(report.read_text())["cwd"] == str(Path.home())


async def test_a_signal_is_a_negative_status(app: Path, tmp_path: Path) -> None:
    process = await launched(command(app, tmp_path / "r.json", "signal", 15), log=None)
    assert await asyncio.wait_for(process.wait(), TIMEOUT) == -signal.SIGTERM


async def test_the_log_is_appended_and_rotated(app: Path, tmp_path: Path) -> None:
    log = tmp_path / "launch.log"
    log.write_bytes(b"old\n" * (LOG_LIMIT // 4 + 1))
    old = log.read_bytes()
    first = await launched(command(app, tmp_path / "r.json", "exit", 0), log=log)
    await asyncio.wait_for(first.wait(), TIMEOUT)
    assert (tmp_path / "launch.log.1").read_bytes() == old
    second = await launched(command(app, tmp_path / "r.json", "exit", 0), log=log)
    await asyncio.wait_for(second.wait(), TIMEOUT)
    assert log.read_text().count("--- ") == 2  # appended, not rotated again
    assert (tmp_path / "launch.log.1").read_bytes() == old


@pytest.mark.parametrize("kind", ["ENOENT", "EACCES", "ENOTDIR"])
async def test_a_command_that_cannot_start_is_a_value(kind: str, tmp_path: Path, app: Path) -> None:
    program = {
        "ENOENT": tmp_path / "no-such-app",
        "EACCES": app,  # not executable (0644)
        "ENOTDIR": app / "app",
    }[kind]
    result = await spawn([str(program), "x"], environment=environment(), log=tmp_path / "l")
    assert isinstance(result, SpawnFailure)
    assert result.reason.startswith(f"cannot run {str(program)!r}: ")
    assert result.reason.endswith(f"({kind})")


async def test_a_working_directory_that_is_gone_is_named(app: Path, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    result = await spawn(
        command(app, tmp_path / "r", "exit", 0), environment=environment(), log=None, cwd=gone
    )
    assert result == SpawnFailure(
        f"cannot run {sys.executable!r} in its working directory {str(gone)!r}: "
        "No such file or directory (ENOENT)"
    )


async def test_an_environment_that_cannot_be_passed_is_a_value(app: Path, tmp_path: Path) -> None:
    bad = environment() | {"BAD": "a\0b"}
    result = await spawn(command(app, tmp_path / "r", "exit", 0), environment=bad, log=None)
    assert isinstance(result, SpawnFailure)
    assert "embedded null byte" in result.reason


async def test_a_log_that_cannot_be_opened_is_a_value(app: Path, tmp_path: Path) -> None:
    log = tmp_path / "missing" / "launch.log"
    result = await spawn(
        command(app, tmp_path / "r", "exit", 0), environment=environment(), log=log
    )
    assert result == SpawnFailure(
        f"cannot open the launch log {str(log)!r}: No such file or directory (ENOENT)"
    )
    assert not (tmp_path / "r").exists()  # nothing ran


async def test_a_cancelled_waiter_leaves_the_process_alone(
    app: Path, tmp_path: Path, listener: tuple[Path, asyncio.Queue[Any]]
) -> None:
    path, connections = listener
    process = await launched(command(app, tmp_path / "r", "talk", path), log=None)
    reader, writer = await asyncio.wait_for(connections.get(), TIMEOUT)
    assert await reader.readline() == f"hello {process.pid}\n".encode()
    # A waiter that gives up (the process waits for "go": it cannot end first).
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(process.wait(), 0.05)
    writer.write(b"go\n")
    assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"done\n"
    assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
    writer.close()


# A daemon that launches the app and exits at once, leaving it running.
DAEMON = r"""
import asyncio, sys
from pathlib import Path
from bgtransfer._io.launcher import launch_environment, spawn

async def main():
    launched = await spawn(sys.argv[1:], environment=launch_environment(
        "com.example.launch", state_dir=Path("/s"), cursor=1), log=None)
    print(launched.pid, flush=True)

asyncio.run(main())
"""


async def test_the_launched_app_outlives_the_daemon(
    app: Path, tmp_path: Path, listener: tuple[Path, asyncio.Queue[Any]]
) -> None:
    path, connections = listener
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DAEMON,
        *command(app, tmp_path / "r", "talk", path),
        stdout=subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(daemon.communicate(), TIMEOUT)
    assert daemon.returncode == 0
    pid = int(out)
    reader, writer = await asyncio.wait_for(connections.get(), TIMEOUT)
    assert await reader.readline() == f"hello {pid}\n".encode()  # alive, the daemon gone
    writer.write(b"go\n")
    assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"done\n"
    writer.close()


async def test_launch_environment_overrides_the_base() -> None:
    base = {"PATH": "/bin", "BGTRANSFER_CURSOR": "stale"}
    assert launch_environment("a.b", state_dir=Path("/s"), cursor=0, base=base) == {
        "PATH": "/bin",
        "BGTRANSFER_IDENTIFIER": "a.b",
        "BGTRANSFER_STATE_DIR": "/s",
        "BGTRANSFER_CURSOR": "0",
    }
    assert base["BGTRANSFER_CURSOR"] == "stale"


async def test_status_file_is_private_replaced_whole_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "launch.json"
    assert read_json(path) is None
    write_json(path, {"a": [1, 2]})
    write_json(path, {"b": None})
    assert read_json(path) == {"b": None}
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["launch.json"]  # no temporary left
    path.write_bytes(b'{"b": ')
    with pytest.raises(ValueError, match=r"launch\.json' is not JSON: Expecting value"):
        read_json(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"is not JSON: 'utf-8' codec can't decode"):
        read_json(path)
