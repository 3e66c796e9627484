"""The seed scenario of docs/launch-events.md: enqueue five files, exit, be launched again.

    python examples/launch_app.py enqueue INBOX URL [URL ...]

asks the transfer daemon for the downloads and exits at once. When they are
done, with no process of the app attached, the daemon runs this script again
as ``launch_app.py collect`` (the session's ``launch_command``): it opens the
same session, collects what it missed, and exits. Its output goes to the
session's ``launch.log``. Needs ``Session(..., daemon=True)`` (issue 20).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bgtransfer import Configuration, DownloadRequest, ErrorEvent, FinishedEvent, Session

IDENTIFIER = "com.example.launch-app"
CONFIG = Configuration(launch_command=[sys.executable, os.path.abspath(__file__), "collect"])


async def enqueue(inbox: Path, urls: list[str]) -> None:
    async with Session(IDENTIFIER, config=CONFIG, daemon=True) as session:
        requests = [DownloadRequest(url, inbox / f"{i}.bin") for i, url in enumerate(urls)]
        tasks = await session.download_many(requests)
        print(f"enqueued {len(tasks)} downloads; exiting")
    # The process ends here; the daemon goes on with the downloads.


async def collect() -> None:
    # Launched by the daemon, with BGTRANSFER_IDENTIFIER, BGTRANSFER_STATE_DIR
    # (which Session reads itself) and BGTRANSFER_CURSOR in the environment.
    identifier = os.environ.get("BGTRANSFER_IDENTIFIER", IDENTIFIER)
    print(f"launched for {identifier} after event {os.environ.get('BGTRANSFER_CURSOR')}")
    async with Session(identifier, config=CONFIG, daemon=True) as session:
        async for event in session.events(follow=False):  # what was missed, then the end
            match event:
                case FinishedEvent():
                    print(f"finished: {event.location}")
                case ErrorEvent():
                    print(f"failed: {event.error}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["enqueue"] and len(sys.argv) > 3:
        inbox = Path(sys.argv[2]).resolve()  # the daemon takes absolute paths only
        inbox.mkdir(parents=True, exist_ok=True)
        asyncio.run(enqueue(inbox, sys.argv[3:]))
    elif sys.argv[1:] == ["collect"]:
        asyncio.run(collect())
    else:
        sys.exit(__doc__)
