"""Talking to a daemon by hand, as a client of another language would: its
base URL, the protocol header, and an attach whose stream the test holds."""

from __future__ import annotations

import json

import aiohttp

from bgtransfer import Configuration
from bgtransfer._core.wire import PROTOCOL_VERSION, encode_config

BASE = "http://daemon"
HEADERS = {"Bgtransfer-Protocol": str(PROTOCOL_VERSION)}


async def attach(
    http: aiohttp.ClientSession, identifier: str, config: Configuration | None = None
) -> tuple[aiohttp.ClientResponse, str]:
    """Attach by hand; return the open stream (it holds the lease: the test
    closes it) and the lease. The stream is read up to its first line."""
    body = {"config": encode_config(config or Configuration())}
    response = await http.post(
        f"{BASE}/v1/sessions/{identifier}/attach", json=body, headers=HEADERS
    )
    assert response.status == 200
    first = json.loads(await response.content.readline())
    assert first["type"] == "attached"
    return response, first["lease"]
