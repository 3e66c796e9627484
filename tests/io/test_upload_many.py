"""``Session.upload_many``: a batch of uploads, checked all or none, journaled in
one commit (one request through the daemon), against the real loopback server,
which hashes every body it receives."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from _helpers import journal_task_ids, sha256_bytes
from bgtransfer import (
    Configuration,
    FinishedEvent,
    InvalidDestinationError,
    InvalidSourceError,
    InvalidURLError,
    Session,
    SessionClosedError,
    UnsupportedSchemeError,
    UploadRequest,
    UploadTask,
)
from bgtransfer._engine.local import LocalBackend
from bgtransfer._io.journal import Journal
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio


def _sources(tmp_path: Path, count: int) -> list[Path]:
    """``count`` files of different sizes (one empty) and contents."""
    folder = tmp_path / "sources"
    folder.mkdir()
    paths = []
    for index in range(count):
        path = folder / f"{index}.bin"
        path.write_bytes(os.urandom(0 if index == 0 else 1000 + 48_611 * index))
        paths.append(path)
    return paths


def _received(server: TestServer) -> dict[str, str]:
    """The sha256 of each complete body the server received, by path."""
    return {u.path: u.sha256 for u in server.uploads if u.complete}


async def test_a_batch_uploads_every_file_byte_exact_in_the_order_given(
    background: Callable[..., Session],
    server: TestServer,
    state_dir: Path,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    sources = _sources(tmp_path, 10)
    replies = out_dir / "reply.json"
    requests = [
        UploadRequest(server.url("/many/0"), sources[0], description="first"),
        UploadRequest(server.url("/many/1"), sources[1], method="POST", headers={"X-Batch": "y"}),
        UploadRequest(server.url("/many/2"), sources[2], reply_to=replies),
        *(UploadRequest(server.url(f"/many/{i}"), sources[i]) for i in range(3, 10)),
    ]
    config = Configuration(max_connections_per_host=3)
    async with background("batch", state_dir=state_dir, config=config) as session:
        tasks = await session.upload_many(requests)
        assert all(isinstance(task, UploadTask) for task in tasks)
        assert [task.url for task in tasks] == [r.url for r in requests]
        assert [task.source for task in tasks] == [s.resolve() for s in sources]
        assert [task.id for task in tasks] == sorted(task.id for task in tasks)
        assert tasks[0].description == "first"
        assert tasks[2].reply_to == replies
        results = [await task.wait() for task in tasks]
    received = _received(server)
    for index, (result, source) in enumerate(zip(results, sources, strict=True)):
        assert isinstance(result, FinishedEvent)
        assert result.total_bytes == source.stat().st_size
        assert received[f"/many/{index}"] == sha256_bytes(source.read_bytes())
    assert results[2].location == replies
    assert json.loads(replies.read_text())["sha256"] == received["/many/2"]
    methods = {u.path: u.method for u in server.uploads}
    assert methods["/many/1"] == "POST"
    assert methods["/many/0"] == "PUT"
    tagged = [r.path for r in server.requests if r.headers.get("X-Batch") == "y"]
    assert tagged == ["/many/1"]
    assert server.statistics().peak_connections <= 3


async def test_an_ephemeral_session_uploads_a_batch(server: TestServer, tmp_path: Path) -> None:
    sources = _sources(tmp_path, 5)
    async with Session() as session:
        tasks = await session.upload_many(
            UploadRequest(server.url(f"/e/{i}"), path) for i, path in enumerate(sources)
        )
        results = [await task.wait() for task in tasks]
    assert all(isinstance(result, FinishedEvent) for result in results)
    received = _received(server)
    assert received == {f"/e/{i}": sha256_bytes(s.read_bytes()) for i, s in enumerate(sources)}


async def test_the_batch_is_in_the_journal_when_the_call_returns(
    background: Callable[..., Session], server: TestServer, state_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "held.bin"
    source.write_bytes(os.urandom(40_000))
    server.set_faults("/held", Faults(hold_after=0))  # nothing finishes meanwhile
    config = Configuration(max_connections_per_host=1)
    async with background("durable", state_dir=state_dir, config=config) as session:
        tasks = await session.upload_many(
            [UploadRequest(server.url("/held"), source, description=f"{i}") for i in range(100)]
        )
        assert journal_task_ids(state_dir, "durable") == [task.id for task in tasks]
        server.release("/held")
        for task in tasks:
            assert isinstance(await task.wait(), FinishedEvent)
    digest = sha256_bytes(source.read_bytes())
    assert [u.sha256 for u in server.uploads if u.complete] == [digest] * 100


async def test_a_background_session_journals_the_batch_in_one_commit(
    server: TestServer, state_dir: Path, tmp_path: Path
) -> None:
    """One commit for the batch, where a loop of ``upload()`` makes one each."""
    source = tmp_path / "held.bin"
    source.write_bytes(os.urandom(10_000))
    server.set_faults("/held", Faults(hold_after=0))
    config = Configuration(max_connections_per_host=1)
    async with Session("commits", state_dir=state_dir, config=config) as session:
        backend = session._require_backend()
        assert isinstance(backend, LocalBackend)
        journal = backend.engine._journal
        assert isinstance(journal, Journal)
        await session.upload(server.url("/held"), source)  # the one that holds the slot
        await server.wait_held("/held")
        await backend.flush()
        base = journal.statistics().commits
        await session.upload_many([UploadRequest(server.url("/held"), source)] * 200)
        batch = journal.statistics().commits - base
        await backend.flush()
        base = journal.statistics().commits
        for _ in range(20):
            await session.upload(server.url("/held"), source)
        each = journal.statistics().commits - base
        server.release("/held")
        await session.invalidate_and_cancel()
    assert batch == 1
    assert each >= 20


async def test_one_wrong_request_makes_no_task_and_is_named(
    background: Callable[..., Session],
    server: TestServer,
    state_dir: Path,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    sources = _sources(tmp_path, 4)
    victim = out_dir / "reply.json"
    victim.write_text("the app's own file")
    good = [UploadRequest(server.url(f"/g/{i}"), s) for i, s in enumerate(sources)]
    async with background("atomic", state_dir=state_dir) as session:
        with pytest.raises(InvalidSourceError, match="does not exist") as missing:
            await session.upload_many([*good[:2], UploadRequest(server.url("/x"), tmp_path / "no")])
        assert "request 2 of 3; no task was made" in missing.value.__notes__
        with pytest.raises(UnsupportedSchemeError) as scheme:
            await session.upload_many([UploadRequest("ftp://example.com/x", sources[0]), *good])
        assert "request 0 of 5; no task was made" in scheme.value.__notes__
        with pytest.raises(InvalidDestinationError, match="already claimed by task") as clash:
            await session.upload_many(
                [
                    good[0],
                    UploadRequest(server.url("/r/1"), sources[1], reply_to=victim),
                    UploadRequest(server.url("/r/2"), sources[2], reply_to=victim),
                    good[3],
                ]
            )
        assert "request 2 of 4; no task was made" in clash.value.__notes__
        with pytest.raises(InvalidSourceError, match="is a directory") as folder:
            await session.upload_many([*good, UploadRequest(server.url("/d"), tmp_path)])
        assert "request 4 of 5; no task was made" in folder.value.__notes__
        assert session.tasks() == []
        assert journal_task_ids(state_dir, "atomic") == []
        # Nothing stayed claimed: the same reply_to is free for the next batch.
        tasks = await session.upload_many(
            [*good, UploadRequest(server.url("/r/1"), sources[1], reply_to=victim)]
        )
        results = [await task.wait() for task in tasks]
    assert all(isinstance(result, FinishedEvent) for result in results)
    assert sorted(u.path for u in server.uploads) == sorted(
        ["/g/0", "/g/1", "/g/2", "/g/3", "/r/1"]
    )
    assert json.loads(victim.read_text())["sha256"] == sha256_bytes(sources[1].read_bytes())


async def test_a_refused_batch_touches_no_file(
    background: Callable[..., Session],
    server: TestServer,
    state_dir: Path,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    """The replies of the requests before the wrong one are not written, nor
    any partial made for them."""
    sources = _sources(tmp_path, 3)
    victims = {out_dir / f"reply-{i}.json": f"victim {i}" for i in range(3)}
    for path, text in victims.items():
        path.write_text(text)
    before = sorted(p.name for p in out_dir.iterdir())
    async with background("victims", state_dir=state_dir) as session:
        with pytest.raises(InvalidSourceError):
            await session.upload_many(
                [
                    *(
                        UploadRequest(
                            server.url(f"/v/{i}"), s, reply_to=out_dir / f"reply-{i}.json"
                        )
                        for i, s in enumerate(sources)
                    ),
                    UploadRequest(server.url("/v/x"), tmp_path / "gone.bin"),
                ]
            )
        assert session.tasks() == []
    assert sorted(p.name for p in out_dir.iterdir()) == before
    for path, text in victims.items():
        assert path.read_text() == text
    assert server.requests == ()


async def test_wrong_arguments_raise_type_errors(state_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"a")
    async with Session(state_dir=state_dir) as session:
        with pytest.raises(TypeError, match="iterable of UploadRequest, not str"):
            await session.upload_many("http://example.com/a")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="request 1: expected an UploadRequest, not str"):
            await session.upload_many(
                [UploadRequest("http://example.com/a", source), "http://example.com/b"]  # type: ignore[list-item]
            )
        assert await session.upload_many([]) == []
        assert session.tasks() == []
    with pytest.raises(ValueError, match="'PUT' or 'POST'"):
        UploadRequest("http://example.com/a", source, method="PATCH")
    with pytest.raises(ValueError, match="protocol must be one of"):
        UploadRequest("http://example.com/a", source, protocol="ftp")
    with pytest.raises(ValueError, match="reply_to is for plain uploads"):
        UploadRequest("http://example.com/a", source, protocol="tus", reply_to=tmp_path / "r")
    with pytest.raises(InvalidURLError):
        UploadRequest("http://user:secret@example.com/a", source)
    with pytest.raises(TypeError, match="description must be a str"):
        UploadRequest("http://example.com/a", source, description=3)  # type: ignore[arg-type]
    request = UploadRequest("http://example.com/a", source, headers={"Authorization": "s3cret"})
    assert request.file == source
    assert "s3cret" not in repr(request)
    with pytest.raises(SessionClosedError):
        await session.upload_many([request])


async def test_a_batch_resolves_links_and_relative_paths_as_upload_does(
    background: Callable[..., Session],
    server: TestServer,
    state_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch resolves each source directory once; the files it names are the
    ones ``upload()`` would find: links followed, relative paths made absolute."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "linked-dir").symlink_to(real)
    first, second = real / "first.bin", real / "second.bin"
    first.write_bytes(os.urandom(30_000))
    second.write_bytes(os.urandom(20_000))
    (tmp_path / "link.bin").symlink_to(second)
    (tmp_path / "dangling.bin").symlink_to(tmp_path / "nowhere.bin")
    monkeypatch.chdir(tmp_path)
    given: list[str | Path] = [
        tmp_path / "linked-dir" / "first.bin",  # in a linked directory
        "link.bin",  # a link to a file, relative
        "real/../real/first.bin",  # a detour
        Path("linked-dir") / "second.bin",
    ]
    expected = [first, second, first, second]
    async with background("links", state_dir=state_dir) as session:
        with pytest.raises(InvalidSourceError, match="does not exist") as dangling:
            await session.upload_many(
                [UploadRequest(server.url("/k/x"), f) for f in [*given, "dangling.bin"]]
            )
        assert "request 4 of 5; no task was made" in dangling.value.__notes__
        tasks = await session.upload_many(
            [UploadRequest(server.url(f"/k/{i}"), f) for i, f in enumerate(given)]
        )
        assert [task.source for task in tasks] == [p.resolve() for p in expected]
        results = [await task.wait() for task in tasks]
    assert all(isinstance(result, FinishedEvent) for result in results)
    assert _received(server) == {
        f"/k/{i}": sha256_bytes(p.read_bytes()) for i, p in enumerate(expected)
    }
