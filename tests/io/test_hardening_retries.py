"""Retries end: only progress a later attempt can keep renews the attempt budget.

Issue 18, item 6. An attempt that wrote bytes used to reset the count even when
the next attempt had to start again from byte 0 (no validator, a server that
ignores ``Range``), so a body always cut at the same byte was fetched forever.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from _helpers import check_resumable_stream, collect, sha256_file
from bgtransfer import (
    Configuration,
    ErrorEvent,
    FinishedEvent,
    IncompleteBodyError,
    RetryEvent,
    RetryPolicy,
    Session,
    TransferTimeoutError,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

# Small, growing, deterministic delays: the test takes a fraction of a second.
POLICY = RetryPolicy(max_attempts=3, initial_delay=0.01, multiplier=2, jitter=0)
BOUND = 10  # seconds: far more than the test needs; on main it never ended


async def run_to_the_end(
    server: TestServer, state_dir: Path, out_dir: Path, path: str, config: Configuration
) -> tuple[list[object], int]:
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(path), out_dir / "f.bin")
        with anyio.fail_after(BOUND):
            events = await collect(task.events())
    check_resumable_stream(events, task.id)  # type: ignore[arg-type]
    return events, server.statistics().requests_by_path.get(path, 0)


async def test_same_cut_without_validator_makes_exactly_max_attempts_requests(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=200_000)
    # No ETag, no Last-Modified: every attempt starts again from byte 0.
    server.set_faults(file.path, Faults(close_after=100_000, etag="none", last_modified=False))
    config = Configuration(retry=POLICY, progress_interval=0)
    events, requests = await run_to_the_end(server, state_dir, out_dir, file.path, config)
    assert requests == 3
    terminal = events[-1]
    assert isinstance(terminal, ErrorEvent)
    assert isinstance(terminal.error, IncompleteBodyError)
    retries = [event for event in events if isinstance(event, RetryEvent)]
    assert [retry.attempt for retry in retries] == [2, 3]
    assert [retry.delay for retry in retries] == [0.01, 0.02]  # the backoff grows
    assert not (out_dir / "f.bin").exists()


async def test_server_that_ignores_range_and_resets_ends(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    # A strong ETag, but every answer is the whole file, reset at the same byte.
    server.set_faults(file.path, Faults(ignore_range=True, reset_after=120_000))
    config = Configuration(retry=POLICY, progress_interval=0)
    events, requests = await run_to_the_end(server, state_dir, out_dir, file.path, config)
    assert requests == 3
    terminal = events[-1]
    assert isinstance(terminal, ErrorEvent)
    assert isinstance(terminal.error, IncompleteBodyError)
    # The second and third requests asked for a range; the answer restarted from 0.
    assert server.requests[1].headers.get("Range", "").startswith("bytes=")


async def test_trickling_server_under_min_speed_ends(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=100_000)
    server.set_faults(file.path, Faults(drip=(50, 0.02)))  # 2.5 KB/s, ranges honoured
    config = Configuration(
        retry=POLICY, progress_interval=0, min_speed=50_000, min_speed_window=0.2
    )
    events, requests = await run_to_the_end(server, state_dir, out_dir, file.path, config)
    assert requests == 3  # each too-slow attempt counts, whatever it wrote
    terminal = events[-1]
    assert isinstance(terminal, ErrorEvent)
    assert isinstance(terminal.error, TransferTimeoutError)
    assert "min_speed" in str(terminal.error)


async def test_resumable_progress_still_renews_the_budget(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=400_000)
    # Four cuts, each further on (the newest override applies first): more failed
    # attempts than max_attempts, but each one kept its bytes for the next.
    for _ in range(4):
        server.set_faults(file.path, Faults(close_after=80_000), times=1)
    config = Configuration(retry=RetryPolicy(max_attempts=2, initial_delay=0, jitter=0))
    events, requests = await run_to_the_end(server, state_dir, out_dir, file.path, config)
    assert requests == 5
    terminal = events[-1]
    assert isinstance(terminal, FinishedEvent)
    assert sha256_file(terminal.location) == file.sha256
