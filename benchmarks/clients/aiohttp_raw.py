"""The floor Python can reach: a minimal raw aiohttp download loop.

One ``ClientSession``; a semaphore per host for the per-host limit (the
connector gets the same limits); bodies read with ``iter_chunks`` from a 4 MiB
read buffer, so every chunk is the ``bytes`` object the parser produced (no
joins); chunks are kept in a list, never copied, and written with ``writev``.
A body that is still under 256 KiB when it ends (the small files) is written on
the event loop at the end: open, ``writev``, close, no thread hop. A larger one
is written by a worker thread while the socket keeps being drained: once 256 KiB
have gathered and no write is in flight, they go out as one ``writev``, the next
one launched from the previous one's completion (reading waits for the disk only
past 8 MiB gathered); the last bytes are written together with the close. No
timeouts, retries, progress or partial-file renames: nothing but the bytes.

``--segments N`` fetches each file as N ranges over N connections (HEAD for the
length, ``Range`` GETs, ``os.pwritev`` at each range's offset into one file).

Usage: ``python aiohttp_raw.py --urls LIST --out DIR --per-host N --total N [--segments N]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import aiohttp
from _common import add_transfer_arguments, host_of, output_name, read_urls, report

READ_BUFSIZE = 4 * 1024 * 1024
MIN_WRITE = 256 * 1024
MAX_PENDING = 8 * 1024 * 1024
FILE_MODE = 0o644
IOV_MAX = os.sysconf("SC_IOV_MAX")


def _write(fd: int, path: Path, chunks: list[bytes], offset: int) -> int:
    """Write all of ``chunks`` at ``offset`` (-1: at the file position), opening
    ``path`` first when ``fd`` is -1; return the fd."""
    if fd < 0:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    buffers: list[bytes | memoryview] = list(chunks)
    while buffers:
        batch = buffers[:IOV_MAX]
        done = os.writev(fd, batch) if offset < 0 else os.pwritev(fd, batch, offset)
        if offset >= 0:
            offset += done
        written = 0  # buffers written whole
        for buffer in batch:
            if done < len(buffer):
                break
            done -= len(buffer)
            written += 1
        del buffers[:written]
        if done:  # a short write ended inside this buffer
            buffers[0] = memoryview(buffers[0])[done:]
    return fd


def _finish(fd: int, path: Path, chunks: list[bytes], offset: int) -> None:
    """Write the rest (opening the file if nothing was written yet), then close."""
    fd = _write(fd, path, chunks, offset)
    os.close(fd)


class Writer:
    """One body into one file: chunks gather while a write runs in a worker thread.

    A write starts once ``MIN_WRITE`` bytes have gathered and none is in flight;
    when a write completes, whatever gathered meanwhile goes out at once (from the
    completion callback, without waiting for the next chunk). Reading waits for the
    disk only past ``MAX_PENDING`` bytes. A body that never reached ``MIN_WRITE``
    is written on the loop at the end; otherwise the last bytes are written
    together with the close.
    """

    def __init__(self, path: Path, fd: int, offset: int) -> None:
        self._path = path
        self._fd = fd
        self._offset = offset
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._inflight: asyncio.Future[int] | None = None
        self._error: BaseException | None = None

    async def add(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._inflight is None:
            if self._pending_size >= MIN_WRITE:
                self._launch()
        elif self._pending_size >= MAX_PENDING:
            await asyncio.wait([self._inflight])  # back-pressure: the disk is slower

    async def finish(self) -> None:
        while self._inflight is not None:
            await asyncio.wait([self._inflight])
        if self._error is not None:
            raise self._error
        if self._fd < 0:  # a small body, nothing written yet: on the loop, no thread hop
            _finish(self._fd, self._path, self._pending, self._offset)
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _finish, self._fd, self._path, self._pending, self._offset)

    def _launch(self) -> None:
        data, size = self._pending, self._pending_size
        self._pending, self._pending_size = [], 0
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, _write, self._fd, self._path, data, self._offset)
        if self._offset >= 0:
            self._offset += size
        future.add_done_callback(self._written)
        self._inflight = future

    def _written(self, future: asyncio.Future[int]) -> None:
        self._inflight = None
        error = future.exception()
        if error is not None:
            self._error = error
            return
        self._fd = future.result()
        if self._pending_size >= MIN_WRITE:
            self._launch()


class Downloader:
    def __init__(self, client: aiohttp.ClientSession, out: Path, per_host: int) -> None:
        self._client = client
        self._out = out
        self._per_host = per_host
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    def _slot(self, url: str) -> asyncio.Semaphore:
        host = host_of(url)
        if host not in self._semaphores:
            self._semaphores[host] = asyncio.Semaphore(self._per_host)
        return self._semaphores[host]

    async def whole(self, url: str) -> None:
        """GET ``url`` into its output file."""
        async with self._slot(url), self._client.get(url) as response:
            response.raise_for_status()
            await self._stream(response, Writer(self._out / output_name(url), -1, -1))

    async def segmented(self, url: str, segments: int) -> None:
        """Fetch ``url`` as ``segments`` ranges written in place into one file."""
        path = self._out / output_name(url)
        async with self._slot(url), self._client.head(url) as response:
            response.raise_for_status()
            size = int(response.headers["Content-Length"])
        await asyncio.to_thread(_create, path, size)
        step = -(-size // segments)
        ranges = [(start, min(start + step, size) - 1) for start in range(0, size, step)]
        await asyncio.gather(*(self._range(url, path, first, last) for first, last in ranges))

    async def _range(self, url: str, path: Path, first: int, last: int) -> None:
        headers = {"Range": f"bytes={first}-{last}"}
        async with self._slot(url), self._client.get(url, headers=headers) as response:
            if response.status != 206:
                raise RuntimeError(f"{url}: expected 206 for a range, got {response.status}")
            fd = await asyncio.to_thread(os.open, path, os.O_WRONLY)
            await self._stream(response, Writer(path, fd, first))

    async def _stream(self, response: aiohttp.ClientResponse, writer: Writer) -> None:
        # No clean-up on failure: this client has no retries, a failure ends the run.
        async for chunk, _ in response.content.iter_chunks():
            await writer.add(chunk)
        await writer.finish()


def _create(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


async def main(args: argparse.Namespace) -> None:
    urls = read_urls(args.urls)
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=args.total, limit_per_host=args.per_host)
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        read_bufsize=READ_BUFSIZE,
        timeout=aiohttp.ClientTimeout(total=None),
    ) as client:
        downloader = Downloader(client, args.out, args.per_host)
        if args.segments > 1:
            jobs = [downloader.segmented(url, args.segments) for url in urls]
        else:
            jobs = [downloader.whole(url) for url in urls]
        await asyncio.gather(*jobs)
    report(elapsed_s=time.perf_counter() - started, files=len(urls))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_transfer_arguments(parser)
    asyncio.run(main(parser.parse_args()))
