"""Uploads through the daemon in one request: ``upload_many()`` is one request
(all or none, one journal write), concurrent ``upload()`` calls are coalesced
into one as ``download()`` calls are (each still gets its own task or its own
error), and a batch whose answer was lost makes each of its tasks exactly once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from _helpers import kill_daemon_at_post, sha256_bytes
from bgtransfer import (
    Configuration,
    FinishedEvent,
    InvalidDestinationError,
    InvalidSourceError,
    Session,
    UploadRequest,
    UploadTask,
)
from bgtransfer._core.wire_upload import encode_upload
from bgtransfer._daemon.client import DaemonBackend
from bgtransfer.testing import TestServer

pytestmark = pytest.mark.asyncio

COUNT = 60
BAD = 23
TIMEOUT = 60


def _sources(tmp_path: Path, count: int) -> list[Path]:
    folder = tmp_path / "sources"
    folder.mkdir()
    paths = []
    for index in range(count):
        path = folder / f"{index}.bin"
        path.write_bytes(os.urandom(700 + 1_009 * index))
        paths.append(path)
    return paths


def _received(server: TestServer) -> dict[str, str]:
    return {u.path: u.sha256 for u in server.uploads if u.complete}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests the daemon's client sends, in order."""
    paths: list[str] = []
    call = DaemonBackend._call

    async def counted(
        self: DaemonBackend, path: str, body: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        paths.append(path)
        return await call(self, path, body, **options)

    monkeypatch.setattr(DaemonBackend, "_call", counted)
    return paths


async def test_upload_many_is_one_request(
    server: TestServer, daemon_state: Path, tmp_path: Path, sent: list[str]
) -> None:
    sources = _sources(tmp_path, COUNT)
    config = Configuration(max_connections_per_host=8)
    async with Session("many", state_dir=daemon_state, config=config, daemon=True) as session:
        tasks = await session.upload_many(
            UploadRequest(server.url(f"/m/{n}"), path) for n, path in enumerate(sources)
        )
        assert sent.count("/uploads") == 1
        assert [t.id for t in tasks] == sorted(t.id for t in tasks)
        ends = await asyncio.gather(*(t.wait() for t in tasks))
    assert all(isinstance(end, FinishedEvent) for end in ends)
    assert _received(server) == {
        f"/m/{n}": sha256_bytes(path.read_bytes()) for n, path in enumerate(sources)
    }


async def test_concurrent_uploads_go_in_one_request_and_a_bad_one_fails_alone(
    server: TestServer, daemon_state: Path, tmp_path: Path, sent: list[str]
) -> None:
    sources = _sources(tmp_path, COUNT)
    missing = tmp_path / "missing.bin"

    def source(n: int) -> Path:
        return missing if n == BAD else sources[n]  # the daemon refuses this one

    config = Configuration(max_connections_per_host=8)
    async with Session("each", state_dir=daemon_state, config=config, daemon=True) as session:
        outcomes = await asyncio.gather(
            *(session.upload(server.url(f"/c/{n}"), source(n)) for n in range(COUNT)),
            return_exceptions=True,
        )
        assert sent.count("/uploads") == 1
        refused = outcomes[BAD]
        assert isinstance(refused, InvalidSourceError), refused
        assert str(missing) in str(refused)
        tasks = [t for t in outcomes if isinstance(t, UploadTask)]
        assert len(tasks) == COUNT - 1
        ids = [t.id for t in tasks]
        assert ids == sorted(ids)  # numbered in the order of the calls
        ends = await asyncio.gather(*(t.wait() for t in tasks))
    assert all(isinstance(end, FinishedEvent) for end in ends)
    assert _received(server) == {
        f"/c/{n}": sha256_bytes(path.read_bytes()) for n, path in enumerate(sources) if n != BAD
    }


@pytest.mark.parametrize(
    "case", ["upload_many, after", "upload_many, before", "upload, after", "upload, before"]
)
async def test_uploads_whose_answer_was_lost_make_exactly_one_task_each(
    server: TestServer,
    daemon_state: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    """The daemon dies with the request on its way: made before it died
    (``after``: the answer lost) or not (``before``), each upload is one task."""
    call, lost = case.split(", ")
    sources = _sources(tmp_path, 3)
    killed = kill_daemon_at_post(monkeypatch, daemon_state, "/uploads", answer_lost=lost == "after")
    async with Session("lost", state_dir=daemon_state, daemon=True) as session:
        if call == "upload_many":
            making = session.upload_many(
                UploadRequest(server.url(f"/l/{n}"), path) for n, path in enumerate(sources)
            )
        else:
            making = asyncio.gather(
                *(session.upload(server.url(f"/l/{n}"), path) for n, path in enumerate(sources))
            )
        made = list(await asyncio.wait_for(making, TIMEOUT))
        assert killed
        assert [t.id for t in session.tasks()] == [t.id for t in made] == [1, 2, 3]
        ends = await asyncio.wait_for(asyncio.gather(*(t.wait() for t in made)), TIMEOUT)
    assert all(isinstance(end, FinishedEvent) for end in ends)
    assert _received(server) == {
        f"/l/{n}": sha256_bytes(path.read_bytes()) for n, path in enumerate(sources)
    }


async def test_a_batch_with_a_relative_path_is_refused_whole_by_the_daemon(
    server: TestServer, daemon_state: Path, tmp_path: Path
) -> None:
    """A client that sends a relative path (the package's never does) gets the
    daemon's refusal naming the request; nothing is made."""
    [source] = _sources(tmp_path, 1)
    async with Session("raw", state_dir=daemon_state, daemon=True) as session:
        backend = session._require_backend()
        assert isinstance(backend, DaemonBackend)
        good = encode_upload(UploadRequest(server.url("/r/0"), str(source)))
        relative = {**good, "source": "sources/0.bin"}
        with pytest.raises(InvalidDestinationError, match="relative path") as refused:
            await backend._call("/uploads", {"uploads": [good, relative]})
        assert "request 1 of 2; no task was made" in refused.value.__notes__
        assert session.tasks() == []
    assert server.requests == ()
