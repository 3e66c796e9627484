"""The ``bgtransfer`` command line.

``bgtransfer demo --headless`` is the terminal version of the classic five-file
background-transfer demo: it serves five files from a loopback test server and
downloads them at once under a per-host limit of two connections, printing each
task's progress and checking every file's SHA-256.
``bgtransfer get URL...`` downloads files. ``bgtransfer daemon`` runs the
transfer daemon of a state directory (``--stop`` stops it); ``bgtransfer
status`` shows it, its sessions and their tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._core.config import Configuration
from ._core.events import (
    CancelledEvent,
    ErrorEvent,
    EventsDeliveredEvent,
    EventsGapEvent,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
)
from ._daemon.control import daemon_status, stop_daemon
from ._daemon.server import run_daemon
from ._session import STATE_DIR_ENV, Session, default_state_dir
from .testing import TestServer

__all__ = ["main"]

# The demo's five files: 700 KB to 29 MB, like the classic sample app's.
DEMO_FILES = (
    ("/demo/networking-overview.pdf", 700_000, "Networking overview"),
    ("/demo/session-video-480p.mp4", 4_400_000, "Session video (480p)"),
    ("/demo/sample-code.zip", 9_100_000, "Sample code"),
    ("/demo/session-video-720p.mp4", 17_300_000, "Session video (720p)"),
    ("/demo/session-video-1080p.mp4", 29_000_000, "Session video (1080p)"),
)


def _bar(done: int, total: int | None, width: int = 24) -> str:
    if not total:
        return f"{done / 1e6:8.1f} MB"
    filled = int(width * done / total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {100 * done / total:5.1f}%"


async def _demo(args: argparse.Namespace) -> int:
    config = Configuration(max_connections_per_host=2, progress_interval=0.25)
    async with TestServer() as server:
        with tempfile.TemporaryDirectory(prefix="bgtransfer-demo-") as tmp:
            out = Path(args.output) if args.output else Path(tmp)
            state = Path(tmp) / "state"
            async with Session(
                "com.example.bgtransfer.demo", state_dir=state, config=config
            ) as session:
                expected: dict[int, tuple[str, str]] = {}
                for path, size, label in DEMO_FILES:
                    served = server.add_file(path, size=size)
                    task = await session.download(
                        server.url(path), out / Path(path).name, description=label
                    )
                    expected[task.id] = (label, served.sha256)
                print(f"downloading {len(expected)} files from {server.base_url}, 2 per host")
                failures = await _watch(session, expected)
            peak = server.statistics().peak_connections
    print(f"peak connections seen by the server: {peak} (limit 2)")
    print("all files verified" if not failures else f"{failures} file(s) failed")
    return 0 if failures == 0 else 1


async def _watch(session: Session, expected: dict[int, tuple[str, str]]) -> int:
    """Print every task's events until each has ended; return how many did not verify."""
    failures = 0
    remaining = len(expected)
    async with session.events() as events:
        async for event in events:
            if isinstance(event, EventsDeliveredEvent | EventsGapEvent):
                continue  # the backlog ends here; a fresh demo session has none
            label, sha256 = expected[event.task_id]
            match event:
                case ProgressEvent(total_bytes_written=done, total_bytes_expected=total):
                    line = _bar(done, total)
                case FinishedEvent(location=location, total_bytes=size):
                    digest = await asyncio.to_thread(_sha256, location)
                    ok = digest == sha256
                    failures += not ok
                    line = f"finished: {size} bytes, sha256 {'ok' if ok else 'MISMATCH'}"
                case ErrorEvent(error=error):
                    failures += 1
                    line = f"failed: {error}"
                case CancelledEvent():
                    failures += 1
                    line = "cancelled"
                case ResumedEvent(offset=offset):
                    line = f"resumed at {offset} bytes"
                case RetryEvent(attempt=attempt, error=error, delay=delay):
                    line = f"retrying (attempt {attempt} in {delay:.1f} s): {error}"
            print(f"  {label:<24} {line}")
            if isinstance(event, FinishedEvent | ErrorEvent | CancelledEvent):
                remaining -= 1
                if remaining == 0:
                    break
    return failures


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def _get(args: argparse.Namespace) -> int:
    failures = 0
    destination = Path(args.output_dir) if args.output_dir else Path.cwd()
    config = Configuration(max_connections_per_host=args.connections)
    async with Session(config=config) as session:
        tasks = [await session.download(url, destination) for url in args.urls]
        for task in tasks:
            async for event in task.events():
                match event:
                    case FinishedEvent(location=location, total_bytes=size):
                        print(f"{task.url} -> {location} ({size} bytes)")
                    case ErrorEvent(error=error):
                        failures += 1
                        print(f"error: {error}", file=sys.stderr)
                    case CancelledEvent():
                        failures += 1
                    case ProgressEvent() | ResumedEvent() | RetryEvent():
                        pass
    return 0 if failures == 0 else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgtransfer", description="Durable background file transfers."
    )
    parser.add_argument("--version", action="version", version=f"bgtransfer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="download five files from a built-in loopback server")
    demo.add_argument(
        "--headless", action="store_true", help="plain line output (the only mode for now)"
    )
    demo.add_argument(
        "--output", metavar="DIR", help="keep the files in DIR (default: a temporary dir)"
    )
    get = commands.add_parser("get", help="download URLs")
    get.add_argument("urls", nargs="+", metavar="URL")
    get.add_argument(
        "-o", "--output-dir", metavar="DIR", help="where to save (default: current dir)"
    )
    get.add_argument(
        "-c", "--connections", type=int, default=6, help="connections per host (default 6)"
    )
    daemon = commands.add_parser("daemon", help="run the transfer daemon of a state dir")
    _state_dir_option(daemon)
    daemon.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="exit after S seconds with no client and no running task (default 60; 0: never)",
    )
    daemon.add_argument("--stop", action="store_true", help="stop the running daemon cleanly")
    status = commands.add_parser("status", help="show the daemon, its sessions and tasks")
    _state_dir_option(status)
    status.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    return parser


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"the state directory (default: ${STATE_DIR_ENV} or the per-user one)",
    )


def _state_dir(args: argparse.Namespace) -> tuple[Path, bool]:
    """The state dir, and whether it is the default one (its socket may then be
    in $XDG_RUNTIME_DIR)."""
    if args.state_dir:
        return Path(args.state_dir).expanduser().absolute(), False
    return default_state_dir().absolute(), not os.environ.get(STATE_DIR_ENV)


def _daemon(args: argparse.Namespace) -> int:
    state_dir, default = _state_dir(args)
    if args.stop:
        return asyncio.run(stop_daemon(state_dir, default=default))
    idle = args.idle_timeout if args.idle_timeout > 0 else None
    return run_daemon(state_dir, default=default, idle_timeout=idle)


def _status(args: argparse.Namespace) -> int:
    state_dir, default = _state_dir(args)
    status = asyncio.run(daemon_status(state_dir, default=default))
    if args.json:
        print(json.dumps(status if status is not None else {"running": False}, indent=1))
        return 0 if status is not None else 1
    if status is None:
        print(f"no daemon runs for {state_dir}")
        return 1
    print(
        f"daemon pid {status['pid']}, bgtransfer {status['version']}, "
        f"protocol {status['protocol']}, up {status['uptime']:.0f} s"
    )
    print(f"socket {status['socket']}, state dir {status['state_dir']}")
    for session in status["sessions"]:
        client = f"client pid {session['client_pid']}" if session["attached"] else "no client"
        stats = session["statistics"]
        print(
            f"session {session['identifier']!r}: {client}, "
            f"{stats['active']} transferring, {stats['queued']} waiting for a slot"
        )
        _print_launches(session.get("launches"))
        for task in session["tasks"]:
            expected = task["bytes_expected"]
            size = f"{task['bytes_received']}/{expected}" if expected else task["bytes_received"]
            rate = task.get("rate")
            speed = f" at {rate / 1e6:.2f} MB/s" if rate is not None else ""
            print(
                f"  task {task['id']} {task['state']:<9} {size} bytes, "
                f"{task['activity']}{speed}  {task['url']}"
            )
    return 0


def _print_launches(launches: dict[str, Any] | None) -> None:
    """A session's launch status: the count, the delay and why, then each launch."""
    if launches is None:
        return
    print(
        f"  launches: {launches['launches']}, next delay {launches['delay']:g} s, "
        f"{launches['explain']}"
    )
    for record in launches["history"]:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["started_at"]))
        if record["ended_at"] is None:
            outcome = "running"
        elif record["error"] is not None:
            outcome = record["error"]
        else:
            outcome = f"exit status {record['status']}"
        print(
            f"    launch {started} pid {record['pid']} cursor {record['cursor']}: {outcome}"
            f"  {' '.join(record['argv'])}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bgtransfer`` command."""
    args = _parser().parse_args(argv)
    if args.command == "daemon":
        return _daemon(args)
    if args.command == "status":
        return _status(args)
    runner = _demo if args.command == "demo" else _get
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:  # bad input named by the library (URL, destination...)
        print(f"bgtransfer: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
