"""A ``str`` destination ending in a path separator means "into this directory".

Issue 19 ("Smaller API fixes"): ``"newdir/"`` used to become a file named
``newdir``, because ``Path`` drops the trailing slash. Now, through every entry
point (``download``, ``download_many``, ``download_with_resume_data``):

- the directory exists: the file name comes from the URL, as for an existing
  directory given without the slash;
- it does not exist (or is not a directory): ``InvalidDestinationError`` at the
  call, and nothing is created there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _helpers import sha256_file, wait_for_bytes
from bgtransfer import (
    Configuration,
    DownloadRequest,
    DownloadTask,
    FinishedEvent,
    InvalidDestinationError,
    ResumeData,
    Session,
    TaskState,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

ID = "com.example.into-directory"
CONFIG = Configuration(progress_interval=0)
ENTRIES = ["download", "download_many", "download_with_resume_data"]


async def start(
    session: Session, entry: str, url: str, destination: str, resume_data: ResumeData | None
) -> DownloadTask:
    """Start a download to ``destination`` through one of the three entry points
    (``download_many``: after a good request, so all-or-none shows)."""
    if entry == "download":
        return await session.download(url, destination)
    if entry == "download_many":
        tasks = await session.download_many(
            [DownloadRequest(url), DownloadRequest(url, destination)]
        )
        return tasks[1]
    assert resume_data is not None
    return await session.download_with_resume_data(resume_data, destination)


async def resume_data_for(session: Session, url: str, out_dir: Path) -> ResumeData:
    """Resume data of a task cancelled after 50,000 bytes (its request held there)."""
    task = await session.download(url, out_dir / "first.bin")
    await wait_for_bytes(task, 50_000)
    data = await task.cancel_with_resume_data()
    assert data is not None
    return data


@pytest.mark.parametrize("separator", sorted({"/", os.sep}))
@pytest.mark.parametrize("entry", ENTRIES)
async def test_an_existing_directory_with_a_trailing_separator_gets_the_urls_name(
    server: TestServer, state_dir: Path, out_dir: Path, entry: str, separator: str
) -> None:
    file = server.add_file("/data/f.bin", size=200_000, seed="into")
    if entry == "download_with_resume_data":  # the first request stalls, is cancelled
        server.set_faults(file.path, Faults(hold_after=50_000), times=1)
    url = server.url(file.path)
    into = out_dir / "into"
    into.mkdir()
    (into / "f.bin").write_bytes(b"already here")  # made unique, never replaced
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        resume_data = None
        if entry == "download_with_resume_data":
            resume_data = await resume_data_for(session, url, out_dir)
        task = await start(session, entry, url, str(into) + separator, resume_data)
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert result.location == into / "f (1).bin"
    assert sha256_file(into / "f (1).bin") == file.sha256
    assert (into / "f.bin").read_bytes() == b"already here"
    assert sorted(p.name for p in into.iterdir()) == ["f (1).bin", "f.bin"]


async def test_a_relative_directory_with_a_trailing_slash(
    server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    (out_dir / "sub").mkdir()
    monkeypatch.chdir(out_dir)
    async with Session(config=CONFIG) as session:
        tasks = [
            await session.download(server.url(file.path), "sub/"),
            await session.download(server.url(file.path), "sub/."),
            await session.download(server.url(file.path), "./"),
        ]
        results = [await task.wait() for task in tasks]
    assert [result.location for result in results if isinstance(result, FinishedEvent)] == [
        out_dir / "sub" / "f.bin",
        out_dir / "sub" / "f (1).bin",
        out_dir / "f.bin",
    ]
    for location in (out_dir / "sub" / "f.bin", out_dir / "sub" / "f (1).bin", out_dir / "f.bin"):
        assert sha256_file(location) == file.sha256


async def test_a_batch_into_one_directory_gets_unique_names(
    server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    destination = str(out_dir) + "/"
    async with Session(config=CONFIG) as session:
        tasks = await session.download_many(
            [DownloadRequest(server.url(file.path), destination) for _ in range(3)]
        )
        results = [await task.wait() for task in tasks]
    assert [result.location for result in results if isinstance(result, FinishedEvent)] == [
        out_dir / "f.bin",
        out_dir / "f (1).bin",
        out_dir / "f (2).bin",
    ]


MISSING = {
    "a missing directory": lambda out: str(out / "newdir") + "/",
    "a missing directory, dot": lambda out: str(out / "newdir") + "/.",
    "a missing parent": lambda out: str(out / "no" / "newdir") + "/",
    "a regular file": lambda out: str(out / "file.txt") + "/",
}


@pytest.mark.parametrize("what", list(MISSING))
@pytest.mark.parametrize("entry", ENTRIES)
async def test_a_trailing_separator_on_what_is_not_a_directory_is_refused(
    server: TestServer, state_dir: Path, out_dir: Path, entry: str, what: str
) -> None:
    file = server.add_file("/f.bin", size=200_000, seed="missing")
    if entry == "download_with_resume_data":  # the first request stalls, is cancelled
        server.set_faults(file.path, Faults(hold_after=50_000), times=1)
    url = server.url(file.path)
    (out_dir / "file.txt").write_bytes(b"a file, not a directory")
    destination = MISSING[what](out_dir)
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        resume_data = None
        if entry == "download_with_resume_data":
            resume_data = await resume_data_for(session, url, out_dir)
        before = len(session.tasks())
        with pytest.raises(InvalidDestinationError) as refused:
            await start(session, entry, url, destination, resume_data)
        message = str(refused.value)
        assert url in message
        assert destination.rstrip("/.") in message
        expected = "is not a directory" if what == "a regular file" else "does not exist"
        assert expected in message
        assert len(session.tasks()) == before  # download_many: all or none
        if resume_data is not None:  # still usable: nothing was taken over
            resumed = await session.download_with_resume_data(resume_data, out_dir / "r.bin")
            assert isinstance(await resumed.wait(), FinishedEvent)
            assert sha256_file(out_dir / "r.bin") == file.sha256
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        assert all(task.state is TaskState.COMPLETED for task in session.tasks())
    # Nothing was created: no file named like the directory, no directory.
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        ["file.txt", *(["r.bin"] if entry == "download_with_resume_data" else [])]
    )
    assert (out_dir / "file.txt").read_bytes() == b"a file, not a directory"


async def test_a_path_object_keeps_its_meaning(server: TestServer, out_dir: Path) -> None:
    """``Path("newdir/")`` is ``Path("newdir")``: a file path, as before."""
    file = server.add_file("/f.bin", size=10_000)
    async with Session(config=CONFIG) as session:
        result = await (await session.download(server.url(file.path), out_dir / "x/")).wait()
    assert isinstance(result, FinishedEvent)
    assert result.location == out_dir / "x"
    assert sha256_file(out_dir / "x") == file.sha256
