"""Retries, suspend/resume and resume data against the real loopback server.

Every case ends with the destination byte-identical to what the server holds at
the end, or with a clear terminal error and nothing at the destination.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from _helpers import (
    check_resumable_stream,
    collect,
    planted_partial,
    sha256_file,
    signed,
    wait_for_bytes,
)
from bgtransfer import (
    CancelledEvent,
    Configuration,
    ErrorEvent,
    FinishedEvent,
    HTTPStatusError,
    InvalidResumeDataError,
    ProgressEvent,
    ResourceTimeoutError,
    ResumeData,
    ResumedEvent,
    RetryEvent,
    RetryPolicy,
    Session,
    TaskState,
    TransferTimeoutError,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

FAST = RetryPolicy(max_attempts=4, initial_delay=0, jitter=0)
CONFIG = Configuration(retry=FAST, progress_interval=0)


async def test_reset_mid_body_resumes_from_the_offset(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=1_000_000)
    # Hold after 300,000 bytes, then close: the cut comes only once the client has
    # written them (aiohttp drops bytes still buffered when a body ends in error).
    server.set_faults(file.path, Faults(hold_after=300_000, close_after=300_000), times=1)
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        stream = task.events()
        events = []
        async for event in stream:
            events.append(event)
            if isinstance(event, ProgressEvent) and event.total_bytes_written == 300_000:
                break
        server.release(file.path)
        events += await collect(stream)
    terminal = check_resumable_stream(events, task.id)
    assert isinstance(terminal, FinishedEvent)
    assert sha256_file(terminal.location) == file.sha256
    retry = next(e for e in events if isinstance(e, RetryEvent))
    assert retry.attempt == 2
    resumed = next(e for e in events if isinstance(e, ResumedEvent))
    assert resumed == ResumedEvent(task_id=task.id, offset=300_000, expected_total=file.size)
    # The ResumedEvent comes after the retry and before the resumed progress.
    kinds = [type(e) for e in events if not isinstance(e, ProgressEvent)]
    assert kinds == [RetryEvent, ResumedEvent, FinishedEvent]
    first, second = server.requests
    assert "Range" not in first.headers
    assert second.headers["Range"] == "bytes=300000-"
    assert second.headers["If-Range"] == file.etag
    assert second.headers["Accept-Encoding"] == "identity"


def cut_once_after(server: TestServer, path: str, count: int) -> None:
    """The next response stops after ``count`` bytes until released, then closes."""
    server.set_faults(path, Faults(hold_after=count, close_after=count), times=1)


async def test_server_that_ignores_range_restarts_from_zero(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=500_000)
    cut_once_after(server, file.path, 200_000)
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        stream = task.events()
        await wait_for_bytes(task, 200_000)
        server.set_faults(file.path, Faults(ignore_range=True))
        server.release(file.path)
        events = await collect(stream)
    terminal = check_resumable_stream(events, task.id)
    assert isinstance(terminal, FinishedEvent)
    assert sha256_file(terminal.location) == file.sha256  # never appended to the old bytes
    assert ResumedEvent(task_id=task.id, offset=0, expected_total=file.size) in events
    assert server.requests[1].headers["Range"] == "bytes=200000-"
    assert task.bytes_received == file.size


async def test_file_changed_on_the_server_restarts_with_the_new_file(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    server.add_file("/f.bin", size=400_000)
    server.set_faults("/f.bin", Faults(hold_after=100_000))
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url("/f.bin"), out_dir / "f.bin")
        await wait_for_bytes(task, 100_000)
        task.suspend()
        await server.wait_until(lambda stats: stats.in_flight == 0)
        new = server.replace_file("/f.bin", size=450_000, seed="v2")  # new ETag, new bytes
        server.release("/f.bin")
        task.resume()
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(result.location) == new.sha256
    assert server.requests[-1].headers["If-Range"] != new.etag


async def test_weak_etag_rules_out_resuming(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    server.set_faults(file.path, Faults(etag="weak"))
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await wait_for_bytes(task, 1)
        task.suspend()
        task.resume()
        events = await collect(task.events())
        assert isinstance(events[-1], FinishedEvent)
        assert sha256_file(out_dir / "f.bin") == file.sha256
        # An entity tag that is weak may not go in If-Range, and rules the date out too.
        assert all(
            "If-Range" not in r.headers and "Range" not in r.headers for r in server.requests
        )


async def test_strong_last_modified_is_used_when_there_is_no_etag(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    server.set_faults(file.path, Faults(etag="none"))
    server.set_faults(
        file.path, Faults(etag="none", hold_after=100_000, close_after=100_000), times=1
    )
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await wait_for_bytes(task, 100_000)
        server.release(file.path)
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(result.location) == file.sha256
    second = server.requests[1]
    # Last-Modified is an hour older than Date: a strong validator.
    assert second.headers["Range"] == "bytes=100000-"
    assert second.headers["If-Range"].endswith("GMT")


async def test_no_validator_means_no_resume_data_and_restart_from_zero(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    plain = Faults(etag="none", last_modified=False)
    server.set_faults(file.path, plain)
    server.set_faults(
        file.path, Faults(etag="none", last_modified=False, close_after=100_000), times=1
    )
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        events = await collect(task.events())
        assert ResumedEvent(task_id=task.id, offset=0, expected_total=file.size) in events
        assert "Range" not in server.requests[1].headers
        assert sha256_file(out_dir / "f.bin") == file.sha256

        server.set_faults(file.path, Faults(etag="none", last_modified=False, hold_after=50_000))
        paused = await session.download(server.url(file.path), out_dir / "g.bin")
        await server.wait_held(file.path)
        assert await paused.cancel_with_resume_data() is None
        assert paused.result == CancelledEvent(task_id=paused.id, resume_data=None)
        assert not list((session.directory / "partials").iterdir())


async def test_wrong_content_range_start_is_never_recombined(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=400_000)
    cut_once_after(server, file.path, 100_000)
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        stream = task.events()
        await wait_for_bytes(task, 100_000)
        server.set_faults(file.path, Faults(content_range_start_offset=7), times=1)
        server.release(file.path)
        events = await collect(stream)
    assert isinstance(events[-1], FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256
    ranged = [r for r in server.requests if "Range" in r.headers]
    assert len(ranged) == 1  # the bad 206 was dropped; the next request asked for all
    assert "Range" not in server.requests[-1].headers


async def test_short_206_is_a_truncated_body_and_is_retried(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=400_000)
    cut_once_after(server, file.path, 100_000)
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        stream = task.events()
        await wait_for_bytes(task, 100_000)
        server.set_faults(file.path, Faults(short_206=True), times=1)
        server.release(file.path)
        events = await collect(stream)
    assert isinstance(events[-1], FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256
    assert sum(isinstance(e, RetryEvent) for e in events) >= 1


async def test_complete_partial_is_confirmed_by_416(
    server: TestServer, state_dir: Path, out_dir: Path, tmp_path: Path
) -> None:
    file = server.add_file("/f.bin", size=200_000)
    partial = planted_partial(state_dir)
    partial.write_bytes(file.data)
    data = ResumeData(
        url=server.url(file.path),
        partial=str(partial),
        offset=file.size,
        validator=file.etag,
        total=file.size,
        destination=str(out_dir / "f.bin"),
    )
    data = signed(state_dir, data)
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download_with_resume_data(data.to_bytes())
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256  # the 416 body was not written
    (request,) = server.requests
    assert request.headers["Range"] == f"bytes={file.size}-"


async def test_416_without_length_restarts(
    server: TestServer, state_dir: Path, out_dir: Path, tmp_path: Path
) -> None:
    file = server.add_file("/f.bin", size=200_000)
    partial = planted_partial(state_dir)
    partial.write_bytes(file.data[:50_000])
    data = ResumeData(
        url=server.url(file.path),
        partial=str(partial),
        offset=50_000,
        validator=file.etag,
        total=file.size,
    )
    data = signed(state_dir, data)
    server.set_faults(file.path, Faults(status=416), times=1)
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download_with_resume_data(data, out_dir / "f.bin")
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256
    assert "Range" not in server.requests[-1].headers


async def test_content_coding_change_is_not_spliced(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    cut_once_after(server, file.path, 100_000)
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await wait_for_bytes(task, 100_000)
        server.set_faults(file.path, Faults(gzip=True))
        server.release(file.path)
        assert isinstance(await task.wait(), FinishedEvent)
    # The gzip-coded answer was not appended to identity bytes: the whole coded
    # representation was fetched again and stored as sent.
    assert gzip.decompress((out_dir / "f.bin").read_bytes()) == file.data


async def test_persistent_503_with_retry_after_fails_after_retries(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=1_000)
    server.set_faults(file.path, Faults(status=503, retry_after="0"))
    policy = RetryPolicy(max_attempts=3, initial_delay=0, jitter=0)
    async with Session(state_dir=state_dir, config=Configuration(retry=policy)) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        events = await collect(task.events())
    retries = [e for e in events if isinstance(e, RetryEvent)]
    assert [r.attempt for r in retries] == [2, 3]
    assert all(isinstance(r.error, HTTPStatusError) and r.error.status == 503 for r in retries)
    assert isinstance(events[-1], ErrorEvent)
    assert isinstance(events[-1].error, HTTPStatusError)
    assert events[-1].error.status == 503
    assert server.statistics().requests == 3
    assert not (out_dir / "f.bin").exists()


async def test_404_is_permanent(server: TestServer, state_dir: Path, out_dir: Path) -> None:
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url("/missing"), out_dir / "m")
        events = await collect(task.events())
    assert [type(e) for e in events] == [ErrorEvent]
    assert server.statistics().requests == 1


async def test_retry_after_holds_back_every_task_to_the_host(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    first = server.add_file("/a.bin", size=1_000)
    second = server.add_file("/b.bin", size=1_000)
    server.set_faults(first.path, Faults(status=429, retry_after="1"), times=1)
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        # Before the 429 can arrive: the hold starts when the engine reads it, an
        # instant (or, on a loaded machine, much longer) before this test sees the
        # RetryEvent, so only a clock read before the request bounds it.
        asked = time.monotonic()
        task = await session.download(server.url(first.path), out_dir / "a")
        stream = task.events()
        retry = await anext(stream)
        assert isinstance(retry, RetryEvent)
        assert retry.delay >= 1
        other = await session.download(server.url(second.path), out_dir / "b")
        await other.wait()
        waited = time.monotonic() - asked
        assert isinstance(await task.wait(), FinishedEvent)
    # The other task to the same host did not start before Retry-After had passed.
    assert waited >= 0.9
    assert [r.path for r in server.requests] in (
        [first.path, first.path, second.path],
        [first.path, second.path, first.path],
    )


async def test_trickling_server_is_caught_by_min_speed(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=100_000)
    server.set_faults(file.path, Faults(drip=(10, 0.02)))  # 500 bytes/s
    config = Configuration(
        min_speed=10_000, min_speed_window=0.3, retry=RetryPolicy(max_attempts=1)
    )
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        with pytest.raises(TransferTimeoutError, match="min_speed"):
            await task.wait()
    assert not (out_dir / "f.bin").exists()


async def test_resource_timeout_is_not_retried(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    server.set_faults(file.path, Faults(hold_after=0))
    config = Configuration(resource_timeout=0.3, retry=FAST)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        with pytest.raises(ResourceTimeoutError):
            await task.wait()
    assert server.statistics().requests == 1


async def test_suspend_and_resume_in_place(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=600_000)
    server.set_faults(file.path, Faults(hold_after=200_000))
    async with Session("pause", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        stream = task.events()
        await wait_for_bytes(task, 200_000)
        task.suspend()
        task.suspend()  # idempotent
        assert task.state is TaskState.SUSPENDED
        await server.wait_until(lambda stats: stats.open_connections == 0)
        assert session.statistics().active == 0  # slot released
        partial = state_dir / "pause" / "partials" / f"{task.id}.part"
        assert partial.stat().st_size == task.bytes_received == 200_000
        server.release(file.path)
        task.resume()
        task.resume()  # idempotent
        events = await collect(stream)
    terminal = check_resumable_stream(events, task.id)
    assert isinstance(terminal, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256
    assert ResumedEvent(task_id=task.id, offset=200_000, expected_total=file.size) in events
    assert server.requests[-1].headers["Range"] == "bytes=200000-"


async def test_suspended_task_can_be_cancelled(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=100_000)
    server.set_faults(file.path, Faults(hold_after=10_000))
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await server.wait_held(file.path)
        task.suspend()
        await task.cancel()
        assert task.result == CancelledEvent(task_id=task.id)
    assert not (out_dir / "f.bin").exists()


async def test_cancel_with_resume_data_then_resume(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=500_000)
    server.set_faults(file.path, Faults(hold_after=150_000), times=1)
    async with background("rd", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(
            server.url(file.path),
            out_dir / "f.bin",
            description="the file",
            headers={"Authorization": "Bearer secret", "X-Trace": "1"},
        )
        await wait_for_bytes(task, 150_000)
        data = await task.cancel_with_resume_data()
        assert data is not None
        assert task.result == CancelledEvent(task_id=task.id, resume_data=data)
        assert data.offset == 150_000
        assert data.validator == file.etag
        assert data.total == file.size
        assert ("X-Trace", "1") in data.headers
        assert all(name.lower() != "authorization" for name, _ in data.headers)
        assert b"secret" not in data.to_bytes()
        assert not (out_dir / "f.bin").exists()
        blob = data.to_bytes()
        assert ResumeData.from_bytes(blob) == data

        resumed = await session.download_with_resume_data(blob, headers={"Authorization": "B"})
        events = await collect(resumed.events())
        assert events[0] == ResumedEvent(
            task_id=resumed.id, offset=150_000, expected_total=file.size
        )
        assert resumed.description == "the file"
        with pytest.raises(InvalidResumeDataError, match="is gone"):
            await session.download_with_resume_data(blob)
    assert isinstance(events[-1], FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256
    last = server.requests[-1]
    assert last.headers["Range"] == "bytes=150000-"
    assert last.headers["Authorization"] == "B"
    assert last.headers["X-Trace"] == "1"


async def test_same_resume_data_twice_at_once_gives_one_task(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=100_000), times=1)
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await wait_for_bytes(task, 100_000)
        data = await task.cancel_with_resume_data()
        assert data is not None
        results = await asyncio.gather(
            session.download_with_resume_data(data, out_dir / "one.bin"),
            session.download_with_resume_data(data, out_dir / "two.bin"),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1
        assert len(losers) == 1
        assert isinstance(losers[0], InvalidResumeDataError)
        assert isinstance(await winners[0].wait(), FinishedEvent)
        assert sha256_file(winners[0].destination) == file.sha256


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"garbage", "not JSON"),
        (b'{"format": "bgtransfer.resume-data", "version": 99}', "newer"),
        (b'{"format": "bgtransfer.resume-data", "version": 2, "url": "http://x/"}', "lacks"),
        (b'{"format": "bgtransfer.resume-data", "version": 1, "url": "http://x/"}', "unsigned"),
    ],
)
async def test_bad_resume_data_raises_at_the_call(
    state_dir: Path, blob: bytes, message: str
) -> None:
    async with Session(state_dir=state_dir) as session:
        with pytest.raises(InvalidResumeDataError, match=message):
            await session.download_with_resume_data(blob)
        assert session.tasks() == []


async def test_idle_server_before_headers_is_retried(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=50_000)
    server.set_faults(file.path, Faults(headers_delay=30.0), times=1)
    config = Configuration(request_timeout=0.2, retry=FAST)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        events = await collect(task.events())
    retry = next(e for e in events if isinstance(e, RetryEvent))
    assert isinstance(retry.error, TransferTimeoutError)
    assert isinstance(events[-1], FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256


async def test_range_is_sent_again_after_a_redirect(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    target = server.add_file("/real.bin", size=400_000)
    server.add_file("/alias.bin", data=b"-")
    server.set_faults("/alias.bin", Faults(redirect_to="/real.bin"))
    cut_once_after(server, target.path, 100_000)
    async with Session(state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url("/alias.bin"), out_dir / "r.bin")
        await wait_for_bytes(task, 100_000)
        server.release(target.path)
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(out_dir / "r.bin") == target.sha256
    paths = [(r.path, r.headers.get("Range")) for r in server.requests]
    assert paths == [
        ("/alias.bin", None),
        ("/real.bin", None),
        ("/alias.bin", "bytes=100000-"),
        ("/real.bin", "bytes=100000-"),
    ]


async def test_suspended_time_does_not_count_against_resource_timeout(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=200_000)
    server.set_faults(file.path, Faults(hold_after=50_000), times=1)
    config = Configuration(resource_timeout=1.0, retry=FAST)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        await wait_for_bytes(task, 50_000)
        task.suspend()
        await server.wait_until(lambda stats: stats.in_flight == 0)
        # Longer than resource_timeout, suspended: the budget must not run out.
        await asyncio.sleep(1.2)
        task.resume()
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256
