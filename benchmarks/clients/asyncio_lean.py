"""A reference, not a contender to beat: small files over plain asyncio, no aiohttp.

How fast Python itself moves many small files over loopback when no HTTP library
is in the way: a hand-written HTTP/1.1 GET on an ``asyncio.Protocol`` per
connection (keep-alive, a pool per host), one asyncio task per URL, a semaphore
per host for the per-host limit, each body written on the loop once it is whole
(``os.open``/``os.write``/``os.close`` into ``NAME.part``, then a rename).

It understands only what loopback nginx sends for a static file: a 200 with a
``Content-Length`` body. Anything else (chunked, no length, another status,
plain ``http://`` only) ends the run with an error; bodies over ``MAX_BODY`` are
refused (``EXIT_UNSUPPORTED``): it holds each body in memory. No timeouts,
retries, validation of the response beyond that, or events.

``--journal PATH`` adds the least a durable queue needs: every URL is inserted
into an SQLite table (WAL, ``synchronous=NORMAL``, as bgtransfer's journal) in
one transaction before the first request, and each file's end is an update
committed with the others that end within 5 ms (group commit), all on the loop.

``docs/benchmarks.md`` uses it to say how much of bgtransfer's time on scenario 2
is aiohttp's and how much is the engine's.

Usage: ``python asyncio_lean.py --urls LIST --out DIR --per-host N --total N [--journal DB]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from _common import EXIT_UNSUPPORTED, add_transfer_arguments, output_name, read_urls, report

MAX_BODY = 1024 * 1024
FILE_MODE = 0o644
COMMIT_DELAY = 0.005


class Unsupported(Exception):
    """The server sent something this reference client does not handle."""


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self._body_start = -1
        self._body_end = -1
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None or self._waiter.done():
            return
        try:
            if self._body_end < 0 and not self._parse_head():
                return
        except Exception as exc:  # handed to the waiting request
            self._waiter.set_exception(exc)
            return
        if len(self._buffer) >= self._body_end:
            body = bytes(self._buffer[self._body_start : self._body_end])
            del self._buffer[: self._body_end]
            self._body_end = -1
            self._waiter.set_result(body)

    def _parse_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            raise Unsupported(f"status line {lines[0]!r}")
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" or (name == "connection" and "close" in value):
                raise Unsupported(f"header {line!r}")
        if length < 0:
            raise Unsupported("no Content-Length")
        if length > MAX_BODY:
            raise Unsupported(f"a body of {length} bytes (this client holds bodies in memory)")
        self._body_start = end + 4
        self._body_end = self._body_start + length
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def get(self, request: bytes) -> bytes:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self._waiter


class Journal:
    """Rows for every URL, each file's end group-committed within ``COMMIT_DELAY``."""

    def __init__(self, path: Path, urls: list[str]) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE tasks (id INTEGER PRIMARY KEY, url TEXT, state TEXT, bytes INTEGER)"
        )
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO tasks VALUES (?, ?, 'waiting', 0)", list(enumerate(urls))
            )
        self._ended: list[tuple[int, int]] = []
        self._timer: asyncio.TimerHandle | None = None

    def ended(self, task_id: int, size: int) -> None:
        self._ended.append((size, task_id))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(COMMIT_DELAY, self.commit)

    def commit(self) -> None:
        self._timer = None
        if self._ended:
            rows, self._ended = self._ended, []
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany("UPDATE tasks SET state='done', bytes=? WHERE id=?", rows)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.commit()
        self._db.close()


class Downloader:
    def __init__(self, out: Path, per_host: int, journal: Journal | None) -> None:
        self._out = out
        self._per_host = per_host
        self._journal = journal
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._idle: dict[str, list[Connection]] = {}

    async def fetch(self, task_id: int, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise Unsupported(f"{url}: plain http:// only")
        netloc = parts.netloc
        slot = self._slots.setdefault(netloc, asyncio.Semaphore(self._per_host))
        request = (
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {netloc}\r\n"
            "Accept-Encoding: identity\r\n\r\n"
        ).encode("ascii")
        async with slot:
            idle = self._idle.setdefault(netloc, [])
            while idle and idle[-1].closed:
                idle.pop()
            if idle:
                connection = idle.pop()
            else:
                loop = asyncio.get_running_loop()
                _, connection = await loop.create_connection(
                    Connection, parts.hostname, parts.port or 80
                )
            body = await connection.get(request)
            idle.append(connection)
        path = os.path.join(self._out, output_name(url))
        fd = os.open(path + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(path + ".part", path)
        if self._journal is not None:
            self._journal.ended(task_id, len(body))

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                if connection.transport is not None:
                    connection.transport.close()


async def main(args: argparse.Namespace) -> None:
    urls = read_urls(args.urls)
    started = time.perf_counter()
    journal = None if args.journal is None else Journal(args.journal, urls)
    downloader = Downloader(args.out, args.per_host, journal)
    try:
        await asyncio.gather(*(downloader.fetch(i, url) for i, url in enumerate(urls)))
    finally:
        downloader.close()
        if journal is not None:
            journal.close()
    report(elapsed_s=time.perf_counter() - started, files=len(urls))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_transfer_arguments(parser)
    parser.add_argument("--journal", type=Path, help="SQLite file for the durable variant")
    arguments = parser.parse_args()
    if arguments.segments > 1:
        sys.exit(EXIT_UNSUPPORTED)
    try:
        asyncio.run(main(arguments))
    except Unsupported as exc:
        print(f"asyncio_lean: unsupported: {exc}", file=sys.stderr)
        sys.exit(EXIT_UNSUPPORTED)
