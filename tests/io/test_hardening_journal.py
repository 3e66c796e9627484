"""The journal against hostile text and a failing disk (issue 18, items 5 and 11).

* Every text the journal stores comes back exactly as it went in, whatever it
  holds: an ETag with an obs-text byte (a lone surrogate once aiohttp decoded it),
  a destination made by ``os.fsdecode`` from bytes that are not UTF-8.
* A validator that cannot be sent back byte for byte in ``If-Range`` is not used
  to resume: the task starts over instead.
* A batch the journal cannot commit is never dropped silently: the tasks it
  concerns end with a :class:`~bgtransfer.JournalWriteError` naming the journal
  (logged at ERROR), the others go on.
* A journal on a full file system reaches the task as that named error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import collect, seeded_bytes, sha256_bytes, sha256_file, wait_for_bytes
from bgtransfer import (
    Configuration,
    ErrorEvent,
    FinishedEvent,
    JournalError,
    JournalWriteError,
    LocalFileError,
    ResumedEvent,
    Session,
)
from bgtransfer._core.journal import Phase, TaskEntry, entry_from_row, entry_to_row
from bgtransfer._core.ranges import strong_validator
from bgtransfer._io import journal as journal_module
from bgtransfer._io import journal_commit
from bgtransfer._io.errors import journal_write_error
from bgtransfer.testing import Faults, TestServer

ID = "com.example.hardening"
CONFIG = Configuration(progress_interval=0, checkpoint_interval=0.05)

OBS_ETAG = b'"\xffv1\xe9"'  # obs-text: legal in a field value, not UTF-8


# --------------------------------------------------------------------------------------
# a raw loopback server: aiohttp's test server cannot send non-UTF-8 header bytes
# --------------------------------------------------------------------------------------


class RawServer:
    """Serves ``body`` with ``ETag: etag``; honours ``Range`` only when ``If-Range``
    matches byte for byte. ``cut_first``: the first answer stops after that many
    body bytes (the connection closes, the announced length unmet)."""

    def __init__(self, body: bytes, etag: bytes, *, cut_first: int | None = None) -> None:
        self.body = body
        self.etag = etag
        self.cut_first = cut_first
        self.requests: list[dict[bytes, bytes]] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/file.bin"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers: dict[bytes, bytes] = {}
                for line in head.split(b"\r\n")[1:]:
                    if b":" in line:
                        name, _, value = line.partition(b":")
                        headers[name.strip().lower()] = value.strip()
                self.requests.append(headers)
                start = 0
                status = b"200 OK"
                if b"range" in headers and headers.get(b"if-range") == self.etag:
                    start = int(headers[b"range"].split(b"=")[1].split(b"-")[0])
                    status = b"206 Partial Content"
                payload = self.body[start:]
                extra = b""
                if start:
                    extra = b"Content-Range: bytes %d-%d/%d\r\n" % (
                        start,
                        len(self.body) - 1,
                        len(self.body),
                    )
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Length: %d\r\n" % len(payload)
                    + b"ETag: "
                    + self.etag
                    + b"\r\nAccept-Ranges: bytes\r\n"
                    + extra
                    + b"\r\n"
                )
                if self.cut_first is not None and len(self.requests) == 1:
                    writer.write(payload[: self.cut_first])
                    await writer.drain()
                    return
                writer.write(payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@contextlib.asynccontextmanager
async def raw_server(body: bytes, etag: bytes, **options: Any) -> AsyncIterator[RawServer]:
    async with RawServer(body, etag, **options) as server:
        yield server


def _task_rows(state_dir: Path) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(f"file:{state_dir / ID / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT id, phase FROM tasks").fetchall()
    finally:
        connection.close()


# --------------------------------------------------------------------------------------
# lossless text
# --------------------------------------------------------------------------------------


def test_every_text_field_round_trips_whatever_it_holds() -> None:
    weird = "\udcff\ud800 caf\u00e9 \U0001f4e6 \udc80\udfff"
    entry = TaskEntry(
        id=7,
        url="https://example.com/caf\u00e9/\udce9.bin",
        destination=os.fsdecode(b"/tmp/caf\xe9/\xff\xfe.bin"),
        description=weird,
        headers=(("X-Odd", "\udcff"),),
        phase=Phase.RUNNING,
        offset=10,
        total=20,
        validator='"\udcffv1\udce9"',
        encoding="x-\udcff",
        adopting=os.fsdecode(b"/tmp/old/\xff.part"),
    )
    row = entry_to_row(entry)
    connection = sqlite3.connect(":memory:")
    connection.execute(f"CREATE TABLE t ({', '.join(f'c{i}' for i in range(len(row)))})")
    connection.execute(f"INSERT INTO t VALUES ({', '.join('?' for _ in row)})", row)
    [stored] = connection.execute("SELECT * FROM t").fetchall()
    assert entry_from_row(stored) == entry


def test_plain_text_stays_text() -> None:
    entry = TaskEntry(
        id=1,
        url="https://example.com/d\u00e9j\u00e0",
        destination="/home/u/T\u00e9l\u00e9chargements/a.bin",
        description=None,
        headers=(),
        phase=Phase.RUNNING,
        validator='"abc"',
    )
    row = entry_to_row(entry)
    assert all(not isinstance(value, bytes) for value in row)


def test_a_validator_that_cannot_be_sent_back_is_no_validator() -> None:
    assert strong_validator({"etag": OBS_ETAG.decode("utf-8", "surrogateescape")}) is None
    assert strong_validator({"etag": '"caf\u00e9"'}) == '"caf\u00e9"'  # UTF-8: sent as it came
    assert strong_validator({"etag": '"abc"'}) == '"abc"'


@pytest.mark.asyncio
async def test_obs_text_etag_finishes_byte_exact_and_the_journal_stays_whole(
    state_dir: Path, out_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = seeded_bytes(300_000, "obs")
    async with raw_server(body, OBS_ETAG) as server:
        async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
            task = await session.download(server.url, out_dir / "a.bin")
            events = await collect(task.events())
        assert isinstance(events[-1], FinishedEvent), events
        assert sha256_file(out_dir / "a.bin") == sha256_bytes(body)
        async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
            assert session.tasks() == []
    assert _task_rows(state_dir) == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.asyncio
async def test_obs_text_etag_restarts_from_zero_rather_than_resume(
    state_dir: Path, out_dir: Path
) -> None:
    """aiohttp cannot send the ETag back as it came: no ``If-Range`` with it, the
    retry asks for the whole file again."""
    body = seeded_bytes(300_000, "obs-cut")
    async with raw_server(body, OBS_ETAG, cut_first=100_000) as server:
        async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
            task = await session.download(server.url, out_dir / "a.bin")
            events = await collect(task.events())
        assert isinstance(events[-1], FinishedEvent), events
        assert sha256_file(out_dir / "a.bin") == sha256_bytes(body)
        assert [r.get(b"range") for r in server.requests] == [None, None]
        assert ResumedEvent(task_id=task.id, offset=0, expected_total=300_000) in events


CHILD = """
import asyncio, json, sys
from bgtransfer import Configuration, Session

async def main(state_dir, identifier):
    async with Session(identifier, state_dir=state_dir) as session:
        [task] = session.tasks()
        print(json.dumps({"destination": str(task.destination), "state": task.state.value}))
        event = await task.wait()
        print(json.dumps({"kind": type(event).__name__, "location": str(event.location)}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.asyncio
async def test_non_utf8_destination_is_journaled_and_finishes_in_a_new_process(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    name = b"caf\xe9-\xff.bin"  # Latin-1 bytes: not UTF-8
    destination = Path(os.fsdecode(os.fsencode(out_dir) + b"/" + name))
    file = server.add_file("/n.bin", size=600_000)
    server.set_faults(file.path, Faults(hold_after=200_000))
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), destination)
        await wait_for_bytes(task, 200_000)
    server.set_faults(file.path, Faults())
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(state_dir),
        ID,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0, err.decode(errors="replace")
    reattached, finished = (json.loads(line) for line in out.splitlines())
    assert reattached == {"destination": str(destination), "state": "running"}
    assert finished == {"kind": "FinishedEvent", "location": str(destination)}
    assert os.listdir(os.fsencode(out_dir)) == [name]
    assert sha256_file(destination) == file.sha256
    assert [r.headers.get("Range") for r in server.requests] == [None, "bytes=200000-"]


# --------------------------------------------------------------------------------------
# a batch that cannot be committed
# --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_row_that_cannot_be_stored_fails_its_task_loudly_and_only_it(
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever makes one row fail (here: a row the encoder refuses), its task
    ends with a named error and the session, the journal and the other task go on."""
    bad = server.add_file("/bad.bin", size=200_000)
    good = server.add_file("/good.bin", size=200_000)
    original = journal_commit.entry_to_row

    def entry_to_row(entry: TaskEntry) -> tuple[Any, ...]:
        if "bad" in entry.url and entry.offset > 0:
            raise ValueError("this row cannot be stored")
        return original(entry)

    monkeypatch.setattr(journal_commit, "entry_to_row", entry_to_row)
    with caplog.at_level(logging.ERROR, logger="bgtransfer"):
        async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
            first = await session.download(server.url(bad.path), out_dir / "bad.bin")
            second = await session.download(server.url(good.path), out_dir / "good.bin")
            first_end = (await collect(first.events()))[-1]
            second_end = (await collect(second.events()))[-1]
            third = await session.download(server.url(good.path), out_dir / "good2.bin")
            third_end = (await collect(third.events()))[-1]
    assert isinstance(first_end, ErrorEvent)
    error = first_end.error
    assert isinstance(error, JournalWriteError)
    assert isinstance(error, LocalFileError)
    journal_path = str(state_dir / ID / "journal.sqlite3")
    assert error.filename == journal_path
    assert f"cannot record the task in the journal {journal_path}" in str(error)
    assert "this row cannot be stored" in str(error)
    assert not (out_dir / "bad.bin").exists()
    assert isinstance(second_end, FinishedEvent)
    assert isinstance(third_end, FinishedEvent)
    assert sha256_file(out_dir / "good.bin") == good.sha256
    assert any(
        r.levelno == logging.ERROR and journal_path in r.getMessage() for r in caplog.records
    )


# --------------------------------------------------------------------------------------
# a journal on a full file system
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def journal_on_small_tmpfs(session_dir: Path, partials: Path) -> Iterator[None]:
    """``session_dir`` on a 2 MiB tmpfs, its ``partials/`` a bind mount of
    ``partials`` (another file system); both unmounted after."""
    mounts: list[Path] = []

    def run(*command: str) -> None:
        subprocess.run(command, check=True, capture_output=True)

    try:
        run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(session_dir))
        mounts.append(session_dir)
        (session_dir / "partials").mkdir()
        run("mount", "--bind", str(partials), str(session_dir / "partials"))
        mounts.append(session_dir / "partials")
        yield
    finally:
        for point in reversed(mounts):
            subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def _fill(directory: Path) -> None:
    """Fill the file system holding ``directory`` to its last block."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (65536, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, bytes(size))
    finally:
        os.close(fd)


@pytest.mark.asyncio
async def test_a_full_journal_disk_fails_the_task_with_a_named_error(
    server: TestServer, state_dir: Path, out_dir: Path, tmp_path: Path
) -> None:
    """The session's directory (journal, WAL, lock) on a small tmpfs, its partial
    files on another file system: only the journal runs out of space."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs: it needs root (CI runs as root)")
    session_dir = state_dir / ID
    session_dir.mkdir(parents=True)
    partials = tmp_path / "partials"
    partials.mkdir()
    file = server.add_file("/full.bin", size=2_000_000)
    server.set_faults(file.path, Faults(drip=(20_000, 0.01)))
    with journal_on_small_tmpfs(session_dir, partials):
        async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
            task = await session.download(server.url(file.path), out_dir / "full.bin")
            await wait_for_bytes(task, 100_000)
            _fill(session_dir)
            end = (await collect(task.events()))[-1]
        journal_path = str(session_dir / "journal.sqlite3")
        assert isinstance(end, ErrorEvent), end
        assert isinstance(end.error, JournalWriteError), repr(end.error)
        assert end.error.errno == errno.ENOSPC
        assert end.error.filename == journal_path
        assert str(end.error).startswith(
            f"{task.url}: cannot record the task in the journal {journal_path}: "
        )
        assert not (out_dir / "full.bin").exists()


@pytest.mark.asyncio
async def test_a_queued_task_whose_row_cannot_be_stored_ends_without_starting(
    server: TestServer, state_dir: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = server.add_file("/busy.bin", size=200_000)
    bad = server.add_file("/bad.bin", size=1000)
    server.set_faults(busy.path, Faults(hold_after=50_000))
    original = journal_commit.entry_to_row

    def entry_to_row(entry: TaskEntry) -> tuple[Any, ...]:
        if "bad" in entry.url:
            raise TypeError("unstorable")
        return original(entry)

    monkeypatch.setattr(journal_commit, "entry_to_row", entry_to_row)
    config = Configuration(max_concurrent_transfers=1, progress_interval=0)
    async with Session(ID, state_dir=state_dir, config=config) as session:
        first = await session.download(server.url(busy.path), out_dir / "busy.bin")
        await wait_for_bytes(first, 50_000)
        second = await session.download(server.url(bad.path), out_dir / "bad.bin")
        end = (await collect(second.events()))[-1]
        assert isinstance(end, ErrorEvent), end
        assert isinstance(end.error, JournalWriteError)
        assert "TypeError: unstorable" in str(end.error)
        server.release(busy.path)
        assert isinstance((await collect(first.events()))[-1], FinishedEvent)
    assert [r.path for r in server.requests] == [busy.path]
    assert sha256_file(out_dir / "busy.bin") == busy.sha256


@pytest.mark.asyncio
async def test_a_batch_with_one_bad_entry_commits_the_others_and_its_deletions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal alone: a batch of many entries (one transaction) and deletions,
    one entry unstorable: the others and the deletions are committed, the bad one
    is reported, and the journal goes on."""
    path = tmp_path / "journal.sqlite3"
    original = journal_commit.entry_to_row

    def entry_to_row(entry: TaskEntry) -> tuple[Any, ...]:
        if entry.id == 3:
            raise OverflowError("too big")
        return original(entry)

    def entry(task_id: int) -> TaskEntry:
        return TaskEntry(
            id=task_id,
            url=f"https://example.com/{task_id}",
            destination=f"/tmp/{task_id}",
            description=None,
            headers=(),
            phase=Phase.RUNNING,
        )

    rejected: list[tuple[int, str]] = []
    journal = await journal_module.Journal.open(path)
    async with journal:
        journal.on_rejected = lambda task_id, problem: rejected.append((task_id, str(problem)))
        for task_id in (1, 2):
            journal.put(entry(task_id))
        await journal.flush()
        monkeypatch.setattr(journal_commit, "entry_to_row", entry_to_row)
        journal.forget(1, urgent=True)
        for task_id in range(3, 30):  # more than one INSERT takes: one transaction
            journal.put(entry(task_id))
        await journal.flush()
        monkeypatch.setattr(journal_commit, "entry_to_row", original)
        journal.put(entry(30))
        await journal.flush()
    assert rejected == [(3, f"journal {path}: cannot record task 3: OverflowError('too big')")]
    reopened = await journal_module.Journal.open(path)
    async with reopened:
        assert [e.id for e in reopened.entries] == [2, *range(4, 31)]


def test_the_journal_error_names_errno_and_path(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    readonly = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        with pytest.raises(sqlite3.OperationalError) as info:
            readonly.execute("INSERT INTO t VALUES (1)")
    finally:
        readonly.close()
    cases = [
        (info.value, errno.EROFS, str(info.value)),
        (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC, "no space left on device"),
        (ValueError("odd"), None, "ValueError: odd"),
    ]
    for cause, code, text in cases:
        problem = JournalError(str(path), "cannot write")
        problem.__cause__ = cause
        error = journal_write_error(problem, url="https://example.com/f")
        assert isinstance(error, JournalWriteError)
        assert (error.errno, error.filename, error.url) == (
            code,
            str(path),
            "https://example.com/f",
        )
        assert str(error) == (
            f"https://example.com/f: cannot record the task in the journal {path}: {text}"
        )


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm"])
async def test_a_link_at_the_journal_or_beside_it_is_refused(tmp_path: Path, name: str) -> None:
    state = tmp_path / "state"
    async with Session("com.example.links", state_dir=state):
        pass  # makes the session's directory and its journal
    directory = state / "com.example.links"
    for stale in ("journal.sqlite3-wal", "journal.sqlite3-shm"):
        (directory / stale).unlink(missing_ok=True)
    victim = tmp_path / "victim.db"
    victim.write_bytes(b"precious")
    link = directory / name
    link.unlink(missing_ok=True)
    link.symlink_to(victim)

    with pytest.raises(JournalError, match="symbolic link"):
        async with Session("com.example.links", state_dir=state):
            pytest.fail("a session opened through a link")

    assert victim.read_bytes() == b"precious"
    assert link.is_symlink()
