"""Scenario 4: many queued tasks in a background session; enqueue, then reopen and list.

``enqueue`` opens ``Session(--identifier, state_dir=--state-dir)`` with one
connection per host and creates ``--count`` tasks for ``--url-base/qNNNNN.bin``.
The runner points ``--url-base`` at a loopback socket that accepts connections and
never answers, so the first task holds the only slot and every other task stays
queued: nothing is downloaded, only queued. It reports the time the
``download()`` calls took and the resident memory after them, then ends the
process at once with ``os._exit`` (``--exit kill``, the default: the app is
killed while its tasks wait, which is what a background session's journal is
for) or by leaving the session (``--exit close``, which cancels the tasks).

``--daemon`` does the same through the state directory's daemon
(``Session(..., daemon=True)``, scenario 7; the runner starts the daemon before):
``--enqueue many`` makes the tasks with one ``download_many`` call (one request to
the daemon) instead of one ``download()`` each, and ``--exit close`` leaves the
session (the tasks go on in the daemon; the lease ends before the process does, so
the next client can attach at once).

``--upload FILE`` (scenario 10) queues uploads of FILE instead, to the same URLs:
one ``upload()`` per task, or with ``--enqueue many`` one ``upload_many()`` call.

``reopen`` opens the same session in a new process and lists its tasks; it
reports the time to open the session and to list, and how many tasks it found.
With no journal, a new process finds none (the runner then says "journal not
available yet").

Usage: ``python bgtransfer_queue.py enqueue|reopen --state-dir DIR --count N
[--url-base URL --out DIR] [--upload FILE] [--daemon] [--enqueue each|many] [--exit kill|close]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

from _common import report

from bgtransfer import Configuration, DownloadRequest, Session, UploadRequest

CONFIG = Configuration(max_connections_per_host=1, max_concurrent_transfers=1)


def resident_mib() -> float:
    """This process's resident set size now."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def url_of(base: str, index: int) -> str:
    return f"{base}/q{index:05d}.bin"


def leave(args: argparse.Namespace) -> None:
    sys.stdout.flush()
    if args.exit == "kill":
        os._exit(0)


def open_session(args: argparse.Namespace) -> Session:
    return Session(args.identifier, config=CONFIG, state_dir=args.state_dir, daemon=args.daemon)


async def enqueue(args: argparse.Namespace) -> None:
    opened = time.perf_counter()
    async with open_session(args) as session:
        started = time.perf_counter()
        if args.upload is not None and args.enqueue == "many":
            await session.upload_many(
                [UploadRequest(url_of(args.url_base, i), args.upload) for i in range(args.count)]
            )
        elif args.upload is not None:
            for index in range(args.count):
                await session.upload(url_of(args.url_base, index), args.upload)
        elif args.enqueue == "many":
            await session.download_many(
                [
                    DownloadRequest(url_of(args.url_base, index), args.out / f"q{index:05d}.bin")
                    for index in range(args.count)
                ]
            )
        each = args.enqueue == "each" and args.upload is None
        for index in range(args.count if each else 0):
            await session.download(url_of(args.url_base, index), args.out / f"q{index:05d}.bin")
        enqueued = time.perf_counter()
        statistics = session.statistics()
        report(
            open_s=started - opened,
            enqueue_s=enqueued - started,
            enqueued=len(session.tasks()),
            queued=statistics.queued,
            active=statistics.active,
            rss_after_enqueue_mib=resident_mib(),
            peak_rss_in_process_mib=peak_rss_mib(),
        )
        leave(args)


async def reopen(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    async with open_session(args) as session:
        opened = time.perf_counter()
        tasks = session.tasks()
        listed = time.perf_counter()
        expected = (
            [url_of(args.url_base, index) for index in range(args.count)] if args.url_base else None
        )
        report(
            reopen_s=opened - started,
            list_s=listed - opened,
            reopen_list_s=listed - started,
            listed=len(tasks),
            urls_match=expected is not None and [task.url for task in tasks] == expected,
            rss_after_reopen_mib=resident_mib(),
        )
        leave(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["enqueue", "reopen"])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--identifier", default="bench.bg")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--url-base", default="")
    parser.add_argument("--out", type=Path, default=Path.cwd())
    parser.add_argument("--exit", choices=["kill", "close"], default="kill")
    parser.add_argument("--daemon", action="store_true", help="through the daemon")
    parser.add_argument("--enqueue", choices=["each", "many"], default="each")
    parser.add_argument("--upload", type=Path, help="queue uploads of this file instead")
    args = parser.parse_args()
    asyncio.run(enqueue(args) if args.action == "enqueue" else reopen(args))


if __name__ == "__main__":
    main()
