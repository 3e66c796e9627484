"""A child for the event-log cursor test: reads ``session.events(since=...)``.

Run as ``python tests/crash/_cursor_child.py '<json>'`` with ``identifier``,
``state_dir``, ``files`` (``[{"url", "destination"}]``: downloads to start) and
``finishing`` (how many of them end while this process runs). It opens the
background session, starts the downloads, reads the session's events from
``since=0`` and prints each numbered event as one JSON line, flushed at once:

``{"event": kind, "task": id, "seq": n}``
    an event handed out by the stream (``kind``: finished, error, cancelled,
    resumed, retry); it stops reading after the first terminal one
``{"ended": [ids]}``
    ``finishing`` tasks have ended and the journal holds their ends (read with
    ``task.wait()``, not from the stream); then it waits to be killed
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bgtransfer import (
    CancelledEvent,
    Configuration,
    ErrorEvent,
    FinishedEvent,
    ResumedEvent,
    RetryEvent,
    Session,
)

KINDS = {
    FinishedEvent: "finished",
    ErrorEvent: "error",
    CancelledEvent: "cancelled",
    ResumedEvent: "resumed",
    RetryEvent: "retry",
}


def emit(**fact: Any) -> None:
    sys.stdout.write(json.dumps(fact) + "\n")
    sys.stdout.flush()


async def run(args: dict[str, Any]) -> None:
    config = Configuration(progress_interval=0.0)
    async with Session(args["identifier"], state_dir=args["state_dir"], config=config) as session:
        tasks = [await session.download(f["url"], f["destination"]) for f in args["files"]]
        async with session.events(since=0) as stream:
            async for event in stream:
                kind = KINDS.get(type(event))
                if kind is None:
                    continue
                emit(event=kind, task=event.task_id, seq=event.seq)  # type: ignore[union-attr]
                if isinstance(event, FinishedEvent | ErrorEvent | CancelledEvent):
                    break
        ended = []
        for task in tasks[: args["finishing"]]:
            await task.wait()
            ended.append(task.id)
        emit(ended=ended)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(run(json.loads(sys.argv[1])))
