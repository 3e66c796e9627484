"""``bgtransfer demo --headless``: the five-file demo, unattended, in plain lines.

It serves five files from a loopback test server and downloads them at once
under a per-host limit of two connections, printing each task's progress and
checking every file's SHA-256. ``bgtransfer demo`` without ``--headless`` opens
the interactive demo (``bgtransfer._demo``) when it is installed and stdout is a
terminal, and falls back to this run otherwise, saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import sys
import tempfile
from pathlib import Path

from .._core.config import Configuration
from .._core.events import (
    CancelledEvent,
    ErrorEvent,
    EventsDeliveredEvent,
    EventsGapEvent,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
)
from .._demo.model import DEMO_FILES
from .._session import Session

__all__ = ["DEMO_FILES", "add_parser", "run"]


def _bar(done: int, total: int | None, width: int = 24) -> str:
    if not total:
        return f"{done / 1e6:8.1f} MB"
    filled = int(width * done / total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {100 * done / total:5.1f}%"


async def run_headless(args: argparse.Namespace) -> int:
    """The five-file demo, unattended, in plain lines; 0 when every file verified."""
    # The test server (and aiohttp.web) only for the demo, not for every command.
    from ..testing import TestServer  # noqa: PLC0415

    config = Configuration(max_connections_per_host=2, progress_interval=0.25)
    async with TestServer() as server:
        with tempfile.TemporaryDirectory(prefix="bgtransfer-demo-") as tmp:
            out = Path(args.output) if args.output else Path(tmp)
            state = Path(tmp) / "state"
            async with Session(
                "com.example.bgtransfer.demo", state_dir=state, config=config
            ) as session:
                expected: dict[int, tuple[str, str]] = {}
                for demo_file in DEMO_FILES:
                    path, size, label = demo_file.path, demo_file.size, demo_file.label
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


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="download five files from a built-in loopback server")
    demo.add_argument(
        "--headless",
        action="store_true",
        help="plain lines, no interactive app (the default when stdout is not a terminal)",
    )
    demo.add_argument(
        "--output", metavar="DIR", help="keep the files in DIR (default: a temporary dir)"
    )
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The interactive demo when asked for and possible, else the headless run.

    The hook for the interactive app: a package ``bgtransfer._demo`` whose
    ``run(args) -> int`` opens it. It is imported only here, lazily; when it is
    absent or cannot be imported (Textual not installed), one line says why and
    the headless run goes on."""
    if not args.headless and sys.stdout.isatty():
        try:
            interactive = importlib.import_module("bgtransfer._demo")
        except ImportError as exc:
            print(f"interactive demo unavailable ({exc}); running headless", file=sys.stderr)
        else:
            status: int = interactive.run(args)
            return status
    try:
        return asyncio.run(run_headless(args))
    except KeyboardInterrupt:
        return 130
