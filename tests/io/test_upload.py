"""Plain uploads against the loopback test server: byte-exact (the server hashes
what it receives), progress, PUT and POST, the reply (capped, or saved to
``reply_to`` atomically), retries from the start, a changed source file,
cancel/suspend/resume, the per-host limit shared with downloads."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from _helpers import check_resumable_stream, check_task_stream, collect, sha256_bytes
from bgtransfer import (
    CancelledEvent,
    Configuration,
    DownloadTask,
    FinishedEvent,
    HTTPStatusError,
    InvalidDestinationError,
    InvalidSourceError,
    NetworkError,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
    RetryPolicy,
    Session,
    SourceChangedError,
    TaskState,
    UploadTask,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=0.0)


def _still_open(path: Path) -> bool:
    """Whether this process holds ``path`` open."""
    fds = Path("/proc/self/fd")
    targets = []
    for fd in fds.iterdir() if fds.is_dir() else ():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return str(path.resolve()) in targets


def _source(tmp_path: Path, size: int, name: str = "source.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


@pytest.mark.parametrize("size", [0, 1, 3 * 1024 * 1024 + 17])
async def test_upload_is_byte_exact_and_progress_reaches_the_size(
    background: Callable[..., Session],
    server: TestServer,
    state_dir: Path,
    tmp_path: Path,
    size: int,
) -> None:
    source = _source(tmp_path, size)
    async with background("up", state_dir=state_dir) as session:
        task = await session.upload(server.url("/up/a.bin"), source, description="a")
        assert isinstance(task, UploadTask)
        assert task.source == source.resolve()
        assert task.reply_to is None
        stream = task.events()
        finished = await task.wait()
        events = await collect(stream)
    assert isinstance(finished, FinishedEvent)
    assert check_task_stream(events, task.id) == finished
    assert finished.total_bytes == size
    assert finished.location == source.resolve()
    [received] = server.uploads
    assert (received.method, received.length, received.complete) == ("PUT", size, True)
    assert received.sha256 == sha256_bytes(source.read_bytes())
    reply = finished.reply
    assert reply is not None
    assert reply.status == 201
    assert json.loads(reply.body) == {"method": "PUT", "length": size, "sha256": received.sha256}
    assert not reply.truncated
    assert reply.saved_to is None
    if size:
        progress = [e for e in events if isinstance(e, ProgressEvent)]
        assert progress[-1].total_bytes_written == size
        assert progress[-1].total_bytes_expected == size


async def test_post_and_secret_reply_headers_are_left_out(
    server: TestServer, tmp_path: Path
) -> None:
    source = _source(tmp_path, 70_000)
    async with Session() as session:
        task = await session.upload(
            server.url("/form"), source, method="POST", headers={"Authorization": "Bearer s3cret"}
        )
        finished = await task.wait()
    [received] = server.uploads
    assert (received.method, received.sha256) == ("POST", sha256_bytes(source.read_bytes()))
    assert server.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert finished.reply is not None
    assert finished.reply.status == 200
    names = {name.lower() for name, _ in finished.reply.headers}
    assert "content-type" in names
    assert "set-cookie" not in names
    assert "secret-value" not in repr(finished)


async def test_the_reply_body_is_capped_and_says_so(server: TestServer, tmp_path: Path) -> None:
    source = _source(tmp_path, 10)
    async with Session(config=Configuration(upload_reply_max_bytes=100)) as session:
        task = await session.upload(server.url("/up") + "?pad=5000", source)
        finished = await task.wait()
    assert finished.reply is not None
    assert finished.reply.truncated
    assert len(finished.reply.body) == 100
    assert finished.reply.body.startswith(b'{"method": "PUT"')


async def test_reply_to_is_written_atomically_and_replaces_the_old_file(
    background: Callable[..., Session],
    server: TestServer,
    state_dir: Path,
    tmp_path: Path,
    out_dir: Path,
) -> None:
    source = _source(tmp_path, 200_000)
    reply_to = out_dir / "reply.json"
    reply_to.write_text("old reply")
    neighbour = out_dir / "neighbour.txt"
    neighbour.write_text("victim")
    async with background("reply", state_dir=state_dir) as session:
        task = await session.upload(server.url("/up") + "?pad=100000", source, reply_to=reply_to)
        assert task.reply_to == reply_to
        finished = await task.wait()
    assert finished.location == reply_to
    assert finished.reply is not None
    assert finished.reply.saved_to == reply_to
    assert finished.reply.body == b""
    document = json.loads(reply_to.read_text())
    assert document["sha256"] == sha256_bytes(source.read_bytes())
    assert len(document["pad"]) == 100_000
    assert sorted(p.name for p in out_dir.iterdir()) == ["neighbour.txt", "reply.json"]
    assert neighbour.read_text() == "victim"
    partials = state_dir / "reply" / "partials"
    assert not partials.exists() or not list(partials.iterdir())


async def test_a_failed_upload_never_touches_reply_to(server: TestServer, tmp_path: Path) -> None:
    source = _source(tmp_path, 1000)
    reply_to = tmp_path / "reply.json"
    reply_to.write_text("victim")
    server.set_faults("/up", Faults(status=403))
    async with Session() as session:
        task = await session.upload(server.url("/up"), source, reply_to=reply_to)
        with pytest.raises(HTTPStatusError) as info:
            await task.wait()
    assert info.value.status == 403
    assert "/up" in str(info.value)
    assert reply_to.read_text() == "victim"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reply.json", "source.bin"]


async def test_a_reset_attempt_closes_the_source_file(server: TestServer, tmp_path: Path) -> None:
    source = _source(tmp_path, 8 * 1024 * 1024)
    server.set_faults("/up", Faults(reset_after=100_000))
    config = Configuration(retry=RetryPolicy(max_attempts=1))
    async with Session(config=config) as session:
        task = await session.upload(server.url("/up"), source)
        with pytest.raises(NetworkError):
            await task.wait()
        assert not _still_open(source)


async def test_a_reset_mid_body_is_sent_again_from_the_start(
    background: Callable[..., Session], server: TestServer, state_dir: Path, tmp_path: Path
) -> None:
    source = _source(tmp_path, 2 * 1024 * 1024)
    server.set_faults("/up", Faults(reset_after=300_000), times=1)
    config = Configuration(retry=FAST_RETRY)
    async with background("reset", state_dir=state_dir, config=config) as session:
        task = await session.upload(server.url("/up"), source)
        stream = task.events()
        finished = await task.wait()
        events = await collect(stream)
    assert check_resumable_stream(events, task.id) == finished
    assert any(isinstance(e, RetryEvent) for e in events)
    resumed = [e for e in events if isinstance(e, ResumedEvent)]
    assert [e.offset for e in resumed] == [0]
    first, second = server.uploads
    assert not first.complete
    assert first.length <= 300_000
    assert second.complete
    assert second.sha256 == sha256_bytes(source.read_bytes())
    assert finished.total_bytes == source.stat().st_size


async def test_a_retryable_status_is_retried_and_a_final_one_fails(
    server: TestServer, tmp_path: Path
) -> None:
    source = _source(tmp_path, 3 * 1024 * 1024)
    server.set_faults("/retry", Faults(status=503), times=1)
    server.set_faults("/final", Faults(status=404))
    async with Session(config=Configuration(retry=FAST_RETRY)) as session:
        retried = await session.upload(server.url("/retry"), source)
        final = await session.upload(server.url("/final"), source)
        assert isinstance(await retried.wait(), FinishedEvent)
        with pytest.raises(HTTPStatusError) as info:
            await final.wait()
        assert not _still_open(source)
    assert info.value.status == 404
    assert [u.path for u in server.uploads].count("/final") == 1


async def test_a_retried_upload_logs_its_retry_as_a_download_does(
    server: TestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The retry of an upload is logged (DEBUG) as a download's is (the shared
    back-off), with the delay the shared decision took (503, Retry-After: 0)."""
    caplog.set_level(logging.DEBUG, logger="bgtransfer")
    source = _source(tmp_path, 100_000)
    server.set_faults("/up", Faults(status=503, retry_after="0"), times=1)
    async with Session(config=Configuration(retry=FAST_RETRY)) as session:
        task = await session.upload(server.url("/up"), source)
        events = await collect(task.events())
    assert isinstance(events[-1], FinishedEvent)
    retries = [e for e in events if isinstance(e, RetryEvent)]
    assert [(r.attempt, r.delay) for r in retries] == [(2, 0.01)]
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("bgtransfer")]
    assert f"task {task.id}: attempt 2 in 0.010 s, from byte 0, after: " in "\n".join(messages)
    assert server.uploads[-1].sha256 == sha256_bytes(source.read_bytes())


@pytest.mark.parametrize("change", ["size", "mtime", "replaced"])
async def test_a_source_that_changes_while_sent_fails_clearly(
    server: TestServer, tmp_path: Path, change: str
) -> None:
    source = _source(tmp_path, 4 * 1024 * 1024)
    original = source.read_bytes()
    server.set_faults("/up", Faults(hold_after=64 * 1024))
    async with Session(config=Configuration(retry=FAST_RETRY)) as session:
        task = await session.upload(server.url("/up"), source)
        await server.wait_held("/up")
        if change == "size":
            with source.open("ab") as file:
                file.write(b"more")
        elif change == "mtime":
            st = source.stat()
            os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        else:
            replacement = tmp_path / "new.bin"
            replacement.write_bytes(original)  # the same bytes, another file
            replacement.replace(source)
        server.release("/up")
        with pytest.raises(SourceChangedError) as info:
            await task.wait()
        assert not _still_open(source)  # closed when the attempt ended
    error = info.value
    assert error.filename == str(source.resolve())
    assert str(source.resolve()) in str(error)
    assert "/up" in str(error)
    assert len(server.uploads) == 1  # never retried: the file is another one now
    if change != "replaced":  # the body stopped before its end: the server has no mix
        assert not server.uploads[0].complete
    else:  # the old file was sent whole; the task still fails (its path is another file)
        assert server.uploads[0].sha256 == sha256_bytes(original)


async def test_a_source_changed_before_its_attempt_is_not_sent(
    server: TestServer, tmp_path: Path
) -> None:
    source = _source(tmp_path, 1000)
    server.set_faults("/first", Faults(hold_after=0))
    async with Session(config=Configuration(max_connections_per_host=1)) as session:
        first = await session.upload(server.url("/first"), _source(tmp_path, 10, "other.bin"))
        await server.wait_held("/first")
        queued = await session.upload(server.url("/second"), source)
        source.write_bytes(b"shorter")
        server.release("/first")
        await first.wait()
        with pytest.raises(SourceChangedError, match="size changed from 1000 to 7"):
            await queued.wait()
    assert [r.path for r in server.requests] == ["/first"]


async def test_wrong_uploads_are_refused_at_the_call(server: TestServer, tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    source = _source(tmp_path, 10)
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    async with Session() as session:
        with pytest.raises(InvalidSourceError, match="does not exist"):
            await session.upload(server.url("/up"), tmp_path / "missing")
        with pytest.raises(InvalidSourceError, match="is a directory"):
            await session.upload(server.url("/up"), tmp_path / "dir")
        with pytest.raises(InvalidSourceError, match="does not exist"):
            await session.upload(server.url("/up"), tmp_path / "link")
        with pytest.raises(ValueError, match="'PUT' or 'POST'"):
            await session.upload(server.url("/up"), source, method="PATCH")
        with pytest.raises(InvalidDestinationError, match="the file being uploaded"):
            await session.upload(server.url("/up"), source, reply_to=source)
        with pytest.raises(InvalidDestinationError, match=r"reply_to directory .* does not exist"):
            await session.upload(server.url("/up"), source, reply_to=tmp_path / "no" / "r")
        with pytest.raises(TypeError, match=r"reply_to must be a str, .* not int"):
            await session.upload(server.url("/up"), source, reply_to=3)  # type: ignore[arg-type]
        assert session.tasks() == []
    assert server.requests == ()


async def test_cancel_suspend_and_resume(
    background: Callable[..., Session], server: TestServer, state_dir: Path, tmp_path: Path
) -> None:
    source = _source(tmp_path, 1024 * 1024)
    server.set_faults("/s", Faults(hold_after=100_000), times=1)
    server.set_faults("/c", Faults(hold_after=100_000))
    async with background("life", state_dir=state_dir) as session:
        suspended = await session.upload(server.url("/s"), source)
        cancelled = await session.upload(server.url("/c"), source)
        await server.wait_held("/s")
        await server.wait_held("/c")
        stream = suspended.events()
        suspended.suspend()
        assert suspended.state is TaskState.SUSPENDED
        await cancelled.cancel()
        assert await cancelled.wait() == CancelledEvent(task_id=cancelled.id)
        server.release("/s")
        suspended.resume()
        finished = await suspended.wait()
        events = await collect(stream)
    assert check_resumable_stream(events, suspended.id) == finished
    assert [e.offset for e in events if isinstance(e, ResumedEvent)] == [0]
    # (The suspended attempt's bytes may all have been in the socket's buffers:
    # the server can then read that body whole too.)
    done = [u for u in server.uploads if u.path == "/s" and u.complete]
    assert done
    assert {u.sha256 for u in done} == {sha256_bytes(source.read_bytes())}


async def test_uploads_and_downloads_share_the_per_host_limit(
    server: TestServer, tmp_path: Path, out_dir: Path
) -> None:
    file = server.add_file("/d.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=1000))
    source = _source(tmp_path, 300_000)
    config = Configuration(max_connections_per_host=1)
    async with Session(config=config) as session:
        download = await session.download(server.url(file.path), out_dir / "d.bin")
        await server.wait_held(file.path)
        upload = await session.upload(server.url("/u"), source)
        assert session.statistics().queued == 1
        kinds = {type(task) for task in session.tasks()}
        assert kinds == {DownloadTask, UploadTask}
        server.release(file.path)
        await download.wait()
        await upload.wait()
    assert server.statistics().peak_in_flight == 1
    assert [r.path for r in server.requests] == [file.path, "/u"]


async def test_relative_paths_and_secrets(
    background: Callable[..., Session],
    server: TestServer,
    state_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Relative paths are the caller's (made absolute on its side, also for the
    daemon); secret headers are sent but never reach the state directory."""
    source = _source(tmp_path, 50_000)
    (tmp_path / "replies").mkdir()
    monkeypatch.chdir(tmp_path)
    headers = {"Authorization": "Bearer s3cret-token", "X-Api-Key": "k3y-value", "X-Trace": "t"}
    async with background("secrets", state_dir=state_dir) as session:
        task = await session.upload(
            server.url("/up"), "source.bin", headers=headers, reply_to="replies/r.json"
        )
        assert task.source == source.resolve()
        assert task.reply_to == tmp_path / "replies" / "r.json"
        finished = await task.wait()
        assert "s3cret" not in repr(task)
    assert finished.location == tmp_path / "replies" / "r.json"
    assert json.loads(finished.location.read_text())["length"] == 50_000
    sent = server.requests[0].headers
    assert (sent["Authorization"], sent["X-Api-Key"]) == ("Bearer s3cret-token", "k3y-value")
    for path in state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"s3cret" not in data, path
            assert b"k3y-value" not in data, path


async def test_refusals_cross_from_the_daemon_as_they_are(
    background: Callable[..., Session], server: TestServer, state_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "dir").mkdir()
    async with background("refused", state_dir=state_dir) as session:
        with pytest.raises(InvalidSourceError, match="does not exist"):
            await session.upload(server.url("/up"), tmp_path / "missing")
        with pytest.raises(InvalidSourceError, match="is a directory"):
            await session.upload(server.url("/up"), tmp_path / "dir")
        assert session.tasks() == []
