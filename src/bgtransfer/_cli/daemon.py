"""``bgtransfer daemon`` (run or stop a state directory's transfer daemon) and
``bgtransfer status`` (show it, its sessions and their tasks)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from .options import add_state_dir_option
from .options import state_dir as _state_dir

__all__ = ["add_parsers"]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    daemon = commands.add_parser("daemon", help="run the transfer daemon of a state dir")
    add_state_dir_option(daemon)
    daemon.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="exit after S seconds with no client and no running task (default 60; 0: never)",
    )
    daemon.add_argument("--stop", action="store_true", help="stop the running daemon cleanly")
    daemon.set_defaults(run=_daemon)
    status = commands.add_parser("status", help="show the daemon, its sessions and tasks")
    add_state_dir_option(status)
    status.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    status.set_defaults(run=_status)


# The daemon's server (aiohttp.web) and its control client are imported by
# these two commands only, not by every command that builds the parser.


def _daemon(args: argparse.Namespace) -> int:
    state_dir, default = _state_dir(args)
    if args.stop:
        from .._daemon.control import stop_daemon  # noqa: PLC0415

        return asyncio.run(stop_daemon(state_dir, default=default))
    from .._daemon.process import run_daemon  # noqa: PLC0415

    idle = args.idle_timeout if args.idle_timeout > 0 else None
    return run_daemon(state_dir, default=default, idle_timeout=idle)


def _status(args: argparse.Namespace) -> int:
    from .._daemon.control import daemon_status  # noqa: PLC0415

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
        for_app = sum(1 for task in session["tasks"] if task.get("waiting_for"))
        print(
            f"session {session['identifier']!r}: {client}, "
            f"{stats['active']} transferring, {stats['queued']} waiting for a slot"
            + (f", {for_app} waiting for the app" if for_app else "")
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
        reason = f" for {record['reason']}" if record.get("reason") else ""
        print(
            f"    launch {started} pid {record['pid']} cursor {record['cursor']}{reason}: "
            f"{outcome}  {' '.join(record['argv'])}"
        )
