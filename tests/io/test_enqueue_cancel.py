"""A ``download()``/``upload()`` call's one scheduling point comes before it makes
its task: a caller cancelled there made none; a call that returns has its task
in the journal (docs/design.md, "Enqueue: what one call pays")."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from bgtransfer import Configuration, DownloadTask, Session, UploadTask
from bgtransfer._io.journal import JOURNAL_NAME
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

# One slot, held by a first download: the tasks made after it stay queued.
CONFIG = Configuration(max_connections_per_host=1, max_concurrent_transfers=1)

Call = Callable[[Session, int], Awaitable[DownloadTask | UploadTask]]


def _journal_ids(state_dir: Path) -> set[int]:
    """The task ids the journal's database holds, as another connection sees them."""
    connection = sqlite3.connect(f"file:{state_dir / 'cancel' / JOURNAL_NAME}?mode=ro", uri=True)
    try:
        return {row[0] for row in connection.execute("SELECT id FROM tasks")}
    finally:
        connection.close()


@pytest.fixture
def calls(server: TestServer, out_dir: Path, tmp_path: Path) -> dict[str, Call]:
    held = server.add_file("/held.bin", size=10_000)
    server.set_faults(held.path, Faults(hold_after=0))
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 1000)

    async def hold(session: Session, index: int) -> DownloadTask | UploadTask:
        return await session.download(server.url(held.path), out_dir / "held.bin")

    async def download(session: Session, index: int) -> DownloadTask | UploadTask:
        return await session.download(server.url(held.path), out_dir / f"{index}.bin")

    async def upload(session: Session, index: int) -> DownloadTask | UploadTask:
        return await session.upload(server.url(f"/up/{index}"), source)

    return {"hold": hold, "download": download, "upload": upload}


@pytest.mark.parametrize("kind", ["download", "upload"])
async def test_a_caller_cancelled_at_its_scheduling_point_made_no_task(
    calls: dict[str, Call], state_dir: Path, kind: str
) -> None:
    call = calls[kind]
    async with Session("cancel", config=CONFIG, state_dir=state_dir) as session:
        holder = await calls["hold"](session, 0)
        first = await call(session, 0)
        assert _journal_ids(state_dir) == {holder.id, first.id}  # returned: in the journal
        with anyio.CancelScope() as scope:  # anyio's cancellation (a task group's, a timeout)
            scope.cancel()
            await call(session, 1)
        assert scope.cancelled_caught
        # asyncio's own: the call runs up to its scheduling point, then is cancelled there.
        caller = asyncio.ensure_future(call(session, 2))
        await asyncio.sleep(0)
        assert not caller.done()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert [task.id for task in session.tasks()] == [holder.id, first.id]
        second = await call(session, 3)  # the session goes on, with the next id
        assert second.id == first.id + 1
        assert _journal_ids(state_dir) == {holder.id, first.id, second.id}
    assert _journal_ids(state_dir) == {holder.id, first.id, second.id}
    async with Session("cancel", config=CONFIG, state_dir=state_dir) as session:
        assert [task.id for task in session.tasks()] == [holder.id, first.id, second.id]


@pytest.mark.parametrize("kind", ["download", "upload"])
async def test_calls_made_together_share_one_commit(
    calls: dict[str, Call], server: TestServer, state_dir: Path, kind: str
) -> None:
    """An asyncio.gather of calls: each returns its task in the journal, and the
    journal committed them once, not once each."""
    call = calls[kind]
    async with Session("cancel", config=CONFIG, state_dir=state_dir) as session:
        holder = await calls["hold"](session, 0)
        # The first task is held after its headers, and what it put for them is
        # committed: from here on only the calls below write to the journal (no
        # timer's commit of the holder's entry in between).
        await server.wait_held("/held.bin")
        # No event says "headers read": loop turns (not time) until the task
        # shows their length, bounded.
        with anyio.fail_after(30):
            while holder.bytes_expected is None:  # noqa: ASYNC110
                await asyncio.sleep(0)
        journal = session._require_backend().engine._journal  # type: ignore[attr-defined]
        await journal.flush()
        assert journal.statistics().pending == 0
        before = journal.statistics().commits
        tasks = await asyncio.gather(*(call(session, index) for index in range(1, 21)))
        assert journal.statistics().commits == before + 1
        assert {task.id for task in tasks} <= _journal_ids(state_dir)
        one = await call(session, 21)  # alone: its own commit, at once
        assert journal.statistics().commits == before + 2
        assert one.id in _journal_ids(state_dir)
