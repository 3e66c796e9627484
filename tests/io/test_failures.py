"""Bad input and failures: a clear error naming the URL and cause, and nothing lost."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from _helpers import check_task_stream, collect, sha256_file
from bgtransfer import (
    Configuration,
    ErrorEvent,
    FinishedEvent,
    HTTPStatusError,
    IncompleteBodyError,
    InvalidDestinationError,
    InvalidURLError,
    LocalFileError,
    NetworkError,
    RetryPolicy,
    Session,
    SessionClosedError,
    TaskState,
    TransferTimeoutError,
    UnsupportedSchemeError,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

# These tests look at one attempt's failure; retries are tested in test_resume.py.
NO_RETRY = RetryPolicy(max_attempts=1)


def assert_nothing_left(session: Session, destination: Path) -> None:
    assert not destination.exists(), f"{destination} must not exist after a failure"
    assert not list((session.directory / "partials").iterdir()), "partial files left behind"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (404, "Not Found"),
        (403, "Forbidden"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
    ],
)
async def test_http_error_status_ends_in_error_event(
    server: TestServer, state_dir: Path, out_dir: Path, status: int, reason: str
) -> None:
    file = server.add_file("/f.bin", size=1_000)
    server.set_faults(file.path, Faults(status=status))
    destination = out_dir / "f.bin"
    config = Configuration(retry=NO_RETRY)
    async with Session("errors", state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), destination)
        events = await collect(task.events())
        terminal = check_task_stream(events, task.id)
        assert isinstance(terminal, ErrorEvent)
        error = terminal.error
        assert isinstance(error, HTTPStatusError)
        assert error.status == status
        assert str(error) == f"{server.url(file.path)}: HTTP {status} {reason}"
        assert error.url == server.url(file.path)
        with pytest.raises(HTTPStatusError) as raised:
            await task.wait()
        assert raised.value is error
        assert task.state is TaskState.COMPLETED
        assert_nothing_left(session, destination)


async def test_missing_path_is_404(server: TestServer, state_dir: Path, out_dir: Path) -> None:
    async with Session(state_dir=state_dir) as session:
        task = await session.download(server.url("/nope"), out_dir / "nope")
        with pytest.raises(HTTPStatusError, match="nope: HTTP 404"):
            await task.wait()


async def test_a_failure_does_not_disturb_other_tasks(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    good = [server.add_file(f"/ok/{i}.bin", size=100_000 + i) for i in range(4)]
    bad = server.add_file("/bad.bin", size=100_000)
    server.set_faults(bad.path, Faults(reset_after=30_000))
    config = Configuration(max_connections_per_host=2, retry=NO_RETRY)
    async with Session(state_dir=state_dir, config=config) as session:
        failing = await session.download(server.url(bad.path), out_dir / "bad.bin")
        tasks = [
            await session.download(server.url(f.path), out_dir / f"{i}.bin")
            for i, f in enumerate(good)
        ]
        with pytest.raises(IncompleteBodyError):
            await failing.wait()
        for task, file in zip(tasks, good, strict=True):
            result = await task.wait()
            assert isinstance(result, FinishedEvent)
            assert sha256_file(result.location) == file.sha256
        assert_nothing_left(session, out_dir / "bad.bin")


@pytest.mark.parametrize(
    "fault", [Faults(reset_after=50_000), Faults(close_after=50_000), Faults(close_after=0)]
)
async def test_truncated_body_is_never_success(
    server: TestServer, state_dir: Path, out_dir: Path, fault: Faults
) -> None:
    file = server.add_file("/cut.bin", size=200_000)
    server.set_faults(file.path, fault)
    destination = out_dir / "cut.bin"
    async with Session(state_dir=state_dir, config=Configuration(retry=NO_RETRY)) as session:
        task = await session.download(server.url(file.path), destination)
        events = await collect(task.events())
        terminal = check_task_stream(events, task.id)
        assert isinstance(terminal, ErrorEvent)
        assert isinstance(terminal.error, IncompleteBodyError)
        assert isinstance(terminal.error, NetworkError | ConnectionError)
        assert server.url(file.path) in str(terminal.error)
        assert_nothing_left(session, destination)


async def test_existing_file_survives_a_failed_download(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=100_000)
    server.set_faults(file.path, Faults(reset_after=10_000))
    destination = out_dir / "precious.bin"
    destination.write_bytes(b"finished earlier")
    async with Session(state_dir=state_dir, config=Configuration(retry=NO_RETRY)) as session:
        with pytest.raises(IncompleteBodyError):
            await (await session.download(server.url(file.path), destination)).wait()
    assert destination.read_bytes() == b"finished earlier"


async def test_connection_refused(state_dir: Path, out_dir: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}/x.bin"
        config = Configuration(retry=NO_RETRY)
        async with Session(state_dir=state_dir, config=config) as session:
            task = await session.download(url, out_dir / "x.bin")
            with pytest.raises(NetworkError) as raised:
                await task.wait()
            assert str(raised.value).startswith(f"{url}: cannot connect to 127.0.0.1:{port}")
            assert isinstance(raised.value.__cause__, OSError)
            assert_nothing_left(session, out_dir / "x.bin")


async def test_request_timeout_before_headers(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/slow.bin", size=1_000)
    server.set_faults(file.path, Faults(headers_delay=30.0))
    config = Configuration(request_timeout=0.2, retry=NO_RETRY)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "slow.bin")
        with pytest.raises(TransferTimeoutError, match=r"no data for 0\.2 seconds") as raised:
            await task.wait()
        assert isinstance(raised.value, TimeoutError)
        assert_nothing_left(session, out_dir / "slow.bin")


async def test_request_timeout_mid_body(server: TestServer, state_dir: Path, out_dir: Path) -> None:
    file = server.add_file("/stall.bin", size=100_000)
    server.set_faults(file.path, Faults(hold_after=20_000))  # never released
    config = Configuration(request_timeout=0.2, retry=NO_RETRY)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "stall.bin")
        with pytest.raises(TransferTimeoutError):
            await task.wait()
        assert task.bytes_received == 20_000
        assert_nothing_left(session, out_dir / "stall.bin")


async def test_resource_timeout_bounds_the_whole_task(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/drip.bin", size=100_000)
    server.set_faults(file.path, Faults(drip=(100, 0.01)))  # alive, but far too slow
    config = Configuration(request_timeout=5.0, resource_timeout=0.3)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "drip.bin")
        with pytest.raises(TransferTimeoutError, match="resource_timeout"):
            await task.wait()
        assert 0 < task.bytes_received < file.size
        assert_nothing_left(session, out_dir / "drip.bin")


async def test_destination_directory_removed_before_the_move(
    server: TestServer, state_dir: Path, tmp_path: Path
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    server.set_faults(file.path, Faults(hold_after=5_000))
    directory = tmp_path / "gone"
    directory.mkdir()
    async with Session(state_dir=state_dir) as session:
        task = await session.download(server.url(file.path), directory / "f.bin")
        await server.wait_held(file.path)
        directory.rmdir()
        server.release(file.path)
        with pytest.raises(LocalFileError) as raised:
            await task.wait()
        assert isinstance(raised.value, OSError)
        assert str(directory / "f.bin") in str(raised.value)
        assert raised.value.filename == str(directory / "f.bin")
        assert_nothing_left(session, directory / "f.bin")


# -- wrong before any I/O: raised at the call ----------------------------------------


@pytest.mark.parametrize(
    ("url", "error", "message"),
    [
        ("", InvalidURLError, "empty URL"),
        ("not a url", InvalidURLError, "whitespace"),
        ("example.com/file", InvalidURLError, "no scheme"),
        ("http://", InvalidURLError, "no host"),
        ("http://host:99999/x", InvalidURLError, "http://host:99999/x"),
        ("ftp://example.com/file", UnsupportedSchemeError, "'ftp' is not supported"),
        ("file:///etc/passwd", UnsupportedSchemeError, "'file' is not supported"),
    ],
)
async def test_invalid_urls_raise_at_the_call(
    state_dir: Path, url: str, error: type[Exception], message: str
) -> None:
    async with Session(state_dir=state_dir) as session:
        with pytest.raises(error, match=message) as raised:
            await session.download(url)
        assert isinstance(raised.value, ValueError)
        assert session.tasks() == []


async def test_wrong_argument_types_raise_type_error(state_dir: Path) -> None:
    async with Session(state_dir=state_dir) as session:
        with pytest.raises(TypeError, match="url must be a str"):
            await session.download(b"http://x/y")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="destination"):
            await session.download("http://x/y", 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="description"):
            await session.download("http://x/y", description=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="header"):
            await session.download("http://x/y", headers={"X": 1})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="CR, LF"):
            await session.download("http://x/y", headers={"X": "a\r\nInjected: 1"})
        assert session.tasks() == []


async def test_destination_directory_must_exist(state_dir: Path, tmp_path: Path) -> None:
    async with Session(state_dir=state_dir) as session:
        with pytest.raises(InvalidDestinationError, match="does not exist") as raised:
            await session.download("http://127.0.0.1:1/f", tmp_path / "missing" / "f")
        assert "http://127.0.0.1:1/f" in str(raised.value)
        assert isinstance(raised.value, ValueError)


async def test_two_live_tasks_cannot_share_a_destination(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=1_000)
    server.set_faults(file.path, Faults(hold_after=0))
    async with Session(state_dir=state_dir) as session:
        first = await session.download(server.url(file.path), out_dir / "same")
        with pytest.raises(InvalidDestinationError, match=f"claimed by task {first.id}"):
            await session.download(server.url(file.path), out_dir / "same")
        server.release(file.path)
        await first.wait()
        # Once the first has ended, the path is free again.
        second = await session.download(server.url(file.path), out_dir / "same")
        assert isinstance(await second.wait(), FinishedEvent)


async def test_download_outside_the_session_raises(state_dir: Path) -> None:
    session = Session(state_dir=state_dir)
    with pytest.raises(SessionClosedError):
        await session.download("http://127.0.0.1/x")
    async with session:
        pass
    with pytest.raises(SessionClosedError):
        await session.download("http://127.0.0.1/x")
