"""Concurrent ``download()`` calls through the daemon go in one request (issue
20, "Speed"): each call still gets its own task or its own error, and the tasks
are numbered in the order of the calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _helpers import sha256_file
from bgtransfer import (
    Configuration,
    DownloadTask,
    FinishedEvent,
    InvalidDestinationError,
    Session,
    SessionClosedError,
)
from bgtransfer._daemon import submissions
from bgtransfer._daemon.client import DaemonBackend
from bgtransfer._daemon.submissions import Submissions
from bgtransfer.testing import TestServer

pytestmark = pytest.mark.asyncio

COUNT = 60
BAD = 17


async def test_one_invalid_download_among_many_fails_only_its_caller(
    server: TestServer, daemon_state: Path, out_dir: Path, tmp_path: Path
) -> None:
    files = [server.add_file(f"/each/{n}.bin", size=1000 + n) for n in range(COUNT)]
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"untouched")

    def destination(n: int) -> Path:
        # the daemon refuses this one: its directory does not exist
        return tmp_path / "missing" / "x.bin" if n == BAD else out_dir / f"{n}.bin"

    config = Configuration(max_connections_per_host=8)
    async with Session("each", state_dir=daemon_state, config=config, daemon=True) as session:
        outcomes = await asyncio.gather(
            *(session.download(server.url(f.path), destination(n)) for n, f in enumerate(files)),
            return_exceptions=True,
        )
        refused = outcomes[BAD]
        assert isinstance(refused, InvalidDestinationError), refused
        assert str(tmp_path / "missing") in str(refused)
        tasks = [t for n, t in enumerate(outcomes) if n != BAD]
        assert all(isinstance(t, DownloadTask) for t in tasks)
        ids = [t.id for t in tasks if isinstance(t, DownloadTask)]
        assert ids == sorted(ids)  # numbered in the order of the calls
        ends = await asyncio.gather(*(t.wait() for t in tasks if isinstance(t, DownloadTask)))
    assert all(isinstance(end, FinishedEvent) for end in ends)
    for n, file in enumerate(files):
        if n != BAD:
            assert sha256_file(out_dir / f"{n}.bin") == file.sha256
    assert not (tmp_path / "missing").exists()
    assert victim.read_bytes() == b"untouched"


async def test_concurrent_downloads_go_in_one_request(
    server: TestServer,
    daemon_state: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = [server.add_file(f"/one/{n}.bin", size=500 + n) for n in range(COUNT)]
    sent: list[str] = []
    call = DaemonBackend._call

    async def counted(
        self: DaemonBackend, path: str, body: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        sent.append(path)
        return await call(self, path, body, **options)

    monkeypatch.setattr(DaemonBackend, "_call", counted)
    async with Session("one", state_dir=daemon_state, daemon=True) as session:
        tasks = await asyncio.gather(
            *(
                session.download(server.url(f.path), out_dir / f"{n}.bin")
                for n, f in enumerate(files)
            )
        )
        assert sent.count("/tasks") == 1
        assert [t.id for t in tasks] == sorted(t.id for t in tasks)
        await asyncio.gather(*(t.wait() for t in tasks))
    for n, file in enumerate(files):
        assert sha256_file(out_dir / f"{n}.bin") == file.sha256


async def test_duplicate_destinations_in_one_batch_refuse_the_second(
    server: TestServer, state_dir: Path, out_dir: Path, background: Callable[..., Session]
) -> None:
    """As separate calls: the first claims the destination, the second is refused."""
    a = server.add_file("/a.bin", size=3000)
    b = server.add_file("/b.bin", size=4000)
    async with background("dup", state_dir=state_dir) as session:
        first, second = await asyncio.gather(
            session.download(server.url(a.path), out_dir / "same.bin"),
            session.download(server.url(b.path), out_dir / "same.bin"),
            return_exceptions=True,
        )
        assert isinstance(first, DownloadTask)
        assert isinstance(second, ValueError), second
        assert isinstance(await first.wait(), FinishedEvent)
    assert sha256_file(out_dir / "same.bin") == a.sha256


class _Daemon:
    """A ``send`` for :class:`Submissions`: records the batches; ``gate`` holds them."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.sending = asyncio.Event()
        self.error: Exception | None = None

    async def send(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.batches.append(requests)
        self.sending.set()
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return [{"task": {"n": r["n"]}} for r in requests]


async def test_calls_while_a_batch_is_out_go_in_the_next_one_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(submissions, "SUBMIT_BATCH", 4)
    daemon = _Daemon()
    daemon.gate.clear()
    queue = Submissions(daemon.send)
    first = [asyncio.create_task(queue.submit({"n": n})) for n in range(3)]
    await daemon.sending.wait()  # the first batch is out, held
    later = [asyncio.create_task(queue.submit({"n": n})) for n in range(3, 9)]
    daemon.gate.set()
    results = await asyncio.gather(*first, *later)
    assert [r["n"] for r in results] == list(range(9))
    assert [[r["n"] for r in b] for b in daemon.batches] == [[0, 1, 2], [3, 4, 5, 6], [7, 8]]


async def test_a_caller_cancelled_before_its_batch_left_sends_nothing() -> None:
    daemon = _Daemon()
    daemon.gate.clear()
    queue = Submissions(daemon.send)
    out = asyncio.create_task(queue.submit({"n": 0}))
    await daemon.sending.wait()  # a batch is out, held: the next calls queue
    kept = asyncio.create_task(queue.submit({"n": 1}))
    dropped = asyncio.create_task(queue.submit({"n": 2}))
    await asyncio.sleep(0)  # one turn: both tasks ran to their queued wait (FIFO)
    dropped.cancel()
    daemon.gate.set()
    assert (await out)["n"] == 0
    assert (await kept)["n"] == 1
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert daemon.batches == [[{"n": 0}], [{"n": 1}]]


async def test_a_lost_connection_fails_every_caller_of_the_batch() -> None:
    daemon = _Daemon()
    daemon.error = SessionClosedError("session 'x': the daemon's connection was lost")
    queue = Submissions(daemon.send)
    outcomes = await asyncio.gather(
        *(queue.submit({"n": n}) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, SessionClosedError) for o in outcomes)


async def test_an_error_result_fails_only_its_caller() -> None:
    async def send(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"error": {"type": "InvalidURLError", "message": "bad", "notes": [], "fields": {}}}
            if r["n"] == 1
            else {"task": {"n": r["n"]}}
            for r in requests
        ]

    queue = Submissions(send)
    outcomes = await asyncio.gather(
        *(queue.submit({"n": n}) for n in range(3)), return_exceptions=True
    )
    assert outcomes[0] == {"n": 0}
    assert isinstance(outcomes[1], ValueError)
    assert str(outcomes[1]) == "bad"
    assert outcomes[2] == {"n": 2}
