"""Gates (hold/wait_held/release), statistics, connection counting and shutdown."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bgtransfer.testing import Faults, ServedFile, TestServer


async def _fetch(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as response:
        return await response.read()


@pytest.mark.asyncio
async def test_three_held_requests_then_release(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(hold_after=1000))
    url = server.url(served.path)
    tasks = [asyncio.create_task(_fetch(session, url)) for _ in range(3)]

    await server.wait_held(served.path, count=3)
    stats = server.statistics()
    assert server.held(served.path) == 3
    assert (stats.in_flight, stats.peak_in_flight) == (3, 3)
    assert (stats.open_connections, stats.peak_connections, stats.total_connections) == (3, 3, 3)
    assert stats.bytes_sent == 3000
    assert not any(task.done() for task in tasks)
    assert len({request.connection_id for request in server.requests}) == 3

    server.release(served.path)
    assert await asyncio.gather(*tasks) == [served.data] * 3
    assert server.held(served.path) == 0
    # The gate stays open for later requests until it is re-armed.
    assert await _fetch(session, url) == served.data
    stats = await server.wait_until(lambda s: s.in_flight == 0)
    assert stats.peak_in_flight == 3
    assert stats.bytes_sent == 4 * served.size


@pytest.mark.asyncio
async def test_hold_after_zero_sends_headers_before_holding(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(hold_after=0))
    async with session.get(server.url(served.path)) as response:
        # Headers arrived although the body is held.
        assert server.held(served.path) == 1
        assert response.status == 200
        assert response.headers["Content-Length"] == str(served.size)
        assert server.statistics().bytes_sent == 0
        server.release(served.path)
        assert await response.read() == served.data


@pytest.mark.asyncio
async def test_hold_after_n_delivers_exactly_n_bytes_first(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(hold_after=100_000))
    async with session.get(server.url(served.path)) as response:
        assert await response.content.readexactly(100_000) == served.data[:100_000]
        await server.wait_held(served.path)
        assert server.statistics().bytes_sent == 100_000
        server.release(served.path)
        assert await response.content.read() == served.data[100_000:]


@pytest.mark.asyncio
async def test_hold_combines_with_range_and_reset(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(hold_after=10, reset_after=20))
    headers = {"Range": "bytes=1000-"}
    async with session.get(server.url(served.path), headers=headers) as response:
        assert response.status == 206
        assert await response.content.readexactly(10) == served.data[1000:1010]
        await server.wait_held(served.path)
        server.release(served.path)
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.content.read()
    assert server.statistics().bytes_sent == 20


@pytest.mark.asyncio
async def test_release_then_rearm_does_not_rehold_released_requests(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(hold_after=0))
    url = server.url(served.path)
    first = [asyncio.create_task(_fetch(session, url)) for _ in range(2)]
    await server.wait_held(served.path, count=2)

    server.release(served.path)
    server.set_faults(served.path, Faults(hold_after=0))  # re-arms at once
    assert await asyncio.gather(*first) == [served.data] * 2

    late = asyncio.create_task(_fetch(session, url))
    await server.wait_held(served.path)
    assert not late.done()
    server.release(served.path)
    assert await late == served.data


@pytest.mark.asyncio
async def test_hold_rearms_without_changing_faults(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(hold_after=0))
    server.release(served.path)
    assert await _fetch(session, server.url(served.path)) == served.data
    server.hold(served.path)
    task = asyncio.create_task(_fetch(session, server.url(served.path)))
    await server.wait_held(served.path)
    server.release(served.path)
    assert await task == served.data


@pytest.mark.asyncio
async def test_one_shot_hold(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(hold_after=0), times=1)
    held = asyncio.create_task(_fetch(session, server.url(served.path)))
    await server.wait_held(served.path)
    # The next request is not held while the first still is.
    assert await _fetch(session, server.url(served.path)) == served.data
    assert server.held(served.path) == 1
    server.release(served.path)
    assert await held == served.data


@pytest.mark.asyncio
async def test_wait_held_validates_count(server: TestServer) -> None:
    with pytest.raises(ValueError, match="count"):
        await server.wait_held("/x", count=0)


@pytest.mark.asyncio
async def test_close_aborts_held_and_sleeping_requests(session: aiohttp.ClientSession) -> None:
    server = TestServer()
    await server.start()
    held = server.add_file("/held", size=100_000)
    slow = server.add_file("/slow", size=100_000)
    late = server.add_file("/late", size=10)
    server.set_faults(held.path, Faults(hold_after=10))
    server.set_faults(slow.path, Faults(drip=(1, 60.0)))
    server.set_faults(late.path, Faults(headers_delay=60.0))
    tasks = [
        asyncio.create_task(_fetch(session, server.url(held.path))),
        asyncio.create_task(_fetch(session, server.url(held.path))),
        asyncio.create_task(_fetch(session, server.url(slow.path))),
        asyncio.create_task(_fetch(session, server.url(late.path))),
    ]
    await server.wait_held(held.path, count=2)
    await server.wait_until(lambda s: s.in_flight == 4)
    waiter = asyncio.create_task(server.wait_held(held.path, count=5))

    async with asyncio.timeout(10):  # far below the 60 s the faults would take
        await server.close()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, aiohttp.ClientError) for result in results), results
    with pytest.raises(RuntimeError, match="closed"):
        await waiter
    stats = server.statistics()
    assert (stats.in_flight, stats.open_connections) == (0, 0)


@pytest.mark.asyncio
async def test_keep_alive_reuse_counts_one_connection(
    server: TestServer, served: ServedFile
) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):
            assert await _fetch(session, server.url(served.path)) == served.data
        stats = await server.wait_until(lambda s: s.in_flight == 0)
        # The connection stays open, idle, between requests.
        assert (stats.open_connections, stats.in_flight) == (1, 0)
    stats = await server.wait_until(lambda s: s.open_connections == 0)
    assert (stats.requests, stats.total_connections, stats.peak_connections) == (3, 1, 1)
    assert stats.peak_in_flight == 1
    assert len({request.connection_id for request in server.requests}) == 1
    assert [request.index for request in server.requests] == [0, 1, 2]


@pytest.mark.asyncio
async def test_separate_connections_get_separate_ids(
    server: TestServer, served: ServedFile
) -> None:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):
            await _fetch(session, server.url(served.path))
    stats = await server.wait_until(lambda s: s.open_connections == 0)
    assert stats.total_connections == 3
    assert len({request.connection_id for request in server.requests}) == 3


@pytest.mark.asyncio
async def test_recorded_requests_and_per_path_counts(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    headers = {"Range": "bytes=0-9", "X-Custom": "yes"}
    async with session.get(server.url(served.path) + "?a=1&b=2", headers=headers) as response:
        await response.read()
    async with session.head(server.url(served.path)) as response:
        await response.read()
    async with session.get(server.url("/missing")) as response:
        await response.read()

    first, second, third = server.requests
    assert (first.method, first.path, first.query_string) == ("GET", served.path, "a=1&b=2")
    assert first.headers["range"] == first.headers["RANGE"] == "bytes=0-9"
    assert first.headers["x-custom"] == "yes"
    assert (second.method, second.query_string) == ("HEAD", "")
    assert third.path == "/missing"
    assert [first.index, second.index, third.index] == [0, 1, 2]

    stats = server.statistics()
    assert stats.requests == 3
    assert dict(stats.requests_by_path) == {served.path: 2, "/missing": 1}
    assert stats.bytes_sent == 10
    with pytest.raises(TypeError):
        stats.requests_by_path["/x"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        stats.requests = 0  # type: ignore[misc]


@pytest.mark.asyncio
async def test_reset_statistics(server: TestServer, served: ServedFile) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        await _fetch(session, server.url(served.path))
        await _fetch(session, server.url(served.path))
        await server.wait_until(lambda s: s.in_flight == 0)
        server.reset_statistics()
        stats = server.statistics()
        assert (stats.requests, stats.bytes_sent, stats.total_connections) == (0, 0, 0)
        assert dict(stats.requests_by_path) == {}
        assert len(server.requests) == 0
        # Gauges survive a reset; peaks restart from them.
        assert (stats.open_connections, stats.peak_connections) == (1, 1)
        assert (stats.in_flight, stats.peak_in_flight) == (0, 0)

        await _fetch(session, server.url(served.path))
    assert [request.index for request in server.requests] == [2]  # indexes never restart
    stats = server.statistics()
    assert (stats.requests, stats.bytes_sent) == (1, served.size)


@pytest.mark.asyncio
async def test_close_with_a_client_that_stopped_reading(session: aiohttp.ClientSession) -> None:
    server = TestServer(shutdown_timeout=0.1)
    await server.start()
    big = server.add_file("/big", size=32 * 1024 * 1024)
    async with session.get(server.url(big.path)) as response:
        # Read nothing more: the server's writes back up until it blocks.
        assert await response.content.readexactly(10) == big.data[:10]
        await server.wait_until(lambda s: s.in_flight == 1)
        async with asyncio.timeout(10):
            await server.close()
        stats = server.statistics()
        assert (stats.in_flight, stats.open_connections) == (0, 0)
        assert stats.bytes_sent < big.size
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


@pytest.mark.asyncio
async def test_construct_outside_a_running_loop_then_use() -> None:
    server = await asyncio.to_thread(TestServer)  # no event loop in that thread
    async with server:
        file = server.add_file("/a", data=b"abc")
        async with aiohttp.ClientSession() as session:
            assert await _fetch(session, server.url(file.path)) == b"abc"
