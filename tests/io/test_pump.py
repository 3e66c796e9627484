"""The pump: large plain-HTTP bodies read from the socket by one worker-thread call.

White-box where that is cheap (``detach_body`` against a stand-in response around a
real aiohttp ``StreamReader``; ``_pump`` and ``pump_body`` against socket pairs),
end to end otherwise, against the test server and nginx. The ``pumped`` fixture
lowers ``PUMP_MIN_BYTES`` to 64 KiB so that bodies of a few MiB take the pump, and
records every ``_pump`` call (its job and how it ended): each test that says a body
was pumped checks that record, and each test of the aiohttp path checks it is empty.
One nginx test keeps the real threshold.

Time passes only where time is the point (``request_timeout``, ``min_speed``);
everything else waits on the server's gates, progress events or a socket's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import itertools
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import aiohttp
import anyio
import attrs
import pytest
from aiohttp import client_proto

from _helpers import (
    check_resumable_stream,
    check_task_stream,
    collect,
    fds_opened_since,
    open_fds,
    seeded_bytes,
    sha256_bytes,
    sha256_file,
    wait_for_bytes,
)
from _nginx import NginxServer
from bgtransfer import (
    CancelledEvent,
    Configuration,
    DownloadTask,
    ErrorEvent,
    FinishedEvent,
    IncompleteBodyError,
    LocalFileError,
    NetworkError,
    ProgressEvent,
    RetryPolicy,
    Session,
    TaskEvent,
    TaskState,
    TransferTimeoutError,
)
from bgtransfer._engine.download import Downloader
from bgtransfer._engine.download_job import DownloadJob
from bgtransfer._io import pump
from bgtransfer._io.client import READ_BUFSIZE
from bgtransfer._io.transfer import BodyPlan
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

KiB = 1024
MiB = 1024 * KiB
THRESHOLD = 64 * KiB  # PUMP_MIN_BYTES under the `pumped` fixture
URL = "http://files.example/pumped.bin"

NO_RETRY = RetryPolicy(max_attempts=1)
RETRY = RetryPolicy(max_attempts=4, initial_delay=0, jitter=0)
CONFIG = Configuration(progress_interval=0, retry=RETRY)


def ranges(server: TestServer, path: str) -> list[str | None]:
    return [r.headers.get("Range") for r in server.requests if r.path == path]


def partials(session: Session) -> list[Path]:
    return sorted((session.directory / "partials").iterdir())


async def written(task: DownloadTask, count: int) -> None:
    """Until the task has written ``count`` bytes (bounded: a broken pump fails, not hangs)."""
    with anyio.fail_after(10):
        await wait_for_bytes(task, count)


async def until_ended(stream: AsyncIterator[TaskEvent]) -> list[TaskEvent]:
    """Every event until the stream ends (bounded: a broken pump fails, not hangs)."""
    with anyio.fail_after(20):
        return await collect(stream)


async def finished(task: DownloadTask) -> FinishedEvent | CancelledEvent:
    with anyio.fail_after(20):
        return await task.wait()


async def held(server: TestServer, path: str) -> None:
    with anyio.fail_after(10):
        await server.wait_held(path)


# --------------------------------------------------------------------------------------
# Recording the pump
# --------------------------------------------------------------------------------------


@attrs.frozen
class PumpRun:
    """One ``_pump`` call: its job, and how it ended."""

    offset: int
    head: int  # bytes aiohttp had buffered, taken by detach_body
    want: int  # bytes the worker was to read from the socket
    truncate: bool
    timeout: float | None
    end: str  # pump._End value
    written: int

    @property
    def length(self) -> int:
        return self.head + self.want


class PumpLog:
    """Every ``_pump`` call of a test, in the order they ended."""

    def __init__(self) -> None:
        self.runs: list[PumpRun] = []
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        """Worker calls under way right now."""
        with self._lock:
            return self._running

    def enter(self) -> None:
        with self._lock:
            self._running += 1

    def leave(self, job: pump.PumpJob, result: pump._Result | None) -> None:
        with self._lock:
            self._running -= 1
            if result is None:
                return  # the test fails on the worker's exception
            self.runs.append(
                PumpRun(
                    offset=job.offset,
                    head=len(job.head),
                    want=job.want,
                    truncate=job.truncate,
                    timeout=job.timeout,
                    end=result.end.value,
                    written=job.written,
                )
            )


@pytest.fixture
def pump_log(monkeypatch: pytest.MonkeyPatch) -> PumpLog:
    """Records every ``_pump`` call (the real threshold stays)."""
    log = PumpLog()
    real = pump._pump

    def recording(job: pump.PumpJob) -> pump._Result:
        log.enter()
        try:
            result = real(job)
        except BaseException:
            log.leave(job, None)
            raise
        log.leave(job, result)
        return result

    monkeypatch.setattr(pump, "_pump", recording)
    return log


@pytest.fixture
def pumped(monkeypatch: pytest.MonkeyPatch, pump_log: PumpLog) -> PumpLog:
    """``pump_log`` with ``PUMP_MIN_BYTES`` lowered to 64 KiB."""
    monkeypatch.setattr(pump, "PUMP_MIN_BYTES", THRESHOLD)
    return pump_log


# --------------------------------------------------------------------------------------
# detach_body, against a stand-in response around a real aiohttp StreamReader
# --------------------------------------------------------------------------------------


class FakeTransport:
    """The parts of an asyncio transport detach_body uses; tracks whether it reads."""

    def __init__(self, sock: socket.socket, *, tls: bool = False, closing: bool = False) -> None:
        self.sock = sock
        self.tls = ssl.create_default_context() if tls else None
        self.closing = closing
        self.reading = True
        self.calls: list[str] = []

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"socket": self.sock, "sslcontext": self.tls}.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.reading = True
        self.calls.append("resume")


class FakeProtocol:
    """aiohttp's flow control as StreamReader drives it: pause and resume the transport."""

    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport
        self._reading_paused = False

    def pause_reading(self) -> None:
        self._reading_paused = True
        self.transport.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False
        self.transport.resume_reading()


@attrs.define
class FakeConnection:
    transport: FakeTransport | None


@attrs.define
class FakeResponse:
    content_length: int | None
    headers: dict[str, str]
    connection: FakeConnection | None
    content: aiohttp.StreamReader


LIMIT = 16 * KiB  # the stand-in StreamReader's flow-control limit (pauses past 32 KiB)


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def fake_response(
    sock: socket.socket,
    buffered: Sequence[bytes],
    *,
    content_length: int | None,
    headers: dict[str, str] | None = None,
    tls: bool = False,
    closing: bool = False,
    connected: bool = True,
) -> tuple[FakeResponse, FakeTransport]:
    loop = asyncio.get_running_loop()
    transport = FakeTransport(sock, tls=tls, closing=closing)
    protocol = FakeProtocol(transport)
    content = aiohttp.StreamReader(cast(Any, protocol), LIMIT, loop=loop)
    for chunk in buffered:
        content.feed_data(chunk)
    response = FakeResponse(
        content_length=content_length,
        headers={} if headers is None else headers,
        connection=FakeConnection(transport) if connected else None,
        content=content,
    )
    return response, transport


def detach_body(response: FakeResponse, plan: BodyPlan, partial: Path) -> pump.PumpJob | None:
    return pump.detach_body(
        cast(aiohttp.ClientResponse, response), plan, partial, request_timeout=7.5
    )


@pytest.mark.parametrize("plan_offset", [0, 3 * MiB])
async def test_detach_body_claims_the_buffered_body_and_leaves_the_transport_paused(
    pumped: PumpLog,
    sockets: tuple[socket.socket, socket.socket],
    tmp_path: Path,
    plan_offset: int,
) -> None:
    a, _ = sockets
    chunks = [seeded_bytes(20 * KiB, f"c{i}") for i in range(3)]  # past the high water: paused
    response, transport = fake_response(a, chunks, content_length=MiB)
    assert not transport.reading  # aiohttp's flow control stopped the transport
    transport.calls.clear()
    fds_before = open_fds()

    job = detach_body(response, BodyPlan(plan_offset, MiB), tmp_path / "p.part")

    assert job is not None
    try:
        assert job.head == b"".join(chunks)
        assert job.want == MiB - len(job.head)
        assert job.offset == plan_offset
        assert job.truncate
        assert job.timeout == 7.5
        assert job.sock != a.fileno()
        assert os.fstat(job.sock).st_ino == os.fstat(a.fileno()).st_ino  # a dup
        # Draining the buffer resumed the transport (flow control); the pump's pause
        # came after it, so nothing reads the socket but the pump.
        assert transport.calls == ["resume", "pause"]
        assert not transport.reading
        assert response.content.read_nowait() == b""
    finally:
        job.close()
    assert not fds_opened_since(fds_before)


async def test_detach_body_cuts_the_head_at_a_segment_end(
    pumped: PumpLog, sockets: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    a, _ = sockets
    data = seeded_bytes(40 * KiB, "whole file")
    # A segment of THRESHOLD bytes served by a longer 200: only its bytes are the job's.
    response, transport = fake_response(a, [data], content_length=4 * MiB)
    job = detach_body(response, BodyPlan(0, THRESHOLD, truncate=False), tmp_path / "s")
    assert job is not None
    try:
        assert job.head == data
        assert job.want == THRESHOLD - len(data)
        assert not job.truncate
    finally:
        job.close()

    bigger = seeded_bytes(THRESHOLD + 10, "more than the segment")
    response, transport = fake_response(a, [bigger], content_length=4 * MiB)
    job = detach_body(response, BodyPlan(MiB, THRESHOLD, truncate=False), tmp_path / "s")
    assert job is not None
    try:
        assert job.head == bigger[:THRESHOLD]
        assert job.want == 0
        assert job.offset == MiB
        assert not transport.reading
    finally:
        job.close()


REFUSALS: dict[str, tuple[BodyPlan, dict[str, Any]]] = {
    "no length planned": (BodyPlan(0, None), {}),
    "below the threshold": (BodyPlan(0, THRESHOLD - 1), {"content_length": THRESHOLD - 1}),
    "no content-length": (BodyPlan(0, MiB), {"content_length": None}),
    "chunked": (BodyPlan(0, MiB), {"headers": {"Transfer-Encoding": "chunked"}}),
    "fresh body of another length": (BodyPlan(0, MiB), {"content_length": MiB + 1}),
    "resumed body of another length": (BodyPlan(5, MiB), {"content_length": MiB - 1}),
    "segment longer than the body": (BodyPlan(0, MiB, truncate=False), {"content_length": 9}),
    "tls": (BodyPlan(0, MiB), {"tls": True}),
    "closing transport": (BodyPlan(0, MiB), {"closing": True}),
    "no connection": (BodyPlan(0, MiB), {"connected": False}),
    "body already complete": (BodyPlan(0, MiB), {"eof": True}),
    "body already failed": (BodyPlan(0, MiB), {"error": True}),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_detach_body_refuses_what_aiohttp_must_keep(
    pumped: PumpLog, sockets: tuple[socket.socket, socket.socket], tmp_path: Path, case: str
) -> None:
    a, _ = sockets
    plan, options = REFUSALS[case]
    eof = options.pop("eof", False)
    error = options.pop("error", False)
    options.setdefault("content_length", MiB)
    buffered = seeded_bytes(1000, "buffered")
    response, transport = fake_response(a, [buffered], **options)
    if eof:
        response.content.feed_eof()
    if error:
        response.content.set_exception(aiohttp.ClientPayloadError("broken"))
    assert transport.reading
    transport.calls.clear()
    fds_before = open_fds()

    assert detach_body(response, plan, tmp_path / "r.part") is None

    assert not fds_opened_since(fds_before)  # no dup left behind
    assert transport.reading  # aiohttp still reads
    assert transport.calls == []
    if not error:
        assert response.content.read_nowait() == buffered  # nothing was taken
    assert not (tmp_path / "r.part").exists()


# --------------------------------------------------------------------------------------
# _pump: the worker's call, against socket pairs
# --------------------------------------------------------------------------------------


def socket_job(
    sock: socket.socket,
    path: Path,
    *,
    want: int,
    head: bytes = b"",
    offset: int = 0,
    truncate: bool = True,
    timeout: float | None = 5.0,
) -> pump.PumpJob:
    sock.setblocking(False)
    return pump.PumpJob(
        sock=os.dup(sock.fileno()),
        path=path,
        offset=offset,
        truncate=truncate,
        head=head,
        want=want,
        timeout=timeout,
    )


def run_pump(job: pump.PumpJob, *, within: float = 5.0) -> pump._Result:
    """``_pump(job)`` in a thread; fails (and stops the worker) if it takes longer."""
    results: list[pump._Result] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(pump._pump(job))
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(within)
    if thread.is_alive():
        job.wake()
        thread.join()
        pytest.fail(f"_pump did not end within {within} seconds")
    if errors:
        raise errors[0]
    return results[0]


def send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the reader is gone: the test fails anyway
        sock.sendall(data)


@pytest.mark.parametrize("kind", ["fresh", "resumed", "segment"])
async def test_pump_writes_head_and_socket_at_the_offset(
    monkeypatch: pytest.MonkeyPatch,
    sockets: tuple[socket.socket, socket.socket],
    tmp_path: Path,
    kind: str,
) -> None:
    monkeypatch.setattr(pump, "PUMP_BUFFER_BYTES", 4096)  # many full-buffer writes
    a, b = sockets
    path = tmp_path / "p.part"
    old = seeded_bytes(900_000, "old")
    head, rest = seeded_bytes(10_007, "head"), seeded_bytes(333_333, "rest")
    offset, truncate = {"fresh": (0, True), "resumed": (70_001, True), "segment": (100_000, False)}[
        kind
    ]
    if kind != "fresh":
        path.write_bytes(old)
    # A segment's connection may carry more than the segment (a whole-file 200).
    extra = seeded_bytes(5_000, "beyond the segment") if kind == "segment" else b""
    job = socket_job(a, path, want=len(rest), head=head, offset=offset, truncate=truncate)
    sender = threading.Thread(target=send_quietly, args=(b, rest + extra))
    sender.start()
    try:
        result = run_pump(job)
    finally:
        if sender.is_alive():  # the worker stopped reading early (a failure)
            b.shutdown(socket.SHUT_RDWR)
        sender.join()
        job.close()

    assert result.end is pump._End.DONE
    assert job.written == len(head) + len(rest)
    new = head + rest
    expected = {
        "fresh": new,
        "resumed": old[:offset] + new,
        "segment": old[:offset] + new + old[offset + len(new) :],
    }[kind]
    assert sha256_bytes(path.read_bytes()) == sha256_bytes(expected)


def reset_pair(data: bytes) -> tuple[socket.socket, Callable[[], None]]:
    """A TCP client socket holding ``data`` followed by a connection reset."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
    peer.sendall(data)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # RST
    poller = select.poll()
    poller.register(client, 0)  # only POLLERR/POLLHUP: the reset has arrived
    assert poller.poll(5000), "the reset never arrived"
    return client, client.close


@pytest.mark.parametrize("end", ["eof", "stopped", "network", "timeout"])
async def test_a_pump_that_ends_early_writes_and_counts_every_byte_it_read(
    sockets: tuple[socket.socket, socket.socket], tmp_path: Path, end: str
) -> None:
    """Everything the server sent is queued before the worker starts, so it reads
    without blocking and holds unwritten bytes when the end comes (but for the
    timeout, which writes before it waits)."""
    a, b = sockets
    head, sent = seeded_bytes(1_234, "head"), seeded_bytes(50_000, "sent")
    path = tmp_path / "early.part"
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    sock = a
    if end == "network":
        sock, cleanup = reset_pair(sent)
    else:
        b.sendall(sent)
        if end == "eof":
            b.close()
    job = socket_job(
        sock, path, want=len(sent) + 10_000, head=head, timeout=0.05 if end == "timeout" else 5.0
    )
    if end == "stopped":
        job.stop = True  # what wake() sets; the worker sees it after its next read
    try:
        result = run_pump(job)
    finally:
        job.close()
        cleanup()

    assert result.end.value == end
    if end == "network":
        assert isinstance(result.error, ConnectionResetError)
    assert job.written == len(head) + len(sent)
    assert path.read_bytes() == head + sent


async def test_pump_reports_a_file_it_cannot_open(
    sockets: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    a, b = sockets
    b.sendall(b"x" * 100)
    path = tmp_path / "missing" / "p.part"
    job = socket_job(a, path, want=100, head=b"h", offset=10, truncate=False)
    try:
        result = run_pump(job)
    finally:
        job.close()
    assert result.end is pump._End.FILE
    assert result.action == "open partial file"
    assert isinstance(result.error, FileNotFoundError)
    assert job.written == 0
    error = pump._error(result, job, URL)
    assert isinstance(error, LocalFileError)
    assert str(error) == f"{URL}: cannot open partial file {path}: no such file or directory"


class RecordingSink:
    """The loop's side of a pump: what it was told, and maybe too slow."""

    def __init__(self, *, too_slow: bool = False) -> None:
        self.too_slow = too_slow
        self.received = 0
        self.written = 0

    def judge(self, status: int, reason: str, headers: object) -> BodyPlan | None:
        raise AssertionError("not called by pump_body")

    async def prepare(self, plan: BodyPlan) -> None:
        raise AssertionError("not called by pump_body")

    def chunk_received(self, nbytes: int) -> None:
        self.received += nbytes
        if self.too_slow:
            raise TransferTimeoutError("too slow (min_speed)", url=URL)

    def bytes_written(self, nbytes: int) -> None:
        self.written += nbytes

    async def finishing(self, size: int) -> Path | None:
        raise AssertionError("not called by pump_body")

    def moved(self) -> None:
        raise AssertionError("not called by pump_body")


async def test_pump_body_counts_what_it_wrote_when_the_sink_stops_it_at_the_end(
    monkeypatch: pytest.MonkeyPatch, sockets: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    """BUG: the sink raising (min_speed) in the report that sees the worker done.

    The worker has written every byte; the report that sees it done calls
    ``chunk_received`` first, which raises, so ``bytes_written`` is never called
    for those bytes and the ``finally`` skips its catch-up because the future is
    done. The bytes are on disk but never counted (the module's promise: "a failed
    pump has still written every byte it received, and counted them")."""
    monkeypatch.setattr(pump, "REPORT_INTERVAL", 30.0)  # the first report sees the end
    a, b = sockets
    sent = seeded_bytes(60_000, "sent")
    b.sendall(sent)
    path = tmp_path / "ended.part"
    job = socket_job(a, path, want=len(sent), head=b"h" * 10)
    sink = RecordingSink(too_slow=True)

    with anyio.fail_after(10), pytest.raises(TransferTimeoutError):
        await pump.pump_body(job, cast(Any, sink), URL)

    assert path.read_bytes() == b"h" * 10 + sent
    assert job.written == 10 + len(sent)
    assert sink.written == job.written  # fails: 0


# --------------------------------------------------------------------------------------
# End to end: fresh, resumed and segmented bodies through the pump
# --------------------------------------------------------------------------------------


async def test_fresh_download_is_pumped_byte_exact(
    server: TestServer, out_dir: Path, pumped: PumpLog
) -> None:
    file = server.add_file("/fresh.bin", size=3 * MiB + 17)
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "fresh.bin")
        events = await until_ended(task.events())
    terminal = check_task_stream(events, task.id)
    assert isinstance(terminal, FinishedEvent)
    assert sha256_file(out_dir / "fresh.bin") == file.sha256
    assert task.bytes_received == task.bytes_expected == file.size
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert all(e.bytes_written > 0 for e in progress)
    assert progress[-1].total_bytes_written == file.size
    [run] = pumped.runs
    assert run == PumpRun(
        offset=0,
        head=run.head,
        want=file.size - run.head,
        truncate=True,
        timeout=CONFIG.request_timeout,
        end="done",
        written=file.size,
    )
    assert run.want > 0  # the worker read from the socket, not only aiohttp's buffer
    assert ranges(server, file.path) == [None]


async def test_coded_body_is_pumped_as_sent(
    server: TestServer, out_dir: Path, pumped: PumpLog
) -> None:
    file = server.add_file("/coded.bin", size=3 * MiB)
    server.set_faults(file.path, Faults(gzip=True))
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "coded.bin")
        assert isinstance(await finished(task), FinishedEvent)
    stored = (out_dir / "coded.bin").read_bytes()
    assert gzip.decompress(stored) == file.data  # stored as sent, never half-decoded
    [run] = pumped.runs
    assert run.end == "done"
    assert run.written == len(stored)


async def test_a_body_aiohttp_had_paused_is_taken_whole(
    server: TestServer, out_dir: Path, pumped: PumpLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Here the pump takes over only once aiohttp's buffer is full and its flow
    control has stopped the transport. Draining that buffer resumes the transport;
    the pump's own pause must come after it, or aiohttp reads part of the body too."""
    file = server.add_file("/paused.bin", size=8 * MiB)
    paused = asyncio.Event()
    real_pause = client_proto.ResponseHandler.pause_reading

    def pause_reading(self: client_proto.ResponseHandler) -> None:
        real_pause(self)
        paused.set()

    real_before_write = Downloader._before_write

    async def before_write(self: Downloader, job: DownloadJob) -> None:
        with anyio.fail_after(10):
            await paused.wait()  # the body stays in aiohttp's hands until its buffer is full
        await real_before_write(self, job)

    monkeypatch.setattr(client_proto.ResponseHandler, "pause_reading", pause_reading)
    monkeypatch.setattr(Downloader, "_before_write", before_write)
    config = Configuration(progress_interval=0, request_timeout=3, retry=NO_RETRY)
    async with Session(config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "paused.bin")
        with anyio.fail_after(15):
            assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "paused.bin") == file.sha256
    [run] = pumped.runs
    assert run.head > 2 * READ_BUFSIZE  # aiohttp's buffer was past its high water
    assert run.end == "done"


def cut_fault(cut: str, n: int) -> Faults:
    """Stop after ``n`` bytes until released, then reset or close the connection."""
    if cut == "reset":
        return Faults(hold_after=n, reset_after=n)
    return Faults(hold_after=n, close_after=n)


@pytest.mark.parametrize("cut", ["reset", "close"])
async def test_a_cut_body_resumes_from_exactly_what_the_pump_wrote(
    server: TestServer, out_dir: Path, pumped: PumpLog, cut: str
) -> None:
    file = server.add_file("/cut.bin", size=4 * MiB + 5)
    n = 700_001
    server.set_faults(file.path, cut_fault(cut, n), times=1)
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "cut.bin")
        stream = task.events()
        await written(task, n)  # the pump wrote what arrived before the server stopped
        server.release(file.path)
        events = await until_ended(stream)
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "cut.bin") == file.sha256
    assert ranges(server, file.path) == [None, f"bytes={n}-"]
    first, second = pumped.runs
    assert first.end == ("network" if cut == "reset" else "eof")
    assert (first.offset, first.written, first.length) == (0, n, file.size)
    assert (second.offset, second.truncate, second.length) == (n, True, file.size - n)
    assert (second.end, second.written) == ("done", file.size - n)


@pytest.mark.parametrize("cut", ["reset", "close"])
async def test_a_cut_body_without_retries_is_an_incomplete_body_error(
    server: TestServer, out_dir: Path, pumped: PumpLog, cut: str
) -> None:
    file = server.add_file("/cut.bin", size=MiB)
    n = 300_000
    server.set_faults(file.path, cut_fault(cut, n))
    url = server.url(file.path)
    config = Configuration(progress_interval=0, retry=NO_RETRY)
    async with Session(config=config) as session:
        task = await session.download(url, out_dir / "cut.bin")
        await written(task, n)
        server.release(file.path)
        with anyio.fail_after(10), pytest.raises(IncompleteBodyError) as raised:
            await task.wait()
        assert not partials(session)
    error = raised.value
    assert isinstance(error, NetworkError)
    assert error.url == url
    if cut == "close":
        assert str(error) == (
            f"{url}: the body was cut short "
            f"(the server closed the connection after {n} of {file.size} bytes)"
        )
    else:
        assert str(error).startswith(f"{url}: the body was cut short (")
        assert isinstance(error.__cause__, ConnectionResetError)
    assert task.bytes_received == n  # every byte received was written and counted
    assert not (out_dir / "cut.bin").exists()
    [run] = pumped.runs
    assert (run.end, run.written) == ("network" if cut == "reset" else "eof", n)


async def test_each_segment_is_pumped(server: TestServer, out_dir: Path, pumped: PumpLog) -> None:
    file = server.add_file("/seg.bin", size=12 * MiB + 123)  # 3 MiB segments
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "seg.bin", segments=4)
        events = await until_ended(task.events())
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "seg.bin") == file.sha256
    assert task.bytes_received == task.bytes_expected == file.size
    bounds = [file.size * i // 4 for i in range(5)]
    runs = sorted(pumped.runs, key=lambda r: r.offset)
    assert [(r.offset, r.length, r.written) for r in runs] == [
        (start, end - start, end - start) for start, end in itertools.pairwise(bounds)
    ]
    assert all(r.end == "done" and not r.truncate for r in runs)
    # No pumped connection went back to the pool: four requests, four connections.
    connections = [r.connection_id for r in server.requests if r.path == file.path]
    assert len(set(connections)) == 4


async def test_a_segment_answered_by_the_whole_file_ends_byte_exact(
    server: TestServer, out_dir: Path, pumped: PumpLog
) -> None:
    file = server.add_file("/whole.bin", size=4 * MiB)
    server.set_faults(file.path, Faults(ignore_range=True))
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "whole.bin", segments=4)
        events = await until_ended(task.events())
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "whole.bin") == file.sha256
    assert task.bytes_received == file.size
    # The first answer's first segment was pumped out of the whole-file 200 (and no
    # further); once ranges proved ignored, the whole file came again, pumped.
    # (The first segment may be stopped early: the others' 200s end the split.)
    [segment] = [r for r in pumped.runs if not r.truncate]
    assert (segment.offset, segment.length) == (0, MiB)
    assert segment.end in {"done", "stopped"}
    assert [(r.offset, r.length, r.end) for r in pumped.runs if r.truncate] == [
        (0, file.size, "done")
    ]


# --------------------------------------------------------------------------------------
# What keeps aiohttp's path, and connection reuse
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "faults"),
    [(THRESHOLD - 1, Faults()), (2 * MiB, Faults(chunked=True))],
    ids=["below the threshold", "chunked"],
)
async def test_small_and_chunked_bodies_keep_the_aiohttp_path(
    server: TestServer, out_dir: Path, pumped: PumpLog, size: int, faults: Faults
) -> None:
    file = server.add_file("/plain.bin", size=size)
    server.set_faults(file.path, faults)
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "plain.bin")
        events = await until_ended(task.events())
    assert isinstance(check_task_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "plain.bin") == file.sha256
    assert pumped.runs == []


async def test_a_pumped_connection_is_closed_a_small_one_reused(
    server: TestServer, out_dir: Path, pumped: PumpLog
) -> None:
    small = server.add_file("/small.bin", size=20_000)
    big = server.add_file("/big.bin", size=3 * MiB)
    order = [small, small, big, big, small]
    async with Session(config=CONFIG) as session:
        for i, file in enumerate(order):
            task = await session.download(server.url(file.path), out_dir / f"{i}.bin")
            assert isinstance(await finished(task), FinishedEvent)
            assert sha256_file(out_dir / f"{i}.bin") == file.sha256
    ids = [r.connection_id for r in server.requests]
    assert len(ids) == len(order)
    assert ids[0] == ids[1] == ids[2]  # the small bodies kept it; the first big one reused it
    assert ids[3] != ids[2]  # ...and closed it
    assert ids[4] != ids[3]
    assert [(r.length, r.end) for r in pumped.runs] == [(big.size, "done")] * 2


# --------------------------------------------------------------------------------------
# A stall, a cancel, a suspend, min_speed, the disk
# --------------------------------------------------------------------------------------


async def test_a_stall_is_a_request_timeout(
    server: TestServer, out_dir: Path, pumped: PumpLog
) -> None:
    file = server.add_file("/stall.bin", size=MiB)
    n = 200_000
    server.set_faults(file.path, Faults(hold_after=n))  # never released
    url = server.url(file.path)
    config = Configuration(progress_interval=0, request_timeout=0.3, retry=NO_RETRY)
    async with Session(config=config) as session:
        task = await session.download(url, out_dir / "stall.bin")
        await held(server, file.path)
        with anyio.fail_after(5), pytest.raises(TransferTimeoutError) as raised:
            await task.wait()
        assert not partials(session)
    assert str(raised.value) == f"{url}: no data for 0.3 seconds (request_timeout)"
    assert raised.value.url == url
    assert task.bytes_received == n
    assert not (out_dir / "stall.bin").exists()
    [run] = pumped.runs
    assert (run.end, run.written, run.timeout) == ("timeout", n, 0.3)


async def test_cancel_mid_pump_wakes_the_worker(
    server: TestServer, out_dir: Path, pumped: PumpLog
) -> None:
    file = server.add_file("/cancel.bin", size=MiB)
    n = 250_000
    server.set_faults(file.path, Faults(hold_after=n))  # the server sends nothing more
    fds_before = open_fds()
    # A long request_timeout: only the wake pipe can end the worker's wait promptly.
    # (The bounds below are far from it, and far above a loaded machine's delays.)
    config = Configuration(progress_interval=0, request_timeout=60)
    async with Session(config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "cancel.bin")
        await held(server, file.path)
        await written(task, n)
        assert pumped.running == 1
        started = time.monotonic()
        with anyio.fail_after(30):
            await task.cancel()
        elapsed = time.monotonic() - started
        assert pumped.running == 0  # the worker's call has returned
        assert task.result == CancelledEvent(task_id=task.id)
        assert not partials(session)
    with anyio.fail_after(5):
        await server.wait_until(lambda s: s.open_connections == 0)
    assert elapsed < 30  # not the 60 s request_timeout
    assert not (out_dir / "cancel.bin").exists()
    [run] = pumped.runs
    assert (run.end, run.written) == ("stopped", n)
    assert not fds_opened_since(fds_before)


async def test_suspend_mid_pump_then_resume_byte_exact(
    server: TestServer, out_dir: Path, pumped: PumpLog
) -> None:
    file = server.add_file("/pause.bin", size=4 * MiB + 3)
    n = 600_000
    server.set_faults(file.path, Faults(hold_after=n))
    fds_before = open_fds()
    config = Configuration(progress_interval=0, request_timeout=60, retry=RETRY)
    async with Session(config=config) as session:
        task = await session.download(server.url(file.path), out_dir / "pause.bin")
        await held(server, file.path)
        await written(task, n)
        task.suspend()
        with anyio.fail_after(30):  # the pump ended and let go of the connection
            await server.wait_until(lambda s: s.in_flight == 0)
        assert task.state is TaskState.SUSPENDED
        assert pumped.running == 0
        assert task.bytes_received == n
        [stopped] = pumped.runs
        assert (stopped.end, stopped.written) == ("stopped", n)

        server.set_faults(file.path, Faults())
        stream = task.events()
        task.resume()
        events = await until_ended(stream)
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "pause.bin") == file.sha256
    assert ranges(server, file.path) == [None, f"bytes={n}-"]
    resumed = pumped.runs[1]
    assert (resumed.offset, resumed.length, resumed.end) == (n, file.size - n, "done")
    with anyio.fail_after(5):
        await server.wait_until(lambda s: s.open_connections == 0)
    assert not fds_opened_since(fds_before)


async def test_min_speed_stops_the_pump(server: TestServer, out_dir: Path, pumped: PumpLog) -> None:
    file = server.add_file("/drip.bin", size=4 * MiB)
    server.set_faults(file.path, Faults(drip=(8 * KiB, 0.01)))  # under 1 MB/s
    url = server.url(file.path)
    config = Configuration(
        progress_interval=0, min_speed=10 * MiB, min_speed_window=0.3, retry=NO_RETRY
    )
    async with Session(config=config) as session:
        task = await session.download(url, out_dir / "drip.bin")
        with anyio.fail_after(10), pytest.raises(TransferTimeoutError) as raised:
            await task.wait()
        assert not partials(session)
    assert str(raised.value) == (
        f"{url}: slower than {10 * MiB} bytes/s for 0.3 seconds (min_speed)"
    )
    [run] = pumped.runs
    assert run.end == "stopped"
    assert 0 < run.written < file.size
    assert task.bytes_received == run.written  # the bytes written after the last report too
    assert not (out_dir / "drip.bin").exists()


@pytest.mark.parametrize("where", ["open", "write"])
async def test_a_disk_error_in_the_pump_is_a_local_file_error(
    server: TestServer,
    out_dir: Path,
    pumped: PumpLog,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    file = server.add_file("/disk.bin", size=3 * MiB)
    url = server.url(file.path)
    accepted = 0
    if where == "write":
        real_pwritev = os.pwritev

        def pwritev(fd: int, buffers: Sequence[Any], offset: int) -> int:
            nonlocal accepted
            if accepted >= 300_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done = real_pwritev(fd, buffers, offset)
            accepted += done
            return done

        monkeypatch.setattr(os, "pwritev", pwritev)
    else:

        def open_partial(path: Path, *, offset: int, truncate: bool) -> int:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        monkeypatch.setattr(pump, "open_partial", open_partial)
    async with Session(config=Configuration(progress_interval=0, retry=RETRY)) as session:
        task = await session.download(url, out_dir / "disk.bin")
        partial = session.directory / "partials" / f"{task.id}.part"
        with anyio.fail_after(10), pytest.raises(LocalFileError) as raised:
            await task.wait()
        if where == "write":  # out of space after bytes: kept for the ErrorEvent's resume data
            assert isinstance(task.result, ErrorEvent)
            assert task.result.resume_data is not None
            assert partials(session) == [partial]
            assert partial.stat().st_size >= task.result.resume_data.offset > 0
        else:
            assert not partials(session)
    error = raised.value
    if where == "write":
        assert str(error) == f"{url}: cannot write {partial}: no space left on device"
        assert error.errno == errno.ENOSPC
    else:
        assert str(error) == f"{url}: cannot open partial file {partial}: permission denied"
        assert error.errno == errno.EACCES
    assert error.url == url
    assert error.filename == str(partial)
    assert isinstance(error.__cause__, OSError)
    assert not (out_dir / "disk.bin").exists()
    [run] = pumped.runs  # a local file error is not retried
    assert run.end == "file"
    assert run.written == accepted
    assert task.bytes_received == accepted


# --------------------------------------------------------------------------------------
# Pumps hold a worker thread for a whole body
# --------------------------------------------------------------------------------------


def default_workers() -> int:
    """Threads of the loop's default executor (ThreadPoolExecutor's default size)."""
    cpus = getattr(os, "process_cpu_count", os.cpu_count)() or 1
    return min(32, cpus + 4)


async def start_held_pumps(
    server: TestServer, session: Session, out_dir: Path, pumped: PumpLog, count: int
) -> list[str]:
    paths = []
    for i in range(count):
        file = server.add_file(f"/held/{i}.bin", size=256 * KiB)
        server.set_faults(file.path, Faults(hold_after=128 * KiB))
        await session.download(server.url(file.path), out_dir / f"held{i}.bin")
        paths.append(file.path)
    for path in paths:
        await held(server, path)
    return paths


async def test_pumps_waiting_for_slow_servers_do_not_starve_other_downloads(
    server: TestServer, out_dir: Path, pumped: PumpLog
) -> None:
    """BUG: each pump holds one thread of the loop's default executor for its whole
    body, and every file operation of the session (the aiohttp path's writes, the
    move into place) queues on that same executor. As many pumped downloads as it
    has threads (cpu + 4; the default 6 connections per host on two CPUs), all
    waiting for slow servers, stop every other download of the session."""
    workers = default_workers()
    config = Configuration(
        max_connections_per_host=workers + 1, max_concurrent_transfers=workers + 1
    )
    async with Session(config=config) as session:
        slow = await start_held_pumps(server, session, out_dir, pumped, workers)
        try:
            small = server.add_file("/small.bin", size=1_000)
            task = await session.download(server.url(small.path), out_dir / "small.bin")
            with anyio.fail_after(30):  # (starved, it would wait for as long as the pumps)
                assert isinstance(await task.wait(), FinishedEvent)
        finally:
            for path in slow:
                server.release(path)


async def test_a_pump_queued_behind_busy_workers_cancels_promptly(
    server: TestServer, out_dir: Path, pumped: PumpLog
) -> None:
    """BUG (same cause): a pump whose worker call is queued behind others cannot be
    woken; ``cancel()`` waits until some other pumped body ends."""
    workers = default_workers()
    config = Configuration(
        max_connections_per_host=workers + 1, max_concurrent_transfers=workers + 1
    )
    async with Session(config=config) as session:
        slow = await start_held_pumps(server, session, out_dir, pumped, workers)
        try:
            extra = server.add_file("/extra.bin", size=256 * KiB)
            server.set_faults(extra.path, Faults(hold_after=128 * KiB))
            task = await session.download(server.url(extra.path), out_dir / "extra.bin")
            await held(server, extra.path)
            with anyio.fail_after(30):  # (queued, it would wait for as long as the pumps)
                await task.cancel()
            assert isinstance(task.result, CancelledEvent)
        finally:
            for path in [*slow, extra.path]:
                server.release(path)


# --------------------------------------------------------------------------------------
# nginx
# --------------------------------------------------------------------------------------


@pytest.mark.nginx
async def test_nginx_at_the_real_threshold(
    nginx: NginxServer, out_dir: Path, pump_log: PumpLog
) -> None:
    assert pump.PUMP_MIN_BYTES == 8 * MiB  # noqa: SIM300 - the setting under test
    big = os.urandom(9 * MiB + 321)
    small = os.urandom(100_000)
    (nginx.root / "big.bin").write_bytes(big)
    (nginx.root / "small.bin").write_bytes(small)
    order = ["small.bin", "small.bin", "big.bin", "big.bin", "small.bin"]
    async with Session(config=CONFIG) as session:
        for i, name in enumerate(order):
            task = await session.download(nginx.url(name), out_dir / f"{i}-{name}")
            events = await until_ended(task.events())
            assert isinstance(check_task_stream(events, task.id), FinishedEvent)
            assert task.bytes_received == task.bytes_expected
    for i, name in enumerate(order):
        data = big if name == "big.bin" else small
        assert sha256_file(out_dir / f"{i}-{name}") == sha256_bytes(data)
    assert [(r.offset, r.length, r.end, r.written) for r in pump_log.runs] == [
        (0, len(big), "done", len(big))
    ] * 2
    log = await nginx.wait_access_log(lambda log: log.count('"GET /') >= len(order))
    lines = [line for line in log.splitlines() if '"GET /' in line]
    assert [line.split('"GET /')[1].split()[0] for line in lines] == order
    conns = [int(line.rsplit("conn=", 1)[1].split()[0]) for line in lines]
    assert conns[0] == conns[1]  # small bodies: the connection was reused
    assert conns[3] != conns[2]  # pumped: closed, the next request opened another
    assert conns[4] != conns[3]


@pytest.mark.nginx
async def test_nginx_segments_are_each_pumped(
    nginx: NginxServer, out_dir: Path, pumped: PumpLog
) -> None:
    data = os.urandom(9 * MiB + 5)  # 3 MiB segments
    (nginx.root / "seg.bin").write_bytes(data)
    async with Session(config=CONFIG) as session:
        task = await session.download(nginx.url("seg.bin"), out_dir / "seg.bin", segments=3)
        events = await until_ended(task.events())
    assert isinstance(check_resumable_stream(events, task.id), FinishedEvent)
    assert sha256_file(out_dir / "seg.bin") == sha256_bytes(data)
    bounds = [len(data) * i // 3 for i in range(4)]
    runs = sorted(pumped.runs, key=lambda r: r.offset)
    assert [(r.offset, r.length, r.truncate, r.end) for r in runs] == [
        (start, end - start, False, "done") for start, end in itertools.pairwise(bounds)
    ]
    log = await nginx.wait_access_log(lambda log: log.count('"GET /seg.bin') >= 3)
    assert log.count('"GET /seg.bin HTTP/1.1" 200 ') == 1
    assert log.count('"GET /seg.bin HTTP/1.1" 206 ') == 2
