"""``bgtransfer demo --headless``: the demo's scenario, unattended, in plain lines.

Five files from the demo's loopback server (throttled, so every step happens
mid-download), two connections at a time. The app's first run is a process of
its own (``headless_app.py``): it starts all five, pauses one and resumes it
from its resume data, stops one and starts it again from zero, and once files
are mid-way it is killed with SIGKILL (in-process session) or exits (through
the daemon, ``--daemon``: the downloads go on without it). Then this process
opens the same session, as an app launched again would: it receives what it
missed, the files continue from the bytes on disk, and a table shows each file
with its SHA-256 checked, then the server's log of GETs and their ranges.

``bgtransfer demo`` without ``--headless`` opens the interactive demo
(``bgtransfer._demo``) when it is installed and stdout is a terminal, and falls
back to this run otherwise, saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from .._demo.model import DEMO_FILES
from .headless_app import MID_WAY, THROTTLE, first_run
from .headless_report import reattach, report
from .options import EXIT_FAILURE, add_state_dir_option

__all__ = ["DEMO_FILES", "add_parser", "run"]

_Log = Callable[[], list[tuple[str, str | None]]]  # the server's GETs: (path, Range)


async def run_headless(args: argparse.Namespace) -> int:
    """The scenario; 0 when every file verified."""
    daemon = bool(getattr(args, "daemon", False))
    with tempfile.TemporaryDirectory(prefix="bgtransfer-demo-") as tmp:
        # A fresh state dir each run: the scenario starts from nothing, and a
        # daemon of its own is stopped at the end (nothing is left running).
        state, out = _directories(args, Path(tmp))
        async with _server(state, daemon=daemon) as (base_url, pid, log):
            how = f"a detached process, pid {pid}" if daemon else "this process"
            print(f"serving {len(DEMO_FILES)} files from {base_url} ({how}), throttled")
            if daemon:
                print(f"the daemon of {state}: started by the app, stopped at the end")
            if not await _first_run(base_url, state, out, daemon=daemon):
                return EXIT_FAILURE
            outcomes = await reattach(state, daemon=daemon)
            requests = log()
        return report(out, outcomes, requests, kept=bool(args.output))


def _directories(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path]:
    """The run's state dir, and its output dir (made if missing)."""
    out = Path(args.output).expanduser().absolute() if args.output else tmp / "files"
    out.mkdir(parents=True, exist_ok=True)
    return tmp / "state", out


@contextlib.asynccontextmanager
async def _server(state: Path, *, daemon: bool) -> AsyncIterator[tuple[str, int, _Log]]:
    """The demo's server (in this process, or detached for the daemon) and a
    function that reads its log of GETs; stopped (with the daemon) on exit."""
    # The test server (and aiohttp.web) only for the demo, not for every command.
    from .._daemon.control import stop_daemon  # noqa: PLC0415
    from .._demo import server as demo_server  # noqa: PLC0415
    from ..testing import TestServer  # noqa: PLC0415

    if not daemon:
        async with TestServer() as server:
            demo_server.serve_files(server, DEMO_FILES, THROTTLE)

            def log() -> list[tuple[str, str | None]]:
                return [
                    (r.path, r.headers.get("Range")) for r in server.requests if r.method == "GET"
                ]

            yield server.base_url, os.getpid(), log
        return
    detached = await demo_server.ensure_server(state, DEMO_FILES, throttle=THROTTLE)
    try:
        assert detached.pid is not None
        yield detached.base_url, detached.pid, lambda: demo_server.read_log(state)
    finally:
        await demo_server.stop_server(state)
        await stop_daemon(state)  # the run's own daemon: its state dir is about to go


async def _first_run(base_url: str, state: Path, out: Path, *, daemon: bool) -> bool:
    """The app's first run in a child process, its lines relayed; killed with
    SIGKILL once it says files are mid-way (or, through the daemon, it exits
    by itself then). False when it failed first."""
    command = [sys.executable, "-m", "bgtransfer", "demo", "--headless", "--app-run", base_url]
    command += ["--state-dir", str(state), "--output", str(out)] + (["--daemon"] if daemon else [])
    app = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert app.stdout is not None
    print(f"app process {app.pid}: first run")
    mid_way = False
    try:
        async for raw in app.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line == MID_WAY:
                mid_way = True
                break
            print(f"  [app {app.pid}] {line}")
        if mid_way and not daemon:
            print(f"app process {app.pid}: killed with SIGKILL while files are mid-way")
            app.send_signal(signal.SIGKILL)
        status = await app.wait()
    finally:
        if app.returncode is None:  # interrupted: leave nothing running
            app.kill()
            await app.wait()
    if daemon and mid_way and status == 0:
        print(f"app process {app.pid}: exited while files are mid-way; the daemon goes on")
        return True
    if not daemon and mid_way and status == -signal.SIGKILL:
        return True
    print(f"app process {app.pid} failed (exit status {status})", file=sys.stderr)
    return False


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="download five files from a built-in loopback server")
    demo.add_argument(
        "--headless",
        action="store_true",
        help="plain lines, no interactive app (the default when stdout is not a terminal)",
    )
    demo.add_argument(
        "--daemon",
        action="store_true",
        help="through the transfer daemon: downloads go on while the demo is closed",
    )
    demo.add_argument(
        "--stop-server",
        action="store_true",
        help="stop the demo's detached server (of --daemon) and exit",
    )
    demo.add_argument(
        "--output",
        metavar="DIR",
        help="keep the files in DIR (default: a temporary dir when headless, "
        "else the demo session's downloads/)",
    )
    add_state_dir_option(demo)
    demo.add_argument("--app-run", metavar="URL", help=argparse.SUPPRESS)  # headless_app.py
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The interactive demo when asked for and possible, else the headless run.

    The hook for the interactive app: a package ``bgtransfer._demo`` whose
    ``run(args) -> int`` opens it. It is imported only here, lazily; when it is
    absent or cannot be imported (Textual not installed), one line says why and
    the headless run goes on."""
    if args.app_run:
        state, out = Path(args.state_dir), Path(args.output)
        return asyncio.run(first_run(args.app_run, state, out, daemon=args.daemon))
    if args.stop_server:
        return _stop_server(args)
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


def _stop_server(args: argparse.Namespace) -> int:
    from .._demo.server import stop_server  # noqa: PLC0415
    from .options import state_dir  # noqa: PLC0415

    state, _default = state_dir(args)
    stopped = asyncio.run(stop_server(state))
    print("the demo's server stopped" if stopped else f"no demo server runs for {state}")
    return 0
