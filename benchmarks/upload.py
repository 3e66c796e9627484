"""Issue 21's speed line, standalone: one file uploaded with bgtransfer and with
``curl -T``, side by side, to the same loopback receiver.

    python benchmarks/upload.py                 # 1 GiB, 3 rounds
    python benchmarks/upload.py --size-mib 64 --rounds 1

The receiver is a process of its own (a raw asyncio server: it reads the
request's headers and ``Content-Length`` bytes, counting them, and answers
``201`` with the count), so neither client shares a CPU with it more than the
other. Each round runs both clients, in alternating order, each as a fresh
process (``bgtransfer``: ``Session()`` and one ``upload()``, waited for; curl:
``curl -sS --fail -T FILE URL -o /dev/null``). The target (issue 21): the
bgtransfer median within 1.2x of curl's. Not in ``nox -s bench`` yet: the suite's
harness checks what a contender *downloaded*; an upload's check is the
receiver's count, here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.2

RECEIVER = r"""
import asyncio, sys

class Receiver(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.head, self.left = transport, b"", None
    def data_received(self, data):
        if self.left is None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, data = self.head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            fields = dict(l.split(":", 1) for l in lines[1:] if ":" in l)
            fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
            if fields.get("expect", "").lower() == "100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.left = self.size = int(fields.get("content-length", "0"))
        self.left -= len(data)
        if self.left <= 0:
            body = str(self.size).encode()
            self.transport.write(
                b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(body), body)
            )
            self.transport.close()

async def main():
    server = await asyncio.get_running_loop().create_server(Receiver, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

CLIENT = r"""
import asyncio, sys
from bgtransfer import Session

async def main():
    async with Session() as session:
        task = await session.upload(sys.argv[1], sys.argv[2])
        finished = await task.wait()
    assert finished.reply is not None and finished.reply.status == 201, finished
    assert int(finished.reply.body) == int(sys.argv[3]), finished.reply

asyncio.run(main())
"""


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    curl = shutil.which("curl")
    if curl is None:
        print("curl is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "upload.bin"
        size = args.size_mib * 1024 * 1024
        with source.open("wb") as file:
            for _ in range(args.size_mib):
                file.write(os.urandom(1024 * 1024))
        receiver = subprocess.Popen(
            [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True
        )
        try:
            assert receiver.stdout is not None
            url = f"http://127.0.0.1:{receiver.stdout.readline().strip()}/upload.bin"
            runs: dict[str, list[float]] = {"bgtransfer": [], "curl -T": []}
            commands = {
                "bgtransfer": [sys.executable, "-c", CLIENT, url, str(source), str(size)],
                "curl -T": [curl, "-sS", "--fail", "-T", str(source), url, "-o", "/dev/null"],
            }
            for round_ in range(args.rounds):
                order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
                for name in order:
                    runs[name].append(_timed(commands[name]))
        finally:
            receiver.kill()
            receiver.wait()
    medians = {name: statistics.median(times) for name, times in runs.items()}
    for name, times in runs.items():
        speed = size / medians[name] / 2**20
        spread = f"{min(times):.2f}-{max(times):.2f}"
        print(f"{name:12} median {medians[name]:.2f} s ({spread}), {speed:.0f} MiB/s")
    ratio = medians["bgtransfer"] / medians["curl -T"]
    verdict = "met" if ratio <= TARGET else "missed"
    print(f"bgtransfer / curl -T = {ratio:.2f} (target <= {TARGET}: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
