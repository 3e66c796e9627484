"""The application the daemon launches in tests/daemon/test_launch_events.py.

``python _launched.py RECORD CONFIG``: appends one JSON line to ``RECORD``:
its environment's ``BGTRANSFER_*`` variables, its working directory, and the
terminal events it read with ``session.events(since=$BGTRANSFER_CURSOR)``
(``[task_id, seq]``). It acknowledges nothing (``acknowledge="explicit"``), so
the daemon's next launch waits twice as long. ``CONFIG``: a JSON file of the
session's ``Configuration`` keywords.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from bgtransfer import Configuration, FinishedEvent, Session


async def main(record: str, config_file: str) -> None:
    keywords = json.loads(Path(config_file).read_text(encoding="utf-8"))
    config = Configuration(**keywords, acknowledge="explicit")
    env = {name: value for name, value in os.environ.items() if name.startswith("BGTRANSFER_")}
    finished = []
    identifier = env["BGTRANSFER_IDENTIFIER"]
    async with Session(identifier, config=config, daemon=True) as session:  # the env's state dir
        since = int(env["BGTRANSFER_CURSOR"])
        async with session.events(since=since, follow=False) as events:
            async for event in events:
                if isinstance(event, FinishedEvent):
                    finished.append([event.task_id, event.seq])
    line = {
        "env": env,
        "cwd": os.getcwd(),
        "finished": finished,
        "listen": "LISTEN_FDS" in os.environ,
    }
    with Path(record).open("a", encoding="utf-8") as file:  # noqa: ASYNC230 (a test's script)
        file.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
