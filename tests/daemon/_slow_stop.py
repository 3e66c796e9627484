"""A real bgtransfer daemon whose stop waits for the test (tests/daemon/test_stopping.py).

``python _slow_stop.py STATE_DIR`` runs ``process.run_daemon(STATE_DIR)`` and says on
stdout, one word a line: ``listening`` once it answers; ``stopping`` when it
is told to stop (SIGTERM), before it refuses anything; ``refused`` each time
it refused a request because it is stopping. The closing of its sessions
then waits for a line on stdin (within the daemon's own shutdown bound).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from bgtransfer._daemon import process, server, sessions


def say(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


real_close_all = sessions.SessionTable.close_all
real_listen = server.Daemon._listen
real_stop = server.Daemon.stop
real_stopping = getattr(server, "_stopping", None)  # (absent before stopping daemons refused)


async def gated_close_all(self: sessions.SessionTable) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()
    await real_close_all(self)


async def listen(self: server.Daemon, runner: Any) -> None:
    await real_listen(self, runner)
    say("listening")


def stop(self: server.Daemon) -> None:
    say("stopping")
    real_stop(self)


def stopping() -> Any:
    say("refused")
    assert real_stopping is not None
    return real_stopping()


sessions.SessionTable.close_all = gated_close_all  # type: ignore[method-assign]
server.Daemon._listen = listen  # type: ignore[method-assign]
server.Daemon.stop = stop  # type: ignore[method-assign]
if real_stopping is not None:
    server._stopping = stopping

if __name__ == "__main__":
    sys.exit(process.run_daemon(Path(sys.argv[1])))
