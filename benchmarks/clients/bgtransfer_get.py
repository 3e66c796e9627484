"""bgtransfer as an application uses it: one session, one task per URL, wait for all.

``--session ephemeral`` uses ``Session()``; ``--session background`` uses
``Session(--identifier, state_dir=--state-dir)`` (the runner passes a fresh
directory per run); ``--session daemon`` the same with ``daemon=True``: the tasks
run in the state directory's daemon (one the runner started, or one this client
launches on demand). Limits go to ``Configuration(max_connections_per_host=...,
max_concurrent_transfers=...)``; everything else is the default configuration.

``--events none`` awaits ``task.wait()`` for every task; ``--events all`` opens
``task.events()`` for every task right after ``download()`` and consumes every
event (the README's idiom), counting the progress events.

``--enqueue many`` makes every task with one ``session.download_many()`` call
(one journal commit for the batch) instead of one ``await session.download()``
per URL (``--enqueue each``, a commit each).

``--segments N`` (N > 1) passes ``segments=N`` to ``session.download``; an engine
without that keyword makes this client exit with ``EXIT_UNSUPPORTED``.

Usage: ``python bgtransfer_get.py --urls LIST --out DIR --per-host N --total N
[--session ephemeral|background|daemon --state-dir DIR] [--events none|all] [--enqueue each|many]
[--segments N]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from _common import EXIT_UNSUPPORTED, add_transfer_arguments, output_name, read_urls, report

from bgtransfer import (
    Configuration,
    DownloadRequest,
    DownloadTask,
    ErrorEvent,
    EventStream,
    FinishedEvent,
    ProgressEvent,
    Session,
    TaskEvent,
)

SEGMENTS_MISSING = "segments not implemented yet"


class SegmentsUnsupportedError(Exception):
    """``session.download`` has no ``segments`` keyword in this engine."""


def make_session(args: argparse.Namespace) -> Session:
    config = Configuration(
        max_connections_per_host=args.per_host, max_concurrent_transfers=args.total
    )
    if args.session == "ephemeral":
        return Session(config=config)
    if args.state_dir is None:
        raise SystemExit(f"--session {args.session} needs --state-dir")
    return Session(
        args.identifier,
        config=config,
        state_dir=args.state_dir,
        daemon=args.session == "daemon",
    )


async def start(session: Session, url: str, out: Path, segments: int) -> DownloadTask:
    if segments <= 1:
        return await session.download(url, out / output_name(url))
    extra: dict[str, Any] = {"segments": segments}  # not in every engine: feature-detected
    try:
        return await session.download(url, out / output_name(url), **extra)
    except TypeError as exc:
        if "segments" in str(exc):
            raise SegmentsUnsupportedError(SEGMENTS_MISSING) from exc
        raise


async def consume(stream: EventStream[TaskEvent]) -> int:
    """Read every event of one task's stream; return the number of progress events."""
    progress = 0
    async for event in stream:
        if isinstance(event, ProgressEvent):
            progress += 1
        elif isinstance(event, ErrorEvent):
            raise event.error
        elif not isinstance(event, FinishedEvent):
            raise RuntimeError(f"task {event.task_id} ended with {event!r}")  # noqa: TRY004
    return progress


async def main(args: argparse.Namespace) -> int:
    urls = read_urls(args.urls)
    started = time.perf_counter()
    progress_events = 0
    async with make_session(args) as session:
        tasks: list[DownloadTask] = []
        streams: list[EventStream[TaskEvent]] = []
        if args.enqueue == "many":
            tasks = await session.download_many(
                [DownloadRequest(url, args.out / output_name(url)) for url in urls]
            )
            streams = [task.events() for task in tasks] if args.events == "all" else []
        for url in urls if args.enqueue == "each" else ():
            try:
                task = await start(session, url, args.out, args.segments)
            except SegmentsUnsupportedError as exc:
                report(unsupported=str(exc))
                return EXIT_UNSUPPORTED
            tasks.append(task)
            if args.events == "all":
                streams.append(task.events())
        if args.events == "all":
            progress_events = sum(await asyncio.gather(*(consume(s) for s in streams)))
        else:
            await asyncio.gather(*(task.wait() for task in tasks))
    report(
        elapsed_s=time.perf_counter() - started, files=len(urls), progress_events=progress_events
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_transfer_arguments(parser)
    parser.add_argument(
        "--session", choices=["ephemeral", "background", "daemon"], default="ephemeral"
    )
    parser.add_argument("--identifier", default="bench.bg")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--events", choices=["none", "all"], default="none")
    parser.add_argument("--enqueue", choices=["each", "many"], default="each")
    sys.exit(asyncio.run(main(parser.parse_args())))
