"""A child for the upload reattach test: starts one upload and waits to be killed.

Run as ``python tests/crash/_upload_child.py '<json>'`` with ``identifier``,
``state_dir``, ``url``, ``file``, ``reply_to`` (or null) and, optionally,
``protocol`` (``plain`` by default), ``headers`` (pairs) and
``cancel_on_retry``. It opens the background session, starts the upload, prints
``{"created": id}`` once ``session.upload()`` returned (the task is in the
journal), then reads the task's events, printing ``{"progress": n}`` for each
progress event, until the parent SIGKILLs it. With ``cancel_on_retry`` the
retry policy waits 10 minutes, and the first ``RetryEvent`` is answered with
``{"cancelling": id}`` and ``task.cancel()`` (which the parent kills mid-way).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bgtransfer import Configuration, ProgressEvent, RetryEvent, RetryPolicy, Session


def emit(**fact: Any) -> None:
    sys.stdout.write(json.dumps(fact) + "\n")
    sys.stdout.flush()


async def run(args: dict[str, Any]) -> None:
    cancel_on_retry = args.get("cancel_on_retry", False)
    config = Configuration(progress_interval=0.0, checkpoint_interval=0.01)
    if cancel_on_retry:
        config = config.replace(retry=RetryPolicy(initial_delay=600, jitter=0.0))
    async with Session(args["identifier"], state_dir=args["state_dir"], config=config) as session:
        task = await session.upload(
            args["url"],
            args["file"],
            reply_to=args["reply_to"],
            protocol=args.get("protocol", "plain"),
            headers=dict(args.get("headers", {})),
        )
        emit(created=task.id)
        async with task.events() as stream:
            async for event in stream:
                if isinstance(event, ProgressEvent):
                    emit(progress=event.total_bytes_written)
                elif isinstance(event, RetryEvent) and cancel_on_retry:
                    emit(cancelling=task.id)
                    await task.cancel()
        await asyncio.Event().wait()  # (ended first: the parent's test fails)


if __name__ == "__main__":
    asyncio.run(run(json.loads(sys.argv[1])))
