"""The body writer under the transfer: batched pwritev, lazy open, one hop for small
bodies, honest progress, back-pressure, failures, the request_timeout watchdog, and
the one step at the end (the last write also closes the file and moves it).

White-box tests of ``bgtransfer._io.transfer`` and ``_io.body_writer``. Worker
calls are counted by wrapping ``body_writer.submit_file_io``; slow disks are
simulated by a write that waits on a ``threading.Event``. Only the first-write
delay and the watchdog let time pass, because time passing is what they are about.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import aiohttp
import anyio
import anyio.lowlevel
import attrs
import pytest

from _helpers import fds_opened_since, open_fds, seeded_bytes, sha256_bytes
from bgtransfer import IncompleteBodyError, LocalFileError, TransferTimeoutError
from bgtransfer._io import body_writer, files
from bgtransfer._io.transfer import (
    FIRST_WRITE_BYTES,
    FIRST_WRITE_DELAY,
    MAX_PENDING_BYTES,
    BodyPlan,
    fetch_to_file,
)
from bgtransfer._io.watchdog import Watchdog
from bgtransfer.testing import Faults, TestServer

URL = "http://files.example/body.bin"
MiB = 1024 * 1024


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Sink:
    """A minimal TransferSink that records what it is told."""

    def __init__(
        self,
        *,
        prepare_delay: float = 0.0,
        partial: Path | None = None,
        move_to: Path | None = None,
    ) -> None:
        self.prepare_delay = prepare_delay
        self.partial = partial
        self.move_to = move_to
        self.finishing_calls = 0
        self.moves = 0
        self.plans: list[BodyPlan] = []
        self.file_existed_at_prepare: bool | None = None
        self.received = 0
        self.writes: list[int] = []
        self.first_write = anyio.Event()

    def judge(self, status: int, reason: str, headers: Mapping[str, str]) -> BodyPlan | None:
        if status != 200:
            return None
        return BodyPlan(0, int(headers["content-length"]))

    async def prepare(self, plan: BodyPlan) -> None:
        self.plans.append(plan)
        if self.partial is not None:
            self.file_existed_at_prepare = self.partial.exists()
        if self.prepare_delay:
            await anyio.sleep(self.prepare_delay)

    def chunk_received(self, nbytes: int) -> None:
        self.received += nbytes

    def bytes_written(self, nbytes: int) -> None:
        self.writes.append(nbytes)
        self.first_write.set()

    async def finishing(self, size: int) -> Path | None:
        self.finishing_calls += 1
        return self.move_to

    def moved(self) -> None:
        assert self.moves == 0, "moved twice"
        self.moves += 1


@attrs.frozen
class WorkerCall:
    """One ``_write_chunks`` call as the writer started it."""

    fd: int
    chunks: list[bytes]
    offset: int
    close: bool
    move_to: Path | None = None
    inline: bool = False  # asked to run on the loop (never paused in tests: conftest.py)


@pytest.fixture
def worker_calls(monkeypatch: pytest.MonkeyPatch) -> list[WorkerCall]:
    """Every worker-thread call the writer makes, in order."""
    calls: list[WorkerCall] = []
    real = body_writer.submit_file_io

    def counting(
        on_done: Callable[..., object],
        func: Callable[..., object],
        *args: object,
        inline: bool = False,
    ) -> None:
        fd, _path, _plan, chunks, offset, close, move_to = args
        assert isinstance(fd, int)
        assert isinstance(chunks, list)
        assert isinstance(offset, int)
        assert isinstance(close, bool)
        assert move_to is None or isinstance(move_to, Path)
        calls.append(WorkerCall(fd, list(chunks), offset, close, move_to, inline))
        real(on_done, func, *args, inline=inline)

    monkeypatch.setattr(body_writer, "submit_file_io", counting)
    return calls


@pytest.fixture
def write_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Worker calls wait until the returned event is set (a stalled disk)."""
    gate = threading.Event()
    real = body_writer.write_chunks

    def slow(*args: object) -> body_writer.WriteOutcome:
        assert gate.wait(timeout=30), "the test never released the write gate"
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(body_writer, "write_chunks", slow)
    monkeypatch.setattr(body_writer, "INLINE_BYTES", -1)  # stalled in a thread, not on the loop
    try:
        yield gate
    finally:
        gate.set()  # never leave a worker thread blocked behind a failed test


def writer_for(path: Path, plan: BodyPlan, sink: Sink, **kwargs: object) -> body_writer.BodyWriter:
    return body_writer.BodyWriter(path, plan, sink, url=URL, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# files.pwrite_all
# --------------------------------------------------------------------------------------


def limit_pwritev(monkeypatch: pytest.MonkeyPatch, limit: int | None) -> list[int]:
    """Make os.pwritev accept at most ``limit`` bytes per call; record buffers per call."""
    real = os.pwritev
    buffer_counts: list[int] = []

    def pwritev(fd: int, buffers: Sequence[bytes | memoryview], offset: int) -> int:
        buffers = list(buffers)
        buffer_counts.append(len(buffers))
        if limit is None:
            return real(fd, buffers, offset)
        taken: list[bytes] = []
        room = limit
        for buffer in buffers:
            if room == 0:
                break
            piece = bytes(buffer[:room])
            taken.append(piece)
            room -= len(piece)
        return real(fd, taken, offset)

    monkeypatch.setattr(os, "pwritev", pwritev)
    return buffer_counts


def pwrite_into(path: Path, chunks: Sequence[bytes], offset: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        files.pwrite_all(fd, chunks, offset)
    finally:
        os.close(fd)


def test_pwrite_all_finishes_short_writes_in_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rng = random.Random("short writes")
    chunks = [rng.randbytes(rng.choice((0, 1, 3, 7, 8, 13, 50))) for _ in range(60)]
    expected = b"".join(chunks)
    path = tmp_path / "f"
    path.write_bytes(b"HEAD!")
    buffer_counts = limit_pwritev(monkeypatch, 7)

    pwrite_into(path, chunks, 5)

    assert path.read_bytes() == b"HEAD!" + expected
    assert len(buffer_counts) == -(-len(expected) // 7)  # every call made 7 bytes of progress


def test_pwrite_all_sends_at_most_max_iov_buffers_per_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    count = 2 * files.MAX_IOV + 452
    rng = random.Random("many chunks")
    chunks = [rng.randbytes(rng.randint(1, 3)) for _ in range(count)]
    path = tmp_path / "f"
    path.touch()
    buffer_counts = limit_pwritev(monkeypatch, None)

    pwrite_into(path, chunks, 0)

    assert path.read_bytes() == b"".join(chunks)
    assert buffer_counts == [files.MAX_IOV, files.MAX_IOV, 452]


def test_pwrite_all_short_writes_over_more_than_max_iov_chunks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    count = files.MAX_IOV + 300
    rng = random.Random("many short")
    chunks = [rng.randbytes(rng.randint(1, 3)) for _ in range(count)]
    path = tmp_path / "f"
    path.touch()
    buffer_counts = limit_pwritev(monkeypatch, 7)

    pwrite_into(path, chunks, 0)

    assert sha256_bytes(path.read_bytes()) == sha256_bytes(b"".join(chunks))
    assert max(buffer_counts) == files.MAX_IOV
    assert all(0 < n <= files.MAX_IOV for n in buffer_counts)


def test_pwrite_all_raises_when_no_byte_is_accepted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "pwritev", lambda fd, buffers, offset: 0)
    path = tmp_path / "f"
    path.touch()
    with pytest.raises(OSError, match="accepted no bytes") as raised:
        pwrite_into(path, [b"abc"], 0)
    assert raised.value.errno == errno.EIO


def test_pwrite_all_with_only_empty_chunks_writes_nothing(tmp_path: Path) -> None:
    # Once reachable through _stream_body by a segment plan with length 0 (the first
    # chunk cut to b""): finish() failed with "the file accepted no bytes".
    path = tmp_path / "f"
    path.write_bytes(b"keep")
    pwrite_into(path, [b""], 0)
    assert path.read_bytes() == b"keep"


# --------------------------------------------------------------------------------------
# _BodyWriter: opening, one hop for small bodies, plans
# --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_small_body_costs_one_worker_call(
    worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    path = tmp_path / "small.part"
    chunks = [seeded_bytes(1000, "a"), seeded_bytes(20_000, "b"), seeded_bytes(3, "c")]
    data = b"".join(chunks)
    assert len(data) < FIRST_WRITE_BYTES
    sink = Sink()
    writer = writer_for(path, BodyPlan(0, len(data)), sink)

    for chunk in chunks:
        await writer.add(chunk)
    assert not path.exists()  # nothing is opened before the first write
    await writer.finish()
    await writer.aclose()  # after success: nothing left to do

    assert worker_calls == [
        WorkerCall(-1, chunks, 0, close=True, inline=True)
    ]  # open, write, close
    assert writer._fd == body_writer.CLOSED
    assert path.read_bytes() == data
    assert mode(path) == 0o600
    assert writer.written == len(data)
    assert sum(sink.writes) == len(data)
    assert all(n > 0 for n in sink.writes)


@pytest.mark.asyncio
async def test_empty_body_creates_an_empty_private_file(
    worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    path = tmp_path / "empty.part"
    sink = Sink()
    writer = writer_for(path, BodyPlan(0, 0), sink)

    await writer.finish()
    await writer.aclose()

    assert path.read_bytes() == b""
    assert mode(path) == 0o600
    assert worker_calls == [WorkerCall(-1, [], 0, close=True, inline=True)]
    assert writer.written == 0
    assert sink.writes == []  # no progress report of 0 bytes


@pytest.mark.asyncio
async def test_fresh_plan_truncates_an_existing_longer_file(tmp_path: Path) -> None:
    path = tmp_path / "old.part"
    path.write_bytes(seeded_bytes(100_000, "old"))
    path.chmod(0o644)
    data = seeded_bytes(5_000, "new")
    sink = Sink()
    writer = writer_for(path, BodyPlan(0, len(data)), sink)

    await writer.add(data)
    await writer.finish()
    await writer.aclose()

    assert path.read_bytes() == data
    assert mode(path) == 0o600  # whatever mode the older file had
    assert sum(sink.writes) == len(data)


@pytest.mark.asyncio
async def test_resumed_plan_cuts_stale_bytes_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "resume.part"
    old = seeded_bytes(300_000, "old")
    path.write_bytes(old)
    k = 70_001
    new = [
        seeded_bytes(40_000, "n1"),
        seeded_bytes(50_000, "n2"),
    ]  # ends well before the old file did
    sink = Sink()
    writer = writer_for(path, BodyPlan(offset=k, length=90_000, truncate=True), sink)

    for chunk in new:
        await writer.add(chunk)
    await writer.finish()
    await writer.aclose()

    assert sha256_bytes(path.read_bytes()) == sha256_bytes(old[:k] + b"".join(new))
    assert writer.written == sum(sink.writes) == 90_000


@pytest.mark.parametrize(
    "plan",
    [BodyPlan(offset=1_000, length=10, truncate=True), BodyPlan(0, 10, truncate=False)],
    ids=["resumed", "segment"],
)
@pytest.mark.asyncio
async def test_only_a_fresh_plan_creates_the_file(
    tmp_path: Path, plan: BodyPlan, worker_calls: list[WorkerCall]
) -> None:
    path = tmp_path / "missing.part"
    sink = Sink()
    writer = writer_for(path, plan, sink)

    await writer.add(b"0123456789")
    with pytest.raises(LocalFileError) as raised:
        await writer.finish()
    await writer.aclose()  # does not raise again

    error = raised.value
    assert str(error) == f"{URL}: cannot open partial file {path}: no such file or directory"
    assert error.url == URL
    assert error.errno == errno.ENOENT
    assert error.filename == str(path)
    assert isinstance(error.__cause__, FileNotFoundError)
    assert not path.exists()
    assert len(worker_calls) == 1  # aclose tries nothing more
    assert writer.written == 0
    assert sink.writes == []


@pytest.mark.asyncio
async def test_segment_plan_writes_in_place(tmp_path: Path) -> None:
    path = tmp_path / "segments.part"
    preallocated = seeded_bytes(400_000, "prealloc")
    path.write_bytes(preallocated)
    start, length = 100_000, 150_000
    new = seeded_bytes(length, "segment")
    sink = Sink()
    writer = writer_for(path, BodyPlan(start, length, truncate=False), sink)

    for i in range(0, length, 32_768):
        await writer.add(new[i : i + 32_768])
    await writer.finish()
    await writer.aclose()

    expected = preallocated[:start] + new + preallocated[start + length :]
    assert sha256_bytes(path.read_bytes()) == sha256_bytes(expected)
    assert writer.written == sum(sink.writes) == length


# --------------------------------------------------------------------------------------
# _BodyWriter: when the first write happens, and writing while bytes arrive
# --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_first_bytes_are_written_after_the_first_write_delay(
    worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    path = tmp_path / "delay.part"
    first = [seeded_bytes(100, "x"), seeded_bytes(900, "y")]
    sink = Sink()
    writer = writer_for(path, BodyPlan(0, None), sink)
    loop_time = anyio.current_time

    started = loop_time()
    for chunk in first:
        await writer.add(chunk)
    assert worker_calls == []  # small: waits for more (or the delay)
    with anyio.fail_after(5):
        await sink.first_write.wait()  # no further chunk, no finish
    waited = loop_time() - started

    assert waited >= FIRST_WRITE_DELAY * 0.9
    assert worker_calls == [WorkerCall(-1, first, 0, close=False)]  # both, in one write
    assert sink.writes == [1000]
    assert writer.written == 1000
    assert path.read_bytes() == b"".join(first)
    assert writer._fd >= 0  # still open for the rest

    last = seeded_bytes(10, "z")
    await writer.add(last)
    await writer.finish()
    await writer.aclose()
    assert path.read_bytes() == b"".join([*first, last])
    assert sum(sink.writes) == 1010
    assert writer._fd == body_writer.CLOSED


@pytest.mark.asyncio
async def test_large_body_writes_before_finish(
    worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    path = tmp_path / "large.part"
    first, second = seeded_bytes(FIRST_WRITE_BYTES, "1"), seeded_bytes(5_000, "2")
    sink = Sink()
    writer = writer_for(path, BodyPlan(0, None), sink)

    await writer.add(first)
    assert len(worker_calls) == 1  # started at once, not after the delay
    with anyio.fail_after(5):
        await sink.first_write.wait()
    assert sink.writes == [FIRST_WRITE_BYTES]
    assert path.read_bytes() == first

    await writer.add(second)
    assert worker_calls[1:] == [WorkerCall(writer._fd, [second], FIRST_WRITE_BYTES, close=False)]
    await writer.finish()
    await writer.aclose()

    assert path.read_bytes() == first + second
    assert sum(sink.writes) == len(first) + len(second)
    assert all(n > 0 for n in sink.writes)


# --------------------------------------------------------------------------------------
# _BodyWriter: aclose after a failure or cancel
# --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aclose_without_finish_writes_what_was_received(
    worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    path = tmp_path / "failed.part"
    chunks = [seeded_bytes(500, "p"), seeded_bytes(700, "q")]
    sink = Sink()
    fds_before = open_fds()
    writer = writer_for(path, BodyPlan(0, 10_000), sink)

    for chunk in chunks:
        await writer.add(chunk)
    await writer.aclose()  # the server failed before the body ended

    assert path.read_bytes() == b"".join(chunks)
    assert writer.written == sum(sink.writes) == 1200
    assert worker_calls == [WorkerCall(-1, chunks, 0, close=True, inline=True)]
    assert writer._fd == body_writer.CLOSED
    assert not fds_opened_since(fds_before)


@pytest.mark.asyncio
async def test_aclose_in_a_cancelled_scope_still_writes_and_closes(
    write_gate: threading.Event, tmp_path: Path
) -> None:
    path = tmp_path / "cancelled.part"
    chunks = [
        seeded_bytes(FIRST_WRITE_BYTES, "big"),
        seeded_bytes(3_000, "r"),
        seeded_bytes(4_000, "s"),
    ]
    sink = Sink()
    fds_before = open_fds()
    writer = writer_for(path, BodyPlan(0, None), sink)

    for chunk in chunks:  # the first write starts and waits on the gate
        await writer.add(chunk)
    with anyio.CancelScope() as scope:
        scope.cancel()
        write_gate.set()
        await writer.aclose()  # shielded: runs to its end
    assert not scope.cancelled_caught

    assert path.read_bytes() == b"".join(chunks)
    assert writer.written == sum(sink.writes) == FIRST_WRITE_BYTES + 7_000
    assert writer._fd == body_writer.CLOSED
    assert not fds_opened_since(fds_before)


@pytest.mark.parametrize("where", ["first write", "last write"])
@pytest.mark.asyncio
async def test_write_error_is_a_local_file_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    raised_by_disk: list[OSError] = []

    def no_space(fd: int, buffers: object, offset: int) -> int:
        error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raised_by_disk.append(error)
        raise error

    monkeypatch.setattr(os, "pwritev", no_space)
    path = tmp_path / "full.part"
    sink = Sink()
    fds_before = open_fds()
    writer = writer_for(path, BodyPlan(0, None), sink)

    if where == "first write":
        await writer.add(seeded_bytes(FIRST_WRITE_BYTES, "f"))  # starts the write at once
        await writer._drain()
        failing = writer.add(b"more")  # the next add reports the failure
    else:
        await writer.add(b"tiny")
        failing = writer.finish()  # the one write (open, write, close) fails
    with pytest.raises(LocalFileError) as raised:
        await failing
    await writer.aclose()  # the first error stands; nothing more is raised

    error = raised.value
    assert str(error) == f"{URL}: cannot write {path}: no space left on device"
    assert error.errno == errno.ENOSPC
    assert error.filename == str(path)
    assert len(raised_by_disk) == 1
    assert error.__cause__ is raised_by_disk[0]
    assert writer._fd == body_writer.CLOSED
    assert not fds_opened_since(fds_before)
    assert writer.written == 0
    assert sink.writes == []
    assert path.read_bytes() == b""  # opened (and truncated), never written


# --------------------------------------------------------------------------------------
# _BodyWriter: a slow disk batches writes, and past MAX_PENDING_BYTES the reader waits
# --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_back_pressure_waits_for_the_disk(
    write_gate: threading.Event, worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    path = tmp_path / "slow.part"
    first = seeded_bytes(FIRST_WRITE_BYTES, "first")
    later = [seeded_bytes(MiB, f"later {i}") for i in range(MAX_PENDING_BYTES // MiB + 1)]
    sink = Sink()
    watchdog = Watchdog(60.0, lambda: pytest.fail("the watchdog fired"))
    writer = writer_for(path, BodyPlan(0, None), sink, watchdog=watchdog)
    started: list[int] = []
    returned: list[int] = []

    async def reader() -> None:
        for i, chunk in enumerate(later):
            started.append(i)
            await writer.add(chunk)
            returned.append(i)

    try:
        await writer.add(first)  # the first write starts and stalls at the gate
        assert len(worker_calls) == 1
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            # The add that brought the gathered bytes to MAX_PENDING_BYTES waits.
            blocking = MAX_PENDING_BYTES // MiB - 1
            assert started == list(range(blocking + 1))
            assert returned == list(range(blocking))
            assert watchdog.paused  # a wait for the disk is not a wait for the server
            assert len(worker_calls) == 1
            assert sink.writes == []
            write_gate.set()
        assert returned == list(range(len(later)))
        assert not watchdog.paused
        await writer.finish()
        await writer.aclose()
    finally:
        write_gate.set()  # no worker thread outlives a failed test
        watchdog.stop()

    # What gathered behind the stalled write went out as one write, in order.
    gathered = MAX_PENDING_BYTES // MiB
    assert worker_calls[0].fd == -1  # the first write opened the file
    assert worker_calls[1].fd >= 0
    assert worker_calls[1].chunks == later[:gathered]
    assert worker_calls[1].offset == FIRST_WRITE_BYTES
    expected = first + b"".join(later)
    assert sha256_bytes(path.read_bytes()) == sha256_bytes(expected)
    assert writer.written == sum(sink.writes) == len(expected)


# --------------------------------------------------------------------------------------
# fetch_to_file: the request_timeout watchdog against the test server
#
# A stall mid-body with the default flow is covered end to end in test_failures.py
# (test_request_timeout_mid_body); here the watchdog's pause during sink.prepare.
# --------------------------------------------------------------------------------------

TIMEOUT = 0.25


async def fetch(server: TestServer, path: str, partial: Path, sink: Sink) -> BodyPlan | None:
    async with aiohttp.ClientSession() as client:
        return await fetch_to_file(
            client,
            url=server.url(path),
            headers={},
            partial=partial,
            request_timeout=TIMEOUT,
            sink=sink,
        )


@pytest.mark.asyncio
async def test_slow_prepare_does_not_count_against_request_timeout(
    server: TestServer, tmp_path: Path
) -> None:
    file = server.add_file("/prepared.bin", size=300_000)
    partial = tmp_path / "prepared.part"
    sink = Sink(prepare_delay=3 * TIMEOUT, partial=partial)

    with anyio.fail_after(10):
        plan = await fetch(server, file.path, partial, sink)

    assert plan == BodyPlan(0, file.size)
    assert sink.plans == [plan]
    assert sink.file_existed_at_prepare is False  # prepare runs before the file is opened
    assert hashlib.sha256(partial.read_bytes()).hexdigest() == file.sha256
    assert sink.received == sum(sink.writes) == file.size


@pytest.mark.asyncio
async def test_watchdog_resumes_after_a_slow_prepare(server: TestServer, tmp_path: Path) -> None:
    file = server.add_file("/stalls.bin", size=100_000)
    server.set_faults(file.path, Faults(hold_after=20_000))  # never released
    partial = tmp_path / "stalls.part"
    sink = Sink(prepare_delay=3 * TIMEOUT)

    with anyio.fail_after(10), pytest.raises(TransferTimeoutError) as raised:
        await fetch(server, file.path, partial, sink)

    assert str(raised.value) == (
        f"{server.url(file.path)}: no data for {TIMEOUT} seconds (request_timeout)"
    )
    assert raised.value.url == server.url(file.path)
    assert isinstance(raised.value, TimeoutError)
    # What arrived before the stall is on disk and counted (a resume continues after it).
    assert sink.received == sum(sink.writes) == 20_000
    assert partial.read_bytes() == file.data[:20_000]


# --------------------------------------------------------------------------------------
# _BodyWriter: one step at the end (the last write also closes the file and moves it)
#
# When the whole body has arrived, the writer asks its sink where the file goes
# (``finishing``); the worker call that writes the last bytes then closes the file
# and renames it there, and the sink hears ``bytes_written`` and then ``moved``.
# --------------------------------------------------------------------------------------


class OrderSink(Sink):
    """A Sink that also records, in order, what it is told and the sizes it is asked about."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.calls: list[tuple[str, int]] = []

    def bytes_written(self, nbytes: int) -> None:
        super().bytes_written(nbytes)
        self.calls.append(("bytes_written", nbytes))

    async def finishing(self, size: int) -> Path | None:
        self.calls.append(("finishing", size))
        return await super().finishing(size)

    def moved(self) -> None:
        super().moved()
        self.calls.append(("moved", 0))


@pytest.mark.parametrize("length", ["known", "unknown"])
@pytest.mark.asyncio
async def test_whole_body_is_written_closed_and_moved_in_one_worker_call(
    worker_calls: list[WorkerCall], tmp_path: Path, length: str
) -> None:
    """A small whole body costs one worker call (open, write, close, rename), with or
    without a length to check against (a chunked body is whole when it ends): the
    file is at the sink's destination, byte-exact and private, nothing is left at
    the partial path, and the sink hears the bytes before the move, once each."""
    partial = tmp_path / "one.part"
    destination = tmp_path / "out" / "one.bin"
    destination.parent.mkdir()
    chunks = [seeded_bytes(1000, "a"), seeded_bytes(15_000, "b"), seeded_bytes(7, "c")]
    data = b"".join(chunks)
    assert len(data) < FIRST_WRITE_BYTES
    sink = OrderSink(move_to=destination)
    fds_before = open_fds()
    writer = writer_for(partial, BodyPlan(0, len(data) if length == "known" else None), sink)

    for chunk in chunks:
        await writer.add(chunk)
    await writer.finish()
    await writer.aclose()  # after success: nothing left to do

    assert worker_calls == [WorkerCall(-1, chunks, 0, close=True, move_to=destination, inline=True)]
    assert not partial.exists()
    assert sha256_bytes(destination.read_bytes()) == sha256_bytes(data)
    assert mode(destination) == files.finished_file_mode()  # a new file's, under the umask
    assert sink.finishing_calls == 1
    assert sink.moves == 1
    assert sink.calls == [("finishing", len(data)), ("bytes_written", len(data)), ("moved", 0)]
    assert writer.written == len(data)
    assert writer._fd == body_writer.CLOSED
    assert not fds_opened_since(fds_before)
    assert sorted(tmp_path.iterdir()) == [destination.parent]


@pytest.mark.asyncio
async def test_an_empty_body_is_created_at_its_destination(
    worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    """An empty body is whole at once: its one call creates the private file,
    closes it and moves it; the sink hears of the move, and of no bytes."""
    partial = tmp_path / "empty.part"
    destination = tmp_path / "empty.bin"
    sink = OrderSink(move_to=destination)
    writer = writer_for(partial, BodyPlan(0, 0), sink)

    await writer.finish()
    await writer.aclose()

    assert worker_calls == [WorkerCall(-1, [], 0, close=True, move_to=destination, inline=True)]
    assert destination.read_bytes() == b""
    assert mode(destination) == files.finished_file_mode()
    assert not partial.exists()
    assert sink.calls == [("finishing", 0), ("moved", 0)]


@pytest.mark.asyncio
async def test_only_the_last_write_of_a_resumed_body_moves_it(
    worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    """A resumed body written in several calls: the earlier writes leave the file
    open where it is; ``finishing`` is asked once, with the finished file's length
    (offset included), after every byte was reported; the last call, with no bytes
    left to write, closes the file and moves it; the destination holds the kept
    prefix and the new bytes, and the stale tail is gone."""
    partial = tmp_path / "resumed.part"
    old = seeded_bytes(150_000, "old")
    partial.write_bytes(old)
    k = 30_000
    new = [seeded_bytes(FIRST_WRITE_BYTES, "r1"), seeded_bytes(10_000, "r2")]
    length = sum(map(len, new))
    destination = tmp_path / "resumed.bin"
    sink = OrderSink(move_to=destination)
    writer = writer_for(partial, BodyPlan(offset=k, length=length), sink)

    await writer.add(new[0])  # starts the first write at once
    await writer.add(new[1])  # gathers behind it; written as soon as it completes
    await writer.finish()
    await writer.aclose()

    assert [call.chunks for call in worker_calls] == [[new[0]], [new[1]], []]
    assert [call.offset for call in worker_calls] == [k, k + len(new[0]), k + length]
    assert [call.close for call in worker_calls] == [False, False, True]
    assert [call.move_to for call in worker_calls] == [None, None, destination]
    assert sink.calls == [
        ("bytes_written", len(new[0])),
        ("bytes_written", len(new[1])),
        ("finishing", k + length),
        ("moved", 0),
    ]
    assert not partial.exists()
    assert sha256_bytes(destination.read_bytes()) == sha256_bytes(old[:k] + b"".join(new))
    assert writer.written == length


@pytest.mark.asyncio
async def test_a_sink_that_names_no_place_keeps_the_file_at_the_partial_path(
    worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    """``finishing`` returning None (the classic order: the owner moves the file
    later) still costs one call, which closes the file and renames nothing."""
    partial = tmp_path / "kept.part"
    chunks = [seeded_bytes(2_000, "k1"), seeded_bytes(3_000, "k2")]
    data = b"".join(chunks)
    sink = OrderSink(move_to=None)
    writer = writer_for(partial, BodyPlan(0, len(data)), sink)

    for chunk in chunks:
        await writer.add(chunk)
    await writer.finish()
    await writer.aclose()

    assert worker_calls == [WorkerCall(-1, chunks, 0, close=True, move_to=None, inline=True)]
    assert sha256_bytes(partial.read_bytes()) == sha256_bytes(data)
    assert mode(partial) == 0o600
    assert sink.calls == [("finishing", len(data)), ("bytes_written", len(data))]
    assert sink.moves == 0
    assert list(tmp_path.iterdir()) == [partial]


@pytest.mark.parametrize("received", [4_000, 12_000], ids=["fewer", "more"])
@pytest.mark.asyncio
async def test_a_body_of_another_length_than_planned_is_never_moved(
    worker_calls: list[WorkerCall], tmp_path: Path, received: int
) -> None:
    """A body that did not end at the planned length is not whole: ``finishing`` is
    never asked, the last call only closes the file, and what arrived stays at the
    partial path (the caller raises IncompleteBodyError; see the next test)."""
    partial = tmp_path / "short.part"
    destination = tmp_path / "never.bin"
    data = seeded_bytes(received, "short")
    sink = OrderSink(move_to=destination)
    writer = writer_for(partial, BodyPlan(0, 10_000), sink)

    await writer.add(data)
    await writer.finish()
    await writer.aclose()

    assert worker_calls == [WorkerCall(-1, [data], 0, close=True, move_to=None, inline=True)]
    assert sink.finishing_calls == 0
    assert sink.moves == 0
    assert sink.calls == [("bytes_written", received)]
    assert not destination.exists()
    assert sha256_bytes(partial.read_bytes()) == sha256_bytes(data)


@pytest.mark.asyncio
async def test_a_whole_segment_is_never_moved(
    worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    """A segment (a plan that does not truncate) writes into a file other segments
    share: even when all its bytes arrived, ``finishing`` is not asked and the
    file stays where it is, the bytes around the segment untouched."""
    partial = tmp_path / "segments.part"
    preallocated = seeded_bytes(50_000, "shared")
    partial.write_bytes(preallocated)
    start, new = 10_000, seeded_bytes(20_000, "segment")
    destination = tmp_path / "never.bin"
    sink = OrderSink(move_to=destination)
    writer = writer_for(partial, BodyPlan(start, len(new), truncate=False), sink)

    await writer.add(new)
    await writer.finish()
    await writer.aclose()

    # (in the file thread: the other segments' writers share the file)
    assert worker_calls == [WorkerCall(-1, [new], start, close=True, move_to=None)]
    assert sink.finishing_calls == 0
    assert sink.moves == 0
    assert not destination.exists()
    expected = preallocated[:start] + new + preallocated[start + len(new) :]
    assert sha256_bytes(partial.read_bytes()) == sha256_bytes(expected)


class OverAnnouncingSink(OrderSink):
    """Plans a longer body than the server's Content-Length: the body ends short."""

    def judge(self, status: int, reason: str, headers: Mapping[str, str]) -> BodyPlan | None:
        plan = super().judge(status, reason, headers)
        assert plan is not None
        assert plan.length is not None
        return BodyPlan(0, plan.length + 1)


@pytest.mark.parametrize("cut", ["announced longer", "cut by the server"])
@pytest.mark.asyncio
async def test_fetch_of_a_short_body_never_asks_where_it_goes(
    server: TestServer, tmp_path: Path, cut: str
) -> None:
    """Through fetch_to_file: a body that ends before the planned length (the
    server's body ends cleanly one byte short of the plan, or the server closes
    the connection mid-body) raises IncompleteBodyError; ``finishing`` was never
    asked, nothing appears at the destination, and the partial file holds exactly
    the bytes reported, all of them the server's."""
    file = server.add_file("/short.bin", size=20_000)
    partial = tmp_path / "short.part"
    destination = tmp_path / "short.bin"
    if cut == "announced longer":
        sink: OrderSink = OverAnnouncingSink(move_to=destination)
    else:
        server.set_faults(file.path, Faults(close_after=5_000))
        sink = OrderSink(move_to=destination)

    with anyio.fail_after(10), pytest.raises(IncompleteBodyError) as raised:
        await fetch(server, file.path, partial, sink)

    assert raised.value.url == server.url(file.path)
    if cut == "announced longer":
        assert str(raised.value) == (
            f"{server.url(file.path)}: received {file.size} of the {file.size + 1} bytes announced"
        )
    assert sink.finishing_calls == 0
    assert sink.moves == 0
    assert not destination.exists()
    on_disk = partial.read_bytes() if partial.exists() else b""
    assert sum(sink.writes) == len(on_disk)
    assert on_disk == file.data[: len(on_disk)]
    if cut == "announced longer":
        assert sha256_bytes(on_disk) == file.sha256


@pytest.mark.asyncio
async def test_a_move_to_another_file_system_leaves_the_whole_file_at_the_partial_path(
    monkeypatch: pytest.MonkeyPatch, worker_calls: list[WorkerCall], tmp_path: Path
) -> None:
    """A rename the kernel refuses across file systems (EXDEV) is not an error: the
    file stays, whole and closed, at the partial path, its bytes are reported, and
    ``moved`` is not called (the owner copies it over afterwards)."""
    partial = tmp_path / "exdev.part"
    destination = tmp_path / "elsewhere.bin"
    real_replace = os.replace
    refused: list[tuple[str, str]] = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str], **kw: object) -> None:
        if Path(dst) == destination:
            refused.append((str(src), str(dst)))
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
        real_replace(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace)
    chunks = [seeded_bytes(6_000, "x1"), seeded_bytes(6_000, "x2")]
    data = b"".join(chunks)
    sink = OrderSink(move_to=destination)
    fds_before = open_fds()
    writer = writer_for(partial, BodyPlan(0, len(data)), sink)

    for chunk in chunks:
        await writer.add(chunk)
    await writer.finish()
    await writer.aclose()

    assert refused == [(str(partial), str(destination))]
    assert worker_calls == [WorkerCall(-1, chunks, 0, close=True, move_to=destination, inline=True)]
    assert sha256_bytes(partial.read_bytes()) == sha256_bytes(data)
    assert mode(partial) == 0o600
    assert not destination.exists()
    assert sink.calls == [("finishing", len(data)), ("bytes_written", len(data))]
    assert sink.moves == 0
    assert writer.written == len(data)
    assert writer._fd == body_writer.CLOSED
    assert not fds_opened_since(fds_before)


@pytest.mark.parametrize("obstacle", ["a directory", "no parent"])
@pytest.mark.asyncio
async def test_a_failed_rename_is_a_local_file_error_naming_the_destination(
    worker_calls: list[WorkerCall], tmp_path: Path, obstacle: str
) -> None:
    """Any other rename error (the destination is a directory; its directory does
    not exist) fails the body with a LocalFileError that names the URL, the action
    and the destination, with the OSError as its cause. ``moved`` is not called,
    the last write's bytes are not reported (counts stay a lower bound of what the
    file holds), the file is closed and whole at the partial path, and nothing
    appears at the destination."""
    partial = tmp_path / "failed.part"
    if obstacle == "a directory":
        destination = tmp_path / "taken"
        destination.mkdir()
        code, cause = errno.EISDIR, "is a directory"
    else:
        destination = tmp_path / "missing" / "file.bin"
        code, cause = errno.ENOENT, "no such file or directory"
    data = seeded_bytes(9_000, "failed")
    sink = OrderSink(move_to=destination)
    fds_before = open_fds()
    writer = writer_for(partial, BodyPlan(0, len(data)), sink)

    await writer.add(data)
    with pytest.raises(LocalFileError) as raised:
        await writer.finish()
    await writer.aclose()  # the first error stands; nothing more is raised or tried

    error = raised.value
    assert str(error) == f"{URL}: cannot move the file to {destination}: {cause}"
    assert error.url == URL
    assert error.errno == code
    assert error.filename == str(destination)
    assert isinstance(error.__cause__, OSError)
    assert error.__cause__.errno == code
    assert worker_calls == [WorkerCall(-1, [data], 0, close=True, move_to=destination, inline=True)]
    assert sink.calls == [("finishing", len(data))]
    assert sink.moves == 0
    assert writer.written == 0
    assert writer._fd == body_writer.CLOSED
    assert not fds_opened_since(fds_before)
    assert sha256_bytes(partial.read_bytes()) == sha256_bytes(data)
    if obstacle == "a directory":
        assert list(destination.iterdir()) == []
    else:
        assert not destination.parent.exists()


class SlowSink(OrderSink):
    """``finishing`` lets the loop run a few rounds before it answers, as the
    engine's does when it commits its journal first; ``answered`` is set as it
    returns."""

    def __init__(self, *, rounds: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.rounds = rounds
        self.answered = anyio.Event()

    async def finishing(self, size: int) -> Path | None:
        for _ in range(self.rounds):
            await anyio.lowlevel.checkpoint()
        answer = await super().finishing(size)
        self.answered.set()
        return answer


@pytest.mark.asyncio
async def test_the_first_write_timer_does_not_race_the_last_step(
    write_gate: threading.Event,
    worker_calls: list[WorkerCall],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small body's bytes wait up to FIRST_WRITE_DELAY for more. When the body
    ends meanwhile and the sink takes longer than that to say where it goes, the
    timer must not start a write of its own: the last step would run beside it,
    both opening (and truncating) the file, one leaking its descriptor. One call
    writes, closes and moves; the destination holds every byte. (The delay is
    made 0, so the timer is due at the loop's next round; the sink lets a few
    rounds pass, as the slow journal commit would.)"""
    monkeypatch.setattr(body_writer, "FIRST_WRITE_DELAY", 0.0)
    partial = tmp_path / "race.part"
    destination = tmp_path / "race.bin"
    data = seeded_bytes(3_000, "race")
    sink = SlowSink(move_to=destination, rounds=5)
    fds_before = open_fds()
    writer = writer_for(partial, BodyPlan(0, len(data)), sink)

    await writer.add(data)  # arms the first-write timer
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.finish)
            await sink.answered.wait()  # the last step has been started (and is held)
            calls_while_held = list(worker_calls)
            write_gate.set()
    await writer.aclose()

    assert calls_while_held == [WorkerCall(-1, [data], 0, close=True, move_to=destination)]
    assert worker_calls == calls_while_held
    assert not partial.exists()
    assert sha256_bytes(destination.read_bytes()) == sha256_bytes(data)
    assert sink.calls == [("finishing", len(data)), ("bytes_written", len(data)), ("moved", 0)]
    assert writer._fd == body_writer.CLOSED
    assert not fds_opened_since(fds_before)


class GatedSink(OrderSink):
    """``finishing`` waits (as the engine's does for its journal) until released,
    shielded, as ``TransferSink.finishing`` must once it has decided."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.asked = anyio.Event()
        self.answer = anyio.Event()

    async def finishing(self, size: int) -> Path | None:
        self.asked.set()
        with anyio.CancelScope(shield=True):
            await self.answer.wait()
        return await super().finishing(size)


@pytest.mark.parametrize("held", ["in finishing", "in the worker call"])
@pytest.mark.asyncio
async def test_a_cancel_during_the_last_step_waits_for_it_and_still_propagates(
    monkeypatch: pytest.MonkeyPatch,
    write_gate: threading.Event,
    worker_calls: list[WorkerCall],
    tmp_path: Path,
    held: str,
) -> None:
    """A cancellation that arrives once the body is whole, while the sink decides
    where it goes or while the worker call writes, closes and renames, does not
    stop the step: ``finish()`` returns only after the file is at its destination
    and the sink heard ``moved`` (once). The cancellation is not swallowed: it is
    delivered at the caller's next checkpoint."""
    partial = tmp_path / "cancelled.part"
    destination = tmp_path / "cancelled.bin"
    data = seeded_bytes(10_000, "cancel")
    sink = GatedSink(move_to=destination)
    entered = threading.Event()
    gated = body_writer.write_chunks  # waits on write_gate

    def announcing(*args: object) -> body_writer.WriteOutcome:
        entered.set()
        return gated(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(body_writer, "write_chunks", announcing)
    writer = writer_for(partial, BodyPlan(0, len(data)), sink)
    await writer.add(data)
    if held == "in finishing":
        write_gate.set()  # only finishing holds the step
    else:
        sink.answer.set()
    scope = anyio.CancelScope()
    left_finish: list[tuple[int, bool]] = []  # (moves, destination exists) when it returned
    after_finish: list[str] = []

    async def last_write() -> None:
        with scope:
            try:
                await writer.finish()
            finally:
                left_finish.append((sink.moves, destination.exists()))
                await writer.aclose()
            after_finish.append("reached")
            await anyio.sleep_forever()  # the next checkpoint: the cancellation arrives here

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(last_write)
            if held == "in finishing":
                await sink.asked.wait()
                reached_hold = True
            else:
                reached_hold = await anyio.to_thread.run_sync(entered.wait, 5)
            scope.cancel()
            await anyio.wait_all_tasks_blocked()  # a cancellation that could get in has
            while_held = list(left_finish)
            sink.answer.set()
            write_gate.set()

    assert reached_hold
    assert while_held == []  # finish() did not return (or raise) while the step was held
    assert left_finish == [(1, True)]
    assert after_finish == ["reached"]
    assert scope.cancelled_caught  # and the cancellation came out, at the next checkpoint
    assert worker_calls == [WorkerCall(-1, [data], 0, close=True, move_to=destination)]
    assert sink.calls == [("finishing", len(data)), ("bytes_written", len(data)), ("moved", 0)]
    assert not partial.exists()
    assert sha256_bytes(destination.read_bytes()) == sha256_bytes(data)
    assert writer.written == len(data)
