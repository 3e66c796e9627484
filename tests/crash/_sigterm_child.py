"""A child for tests/crash/test_sigterm.py: an application that gets SIGTERM.

Run as ``python tests/crash/_sigterm_child.py '<json>'``. Every fact goes to stdout
as one JSON line, flushed at once (the parent synchronises on them).

Arguments: ``mode`` and ``state_dir``, and per mode:

``download``: ``downloads`` (a list of ``{"identifier", "url", "destination"}``),
    ``config`` (keyword arguments of ``Configuration``), ``app_handler`` (bool).
    Opens one background session per download (all at once), starts each
    download, prints ``{"disposition": ...}`` (``"default"``, ``"bgtransfer"`` or
    ``"app"``) and then ``{"written": identifier, "bytes": n}`` about every 128 KiB
    written. With ``app_handler`` the application installs its own SIGTERM handler
    first; when it runs it prints ``{"app_handler": true}`` and the sessions close
    normally, then ``{"closed": true, "disposition": ...}``.
``reopen``: ``downloads``: opens each session, prints ``{"resumed": identifier,
    "offset": n}`` for the first ``ResumedEvent`` of its one task and
    ``{"finished": identifier, "location": ...}`` when it ends.
``dispositions``: opens two background sessions nested and an ephemeral one,
    printing ``{"step": name, "disposition": ...}`` as they open and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from bgtransfer import (
    Configuration,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    Session,
)

STEP = 128 * 1024


def emit(fact: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(fact, sort_keys=True) + "\n")
    sys.stdout.flush()


def disposition(app_handler: object = None) -> str:
    handler = signal.getsignal(signal.SIGTERM)
    if handler is signal.SIG_DFL:
        return "default"
    if app_handler is not None and handler is app_handler:
        return "app"
    return "bgtransfer"


async def download(args: dict[str, Any]) -> None:
    config = Configuration(**args.get("config", {}))
    stop = asyncio.Event()
    app_handler = None
    if args.get("app_handler"):
        loop = asyncio.get_running_loop()

        def app_handler(signum: int, frame: object) -> None:
            emit({"app_handler": True})
            loop.call_soon_threadsafe(stop.set)

        signal.signal(signal.SIGTERM, app_handler)

    async def follow(session: Session, spec: dict[str, Any]) -> None:
        task = await session.download(spec["url"], spec["destination"])
        reported = 0
        async with task.events() as events:
            async for event in events:
                if isinstance(event, ProgressEvent):
                    written = event.total_bytes_written
                    if written >= reported + STEP:
                        reported = written
                        emit({"written": spec["identifier"], "bytes": written})

    async with contextlib.AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(
                Session(spec["identifier"], state_dir=args["state_dir"], config=config)
            )
            for spec in args["downloads"]
        ]
        emit({"disposition": disposition(app_handler)})
        followers = [
            asyncio.create_task(follow(session, spec))
            for session, spec in zip(sessions, args["downloads"], strict=True)
        ]
        await stop.wait()
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    emit({"closed": True, "disposition": disposition(app_handler)})


async def reopen(args: dict[str, Any]) -> None:
    for spec in args["downloads"]:
        async with Session(spec["identifier"], state_dir=args["state_dir"]) as session:
            [task] = session.tasks()
            async with task.events() as events:
                async for event in events:
                    if isinstance(event, ResumedEvent):
                        emit({"resumed": spec["identifier"], "offset": event.offset})
                    elif isinstance(event, FinishedEvent):
                        emit({"finished": spec["identifier"], "location": str(event.location)})
                    elif not isinstance(event, ProgressEvent):
                        emit({"other": spec["identifier"], "event": repr(event)})


async def dispositions(args: dict[str, Any]) -> None:
    state_dir = Path(args["state_dir"])
    emit({"step": "before", "disposition": disposition()})
    async with Session("com.example.one", state_dir=state_dir):
        emit({"step": "one open", "disposition": disposition()})
        async with Session("com.example.two", state_dir=state_dir):
            emit({"step": "two open", "disposition": disposition()})
        emit({"step": "two closed", "disposition": disposition()})
    emit({"step": "one closed", "disposition": disposition()})
    async with Session(state_dir=state_dir):
        emit({"step": "ephemeral open", "disposition": disposition()})
    off = Configuration(handle_sigterm=False)
    async with Session("com.example.one", state_dir=state_dir, config=off):
        emit({"step": "opted out", "disposition": disposition()})


def main() -> None:
    args = json.loads(sys.argv[1])
    modes = {"download": download, "reopen": reopen, "dispositions": dispositions}
    asyncio.run(modes[args["mode"]](args))


if __name__ == "__main__":
    main()
