"""``Session.fetch``: the data task (issue 21), against the loopback test server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest

from bgtransfer import (
    BasicAuth,
    Configuration,
    FetchResponse,
    FinishedEvent,
    HTTPStatusError,
    ResponseTooLargeError,
    RetryPolicy,
    Session,
    SessionClosedError,
    SessionError,
)
from bgtransfer.testing import AuthRequirement, Faults, TestServer

pytestmark = pytest.mark.asyncio

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0, jitter=0)


async def _queued(session: Session, count: int = 1) -> None:
    """One turn of the loop: a fetch task just created runs to its wait for a
    slot (it queues before its first await), and is then queued."""
    await asyncio.sleep(0)
    assert session.statistics().queued == count


async def test_fetch_returns_a_json_body(server: TestServer) -> None:
    document = {"name": "bgtransfer", "tasks": [1, 2, 3], "ok": True}
    body = json.dumps(document).encode()
    server.add_file("/api/doc.json", data=body)
    async with Session() as session:
        response = await session.fetch(server.url("/api/doc.json"))
    assert isinstance(response, FetchResponse)
    assert response.status == 200
    assert response.ok
    assert response.body == body
    assert response.json() == document
    assert response.text() == body.decode()
    assert response.url == server.url("/api/doc.json")
    assert response.header("content-length") == str(len(body))
    assert response.raise_for_status() is response
    with pytest.raises(AttributeError):
        response.status = 500  # type: ignore[misc]  # frozen
    (request,) = server.requests
    assert request.method == "GET"


async def test_a_not_found_is_returned_not_raised(server: TestServer) -> None:
    async with Session(config=Configuration(retry=FAST_RETRY)) as session:
        response = await session.fetch(server.url("/missing.json"))
    assert response.status == 404
    assert not response.ok
    with pytest.raises(HTTPStatusError) as info:
        response.raise_for_status()
    assert info.value.status == 404
    assert server.statistics().requests == 1  # a 404 is not retried


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_longer_than_the_cap_fails_naming_it(
    server: TestServer, chunked: bool
) -> None:
    server.add_file("/big.bin", size=200_000)
    server.set_faults("/big.bin", Faults(chunked=chunked))
    config = Configuration(fetch_max_bytes=50_000)
    async with Session(config=config) as session:
        with pytest.raises(ResponseTooLargeError) as info:
            await session.fetch(server.url("/big.bin"))
        assert info.value.max_bytes == 50_000
        assert "50000" in str(info.value)
        assert server.url("/big.bin") in str(info.value)
        # The call's own cap wins over the configuration's.
        with pytest.raises(ResponseTooLargeError, match="1000 bytes"):
            await session.fetch(server.url("/big.bin"), max_bytes=1000)
        response = await session.fetch(server.url("/big.bin"), max_bytes=200_000)
    assert hashlib.sha256(response.body).hexdigest() == server.file("/big.bin").sha256
    assert server.statistics().requests == 3  # a too large body is not retried


async def test_a_503_with_retry_after_is_retried(server: TestServer) -> None:
    server.add_file("/busy.json", data=b'{"ready": true}')
    server.set_faults("/busy.json", Faults(status=503, retry_after="1"), times=1)
    async with Session(config=Configuration(retry=FAST_RETRY)) as session:
        started = time.monotonic()
        response = await session.fetch(server.url("/busy.json"))
        waited = time.monotonic() - started
    assert response.status == 200
    assert response.json() == {"ready": True}
    assert server.statistics().requests_by_path["/busy.json"] == 2
    assert waited >= 0.9  # the server's Retry-After, not the zero backoff


async def test_a_503_that_outlasts_the_retries_is_returned(server: TestServer) -> None:
    server.add_file("/down.json", data=b"{}")
    server.set_faults("/down.json", Faults(status=503))
    async with Session(config=Configuration(retry=FAST_RETRY)) as session:
        response = await session.fetch(server.url("/down.json"))
    assert response.status == 503
    assert server.statistics().requests == FAST_RETRY.max_attempts


async def test_a_fetch_waits_for_the_hosts_slot_held_by_a_download(
    server: TestServer, tmp_path: Path
) -> None:
    held = server.add_file("/held.bin", size=10_000)
    server.set_faults(held.path, Faults(hold_after=0))
    server.add_file("/small.json", data=b"[1]")
    config = Configuration(max_connections_per_host=1)
    async with Session(config=config) as session:
        task = await session.download(server.url(held.path), tmp_path / "held.bin")
        await server.wait_held(held.path)
        fetching = asyncio.create_task(session.fetch(server.url("/small.json")))
        await _queued(session)
        assert server.statistics().requests_by_path.get("/small.json", 0) == 0
        assert not fetching.done()
        server.release(held.path)
        assert isinstance(await task.wait(), FinishedEvent)
        response = await fetching
        assert response.json() == [1]
        assert session.statistics().active == 0
    assert server.statistics().peak_in_flight == 1
    assert [request.path for request in server.requests] == [held.path, "/small.json"]


async def test_a_download_waits_for_the_slot_a_fetch_holds(
    server: TestServer, tmp_path: Path
) -> None:
    server.add_file("/slow.json", data=b'{"a": 1}')
    server.set_faults("/slow.json", Faults(hold_after=0))
    file = server.add_file("/after.bin", size=5_000)
    config = Configuration(max_connections_per_host=1)
    async with Session(config=config) as session:
        fetching = asyncio.create_task(session.fetch(server.url("/slow.json")))
        await server.wait_held("/slow.json")
        task = await session.download(server.url(file.path), tmp_path / "after.bin")
        assert session.statistics().queued == 1
        assert server.statistics().requests_by_path.get(file.path, 0) == 0
        server.release("/slow.json")
        assert (await fetching).json() == {"a": 1}
        assert isinstance(await task.wait(), FinishedEvent)
    assert server.statistics().peak_in_flight == 1


async def test_redirects_are_followed(server: TestServer) -> None:
    server.add_file("/v2/doc.json", data=b'{"v": 2}')
    server.set_faults("/v1/doc.json", Faults(redirect_to="/v2/doc.json"))
    async with Session() as session:
        response = await session.fetch(server.url("/v1/doc.json"))
    assert response.status == 200
    assert response.json() == {"v": 2}
    assert response.url == server.url("/v2/doc.json")
    assert [request.path for request in server.requests] == ["/v1/doc.json", "/v2/doc.json"]


async def test_too_many_redirects_follow_the_sessions_rule(server: TestServer) -> None:
    server.add_file("/end.json", data=b"{}")
    server.set_faults("/r1", Faults(redirect_to="/r2"))
    server.set_faults("/r2", Faults(redirect_to="/end.json"))
    async with Session(config=Configuration(max_redirects=1)) as session:
        with pytest.raises(Exception, match="redirect") as info:
            await session.fetch(server.url("/r1"))
    assert server.url("/r1") in str(info.value)


async def test_a_background_session_refuses_fetch(server: TestServer, state_dir: Path) -> None:
    server.add_file("/doc.json", data=b"{}")
    async with Session("fetch-bg", state_dir=state_dir) as session:
        with pytest.raises(SessionError, match="ephemeral"):
            await session.fetch(server.url("/doc.json"))
    assert server.statistics().requests == 0


async def test_cancelling_the_caller_cancels_the_request_and_frees_the_slot(
    server: TestServer, tmp_path: Path
) -> None:
    server.add_file("/stuck.json", data=b"{}")
    server.set_faults("/stuck.json", Faults(hold_after=0))
    file = server.add_file("/next.bin", size=3_000)
    config = Configuration(max_connections_per_host=1)
    async with Session(config=config) as session:
        fetching = asyncio.create_task(session.fetch(server.url("/stuck.json")))
        await server.wait_held("/stuck.json")
        assert session.statistics().active == 1
        fetching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetching
        assert session.statistics().active == 0
        task = await session.download(server.url(file.path), tmp_path / "next.bin")
        assert isinstance(await task.wait(), FinishedEvent)
        server.release("/stuck.json")


async def test_cancelling_a_queued_fetch_leaves_the_queue(
    server: TestServer, tmp_path: Path
) -> None:
    held = server.add_file("/held.bin", size=1_000)
    server.set_faults(held.path, Faults(hold_after=0))
    config = Configuration(max_connections_per_host=1)
    async with Session(config=config) as session:
        task = await session.download(server.url(held.path), tmp_path / "held.bin")
        await server.wait_held(held.path)
        fetching = asyncio.create_task(session.fetch(server.url("/never.json")))
        await _queued(session)
        fetching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetching
        assert session.statistics().queued == 0
        server.release(held.path)
        assert isinstance(await task.wait(), FinishedEvent)
    assert server.statistics().requests_by_path.get("/never.json", 0) == 0


async def test_closing_the_session_ends_a_waiting_fetch(server: TestServer, tmp_path: Path) -> None:
    held = server.add_file("/held.bin", size=1_000)
    server.set_faults(held.path, Faults(hold_after=0))
    config = Configuration(max_connections_per_host=1)
    fetching: asyncio.Task[FetchResponse] | None = None
    async with Session(config=config) as session:
        await session.download(server.url(held.path), tmp_path / "held.bin")
        await server.wait_held(held.path)
        fetching = asyncio.create_task(session.fetch(server.url("/queued.json")))
        await _queued(session)
    with pytest.raises(SessionClosedError):
        await fetching
    server.release(held.path)


async def test_session_headers_and_secret_reply_headers(server: TestServer) -> None:
    server.add_file("/h.json", data=b"{}")
    config = Configuration(headers={"X-Session": "s", "Authorization": "Bearer secret-token"})
    async with Session(config=config) as session:
        response = await session.fetch(server.url("/h.json"), headers={"X-Call": "c"})
    (request,) = server.requests
    assert request.headers["X-Session"] == "s"
    assert request.headers["X-Call"] == "c"
    assert request.headers["Authorization"] == "Bearer secret-token"
    assert "secret-token" not in repr(response)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"method": "POST"}, ValueError),
        ({"method": 3}, TypeError),
        ({"max_bytes": 0}, ValueError),
        ({"max_bytes": True}, TypeError),
    ],
)
async def test_wrong_arguments_raise_at_the_call(
    server: TestServer, kwargs: dict[str, object], error: type[Exception]
) -> None:
    async with Session() as session:
        with pytest.raises(error):
            await session.fetch(server.url("/x.json"), **kwargs)  # type: ignore[arg-type]
        assert session.statistics().queued == session.statistics().active == 0
    assert server.statistics().requests == 0


async def test_head_and_delete(server: TestServer) -> None:
    server.add_file("/m.json", data=b'{"m": 1}')
    async with Session() as session:
        head = await session.fetch(server.url("/m.json"), method="head")
    assert head.status == 200
    assert head.body == b""
    assert server.requests[0].method == "HEAD"


async def test_head_of_a_resource_over_the_cap_is_no_error(server: TestServer) -> None:
    server.add_file("/large.bin", size=100_000)
    async with Session() as session:
        head = await session.fetch(server.url("/large.bin"), method="HEAD", max_bytes=10)
    assert head.status == 200
    assert head.header("Content-Length") == "100000"
    assert head.body == b""


async def test_credentials_of_the_session_are_sent(server: TestServer) -> None:
    server.add_file("/private.json", data=b'{"secret": 1}')
    server.require_auth("/private.json", AuthRequirement(basic=("alice", "s3cret")))
    async with Session() as session:
        refused = await session.fetch(server.url("/private.json"))
    assert refused.status == 401
    config = Configuration(auth=BasicAuth("alice", "s3cret"))
    async with Session(config=config) as session:
        response = await session.fetch(server.url("/private.json"))
    assert response.json() == {"secret": 1}
    assert "s3cret" not in repr(response)
