"""Socket activation: the daemon serves the listening socket systemd hands over.

A stand-in for systemd (a tiny Python process) binds nothing itself: the test
binds and listens on the daemon's socket path, the stand-in puts that socket on
descriptor 3 with ``LISTEN_PID``/``LISTEN_FDS`` and execs ``bgtransfer daemon``
(same pid), and a client works through it. The shipped unit listens where
clients look for the default state directory's daemon.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import socket
import sys
from pathlib import Path

import pytest

from _helpers import daemon_pid, sha256_file
from bgtransfer import Session
from bgtransfer._daemon.paths import make_socket_dir, socket_path
from bgtransfer._session import default_state_dir
from bgtransfer.testing import TestServer

LINE_TIMEOUT = 30.0  # (not imported from conftest: another conftest may be first on sys.path)


UNIT = Path(__file__).parents[2] / "contrib" / "systemd" / "bgtransfer.socket"

SYSTEMD = r"""
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execve(sys.executable, [sys.executable, "-m", "bgtransfer", "daemon", *sys.argv[2:]], env)
"""


def test_the_socket_unit_listens_where_clients_look(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runtime = tmp_path / "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("BGTRANSFER_STATE_DIR", raising=False)
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read(UNIT)
    listen = unit["Socket"]["ListenStream"].replace("%t", str(runtime))
    assert Path(listen) == socket_path(default_state_dir(), default=True)
    assert unit["Socket"]["SocketMode"] == "0600"
    assert unit["Socket"]["Accept"] == "no"


async def activate(sock: socket.socket, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SYSTEMD,
        str(sock.fileno()),
        *args,
        pass_fds=(sock.fileno(),),
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.asyncio
async def test_a_client_works_through_the_inherited_socket(
    server: TestServer, daemon_state: Path, out_dir: Path
) -> None:
    path = socket_path(daemon_state)
    make_socket_dir(path)
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(path))
        listening.listen()
        os.chmod(path, 0o600)
        process = await activate(listening, "--state-dir", str(daemon_state))
    served = server.add_file("/a.bin", size=100_000)
    try:
        # The client finds the socket answering: it launches no daemon of its own.
        async with Session("act", state_dir=daemon_state, daemon=True) as session:
            task = await session.download(server.url("/a.bin"), out_dir / "a.bin")
            await task.wait()
            assert daemon_pid(daemon_state) == process.pid  # the activated one (execve)
    finally:
        process.terminate()
        _out, err = await asyncio.wait_for(process.communicate(), LINE_TIMEOUT)
    assert process.returncode == 0, err
    assert b"socket activation" in err
    assert sha256_file(out_dir / "a.bin") == served.sha256
    assert path.exists()  # systemd's socket: the daemon leaves it


@pytest.mark.asyncio
async def test_a_socket_at_another_path_is_refused_naming_both(
    daemon_state: Path, tmp_path: Path
) -> None:
    daemon_state.mkdir(mode=0o700)
    other = socket_path(daemon_state).with_name("other.sock")
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(other))
        listening.listen()
        process = await activate(listening, "--state-dir", str(daemon_state))
    _out, err = await asyncio.wait_for(process.communicate(), LINE_TIMEOUT)
    assert process.returncode == 2
    assert str(other).encode() in err
    assert str(socket_path(daemon_state)).encode() in err
