"""Resume data of an ephemeral session is good only while that session is open.

An ephemeral ``Session()`` removes its partial files when it closes, so the
resume data it handed out dies with it. Used afterwards (or, without a
``state_dir``, by another session), it is refused with an
``InvalidResumeDataError`` that says so, instead of a message about signatures
of other processes or partial files outside a state directory; nothing is touched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _helpers import sha256_file, wait_for_bytes
from bgtransfer import (
    Configuration,
    FinishedEvent,
    InvalidResumeDataError,
    ResumeData,
    RetryPolicy,
    Session,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

CONFIG = Configuration(retry=RetryPolicy(max_attempts=3, initial_delay=0, jitter=0))
DIES = "resume data of an ephemeral session is good only while that session is open"


async def resume_data_of(
    session: Session, server: TestServer, destination: Path, after: int = 100_000
) -> ResumeData:
    file = server.add_file("/f.bin", size=300_000)
    server.set_faults(file.path, Faults(hold_after=after), times=1)
    task = await session.download(server.url(file.path), destination)
    await wait_for_bytes(task, after)
    data = await task.cancel_with_resume_data()
    server.release(file.path)
    assert data is not None
    return data


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


async def test_used_by_a_later_ephemeral_session_after_it_closed(
    server: TestServer, out_dir: Path
) -> None:
    async with Session(config=CONFIG) as first:
        data = await resume_data_of(first, server, out_dir / "f.bin")
    async with Session(config=CONFIG) as second:
        with pytest.raises(InvalidResumeDataError) as caught:
            await second.download_with_resume_data(data.to_bytes())
        assert second.tasks() == []
    message = str(caught.value)
    assert message.startswith(server.url("/f.bin") + ": ")
    assert DIES in message
    assert "has closed" in message
    assert list(out_dir.iterdir()) == []


async def test_used_by_another_ephemeral_session_while_it_is_open(
    server: TestServer, out_dir: Path
) -> None:
    """Without a state directory, only the session that made it can use it."""
    async with Session(config=CONFIG) as first, Session(config=CONFIG) as second:
        data = await resume_data_of(first, server, out_dir / "f.bin")
        partials = snapshot(first.directory / "partials")
        with pytest.raises(InvalidResumeDataError) as caught:
            await second.download_with_resume_data(data)
        assert DIES in str(caught.value)
        assert "only in the session that made it" in str(caught.value)
        assert snapshot(first.directory / "partials") == partials  # untouched
        task = await first.download_with_resume_data(data)  # still good there
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == server.file("/f.bin").sha256


async def test_used_by_a_background_session_after_it_closed(
    server: TestServer, out_dir: Path, state_dir: Path
) -> None:
    """Signed with the process's key, not the state directory's: the signature
    does not match, and the message says why rather than blaming another process."""
    async with Session(config=CONFIG) as first:
        data = await resume_data_of(first, server, out_dir / "f.bin")
    async with Session("bg", state_dir=state_dir, config=CONFIG) as background:
        with pytest.raises(InvalidResumeDataError) as caught:
            await background.download_with_resume_data(data.to_bytes())
    assert DIES in str(caught.value)
    assert "another process" not in str(caught.value)


async def test_ephemeral_session_with_a_state_dir_used_after_it_closed(
    server: TestServer, out_dir: Path, state_dir: Path
) -> None:
    """Signed with the state directory's key, so any session of it takes the
    data while the ephemeral session is open; once it closed, the partial file is
    gone, and the message says it went with its session."""
    async with Session(state_dir=state_dir, config=CONFIG) as first:
        data = await resume_data_of(first, server, out_dir / "f.bin")
    async with Session("bg", state_dir=state_dir, config=CONFIG) as background:
        with pytest.raises(InvalidResumeDataError) as caught:
            await background.download_with_resume_data(data.to_bytes())
    assert DIES in str(caught.value)
    assert "has closed" in str(caught.value)


async def test_ephemeral_session_with_a_state_dir_used_while_it_is_open(
    server: TestServer, out_dir: Path, state_dir: Path
) -> None:
    async with Session(state_dir=state_dir, config=CONFIG) as first:
        data = await resume_data_of(first, server, out_dir / "f.bin")
        async with Session("bg", state_dir=state_dir, config=CONFIG) as background:
            task = await background.download_with_resume_data(data.to_bytes())
            assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == server.file("/f.bin").sha256
