"""``bgtransfer ls|pause|resume|cancel --session ID [TASK...]``: a session's tasks.

Each command opens the session (its journal in the state directory, or the
daemon's with ``--daemon``), does its work and closes it again, as any other
process of the session would: opening a session continues its running tasks
while it is open, and closing it journals where they stand. ``pause`` journals
the tasks as suspended (a later ``get`` or ``resume`` continues them); ``cancel``
ends them for good and removes their partial files.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from .._core.events import CancelledEvent, ErrorEvent, FinishedEvent
from .._session import Session
from .._task import TransferTask
from .options import EXIT_FAILURE, EXIT_OK, add_state_dir_option, state_dir

__all__ = ["add_parsers"]

_HELP = {
    "ls": "list a session's tasks",
    "pause": "pause tasks (all without TASK); a later resume or get continues them",
    "resume": "resume paused tasks (all without TASK)",
    "cancel": "cancel tasks for good, removing their partial files",
}


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, text in _HELP.items():
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--session", metavar="ID", required=True, help="the session")
        if name == "ls":
            command.add_argument("--json", action="store_true", help="one JSON object per task")
        else:
            command.add_argument("tasks", nargs="*", type=int, metavar="TASK", help="task ids")
        command.add_argument(
            "--daemon", action="store_true", help="a session the transfer daemon owns"
        )
        command.add_argument("--debug", action="store_true", help="show a traceback on an error")
        add_state_dir_option(command)
        command.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    directory, _ = state_dir(args)
    if not args.daemon and not (directory / args.session).is_dir():
        print(f"bgtransfer: no session {args.session!r} in {directory}", file=sys.stderr)
        return EXIT_FAILURE
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    directory, _ = state_dir(args)
    async with Session(args.session, state_dir=directory, daemon=args.daemon) as session:
        tasks = session.tasks()
        if args.command == "ls":
            _list(tasks, as_json=args.json)
            return EXIT_OK
        chosen = _choose(tasks, args.tasks)
        if chosen is None:
            return EXIT_FAILURE
        for task in chosen:
            if args.command == "pause":
                task.suspend()
            elif args.command == "resume":
                task.resume()
            else:
                await task.cancel()
            print(f"task {task.id}: {_shown_state(task)}  {task.url}")
    return EXIT_OK


def _outcome(task: TransferTask) -> str | None:
    """How an ended task ended (its state is then "completed", as in NSURLSession)."""
    result = task.result
    if isinstance(result, FinishedEvent):
        return "finished"
    if isinstance(result, ErrorEvent):
        return "failed"
    if isinstance(result, CancelledEvent):
        return "cancelled"
    return None


def _shown_state(task: TransferTask) -> str:
    return _outcome(task) or task.state.value


def _choose(tasks: Sequence[TransferTask], ids: Sequence[int]) -> list[TransferTask] | None:
    """The tasks named by ``ids`` (all of them when none is given), or None
    (after saying which) when one is not in the session."""
    if not ids:
        return list(tasks)
    by_id = {task.id: task for task in tasks}
    missing = [str(task_id) for task_id in ids if task_id not in by_id]
    if missing:
        print(f"bgtransfer: no task {', '.join(missing)} in this session", file=sys.stderr)
        return None
    return [by_id[task_id] for task_id in ids]


def _list(tasks: Sequence[TransferTask], *, as_json: bool) -> None:
    for task in tasks:
        if as_json:
            record = {
                "id": task.id,
                "state": task.state.value,
                "outcome": _outcome(task),
                "error": str(task.result.error) if isinstance(task.result, ErrorEvent) else None,
                "url": task.url,
                "destination": str(task.destination),
                "bytes_received": task.bytes_received,
                "bytes_expected": task.bytes_expected,
            }
            print(json.dumps(record))
            continue
        expected = task.bytes_expected
        size = f"{task.bytes_received}/{expected}" if expected else f"{task.bytes_received}"
        where = f"{task.url} -> {task.destination}"
        print(f"{task.id:>5} {_shown_state(task):<10} {size:>23} bytes  {where}")
