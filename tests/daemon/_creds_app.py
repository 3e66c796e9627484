"""An application whose ``Configuration.auth`` is a provider, for tests/daemon/test_credentials.py.

``python _creds_app.py RECORD CONFIG MODE [URL DESTINATION]``, a daemon session
(the identifier and the state dir from ``BGTRANSFER_IDENTIFIER`` and
``BGTRANSFER_STATE_DIR``, as the daemon's launch gives them). ``CONFIG``: a JSON
file of ``Configuration`` keywords and ``"credentials": [user, password]``.

* ``enqueue URL DESTINATION``: download it and exit at once; its provider never
  answers (the app is gone before it could), so the task waits for the app.
* ``answer`` (what the daemon launches): its provider answers with the
  credentials; it waits until every task of the session has ended, then
  appends a JSON line to ``RECORD``: what the provider was asked (task id,
  url, schemes, realm) and how each task ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from bgtransfer import BasicAuth, Challenge, Configuration, Session, TaskInfo, TransferError


async def main(record: str, config_file: str, mode: str, *rest: str) -> None:
    keywords: dict[str, Any] = json.loads(Path(config_file).read_text(encoding="utf-8"))
    user, password = keywords.pop("credentials")
    asked: list[list[Any]] = []

    async def never(task: TaskInfo, challenges: tuple[Challenge, ...]) -> BasicAuth | None:
        await asyncio.Event().wait()  # gone before it answers
        return None

    async def answer(task: TaskInfo, challenges: tuple[Challenge, ...]) -> BasicAuth | None:
        asked.append([task.id, task.url, [c.scheme for c in challenges], challenges[0].realm])
        return BasicAuth(user, password)

    config = Configuration(**keywords, auth=never if mode == "enqueue" else answer)
    identifier = os.environ["BGTRANSFER_IDENTIFIER"]
    state_dir = os.environ["BGTRANSFER_STATE_DIR"]
    async with Session(identifier, state_dir=state_dir, config=config, daemon=True) as session:
        if mode == "enqueue":
            url, destination = rest
            await session.download(url, destination)
            return
        ended = []
        for task in session.tasks():
            try:
                await task.wait()
                ended.append([task.id, "finished"])
            except TransferError as exc:
                ended.append([task.id, type(exc).__name__])
    with Path(record).open("a", encoding="utf-8") as file:  # noqa: ASYNC230 (a test's script)
        file.write(json.dumps({"asked": asked, "ended": ended}) + "\n")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
