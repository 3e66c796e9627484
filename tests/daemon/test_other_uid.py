"""Another user is refused by the daemon's peer check, with a real other uid.

The socket's 0700 directory already keeps other users out; this test opens the
way on purpose (as a misconfigured directory would) so that the second line of
defence, SO_PEERCRED, is what refuses them. Switching users needs root: run as
another user, the test is skipped and says why (CI runs it: it runs as root).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bgtransfer._daemon.server import Daemon

pytestmark = pytest.mark.asyncio

NOBODY = 65534
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"

# Raw HTTP from the other user's process: only the standard library, and a Python
# that user can run (the test's own may live under a directory only root can read).
CLIENT = r"""
import socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
sock.sendall(b"GET /v1/hello HTTP/1.1\r\nHost: daemon\r\nBgtransfer-Protocol: 1\r\n"
             b"Connection: close\r\n\r\n")
answer = b""
while chunk := sock.recv(65536):
    answer += chunk
sys.stdout.write(answer.decode("utf-8", "replace"))
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory any user can reach (pytest's own tmp dirs are root's only)."""
    directory = Path(tempfile.mkdtemp(prefix="bgt-uid-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root")
async def test_a_real_other_user_is_refused_by_the_peer_check(open_dir: Path) -> None:
    state = open_dir / "state"
    sock = open_dir / "sock" / "daemon.sock"
    sock.parent.mkdir(mode=0o700)
    daemon = Daemon(state, socket_file=sock)
    serving = asyncio.create_task(daemon.serve())
    try:
        while not sock.exists():  # bound before serve() awaits its stop: no sleep
            assert not serving.done(), serving
            await asyncio.sleep(0)
        connector = aiohttp.UnixConnector(path=str(sock))
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get("http://daemon/v1/hello", headers={"Bgtransfer-Protocol": "1"}) as hello,
        ):
            assert hello.status == 200  # serving, its socket's mode set: now open the way
        os.chmod(open_dir, 0o755)
        os.chmod(sock.parent, 0o755)  # the misconfiguration: others may reach it
        os.chmod(sock, 0o666)
        client = await asyncio.create_subprocess_exec(
            SYSTEM_PYTHON,
            "-c",
            CLIENT,
            str(sock),
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            cwd="/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(client.communicate(), 30)
        assert client.returncode == 0, err.decode()
        answer = out.decode()
        assert answer.startswith("HTTP/1.1 403"), answer
        assert f"uid {NOBODY}" in answer
        assert '"protocol"' not in answer  # no hello for them
    finally:
        daemon.stop()
        await asyncio.wait_for(serving, 30)
