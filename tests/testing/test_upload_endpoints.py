"""The test server's upload endpoints themselves: knobs, schedules, strictness."""

from __future__ import annotations

import aiohttp
import pytest

from bgtransfer.testing import TestServer, UploadFaults


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "GET"}, "method must be one of"),
        ({"method": "PATCH", "status": 99}, "between 200 and 599"),
        ({"method": "PATCH", "reset_after": -1}, ">= 0"),
    ],
)
def test_faults_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UploadFaults(**kwargs)  # type: ignore[arg-type]


def test_prefixes_are_checked_and_unique() -> None:
    server = TestServer()
    with pytest.raises(ValueError, match="must end with '/'"):
        server.add_tus_endpoint("/tus")
    server.add_tus_endpoint("/up/")
    with pytest.raises(ValueError, match="already has an upload endpoint"):
        server.add_ietf_endpoint("/up/")


@pytest.mark.asyncio
async def test_counted_faults_run_out_and_standing_ones_stay() -> None:
    async with TestServer() as server, aiohttp.ClientSession() as client:
        endpoint = server.add_tus_endpoint("/tus/")
        endpoint.set_faults(UploadFaults(method="OPTIONS", status=503))
        endpoint.set_faults(UploadFaults(method="OPTIONS", status=500), times=1)
        statuses = []
        for _ in range(3):
            async with client.options(server.url("/tus/")) as response:
                statuses.append(response.status)
        endpoint.set_faults(UploadFaults(method="OPTIONS"))
        async with client.options(server.url("/tus/")) as response:
            statuses.append(response.status)
    assert statuses == [500, 503, 503, 204]


@pytest.mark.asyncio
async def test_the_ietf_endpoint_wants_the_interop_version() -> None:
    async with TestServer() as server, aiohttp.ClientSession() as client:
        server.add_ietf_endpoint("/ietf/")
        headers = {"Upload-Complete": "?1"}
        async with client.post(server.url("/ietf/"), headers=headers, data=b"x") as response:
            assert response.status == 400
        headers["Upload-Draft-Interop-Version"] = "8"
        async with client.post(server.url("/ietf/"), headers=headers, data=b"x") as response:
            assert response.status == 200
            assert response.headers["Upload-Complete"] == "?1"


@pytest.mark.asyncio
async def test_the_tus_endpoint_wants_its_version() -> None:
    async with TestServer() as server, aiohttp.ClientSession() as client:
        server.add_tus_endpoint("/tus/")
        headers = {"Upload-Length": "3", "Tus-Resumable": "0.2.2"}
        async with client.post(server.url("/tus/"), headers=headers) as response:
            assert response.status == 412
            assert response.headers["Tus-Version"] == "1.0.0"
