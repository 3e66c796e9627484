"""A child for the upload_many reattach test: enqueues a batch and waits to be killed.

Run as ``python tests/crash/_upload_many_child.py '<json>'`` with ``identifier``,
``state_dir``, ``daemon`` (bool) and ``uploads`` (a list of ``[url, file,
description]``). It opens the background session (in this process, or through
the daemon), makes the tasks with one ``session.upload_many()``, prints
``{"created": [id, ...]}`` once it returned (the batch is in the journal), then
waits until the parent SIGKILLs it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bgtransfer import Configuration, Session, UploadRequest

CONFIG = Configuration(max_connections_per_host=1)


async def run(args: dict[str, Any]) -> None:
    async with Session(
        args["identifier"], state_dir=args["state_dir"], config=CONFIG, daemon=args["daemon"]
    ) as session:
        tasks = await session.upload_many(
            UploadRequest(url, file, description=description)
            for url, file, description in args["uploads"]
        )
        sys.stdout.write(json.dumps({"created": [task.id for task in tasks]}) + "\n")
        sys.stdout.flush()
        await asyncio.Event().wait()  # (ended first: the parent's test fails)


if __name__ == "__main__":
    asyncio.run(run(json.loads(sys.argv[1])))
