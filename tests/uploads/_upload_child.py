"""A process uploading a file with the resumable driver, to be SIGKILLed part way.

Run as ``python tests/uploads/_upload_child.py '<json>'`` with ``protocol``
(``tus``/``ietf``), ``endpoint``, ``path``, ``size`` and ``signal_at`` (bytes).
Prints one JSON line per fact, flushed at once: ``{"upload_url": url}`` when the
driver hands the URL over (before any byte of the file is sent), ``{"sent": n}``
once ``signal_at`` bytes went out, ``{"done": status}`` if it is not killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp

from bgtransfer._core.resumable_upload import IetfUpload
from bgtransfer._core.tus import TusUpload
from bgtransfer._core.upload_protocol import UploadMachine
from bgtransfer._io.resumable import send_resumable


def say(**fact: object) -> None:
    print(json.dumps(fact), flush=True)


async def main(args: dict[str, object]) -> None:
    endpoint, path, size = str(args["endpoint"]), str(args["path"]), int(str(args["size"]))
    machine = (
        TusUpload.start(endpoint, size)
        if args["protocol"] == "tus"
        else IetfUpload.start(endpoint, size)
    )
    signal_at = int(str(args["signal_at"]))
    said = False

    async def on_upload_url(machine: UploadMachine) -> None:
        say(upload_url=machine.upload_url)

    def on_progress(position: int) -> None:
        nonlocal said
        if position >= signal_at and not said:
            said = True
            say(sent=position)

    async with aiohttp.ClientSession() as client:
        result = await send_resumable(
            client, machine, path, on_upload_url=on_upload_url, on_progress=on_progress
        )
    say(done=result.status)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
