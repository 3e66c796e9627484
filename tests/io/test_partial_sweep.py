"""Partial files nobody will use are removed when a background session opens.

A partial kept for resume data (``cancel_with_resume_data()``, a full disk) is
owned by no task once its task is acknowledged; if the application never uses
the resume data, the file would stay in ``partials/`` for ever. A session opening
removes such files once they are older than ``Configuration.resume_data_max_age``,
and leaves alone what a task owns, what is younger, and what is not a partial.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from _helpers import wait_for_bytes
from bgtransfer import Configuration, InvalidResumeDataError, RetryPolicy, Session
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

CONFIG = Configuration(retry=RetryPolicy(max_attempts=1), progress_interval=0)
DAY = 24 * 3600.0


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


async def _resume_data_partial(
    session: Session, server: TestServer, out_dir: Path, name: str
) -> tuple[bytes, Path]:
    file = server.add_file(f"/{name}", size=200_000)
    server.set_faults(file.path, Faults(hold_after=50_000), times=1)
    task = await session.download(server.url(file.path), out_dir / name)
    await wait_for_bytes(task, 50_000)
    data = await task.cancel_with_resume_data()  # handed out: acknowledged ("auto")
    server.release(file.path)
    assert data is not None
    return data.to_bytes(), Path(data.partial)


async def test_an_old_unused_resume_data_partial_is_removed_and_its_data_refused(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    async with Session("sweep", state_dir=state_dir, config=CONFIG) as session:
        blob, partial = await _resume_data_partial(session, server, out_dir, "a.bin")
    _age(partial, 8 * DAY)

    async with Session("sweep", state_dir=state_dir, config=CONFIG) as session:
        assert not partial.exists()
        with pytest.raises(InvalidResumeDataError):
            await session.download_with_resume_data(blob, out_dir / "a.bin")
    assert not (out_dir / "a.bin").exists()


async def test_young_owned_and_foreign_files_stay(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/held.bin", size=200_000)
    server.set_faults(file.path, Faults(hold_after=50_000), times=1)
    async with Session("sweep", state_dir=state_dir, config=CONFIG) as session:
        young_blob, young = await _resume_data_partial(session, server, out_dir, "y.bin")
        task = await session.download(server.url(file.path), out_dir / "held.bin")
        await wait_for_bytes(task, 50_000)
        task.suspend()  # stays in the journal: its partial is owned
    server.release(file.path)
    partials = young.parent
    owned = partials / f"{task.id}.part"
    assert owned.exists()
    victim = state_dir / "victim.bin"
    victim.write_bytes(b"not a partial")
    link = partials / "9999.part"
    link.symlink_to(victim)
    other = partials / "notes.txt"
    other.write_bytes(b"not ours to judge")
    for path in (owned, link, other):
        _age(path, 30 * DAY)
    _age(victim, 30 * DAY)

    async with Session("sweep", state_dir=state_dir, config=CONFIG) as session:
        assert young.exists()
        assert owned.exists()
        assert other.exists()
        assert link.is_symlink()
        assert victim.read_bytes() == b"not a partial"
        resumed = await session.download_with_resume_data(young_blob, out_dir / "y.bin")
        finished = await resumed.wait()
        assert finished.total_bytes == 200_000


async def test_none_keeps_them_for_ever(server: TestServer, state_dir: Path, out_dir: Path) -> None:
    async with Session("sweep", state_dir=state_dir, config=CONFIG) as session:
        blob, partial = await _resume_data_partial(session, server, out_dir, "k.bin")
    _age(partial, 3650 * DAY)
    keep = CONFIG.replace(resume_data_max_age=None)
    async with Session("sweep", state_dir=state_dir, config=keep) as session:
        resumed = await session.download_with_resume_data(blob, out_dir / "k.bin")
        assert (await resumed.wait()).total_bytes == 200_000
