"""The loopback HTTP servers the contenders download from, and the tools they need.

nginx is the server (the test suite's ``tests/_nginx.py``: one process, loopback
ports, a private prefix). When nginx is missing and cannot be installed, the
built-in ``bgtransfer.testing.ThreadedTestServer`` stands in, one per host, and
the report says so: it is an aiohttp server in the runner's process, so it is
slower than nginx and shares a CPU with the contenders.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from _model import SourceFile

from bgtransfer.testing import ThreadedTestServer

__all__ = ["BlackHole", "FileServer", "ensure_binary", "find_binary", "is_gnu_time", "serve"]

ROOT = Path(__file__).resolve().parent.parent

_FALLBACK_PATHS = {
    "nginx": ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"),
}
APT_PACKAGES = {
    "nginx": "nginx",
    "curl": "curl",
    "wget": "wget",
    "aria2c": "aria2",
    "time": "time",  # GNU time, for peak RSS (see _measure.py)
}


def find_binary(name: str) -> str | None:
    """The executable's path (``PATH`` first, then the usual sbin places), or None."""
    found = shutil.which(name)
    if found is None:
        found = next((p for p in _FALLBACK_PATHS.get(name, ()) if os.access(p, os.X_OK)), None)
    return found


def _apt_command() -> list[str] | None:
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return ["apt-get"]
    if shutil.which("sudo") is not None:
        return ["sudo", "-n", "apt-get"]
    return None


def ensure_binary(name: str, *, install: bool, log: Callable[[str], None]) -> str | None:
    """Find ``name``; when missing and ``install`` is set, try ``apt-get install``."""
    found = find_binary(name)
    if found is not None or not install or name not in APT_PACKAGES:
        return found
    apt = _apt_command()
    if apt is None:
        log(f"{name}: missing, and apt-get is not usable here (not root, no sudo)")
        return None
    package = APT_PACKAGES[name]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_it = [*apt, "install", "-y", package]
    for commands in ([install_it], [[*apt, "update"], install_it]):
        for command in commands:
            log(f"{name}: missing; running {' '.join(command)}")
            subprocess.run(command, env=env, capture_output=True, check=False, timeout=900)
        found = find_binary(name)
        if found is not None:
            return found
    log(f"{name}: apt-get could not install {package}")
    return None


def is_gnu_time(path: str) -> bool:
    """True for GNU time (``--format``/``--output``), not BusyBox's or BSD's."""
    proc = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return "GNU" in proc.stdout + proc.stderr


class FileServer(Protocol):
    """Serves the source files on ``hosts`` loopback origins."""

    description: str
    hosts: int

    def publish(self, source: SourceFile) -> None:
        """Make a file created under the source root downloadable."""
        ...

    def url(self, name: str, host: int = 0) -> str: ...

    def log_mark(self) -> int:
        """A position in the server's request log (see :meth:`requests_since`)."""
        ...

    def requests_since(self, mark: int) -> dict[str, float]:
        """What the server saw since ``mark``: requests, connections, range answers
        (empty when the server keeps no log)."""
        ...


class _NginxLike(Protocol):
    access_log_path: Path

    def url(self, path: str = "", *, host: int = 0) -> str: ...


# tests/_nginx.py's log format: ... "$request" $status ... conn=$connection req=...
_ACCESS_LINE = re.compile(r'" (?P<status>\d{3}) .* conn=(?P<conn>\d+) ')


class _Nginx:
    def __init__(self, server: _NginxLike, version: str, hosts: int) -> None:
        self._server = server
        self.description = f"nginx {version} (one worker, sendfile on, loopback)"
        self.hosts = hosts

    def publish(self, source: SourceFile) -> None:
        pass  # nginx serves the source root directly

    def url(self, name: str, host: int = 0) -> str:
        return self._server.url(name, host=host)

    def log_mark(self) -> int:
        try:
            return self._server.access_log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def requests_since(self, mark: int) -> dict[str, float]:
        with self._server.access_log_path.open("rb") as log:
            log.seek(mark)
            lines = log.read().decode(errors="replace").splitlines()
        connections: set[str] = set()
        requests = ranges = 0
        for line in lines:
            match = _ACCESS_LINE.search(line)
            if match is None:
                continue
            requests += 1
            ranges += match.group("status") == "206"
            connections.add(match.group("conn"))
        return {"requests": requests, "connections": len(connections), "range_answers": ranges}


class _Builtin:
    def __init__(self, servers: list[ThreadedTestServer], root: Path) -> None:
        self._servers = servers
        self._root = root
        self.description = (
            "bgtransfer.testing.ThreadedTestServer (nginx unavailable; in the runner's "
            "process, files served from memory)"
        )
        self.hosts = len(servers)
        self._published: set[str] = set()

    def publish(self, source: SourceFile) -> None:
        if source.name in self._published:
            return  # scenarios share files (1 and 5, 2 and 6)
        self._published.add(source.name)
        data = (self._root / source.name).read_bytes()
        for server in self._servers:
            server.add_file("/" + source.name, data=data)

    def url(self, name: str, host: int = 0) -> str:
        return self._servers[host].url("/" + name)

    def log_mark(self) -> int:
        return 0

    def requests_since(self, mark: int) -> dict[str, float]:
        return {}


def _nginx_version(binary: str) -> str:
    proc = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (proc.stderr or proc.stdout).strip().rsplit("/", 1)[-1]


@contextlib.contextmanager
def serve(
    root: Path, prefix: Path, *, hosts: int, nginx: str | None, log: Callable[[str], None]
) -> Iterator[FileServer]:
    """Serve ``root`` on ``hosts`` loopback ports: nginx if given, else the built-in server."""
    if nginx is not None:
        sys.path.insert(0, str(ROOT / "tests"))
        from _nginx import NginxServer  # noqa: PLC0415  (tests/ is on sys.path only now)

        with NginxServer(root, binary=nginx, prefix=prefix, ports=hosts) as server:
            yield _Nginx(server, _nginx_version(nginx), hosts)
        return
    log("nginx unavailable: falling back to bgtransfer.testing.ThreadedTestServer")
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(ThreadedTestServer()) for _ in range(hosts)]
        yield _Builtin(servers, root)


class BlackHole:
    """A loopback port that accepts connections and never answers (scenario 4)."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(4096)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._socket.close()


class UploadReceiver:
    """Scenario 9's receiver (``_receiver.py``), a process of its own: it counts each
    PUT body and answers ``{"received": N}``; started on first use, stopped by close()."""

    def __init__(self, python: str) -> None:
        self._python = python
        self._process: subprocess.Popen[str] | None = None
        self._url = ""

    @property
    def url(self) -> str:
        if self._process is None:
            script = Path(__file__).resolve().parent / "_receiver.py"
            self._process = subprocess.Popen(
                [self._python, str(script)], stdout=subprocess.PIPE, text=True
            )
            assert self._process.stdout is not None
            self._url = f"http://127.0.0.1:{self._process.stdout.readline().strip()}"
        return self._url

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process = None
