"""Task metrics (issue 22, ``URLSessionTaskMetrics``): per attempt the times of
DNS, connect, request and first byte, its bytes, status, connection reuse,
proxy, redirects and outcome, against the loopback test server; in this
process and through the daemon; the session's aggregate; and no secret in
any of it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from _helpers import collect, sha256_bytes, sha256_file, wait_for_bytes
from _tinyproxy import TinyProxy
from bgtransfer import (
    AttemptMetrics,
    AuthenticationError,
    BasicAuth,
    Configuration,
    FinishedEvent,
    HTTPStatusError,
    ResumedEvent,
    RetryPolicy,
    Session,
    SessionMetrics,
    TaskMetrics,
)
from bgtransfer._core.wire_metrics import encode_session_metrics, encode_task_metrics
from bgtransfer.testing import AuthRequirement, Faults, TestServer

pytestmark = pytest.mark.asyncio

FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=0.0)
SECRET = "s3cret-T0KEN-value"


def _on_localhost(url: str) -> str:
    """The same URL by a name to resolve (an IP address needs no DNS lookup)."""
    return url.replace("//127.0.0.1:", "//localhost:", 1)


def _check_order(attempt: AttemptMetrics) -> None:
    """Every step present comes after the ones before it."""
    steps = [
        attempt.request_start,
        attempt.connect_start,
        attempt.dns_start,
        attempt.dns_end,
        attempt.connect_end,
        attempt.request_sent,
        attempt.response_start,
        attempt.duration,
    ]
    present = [step for step in steps if step is not None]
    assert present == sorted(present), attempt
    assert attempt.ended_at is not None
    assert attempt.started_at <= attempt.ended_at


async def test_a_first_download_by_hostname_records_dns_connect_first_byte_and_end(
    server: TestServer, out_dir: Path
) -> None:
    served = server.add_file("/f.bin", size=300_000)
    url = _on_localhost(server.url("/f.bin"))
    async with Session() as session:
        task = await session.download(url, out_dir / "f.bin")
        await task.wait()
        metrics = await task.metrics()
    assert isinstance(metrics, TaskMetrics)
    assert metrics.task_id == task.id
    [attempt] = metrics.attempts
    assert (attempt.number, attempt.outcome, attempt.error, attempt.status) == (1, "ok", None, 200)
    assert attempt.url == url
    for step in ("dns_start", "dns_end", "connect_start", "connect_end", "request_start"):
        assert getattr(attempt, step) is not None, step
    assert attempt.request_sent is not None
    assert attempt.response_start is not None
    assert attempt.duration is not None
    _check_order(attempt)
    assert (attempt.reused_connection, attempt.connections_opened) == (False, 1)
    assert attempt.connections_reused == 0
    assert attempt.requests == 1
    assert attempt.proxy is None
    assert attempt.redirects == metrics.redirects == ()
    # Byte-exact: what the attempt received is the file.
    assert sha256_file(out_dir / "f.bin") == served.sha256
    assert attempt.bytes_received == metrics.bytes_received == 300_000
    assert attempt.bytes_sent == metrics.bytes_sent == 0
    assert (metrics.attempt_count, metrics.dropped_attempts) == (1, 0)


async def test_the_second_task_to_a_host_reuses_the_connection(
    server: TestServer, out_dir: Path
) -> None:
    server.add_file("/a.bin", size=10_000)
    server.add_file("/b.bin", size=20_000)
    async with Session() as session:
        first = await session.download(_on_localhost(server.url("/a.bin")), out_dir / "a")
        await first.wait()
        second = await session.download(_on_localhost(server.url("/b.bin")), out_dir / "b")
        await second.wait()
        [one] = (await first.metrics()).attempts
        [two] = (await second.metrics()).attempts
        total = await session.metrics()
    assert (one.reused_connection, one.connections_opened, one.connections_reused) == (False, 1, 0)
    assert (two.reused_connection, two.connections_opened, two.connections_reused) == (True, 0, 1)
    # No new connection: no lookup, no connect; still a request and a response.
    assert (two.dns_start, two.connect_start, two.connect_end) == (None, None, None)
    assert two.request_start is not None
    assert two.response_start is not None
    _check_order(two)
    assert two.bytes_received == 20_000
    assert isinstance(total, SessionMetrics)
    assert (total.attempts, total.retries, total.failures) == (2, 0, 0)
    assert (total.connections_opened, total.connections_reused) == (1, 1)
    assert total.bytes_received == 30_000
    summary = total.time_to_first_byte
    assert summary.count == 2
    assert summary.minimum is not None
    assert summary.mean is not None
    assert summary.maximum is not None
    assert summary.minimum <= summary.mean <= summary.maximum
    assert {summary.minimum, summary.maximum} == {one.response_start, two.response_start}


async def test_a_retried_download_has_one_attempt_per_try_with_its_outcome(
    server: TestServer, out_dir: Path
) -> None:
    served = server.add_file("/f.bin", size=300_000)
    server.set_faults("/f.bin", Faults(status=503), times=2)
    async with Session(config=Configuration(retry=FAST_RETRY)) as session:
        task = await session.download(server.url("/f.bin"), out_dir / "f.bin")
        await task.wait()
        metrics = await task.metrics()
        total = await session.metrics()
    assert [(a.number, a.outcome, a.status, a.error) for a in metrics.attempts] == [
        (1, "retried", 503, "HTTPStatusError"),
        (2, "retried", 503, "HTTPStatusError"),
        (3, "ok", 200, None),
    ]
    for attempt in metrics.attempts:
        _check_order(attempt)
    ends = [a.ended_at for a in metrics.attempts]
    starts = [a.started_at for a in metrics.attempts]
    pairs = zip(ends[:-1], starts[1:], strict=True)
    assert all(end is not None and end <= later for end, later in pairs)
    assert [a.bytes_received for a in metrics.attempts] == [0, 0, 300_000]
    assert sha256_file(out_dir / "f.bin") == served.sha256
    assert (total.attempts, total.retries, total.failures) == (3, 2, 0)


async def test_a_resumed_attempt_counts_only_its_own_bytes(
    server: TestServer, out_dir: Path
) -> None:
    served = server.add_file("/f.bin", size=400_000)
    server.set_faults("/f.bin", Faults(reset_after=150_000), times=1)
    async with Session(config=Configuration(retry=FAST_RETRY)) as session:
        task = await session.download(server.url("/f.bin"), out_dir / "f.bin")
        stream = task.events()
        await task.wait()
        events = await collect(stream)
        metrics = await task.metrics()
    [resumed] = [e for e in events if isinstance(e, ResumedEvent)]
    first, second = metrics.attempts
    assert (first.outcome, second.outcome) == ("retried", "ok")
    assert first.error is not None
    assert first.bytes_received == resumed.offset
    assert (second.status, second.bytes_received) == (206, 400_000 - resumed.offset)
    assert metrics.bytes_received == 400_000
    assert sha256_file(out_dir / "f.bin") == served.sha256


async def test_an_attempt_that_ends_the_task_is_failed(server: TestServer, out_dir: Path) -> None:
    server.set_faults("/gone", Faults(status=404))
    async with Session() as session:
        task = await session.download(server.url("/gone"), out_dir / "gone")
        with pytest.raises(HTTPStatusError):
            await task.wait()
        [attempt] = (await task.metrics()).attempts
        total = await session.metrics()
    assert (attempt.outcome, attempt.error, attempt.status) == ("failed", "HTTPStatusError", 404)
    assert (total.attempts, total.retries, total.failures) == (1, 0, 1)


async def test_the_redirect_chain_is_recorded_redacted(server: TestServer, out_dir: Path) -> None:
    served = server.add_file("/f.bin", size=5_000)
    server.set_faults("/start", Faults(redirect_to=f"/middle?sig={SECRET}"))
    server.set_faults("/middle", Faults(redirect_to="/f.bin"))
    async with Session() as session:
        task = await session.download(server.url("/start"), out_dir / "f.bin")
        await task.wait()
        metrics = await task.metrics()
        total = await session.metrics()
    chain = (server.url("/middle"), server.url("/f.bin"))  # (the query is left out)
    assert metrics.redirects == chain
    [attempt] = metrics.attempts
    assert attempt.redirects == chain
    assert attempt.requests == 3
    assert attempt.status == 200
    assert (attempt.connections_opened, attempt.connections_reused) == (1, 2)
    assert attempt.bytes_received == 5_000
    assert sha256_file(out_dir / "f.bin") == served.sha256
    assert total.redirects == 2
    assert SECRET not in repr(metrics)


async def test_metrics_show_the_running_attempt_in_process_and_through_the_daemon(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    served = server.add_file("/f.bin", size=600_000)
    server.set_faults("/f.bin", Faults(hold_after=200_000))
    async with background("com.example.metrics", state_dir=state_dir) as session:
        task = await session.download(server.url("/f.bin"), out_dir / "f.bin")
        await server.wait_held("/f.bin")
        await wait_for_bytes(task, 200_000)
        running = await task.metrics()
        server.release("/f.bin")
        await task.wait()
        done = await task.metrics()
        total = await session.metrics()
    [attempt] = running.attempts
    assert (attempt.outcome, attempt.duration, attempt.ended_at) == ("running", None, None)
    assert attempt.status == 200
    assert attempt.response_start is not None
    assert attempt.bytes_received == 200_000  # (all the server sent before its gate)
    [attempt] = done.attempts
    assert (attempt.outcome, attempt.status, attempt.bytes_received) == ("ok", 200, 600_000)
    _check_order(attempt)
    assert sha256_file(out_dir / "f.bin") == served.sha256
    assert (total.attempts, total.bytes_received) == (1, 600_000)


async def test_upload_attempts_count_the_bytes_sent(
    background: Callable[..., Session], server: TestServer, state_dir: Path, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 1000
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    server.set_faults("/up", Faults(status=503), times=1)
    config = Configuration(retry=FAST_RETRY)
    async with background("com.example.up", state_dir=state_dir, config=config) as session:
        task = await session.upload(server.url("/up"), source)
        finished = await task.wait()
        metrics = await task.metrics()
        total = await session.metrics()
    assert isinstance(finished, FinishedEvent)
    assert [(a.outcome, a.status) for a in metrics.attempts] == [("retried", 503), ("ok", 201)]
    assert metrics.attempts[-1].bytes_sent == len(data)
    assert metrics.attempts[-1].bytes_received == 0
    assert all(a.request_sent is not None for a in metrics.attempts)
    received = server.uploads[-1]
    assert (received.length, received.sha256) == (len(data), sha256_bytes(data))
    assert metrics.bytes_sent == sum(a.bytes_sent for a in metrics.attempts)
    assert total.bytes_sent == metrics.bytes_sent
    assert (total.attempts, total.retries) == (2, 1)


async def test_an_unknown_task_s_metrics_raise_key_error(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    async with background("com.example.unknown", state_dir=state_dir) as session:
        task = await session.download(server.url("/nothing"), out_dir / "nothing")
        with pytest.raises(HTTPStatusError):
            await task.wait()
        backend = session._require_backend()
        with pytest.raises(KeyError):
            await backend.task_metrics(task.id + 100)


async def test_a_suspended_attempt_is_stopped_and_the_next_one_continues(
    server: TestServer, out_dir: Path
) -> None:
    served = server.add_file("/f.bin", size=500_000)
    server.set_faults("/f.bin", Faults(hold_after=100_000), times=1)
    async with Session() as session:
        task = await session.download(server.url("/f.bin"), out_dir / "f.bin")
        await wait_for_bytes(task, 100_000)
        task.suspend()
        task.resume()  # (queued again once its runner has wound down)
        await task.wait()
        metrics = await task.metrics()
    first, second = metrics.attempts
    assert (first.outcome, first.error, first.bytes_received) == ("stopped", None, 100_000)
    assert (second.outcome, second.status, second.bytes_received) == ("ok", 206, 400_000)
    assert metrics.bytes_received == 500_000
    assert sha256_file(out_dir / "f.bin") == served.sha256


async def test_a_reattached_task_shows_the_attempts_of_its_new_process(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    served = server.add_file("/f.bin", size=500_000)
    server.set_faults("/f.bin", Faults(hold_after=200_000))
    async with Session("com.example.again", state_dir=state_dir) as session:
        task = await session.download(server.url("/f.bin"), out_dir / "f.bin")
        await wait_for_bytes(task, 200_000)
        [before] = (await task.metrics()).attempts
    assert before.outcome == "running"
    server.set_faults("/f.bin", Faults())
    async with Session("com.example.again", state_dir=state_dir) as session:
        [again] = session.tasks()
        await again.wait()
        metrics = await again.metrics()
    [attempt] = metrics.attempts  # (the first process's attempt is not kept)
    assert (attempt.number, attempt.outcome, attempt.status) == (1, "ok", 206)
    assert attempt.bytes_received == metrics.bytes_received == 300_000
    assert sha256_file(out_dir / "f.bin") == served.sha256


@pytest.mark.tinyproxy
async def test_no_secret_reaches_metrics_their_repr_or_their_wire_form(
    server: TestServer, tinyproxy_binary: str, tmp_path: Path, out_dir: Path
) -> None:
    """The task URL's query, an Authorization header, the userinfo of a
    redirect target, a proxy's credentials: none is in the metrics."""
    served = server.add_file("/f.bin", size=10_000)
    target = server.url("/f.bin").replace("http://", f"http://user:{SECRET}-userinfo@")
    server.set_faults("/start", Faults(redirect_to=target))
    with TinyProxy(
        tmp_path / "proxy", binary=tinyproxy_binary, credentials=("al", SECRET)
    ) as proxy:
        config = Configuration(proxy=proxy.url_with_credentials)
        async with Session(config=config) as session:
            task = await session.download(
                server.url("/start") + f"?token={SECRET}-query",
                out_dir / "f.bin",
                headers={"Authorization": f"Bearer {SECRET}-header"},
            )
            await task.wait()
            metrics = await task.metrics()
            total = await session.metrics()
        proxy_url = proxy.url
    assert sha256_file(out_dir / "f.bin") == served.sha256
    [attempt] = metrics.attempts
    assert attempt.proxy == proxy_url
    assert attempt.url == server.url("/start")
    assert metrics.redirects == (server.url("/f.bin"),)
    shown = [
        repr(metrics),
        str(metrics),
        repr(total),
        json.dumps(encode_task_metrics(metrics)),
        json.dumps(encode_session_metrics(total)),
    ]
    for text in shown:
        assert SECRET not in text
        assert "token" not in text
        assert "user:" not in text


async def test_a_resumable_upload_s_attempt_counts_its_exchanges(
    server: TestServer, tmp_path: Path
) -> None:
    """protocol="auto": the OPTIONS, the tus creation and its PATCH are the
    requests of one attempt, on one connection."""
    data = bytes(range(256)) * 3000
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    endpoint = server.add_tus_endpoint("/tus/")
    async with Session() as session:
        task = await session.upload(server.url("/tus/"), source, protocol="auto")
        await task.wait()
        metrics = await task.metrics()
    [attempt] = metrics.attempts
    methods = [method for method, _path, _headers in endpoint.requests]
    assert methods[0] == "OPTIONS"
    assert attempt.requests == len(methods) >= 3
    assert (attempt.connections_opened, attempt.connections_reused) == (1, len(methods) - 1)
    assert (attempt.outcome, attempt.bytes_sent) == ("ok", len(data))
    assert attempt.status is not None
    assert 200 <= attempt.status < 300
    [stored] = endpoint.uploads.values()
    assert stored.sha256() == sha256_bytes(data)


async def test_an_attempt_ended_by_wrong_credentials_is_failed_not_stopped(
    server: TestServer, out_dir: Path
) -> None:
    """The error that ends the task comes from answering the 401 (the same
    credentials were refused), not from the request: still the attempt's end."""
    server.add_file("/f", size=1000)
    server.require_auth("/f", AuthRequirement(basic=("alice", SECRET)))
    config = Configuration(auth=BasicAuth("alice", "wrong"), retry=FAST_RETRY)
    async with Session(config=config) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        with pytest.raises(AuthenticationError):
            await task.wait()
        [attempt] = (await task.metrics()).attempts
        total = await session.metrics()
    assert (attempt.outcome, attempt.error, attempt.status) == (
        "failed",
        "AuthenticationError",
        401,
    )
    assert (total.attempts, total.failures) == (1, 1)
    assert not (out_dir / "f").exists()
