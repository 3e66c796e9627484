"""Resume data handed back by the application is not trusted (issue 18, items 2 and 11).

Resume data leaves the process (the application may store it anywhere), so a
session takes back only what a session of its own state directory signed,
unchanged: an edited blob never moves, truncates or overwrites a file, and never
splices another resource's bytes onto the partial file. And a disk that fills up
keeps the partial file: the ``ErrorEvent`` carries resume data to continue once
space is freed.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from _helpers import collect, sha256_file, wait_for_bytes
from bgtransfer import (
    CancelledEvent,
    Configuration,
    ErrorEvent,
    FinishedEvent,
    InvalidResumeDataError,
    LocalFileError,
    ResumeData,
    ResumedEvent,
    RetryPolicy,
    Session,
    SessionError,
)
from bgtransfer._core.journal import Phase, TaskEntry
from bgtransfer._io.journal import JOURNAL_NAME, Journal
from bgtransfer._io.resume_key import load_key
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

FAST = RetryPolicy(max_attempts=3, initial_delay=0, jitter=0)
CONFIG = Configuration(retry=FAST, progress_interval=0)
SRC = Path(__file__).resolve().parents[2] / "src"


def _edited(blob: bytes, **changes: Any) -> bytes:
    """The blob with fields changed as an attacker (or a buggy app) would."""
    document = json.loads(blob)
    document.update(changes)
    return json.dumps(document).encode()


def _snapshot(*paths: Path) -> dict[Path, str]:
    return {path: sha256_file(path) for path in paths}


async def _paused_resume_data(
    session: Session, server: TestServer, path: str, destination: Path, after: int
) -> ResumeData:
    """Start ``path``, let ``after`` bytes arrive, cancel it with resume data."""
    server.set_faults(path, Faults(hold_after=after), times=1)
    task = await session.download(server.url(path), destination)
    await wait_for_bytes(task, after)
    data = await task.cancel_with_resume_data()
    server.release(path)
    assert data is not None
    assert data.offset == after
    return data


# -- edited resume data touches no file ------------------------------------------------------


@pytest.mark.parametrize("form", ["bytes", "object"])
async def test_resume_data_naming_a_victim_file_is_refused_and_the_victim_untouched(
    server: TestServer, state_dir: Path, out_dir: Path, tmp_path: Path, form: str
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious bytes the process can write\n" * 1000)
    before = _snapshot(victim)
    async with Session("rd", state_dir=state_dir, config=CONFIG) as session:
        data = await _paused_resume_data(session, server, file.path, out_dir / "f.bin", 100_000)
        bad: bytes | ResumeData
        if form == "bytes":
            bad = _edited(data.to_bytes(), partial=str(victim), offset=10)
        else:  # the application's own object, evolved
            bad = attrs.evolve(data, partial=str(victim), offset=10)
        with pytest.raises(InvalidResumeDataError, match="signature"):
            await session.download_with_resume_data(bad, out_dir / "g.bin")
        assert [task.id for task in session.tasks()] == [1]  # no task was made
        assert Path(data.partial).stat().st_size == 100_000  # the real partial stays
    assert _snapshot(victim) == before  # same bytes, same path
    assert not (out_dir / "g.bin").exists()


async def test_resume_data_with_the_url_of_another_resource_with_the_same_validator_is_refused(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    # Two resources whose strong validator is the same (the same Last-Modified
    # date, no ETag): If-Range cannot tell them apart, so only the signature can.
    date = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    a = server.add_file("/a.bin", size=300_000, last_modified=date)
    b = server.add_file("/b.bin", size=300_000, last_modified=date)
    server.set_faults(b.path, Faults(etag="none"))
    async with Session("rd", state_dir=state_dir, config=CONFIG) as session:
        server.set_faults(a.path, Faults(etag="none", hold_after=100_000), times=1)
        task = await session.download(server.url(a.path), out_dir / "a.bin")
        await wait_for_bytes(task, 100_000)
        data = await task.cancel_with_resume_data()
        server.release(a.path)
        assert data is not None
        assert data.validator.endswith("GMT")  # the shared date
        partial = Path(data.partial)
        before = _snapshot(partial)
        blob = _edited(data.to_bytes(), url=server.url(b.path))
        with pytest.raises(InvalidResumeDataError, match="signature"):
            await session.download_with_resume_data(blob, out_dir / "spliced.bin")
        assert _snapshot(partial) == before
    assert not (out_dir / "spliced.bin").exists()
    assert [r.path for r in server.requests] == [a.path]  # /b.bin was never asked for


def _flip_mac(blob: bytes) -> bytes:
    mac = json.loads(blob)["mac"]
    flipped = ("0" if mac[0] != "0" else "1") + mac[1:]
    return _edited(blob, mac=flipped)


def _without(blob: bytes, name: str) -> bytes:
    document = json.loads(blob)
    del document[name]
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda blob: _edited(blob, offset=json.loads(blob)["offset"] - 1), "signature"),
        (_flip_mac, "signature"),
        (lambda blob: _edited(blob, mac=json.loads(blob)["mac"][:40]), "signature"),
        (lambda blob: _edited(blob, mac=None), "mac"),
        (lambda blob: _without(blob, "mac"), "signature"),
        (lambda blob: _edited(blob, version=1), "unsigned"),
        (lambda blob: _edited(blob, headers=[["X-Injected", "1"]]), "signature"),
        (lambda blob: _edited(blob, destination="/etc/passwd"), "signature"),
    ],
    ids=[
        "offset",
        "flipped-mac",
        "truncated-mac",
        "mac-null",
        "no-mac",
        "version-1",
        "headers",
        "destination",
    ],
)
async def test_altered_resume_data_is_refused(
    server: TestServer, state_dir: Path, out_dir: Path, mangle: Any, message: str
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    async with Session("rd", state_dir=state_dir, config=CONFIG) as session:
        data = await _paused_resume_data(session, server, file.path, out_dir / "f.bin", 100_000)
        partial = Path(data.partial)
        before = _snapshot(partial)
        with pytest.raises(InvalidResumeDataError, match=message):
            await session.download_with_resume_data(mangle(data.to_bytes()))
        assert _snapshot(partial) == before
        # The real one still works: nothing was consumed by the refusals.
        task = await session.download_with_resume_data(data.to_bytes())
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256


async def test_resume_data_built_by_hand_is_refused(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    async with Session("rd", state_dir=state_dir, config=CONFIG) as session:
        data = await _paused_resume_data(session, server, file.path, out_dir / "f.bin", 100_000)
        by_hand = ResumeData(
            url=data.url,
            partial=data.partial,
            offset=data.offset,
            validator=data.validator,
            total=data.total,
        )
        with pytest.raises(InvalidResumeDataError, match="not signed"):
            await session.download_with_resume_data(by_hand)
        assert Path(data.partial).stat().st_size == 100_000


async def test_resume_data_from_another_state_directory_is_refused(
    server: TestServer, tmp_path: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    async with Session("rd", state_dir=tmp_path / "one", config=CONFIG) as session:
        data = await _paused_resume_data(session, server, file.path, out_dir / "f.bin", 100_000)
    partial = Path(data.partial)
    before = _snapshot(partial)
    async with Session("rd", state_dir=tmp_path / "two", config=CONFIG) as other:
        with pytest.raises(InvalidResumeDataError, match="another state directory"):
            await other.download_with_resume_data(data.to_bytes(), out_dir / "g.bin")
        assert other.tasks() == []
    assert _snapshot(partial) == before
    assert not (out_dir / "g.bin").exists()


async def test_signed_resume_data_whose_partial_was_replaced_by_a_link_is_refused(
    server: TestServer, state_dir: Path, out_dir: Path, tmp_path: Path
) -> None:
    """Belt and braces: a valid signature, but the partial file is now a symbolic
    link (planted by whoever could write there): it is not followed."""
    file = server.add_file("/f.bin", size=300_000)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"v" * 200_000)
    before = _snapshot(victim)
    async with Session("rd", state_dir=state_dir, config=CONFIG) as session:
        data = await _paused_resume_data(session, server, file.path, out_dir / "f.bin", 100_000)
        partial = Path(data.partial)
        partial.unlink()
        partial.symlink_to(victim)
        with pytest.raises(InvalidResumeDataError, match="not a regular file"):
            await session.download_with_resume_data(data)
        assert partial.is_symlink()
    assert _snapshot(victim) == before


# -- valid resume data goes on working ----------------------------------------------------


async def test_resume_data_round_trips_through_bytes_and_a_new_process(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """A child process cancels with resume data and exits; this process reopens
    the background session and continues from the blob: the key lives in the
    state directory, so the signature holds."""
    file = server.add_file("/f.bin", size=400_000)
    server.set_faults(file.path, Faults(hold_after=150_000), times=1)
    script = textwrap.dedent(
        """
        import asyncio, base64, sys
        from bgtransfer import Configuration, ProgressEvent, Session

        async def main(url, state_dir, destination):
            config = Configuration(progress_interval=0)
            async with Session("rt", state_dir=state_dir, config=config) as session:
                task = await session.download(url, destination)
                async with task.events() as stream:
                    async for event in stream:
                        if isinstance(event, ProgressEvent):
                            if event.total_bytes_written >= 150_000:
                                break
                data = await task.cancel_with_resume_data()
                print(base64.b64encode(data.to_bytes()).decode(), flush=True)

        asyncio.run(main(*sys.argv[1:]))
        """
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        server.url(file.path),
        str(state_dir),
        str(out_dir / "f.bin"),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    server.release(file.path)
    assert child.returncode == 0
    blob = base64.b64decode(out.strip().splitlines()[-1])
    assert json.loads(blob)["version"] == 2
    async with Session("rt", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download_with_resume_data(blob)
        events = await collect(task.events())
    assert events[0] == ResumedEvent(task_id=task.id, offset=150_000, expected_total=file.size)
    assert isinstance(events[-1], FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256
    assert server.requests[-1].headers["Range"] == "bytes=150000-"


async def test_resume_data_replayed_from_the_journal_is_signed_and_works(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """What a later process hands out from the journal is signed with the key:
    a cancel that was under way (CANCELING, completed at reattach) and an ended
    cancel stored unsigned (as a journal of an older version holds it)."""
    f = server.add_file("/f.bin", size=300_000)
    g = server.add_file("/g.bin", size=300_000)
    partials = state_dir / "rj" / "partials"
    partials.mkdir(parents=True)
    (partials / "1.part").write_bytes(f.data[:100_000])
    (partials / "2.part").write_bytes(g.data[:120_000])
    unsigned = ResumeData(
        url=server.url(g.path),
        partial=str(partials / "2.part"),
        offset=120_000,
        validator=g.etag,
        total=g.size,
        destination=str(out_dir / "g.bin"),
    )
    entries = [
        TaskEntry(
            id=1,
            url=server.url(f.path),
            destination=str(out_dir / "f.bin"),
            description=None,
            headers=(),
            phase=Phase.CANCELING,
            keep_partial=True,
            offset=100_000,
            total=f.size,
            validator=f.etag,
        ),
        TaskEntry(
            id=2,
            url=server.url(g.path),
            destination=str(out_dir / "g.bin"),
            description=None,
            headers=(),
            phase=Phase.ENDED,
            offset=120_000,
            total=g.size,
            validator=g.etag,
            outcome=CancelledEvent(task_id=2, resume_data=unsigned),
        ),
    ]
    journal = await Journal.open(state_dir / "rj" / JOURNAL_NAME)
    async with journal:
        for entry in entries:
            journal.put(entry)
        await journal.flush()
    async with Session("rj", state_dir=state_dir, config=CONFIG) as session:
        replayed = {task.id: task.result for task in session.tasks()}
        resumed = []
        for task_id, offset in ((1, 100_000), (2, 120_000)):
            outcome = replayed[task_id]
            assert isinstance(outcome, CancelledEvent)
            assert outcome.resume_data is not None
            assert outcome.resume_data.offset == offset
            assert outcome.resume_data.mac
            resumed.append(await session.download_with_resume_data(outcome.resume_data.to_bytes()))
        for task in resumed:
            assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == f.sha256
    assert sha256_file(out_dir / "g.bin") == g.sha256


async def test_resume_data_of_another_session_of_the_same_state_directory_works(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    async with Session("one", state_dir=state_dir, config=CONFIG) as session:
        data = await _paused_resume_data(session, server, file.path, out_dir / "f.bin", 100_000)
    async with Session("two", state_dir=state_dir, config=CONFIG) as other:
        task = await other.download_with_resume_data(data.to_bytes())
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256


async def test_ephemeral_session_resume_data_works_within_the_process(
    server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    async with Session(config=CONFIG) as session:
        data = await _paused_resume_data(session, server, file.path, out_dir / "f.bin", 100_000)
        assert data.mac
        task = await session.download_with_resume_data(data.to_bytes())
        events = await collect(task.events())
    assert events[0] == ResumedEvent(task_id=task.id, offset=100_000, expected_total=file.size)
    assert sha256_file(out_dir / "f.bin") == file.sha256


async def test_key_file_is_private_and_a_planted_link_is_refused(
    server: TestServer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    async with Session("k", state_dir=state_dir):
        pass
    key = state_dir / ".resume-data.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.stat().st_size == 32
    victim = tmp_path / "victim"
    victim.write_bytes(b"x" * 32)
    key.unlink()
    key.symlink_to(victim)
    with pytest.raises(SessionError, match=r"resume data key .* symbolic link"):
        async with Session("k", state_dir=state_dir):
            pass
    key.unlink()
    key.write_bytes(b"short")
    with pytest.raises(SessionError, match="holds 5 bytes"):
        async with Session("k", state_dir=state_dir):
            pass
    key.unlink()
    os.mkfifo(key)  # opening it must not wait for a writer
    with pytest.raises(SessionError, match="not a regular file"):
        async with Session("k", state_dir=state_dir):
            pass
    assert victim.read_bytes() == b"x" * 32
    key.unlink()
    async with Session("k", state_dir=state_dir):  # removed: a new key is made
        pass
    assert key.stat().st_size == 32


# -- a full disk keeps the partial file ------------------------------------------------------


@pytest.fixture
def small_partials(state_dir: Path) -> Iterator[Path]:
    """The partials directory of session ``"full"`` on a 256 KiB tmpfs (the journal
    stays on the ordinary disk); unmounted afterwards."""
    partials = state_dir / "full" / "partials"
    partials.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(partials)],
        check=True,
    )
    try:
        yield partials
    finally:
        subprocess.run(["umount", "-l", str(partials)], check=True)


def _grow(mount_point: Path) -> None:
    """Free space: the tmpfs grows to 4 MiB (a quick, local command)."""
    subprocess.run(["mount", "-o", "remount,size=4m", str(mount_point)], check=True)


async def test_disk_full_keeps_the_partial_and_resumes_once_space_is_freed(
    server: TestServer, state_dir: Path, out_dir: Path, small_partials: Path
) -> None:
    # Under 1 MiB: no block reservation first, so the disk fills mid-body.
    file = server.add_file("/f.bin", size=900_000)
    explicit = attrs.evolve(CONFIG, acknowledge="explicit")
    async with Session("full", state_dir=state_dir, config=explicit) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        stream = session.events()
        async for event in stream:  # explicit acknowledgement: not acknowledged
            if isinstance(event, ErrorEvent):
                break
    assert isinstance(event.error, LocalFileError)
    assert event.error.errno == errno.ENOSPC
    partial = small_partials / f"{task.id}.part"
    assert partial.exists(), "the partial file was deleted"
    data = event.resume_data
    assert data is not None
    assert 0 < data.offset <= partial.stat().st_size
    assert partial.read_bytes()[: data.offset] == file.data[: data.offset]
    assert not (out_dir / "f.bin").exists()

    # Space is freed; the next process (here: the session reopened) replays the
    # unacknowledged error with its resume data, and the partial file is still there.
    _grow(small_partials)
    server.reset_statistics()
    async with Session("full", state_dir=state_dir, config=CONFIG) as session:
        (old,) = session.tasks()
        with pytest.raises(LocalFileError, match="no space left"):
            await old.wait()
        replayed = old.result
        assert isinstance(replayed, ErrorEvent)
        assert replayed.resume_data is not None
        assert replayed.resume_data.offset == data.offset
        assert partial.exists()
        resumed = await session.download_with_resume_data(replayed.resume_data)
        events = await collect(resumed.events())
    assert events[0] == ResumedEvent(
        task_id=resumed.id, offset=data.offset, expected_total=file.size
    )
    assert isinstance(events[-1], FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256
    assert server.requests[-1].headers["Range"] == f"bytes={data.offset}-"
    assert server.statistics().bytes_sent == file.size - data.offset  # only the rest


async def test_disk_full_resume_data_works_in_the_same_session(
    server: TestServer, state_dir: Path, out_dir: Path, small_partials: Path
) -> None:
    file = server.add_file("/f.bin", size=900_000)
    async with Session("full", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        with pytest.raises(LocalFileError, match="no space left"):
            await task.wait()
        result = task.result  # the ErrorEvent
        assert isinstance(result, ErrorEvent)
        assert result.resume_data is not None
        _grow(small_partials)
        resumed = await session.download_with_resume_data(result.resume_data.to_bytes())
        assert isinstance(await resumed.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256


FILE_SIZE_LIMIT_CHILD = textwrap.dedent(
    """
    import asyncio, hashlib, json, resource, signal, sys
    from pathlib import Path
    from bgtransfer import Configuration, LocalFileError, ResumedEvent, Session
    from bgtransfer.testing import TestServer

    async def main(tmp):
        async with TestServer() as server:
            file = server.add_file("/f.bin", size=900_000)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, hard))
            config = Configuration(progress_interval=0)
            async with Session("fsize", state_dir=tmp / "state", config=config) as session:
                task = await session.download(server.url(file.path), tmp / "f.bin")
                try:
                    await task.wait()
                except LocalFileError as exc:
                    errno = exc.errno
                data = task.result.resume_data
                resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space freed
                server.reset_statistics()
                resumed = await session.download_with_resume_data(data.to_bytes())
                first = None
                async with resumed.events() as stream:
                    async for event in stream:
                        if first is None:
                            first = event
                await resumed.wait()
            digest = hashlib.sha256((tmp / "f.bin").read_bytes()).hexdigest()
            print(json.dumps({
                "errno": errno,
                "offset": data.offset,
                "resumed_at": first.offset if isinstance(first, ResumedEvent) else None,
                "sent": server.statistics().bytes_sent,
                "ok": digest == file.sha256,
            }))

    asyncio.run(main(Path(sys.argv[1])))
    """
)


async def _run_child(*args: str) -> str:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    out, err = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == 0, err.decode()
    return out.decode().strip()


async def test_file_size_limit_keeps_the_partial_and_resumes_once_lifted(tmp_path: Path) -> None:
    """The same as a full disk without a mount: RLIMIT_FSIZE in a child process
    makes writes past 300,000 bytes fail with EFBIG; once it is lifted the
    resume data fetches only the rest."""
    out = await _run_child(FILE_SIZE_LIMIT_CHILD, str(tmp_path))
    outcome = json.loads(out.splitlines()[-1])
    assert outcome["errno"] == errno.EFBIG
    assert 0 < outcome["offset"] <= 300_000
    assert outcome["resumed_at"] == outcome["offset"]
    assert outcome["sent"] == 900_000 - outcome["offset"]
    assert outcome["ok"] is True


async def test_racing_creators_of_the_key_end_up_with_one(tmp_path: Path) -> None:
    """Threads released together on fresh directories (the file calls release the
    GIL, so they interleave for real): every caller gets the key that was linked
    into place, and no temporary file is left."""

    def race(directory: Path, count: int) -> set[bytes]:
        barrier = threading.Barrier(count)

        def one() -> bytes:
            barrier.wait()
            return load_key(directory)

        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            return set(pool.map(lambda _: one(), range(count)))

    for round_ in range(20):
        directory = tmp_path / str(round_)
        directory.mkdir()
        keys = await asyncio.to_thread(race, directory, 8)
        assert len(keys) == 1
        assert keys == {(directory / ".resume-data.key").read_bytes()}
        assert [p.name for p in directory.iterdir()] == [".resume-data.key"]
