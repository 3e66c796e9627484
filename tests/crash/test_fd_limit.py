"""A low descriptor limit: 300 concurrent downloads under ``RLIMIT_NOFILE=256``.

Issue 18, item 7. Running out of file descriptors (``EMFILE``) failed tasks for
good ("Too many open files"). The engine now keeps its concurrency within the
process's descriptor budget and retries ``EMFILE``/``ENFILE`` as transient, so
every task finishes byte-exact.

The downloads run in a child process (this file run as a script) that lowers its
own soft limit with ``resource.setrlimit`` before anything opens; the loopback
server runs here, in the parent, with its own limit.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import resource
import sys
from pathlib import Path
from typing import Any

import pytest

from _helpers import collect, sha256_file
from bgtransfer import (
    Configuration,
    DownloadRequest,
    FinishedEvent,
    LocalFileError,
    RetryEvent,
    RetryPolicy,
    Session,
)
from bgtransfer._io import body_writer
from bgtransfer.testing import TestServer

pytestmark = pytest.mark.asyncio

COUNT = 300
LIMIT = 256
SIZE = 96 * 1024


async def _child(args: dict[str, Any]) -> None:
    config = Configuration(
        max_concurrent_transfers=COUNT,
        max_connections_per_host=COUNT,
        retry=RetryPolicy(max_attempts=6, initial_delay=0.05, max_delay=0.5),
    )
    results: dict[str, Any] = {}
    async with Session("fd-limit", state_dir=Path(args["state_dir"]), config=config) as session:
        tasks = await session.download_many(
            [
                DownloadRequest(url, Path(args["out_dir"]) / f"{index}.bin")
                for index, url in enumerate(args["urls"])
            ]
        )
        print(json.dumps({"limit": session.statistics().total_limit}), flush=True)
        for task in tasks:
            try:
                finished = await task.wait()
            except Exception as exc:  # reported, not raised: the parent counts them
                results[task.url] = {"error": str(exc)}
                continue
            assert isinstance(finished, FinishedEvent)
            data = finished.location.read_bytes()
            results[task.url] = {"sha256": hashlib.sha256(data).hexdigest()}
    print(json.dumps({"results": results}), flush=True)


def child_main(argv: list[str]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, hard))
    asyncio.run(_child(json.loads(argv[1])))


async def test_300_downloads_under_a_256_descriptor_limit_all_finish(
    server: TestServer, tmp_path: Path
) -> None:
    files = [server.add_file(f"/f/{index}.bin", size=SIZE) for index in range(COUNT)]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = {
        "urls": [server.url(file.path) for file in files],
        "state_dir": str(tmp_path / "state"),
        "out_dir": str(out_dir),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        json.dumps(args),
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},  # for _helpers
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(120):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    (limit,) = [line["limit"] for line in lines if "limit" in line]
    assert limit < COUNT  # the engine capped its concurrency to the budget
    (results,) = [line["results"] for line in lines if "results" in line]
    errors = {url: r["error"] for url, r in results.items() if "error" in r}
    assert not errors, f"{len(errors)} tasks failed, e.g. {next(iter(errors.values()))}"
    assert {url: r["sha256"] for url, r in results.items()} == {
        server.url(file.path): file.sha256 for file in files
    }
    # The warning says why the session runs fewer transfers than configured.
    assert b"descriptor" in stderr


async def test_no_descriptor_for_the_partial_file_is_retried(
    server: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMFILE opening the partial file: a RetryEvent, then the task finishes."""
    file = server.add_file("/f.bin", size=SIZE)
    real = body_writer.open_partial
    failures = [OSError(errno.EMFILE, "Too many open files")]

    def open_partial(path: Path, *, offset: int, truncate: bool) -> int:
        if failures:
            raise failures.pop()
        return real(path, offset=offset, truncate=truncate)

    monkeypatch.setattr(body_writer, "open_partial", open_partial)
    config = Configuration(retry=RetryPolicy(initial_delay=0, jitter=0))
    async with Session(config=config) as session:
        task = await session.download(server.url(file.path), tmp_path / "f.bin")
        events = await collect(task.events())
    assert isinstance(events[-1], FinishedEvent)
    assert sha256_file(tmp_path / "f.bin") == file.sha256
    (retry,) = [event for event in events if isinstance(event, RetryEvent)]
    assert isinstance(retry.error, LocalFileError)
    assert retry.error.errno == errno.EMFILE


async def test_a_lowered_limit_is_shown_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (128, 4096))
    config = Configuration(max_concurrent_transfers=50)
    with caplog.at_level(logging.WARNING, logger="bgtransfer"):
        async with Session(config=config) as session:
            assert session.statistics().total_limit == (128 - 64) // 5
    (record,) = [r for r in caplog.records if r.name == "bgtransfer"]
    assert record.levelno == logging.WARNING
    assert "max_concurrent_transfers=50 lowered to 12" in record.getMessage()
    assert "RLIMIT_NOFILE" in record.getMessage()


async def test_a_generous_limit_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (resource.RLIM_INFINITY,) * 2)
    with caplog.at_level(logging.WARNING, logger="bgtransfer"):
        async with Session(config=Configuration(max_concurrent_transfers=50)) as session:
            assert session.statistics().total_limit == 50
    assert not [r for r in caplog.records if r.name == "bgtransfer"]


if __name__ == "__main__":
    child_main(sys.argv)
