"""The script a user would write instead of bgtransfer: plain aiohttp + aiofiles.

What a competent developer writes from the two libraries' documentation, with
no tuning: one ``ClientSession`` whose ``TCPConnector`` carries the limits
(``limit`` overall, ``limit_per_host`` per host), one coroutine per URL run with
``asyncio.gather`` (the connector queues what is over the limits, so no
semaphore), ``raise_for_status()``, the body read with ``iter_chunked(64 KiB)``
(aiohttp's default read buffer size, and the usual choice) and each chunk
written with ``aiofiles`` into ``NAME.part``, renamed to ``NAME`` once complete
(so a crash never leaves a truncated file under the final name). The session's
default timeouts (5 minutes overall) stay; no retries, progress, resume or ranges.

Usage: ``python aiohttp_aiofiles.py --urls LIST --out DIR --per-host N --total N``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiofiles
import aiofiles.os
import aiohttp
from _common import EXIT_UNSUPPORTED, add_transfer_arguments, output_name, read_urls, report

CHUNK = 64 * 1024


async def download(client: aiohttp.ClientSession, url: str, out: Path) -> None:
    path = out / output_name(url)
    part = path.with_name(path.name + ".part")
    async with client.get(url) as response:
        response.raise_for_status()
        async with aiofiles.open(part, "wb") as file:
            async for chunk in response.content.iter_chunked(CHUNK):
                await file.write(chunk)
    await aiofiles.os.replace(part, path)


async def main(args: argparse.Namespace) -> None:
    urls = read_urls(args.urls)
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=args.total, limit_per_host=args.per_host)
    async with aiohttp.ClientSession(connector=connector) as client:
        await asyncio.gather(*(download(client, url, args.out) for url in urls))
    report(elapsed_s=time.perf_counter() - started, files=len(urls))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_transfer_arguments(parser)
    arguments = parser.parse_args()
    if arguments.segments > 1:
        report(unsupported="a plain script fetches each file over one connection")
        sys.exit(EXIT_UNSUPPORTED)
    asyncio.run(main(arguments))
