"""The demo's loopback server: its five files, in the demo's process or in a
detached process of its own (``bgtransfer demo --daemon``).

Through the daemon the downloads go on while no demo runs, so their server must
outlive the demo: :func:`ensure_server` starts ``python -m
bgtransfer._demo.server`` the way a daemon is launched on demand (its own
session, no terminal, no inherited descriptors but a pipe that says "ready"),
which writes its pid and URL to :data:`SERVER_FILE` in the state dir and each
GET to :data:`SERVER_LOG`; a later demo finds it there and reuses it while it
answers. :func:`stop_server` (the demo's reset, ``--stop-server``) ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import attrs

from .._daemon.control import lock_held
from ..testing import Faults, TestServer
from .model import DemoFile

__all__ = [
    "SERVER_FILE",
    "SERVER_LOG",
    "THROTTLE",
    "DemoServer",
    "ensure_server",
    "expected_sha256",
    "read_log",
    "running_server",
    "serve_files",
    "stop_server",
    "write_json",
]

SERVER_FILE = "demo-server.json"  # the detached server's pid and URL
SERVER_LOG = "demo-server.log"  # one JSON line per GET: path and Range
SERVER_OUTPUT = "demo-server.out"  # the detached process's stderr
SERVER_LOCK = "demo-server.lock"  # held by the detached server while it runs
# The server's files keep one Last-Modified across runs, so resume data and
# If-Range made by an earlier run still match (the ETag is the content's digest).
LAST_MODIFIED = datetime(2026, 1, 1, tzinfo=UTC)
# 64 KiB every 50 ms: about 1.3 MB/s per connection, so progress is visible.
THROTTLE = (65_536, 0.05)
START_TIMEOUT = 20.0  # seconds a launched server may take to say it is ready
STOP_TIMEOUT = 10.0
_children: list[subprocess.Popen[bytes]] = []  # launched servers, reaped when they exit


def serve_files(
    server: TestServer, files: Sequence[DemoFile], throttle: tuple[int, float] | None
) -> None:
    """Serve the demo's files on ``server``: bytes made from the path, a fixed
    Last-Modified, each response throttled to ``throttle`` (bytes, seconds)."""
    for file in files:
        server.add_file(file.path, size=file.size, last_modified=LAST_MODIFIED)
        if throttle is not None:
            server.set_faults(file.path, Faults(drip=throttle))


def expected_sha256(files: Sequence[DemoFile]) -> dict[str, str]:
    """Each file's SHA-256 as the demo's server serves it, computed here (the
    server is not asked: the check is independent of it)."""
    # A server never started, one per file (only its content is used, and one
    # file's bytes at a time are held).
    return {f.path: TestServer().add_file(f.path, size=f.size).sha256 for f in files}


@attrs.frozen
class DemoServer:
    """A running demo server: its URL and, when detached, its process id."""

    base_url: str
    pid: int | None = None

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        return self.base_url + path


def write_json(path: Path, value: object) -> None:
    """Replace the JSON file at ``path`` with ``value``, atomically (a private
    temporary file renamed over it; never through a link). Blocking. (The
    package's own is ``_io.files.write_json``, which the front may not import.)"""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(value, file)
    os.replace(temporary, path)


def _held(state_dir: Path) -> bool:
    """Whether a server process holds the state dir's :data:`SERVER_LOCK`.

    The lock, not the pid, says a server runs: it goes with the process however
    it ends, so a pid file left by a killed server (its pid since reused by
    another program) is never taken for a server, nor sent a signal."""
    return lock_held(state_dir / SERVER_LOCK)


def running_server(state_dir: Path) -> DemoServer | None:
    """The state dir's detached server while it runs, else None."""
    if not _held(state_dir):
        return None
    try:
        value = json.loads((state_dir / SERVER_FILE).read_text(encoding="utf-8"))
        return DemoServer(str(value["url"]), int(value["pid"]))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None  # starting: the lock is taken before the file is written


async def ensure_server(
    state_dir: Path,
    files: Sequence[DemoFile],
    *,
    port: int = 0,
    throttle: tuple[int, float] | None = THROTTLE,
) -> DemoServer:
    """The state dir's detached server: the running one, or a new one (on
    ``port`` when it is free, else on any)."""
    server = running_server(state_dir)
    if server is not None:
        return server
    return await asyncio.to_thread(_launch, state_dir, files, port, throttle)


def _launch(
    state_dir: Path, files: Sequence[DemoFile], port: int, throttle: tuple[int, float] | None
) -> DemoServer:
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
    state_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "state_dir": str(state_dir.absolute()),
        "port": port,
        "files": [[f.path, f.size, f.label] for f in files],
        "throttle": throttle,
    }
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(state_dir / SERVER_OUTPUT, flags, 0o600)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "bgtransfer._demo.server", json.dumps(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,  # its one line "ready URL", then closed
            stderr=fd,
            close_fds=True,
            start_new_session=True,
            cwd="/",
        )
    finally:
        os.close(fd)
    _children.append(process)
    assert process.stdout is not None
    with process.stdout:
        # It writes one line when it is ready; the pipe closes if it dies first.
        readable, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
        line = process.stdout.readline().decode("utf-8", "replace").split() if readable else []
    if line[:1] == ["ready"] and len(line) == 2:
        return DemoServer(line[1], process.pid)
    if process.poll() is None:
        process.kill()
    process.wait()
    other = running_server(state_dir)  # another demo started one meanwhile
    if other is not None:
        return other
    raise OSError(f"the demo's server did not start; see {state_dir / SERVER_OUTPUT}")


async def stop_server(state_dir: Path) -> bool:
    """Stop the state dir's detached server; False when none ran."""
    server = running_server(state_dir)
    if server is None or server.pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGTERM)
    await asyncio.to_thread(_wait_exit, state_dir, server.pid)
    return True


def _wait_exit(state_dir: Path, pid: int) -> None:
    for child in _children:
        if child.pid == pid:
            child.wait(STOP_TIMEOUT)
            return
    # Not our child: nothing to wait on but its lock (it goes within ms of SIGTERM).
    deadline = time.monotonic() + STOP_TIMEOUT
    while _held(state_dir) and time.monotonic() < deadline:
        time.sleep(0.02)


def read_log(state_dir: Path) -> list[tuple[str, str | None]]:
    """The detached server's GETs so far: (path, Range header or None)."""
    try:
        lines = (state_dir / SERVER_LOG).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [(entry["path"], entry["range"]) for entry in map(json.loads, lines)]


# -- the detached process -------------------------------------------------------------


def main(spec: dict[str, Any]) -> int:
    """The detached server's process: 0 after SIGTERM, 1 when one already runs."""
    import fcntl  # noqa: PLC0415 -- POSIX only, as the daemon

    state_dir = Path(spec["state_dir"])
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    lock = os.open(state_dir / SERVER_LOCK, flags, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until the process ends
    except BlockingIOError:
        print(f"a demo server already runs for {state_dir}", file=sys.stderr)
        return 1
    asyncio.run(_serve(state_dir, spec))
    return 0


async def _serve(state_dir: Path, spec: dict[str, Any]) -> None:
    files = [DemoFile(path, size, label) for path, size, label in spec["files"]]
    throttle = (int(spec["throttle"][0]), float(spec["throttle"][1])) if spec["throttle"] else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        server = TestServer(port=int(spec["port"]))
        await server.start()
    except OSError:  # the earlier port is taken: any other
        server = TestServer()
        await server.start()
    info = state_dir / SERVER_FILE
    try:
        serve_files(server, files, throttle)
        write_json(info, {"pid": os.getpid(), "url": server.base_url})
        logger = asyncio.create_task(_log_requests(server, state_dir / SERVER_LOG))
        print("ready", server.base_url, flush=True)
        # From here on nothing is inherited: the launcher's pipe is closed.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        await stop.wait()
        logger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await logger
    finally:
        with contextlib.suppress(FileNotFoundError):
            info.unlink()
        await server.close()


def _more_than(server: TestServer, seen: int, _stats: object) -> bool:
    return len(server.requests) > seen


async def _log_requests(server: TestServer, path: Path) -> None:
    """Append each GET to ``path`` as it arrives (woken by the server, not a
    timer), and the last ones when cancelled (the server is stopping)."""
    seen = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    with os.fdopen(os.open(path, flags, 0o600), "a", encoding="utf-8") as log:
        try:
            while True:
                await server.wait_until(functools.partial(_more_than, server, seen))
                seen = _write_requests(server, log, seen)
        finally:
            _write_requests(server, log, seen)


def _write_requests(server: TestServer, log: TextIO, seen: int) -> int:
    requests = server.requests
    for request in requests[seen:]:
        if request.method == "GET":
            entry = {"path": request.path, "range": request.headers.get("Range")}
            log.write(json.dumps(entry) + "\n")
    log.flush()
    return len(requests)


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
