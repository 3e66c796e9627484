"""Helpers for the tests against upload servers nobody here wrote."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import attrs
import pytest

from bgtransfer._core.upload_protocol import UploadMachine
from bgtransfer._io.resumable import send_resumable


@attrs.frozen
class TusNodeServer:
    """A running ``@tus/server``: its creation URL and where it stores uploads."""

    url: str
    directory: Path

    def stored(self, upload_url: str) -> Path:
        """The file holding the upload at ``upload_url``."""
        return self.directory / upload_url.rstrip("/").rsplit("/", 1)[-1]


async def send_until(
    client: aiohttp.ClientSession, machine: UploadMachine, path: Path, *, cut_at: int
) -> str:
    """Send ``path`` with ``machine`` and cancel once ``cut_at`` bytes went out,
    like a process killed mid-upload; the upload URL it got."""
    urls: list[str] = []
    enough = asyncio.Event()

    async def on_upload_url(machine: UploadMachine) -> None:
        assert machine.upload_url is not None
        urls.append(machine.upload_url)

    def on_progress(position: int) -> None:
        if position >= cut_at:
            enough.set()

    sending = asyncio.create_task(
        send_resumable(client, machine, path, on_upload_url=on_upload_url, on_progress=on_progress)
    )
    waiting = asyncio.create_task(enough.wait())
    done, _ = await asyncio.wait({sending, waiting}, return_when=asyncio.FIRST_COMPLETED)
    assert sending not in done, "the upload ended before it could be cut"
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    [url] = urls
    return url
