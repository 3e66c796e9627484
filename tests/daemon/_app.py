"""An application using ``Session(identifier, daemon=True)``, as a separate process.

Run as ``python tests/daemon/_app.py '<json>'``. Every fact goes to stdout as one
JSON line, flushed at once, so the test can synchronise on it:

``{"attached": pid, "tasks": [[id, state], ...]}``  the session is open
``{"created": id}``                                 ``download()`` returned
``{"terminal": id, "kind": ..., "location": ..., "seq": n}``  read from ``session.events()``
``{"delivered": cursor, "replayed": n}``            its ``EventsDeliveredEvent``
``{"error": type, "message": ...}``                 opening the session raised
``{"done": true}``                                  the session closed normally

Arguments: ``identifier``, ``state_dir``, ``mode`` (``"enqueue"``: create a task
per ``files`` item and exit; ``"collect"``: read events (from the cursor ``since``,
if given) until ``expect`` terminal events arrived; ``"hold"``: stay attached
until killed), ``files`` (a list of ``{"url", "destination"}``), ``config``
(keywords of ``Configuration``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from bgtransfer import (
    CancelledEvent,
    Configuration,
    ErrorEvent,
    EventsDeliveredEvent,
    FinishedEvent,
    Session,
    SessionError,
)


def say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main(args: dict[str, Any]) -> None:
    config = Configuration(**args.get("config", {}))
    session = Session(args["identifier"], state_dir=args["state_dir"], config=config, daemon=True)
    try:
        await session.__aenter__()
    except SessionError as exc:
        say(error=type(exc).__name__, message=str(exc), pid=getattr(exc, "pid", None))
        return
    try:
        say(attached=os.getpid(), tasks=[[t.id, t.state.value] for t in session.tasks()])
        mode = args["mode"]
        if mode == "enqueue":
            for item in args["files"]:
                task = await session.download(item["url"], item["destination"])
                say(created=task.id)
        elif mode == "collect":
            remaining = args["expect"]
            async with session.events(since=args.get("since")) as events:
                async for event in events:
                    if isinstance(event, EventsDeliveredEvent):
                        say(delivered=event.cursor, replayed=event.replayed)
                    if isinstance(event, FinishedEvent | ErrorEvent | CancelledEvent):
                        location = getattr(event, "location", None)
                        say(
                            terminal=event.task_id,
                            kind=type(event).__name__,
                            location=None if location is None else str(location),
                            seq=event.seq,
                        )
                        remaining -= 1
                        if remaining == 0:
                            break
        elif mode == "hold":
            await asyncio.Event().wait()
    finally:
        await session.__aexit__(None, None, None)
    say(done=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
