"""Socket activation: the daemon takes a listening socket the way systemd hands it over.

A stand-in for systemd (a tiny Python process) puts the test's socket on
descriptor 3, sets ``LISTEN_PID`` to its own pid and ``LISTEN_FDS=1``, and
execs the "daemon" (same pid), which calls :func:`inherited_listener`, reports
what it got, and accepts one connection on it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bgtransfer._io.sdlisten import inherited_listener

TIMEOUT = 30.0

DAEMON = r"""
import json, os, sys
from pathlib import Path
from bgtransfer._io.sdlisten import inherited_listener

expected = sys.argv[1]
try:
    listener = inherited_listener(expected_path=Path(expected) if expected else None)
except ValueError as exc:
    print(json.dumps({"error": str(exc), "fd3": os.path.exists("/proc/self/fd/3")}))
    sys.exit(0)
report = {"listener": listener is not None,
          "env": sorted(k for k in os.environ if k.startswith("LISTEN_"))}
if listener is not None:
    report["fd"] = listener.fileno()
    report["inheritable"] = os.get_inheritable(listener.fileno())
    connection, _ = listener.accept()
    connection.sendall(b"hello from the daemon\n")
    connection.close()
print(json.dumps(report), flush=True)
"""

SYSTEMD = r"""
import os, sys
fd, pid_mode, daemon, expected = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
env = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES="bgtransfer.socket")
env["LISTEN_PID"] = str(os.getpid()) if pid_mode == "mine" else str(os.getppid())
os.execve(sys.executable, [sys.executable, "-c", daemon, expected], env)
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bgt") as name:
        yield Path(name)


def activate(sock: socket.socket | int, *, expected: str = "", pid: str = "mine") -> Any:
    fd = sock if isinstance(sock, int) else sock.fileno()
    result = subprocess.run(
        [sys.executable, "-c", SYSTEMD, str(fd), pid, DAEMON, expected],
        pass_fds=(fd,),
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    return json.loads(result.stdout)


def test_the_daemon_accepts_on_the_inherited_socket(short_dir: Path) -> None:
    path = short_dir / "daemon.sock"
    with socket.socket(socket.AF_UNIX) as listening, socket.socket(socket.AF_UNIX) as client:
        listening.bind(str(path))
        listening.listen()
        client.connect(str(path))  # queued: the daemon accepts it once started
        report = activate(listening, expected=str(path))
        assert client.makefile("rb").readline() == b"hello from the daemon\n"
    assert report == {"listener": True, "env": [], "fd": 3, "inheritable": False}


def test_variables_for_another_process_are_ignored_and_removed(short_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(short_dir / "s"))
        listening.listen()
        assert activate(listening, pid="parent") == {"listener": False, "env": []}


@pytest.mark.parametrize("kind", ["tcp", "datagram", "not listening", "file", "wrong path"])
def test_what_is_not_the_daemons_socket_is_refused(kind: str, short_dir: Path) -> None:
    path = short_dir / "s"
    expected = str(path)
    if kind == "tcp":
        sock: socket.socket | None = socket.socket(socket.AF_INET)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        message = "descriptor 3 is a AF_INET SOCK_STREAM socket; the daemon needs a Unix"
    elif kind == "datagram":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(expected)
        message = "AF_UNIX SOCK_DGRAM socket"
    elif kind == "not listening":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(expected)
        message = "descriptor 3 is not listening"
    elif kind == "wrong path":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(short_dir / "other.sock"))
        sock.listen()
        message = (
            f"bound to {str(short_dir / 'other.sock')!r}, but this daemon's socket is {expected!r}"
        )
    else:
        sock = None
        message = "descriptor 3 is not a socket (Socket operation on non-socket)"
    if sock is None:
        fd = os.open(short_dir / "plain", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            report = activate(fd, expected=expected)
        finally:
            os.close(fd)
    else:
        with sock:
            report = activate(sock, expected=expected)
    assert message in report["error"]
    assert report["fd3"] is True  # left as it was, not closed


@pytest.mark.parametrize(
    ("variables", "answer"),
    [
        ({}, None),
        ({"LISTEN_FDS": "1"}, None),  # no LISTEN_PID
        ({"LISTEN_PID": "42"}, None),  # no LISTEN_FDS
        ({"LISTEN_PID": "43", "LISTEN_FDS": "1"}, None),  # another process's
        ({"LISTEN_PID": "42", "LISTEN_FDS": "0"}, None),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, "LISTEN_FDS=2, but the daemon listens on one"),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "one"}, "LISTEN_FDS='one' is not a number"),
        ({"LISTEN_PID": "-42", "LISTEN_FDS": "1"}, "LISTEN_PID='-42' is not a number"),
        ({"LISTEN_PID": "٤٢", "LISTEN_FDS": "1"}, "is not a number"),  # (isdigit, not ASCII)
    ],
)
def test_the_variables(variables: dict[str, str], answer: str | None) -> None:
    environ = {"HOME": "/home/me", "LISTEN_FDNAMES": "x", **variables}
    if answer is None:
        assert inherited_listener(environ=environ, pid=42) is None
    else:
        with pytest.raises(ValueError, match=answer):
            inherited_listener(environ=environ, pid=42)
    assert environ == {"HOME": "/home/me"}  # removed, whatever they said
