"""The test server's upload endpoint: bodies hashed as they arrive, fault knobs
applied to the request body."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import aiohttp
import pytest

from bgtransfer.testing import Faults, ReceivedUpload, TestServer

pytestmark = pytest.mark.asyncio

BODY = os.urandom(300_000)
DIGEST = hashlib.sha256(BODY).hexdigest()


async def test_put_and_post_are_hashed_and_answered(server: TestServer) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.put(server.url("/a"), data=BODY) as response:
            assert response.status == 201
            assert json.loads(await response.read()) == {
                "method": "PUT",
                "length": len(BODY),
                "sha256": DIGEST,
            }
            assert "Set-Cookie" in response.headers
        async with client.post(server.url("/b") + "?pad=10", data=b"") as response:
            assert response.status == 200
            assert json.loads(await response.read())["pad"] == "x" * 10
    assert server.uploads == (
        ReceivedUpload(method="PUT", path="/a", length=len(BODY), sha256=DIGEST, complete=True),
        ReceivedUpload(
            method="POST", path="/b", length=0, sha256=hashlib.sha256().hexdigest(), complete=True
        ),
    )


async def test_a_served_file_still_refuses_other_methods(server: TestServer) -> None:
    file = server.add_file("/f", size=10)
    async with aiohttp.ClientSession() as client, client.put(server.url(file.path)) as response:
        assert response.status == 405
    assert server.uploads == ()


async def test_status_after_the_body(server: TestServer) -> None:
    server.set_faults("/s", Faults(status=503, retry_after="7"), times=1)
    async with aiohttp.ClientSession() as client:
        async with client.put(server.url("/s"), data=BODY) as response:
            assert (response.status, response.headers["Retry-After"]) == (503, "7")
        async with client.put(server.url("/s"), data=BODY) as response:
            assert response.status == 201
    assert [u.sha256 for u in server.uploads] == [DIGEST, DIGEST]


async def test_reset_after_received_bytes(server: TestServer) -> None:
    server.set_faults("/r", Faults(reset_after=100_000))
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.ClientError):
            async with client.put(server.url("/r"), data=BODY) as response:
                await response.read()
    # (aiohttp sends an idempotent PUT of bytes again once: each is cut the same way)
    assert {(u.length, u.complete) for u in server.uploads} == {(100_000, False)}


async def test_hold_after_and_drip(server: TestServer) -> None:
    server.set_faults("/h", Faults(hold_after=50_000, drip=(100_000, 0.0)))
    async with aiohttp.ClientSession() as client:
        sending = asyncio.ensure_future(client.put(server.url("/h"), data=BODY))
        await server.wait_held("/h")
        assert server.uploads == ()
        server.release("/h")
        async with await sending as response:
            assert response.status == 201
    [upload] = server.uploads
    assert (upload.length, upload.sha256) == (len(BODY), DIGEST)
