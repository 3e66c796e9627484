"""bgtransfer uploading one file (scenario 9): one session, one ``upload()``, waited for.

``--session ephemeral`` uses ``Session()``; ``--session background`` uses
``Session(--identifier, state_dir=--state-dir)`` (a fresh directory per run).
The receiver (``benchmarks/_receiver.py``) answers ``{"received": N}``; this
client prints that line's numbers in its report, so the runner checks the byte
count as it does curl's.

Usage: ``python bgtransfer_put.py --url URL --file PATH [--session
ephemeral|background --state-dir DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from _common import report

from bgtransfer import FinishedEvent, Session


def make_session(args: argparse.Namespace) -> Session:
    if args.session == "ephemeral":
        return Session()
    if args.state_dir is None:
        raise SystemExit(f"--session {args.session} needs --state-dir")
    return Session(args.identifier, state_dir=args.state_dir)


async def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    async with make_session(args) as session:
        task = await session.upload(args.url, args.file)
        finished = await task.wait()
    if not isinstance(finished, FinishedEvent) or finished.reply is None:
        raise SystemExit(f"the upload ended with {finished!r}")
    answer = json.loads(finished.reply.body)
    report(elapsed_s=time.perf_counter() - started, status=finished.reply.status, **answer)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--session", choices=["ephemeral", "background"], default="ephemeral")
    parser.add_argument("--identifier", default="bench.up")
    parser.add_argument("--state-dir", type=Path)
    sys.exit(asyncio.run(main(parser.parse_args())))
