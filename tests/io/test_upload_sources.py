"""What ``upload()`` takes of its source file: the file a link names at the call
(resolved, with its identity), by the kernel's name for the open file on Linux
or by ``realpath`` elsewhere; against the real loopback server, which hashes
every body it receives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _helpers import sha256_bytes
from bgtransfer import Configuration, FinishedEvent, InvalidSourceError, Session
from bgtransfer._io import sources
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

RESOLUTIONS = ["kernel", "realpath"]


@pytest.fixture(params=RESOLUTIONS)
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way of resolving a source: the descriptor's name, or ``realpath``."""
    if request.param == "realpath":
        monkeypatch.setattr(sources, "_O_PATH", 0)
    elif not sources._O_PATH:
        pytest.skip("no O_PATH here")
    return str(request.param)


def _release(root: Path, number: int) -> bytes:
    folder = root / f"release-{number}"
    folder.mkdir()
    data = os.urandom(5000 + number)
    (folder / "app.bin").write_bytes(data)
    return data


def _point(link: Path, target: str) -> None:
    """Swap ``link`` to ``target`` atomically (as a deployment does)."""
    staged = link.with_name(link.name + ".new")
    staged.symlink_to(target)
    staged.replace(link)


async def test_a_swapped_link_does_not_change_what_a_queued_upload_sends(
    server: TestServer, tmp_path: Path, resolution: str
) -> None:
    """``current -> release-1`` at the call: the task sends release-1's file,
    whatever ``current`` names when its turn comes; a new call takes release-2's."""
    first, second = _release(tmp_path, 1), _release(tmp_path, 2)
    current = tmp_path / "current"
    current.symlink_to("release-1")
    blocker = tmp_path / "blocker.bin"
    blocker.write_bytes(b"x" * 100)
    server.set_faults("/blocker", Faults(hold_after=0))
    config = Configuration(max_connections_per_host=1)
    async with Session(config=config) as session:
        held = await session.upload(server.url("/blocker"), blocker)
        await server.wait_held("/blocker")
        queued = await session.upload(server.url("/queued"), current / "app.bin")
        assert queued.source == tmp_path.resolve() / "release-1" / "app.bin"
        _point(current, "release-2")
        later = await session.upload(server.url("/later"), current / "app.bin")
        assert later.source == tmp_path.resolve() / "release-2" / "app.bin"
        server.release("/blocker")
        results = [await task.wait() for task in (held, queued, later)]
    assert all(isinstance(result, FinishedEvent) for result in results)
    received = {u.path: u.sha256 for u in server.uploads if u.complete}
    assert received["/queued"] == sha256_bytes(first)
    assert received["/later"] == sha256_bytes(second)


async def test_relative_and_linked_sources_resolve_alike_both_ways(
    server: TestServer, tmp_path: Path, resolution: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _release(tmp_path, 1)
    (tmp_path / "linked").symlink_to(tmp_path / "release-1")
    (tmp_path / "file-link.bin").symlink_to("release-1/app.bin")
    monkeypatch.chdir(tmp_path)
    given = ["linked/app.bin", "file-link.bin", "release-1/../linked/./app.bin"]
    expected = tmp_path.resolve() / "release-1" / "app.bin"
    async with Session() as session:
        tasks = [await session.upload(server.url(f"/r/{i}"), f) for i, f in enumerate(given)]
        assert [task.source for task in tasks] == [expected] * len(given)
        results = [await task.wait() for task in tasks]
    assert all(isinstance(result, FinishedEvent) for result in results)
    assert {u.sha256 for u in server.uploads if u.complete} == {sha256_bytes(data)}


async def test_sources_that_cannot_be_sent_are_refused_at_the_call_both_ways(
    server: TestServer, tmp_path: Path, resolution: str
) -> None:
    """Nothing is opened for reading at the call: a FIFO is refused without
    blocking; a link loop, a missing file and a NUL byte say what is wrong."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "loop-a").symlink_to("loop-b")
    (tmp_path / "loop-b").symlink_to("loop-a")
    async with Session() as session:
        with pytest.raises(InvalidSourceError, match="is not a regular file"):
            await session.upload(server.url("/f"), fifo)
        with pytest.raises(InvalidSourceError, match=r"loop-a.*cannot be used"):
            await session.upload(server.url("/f"), tmp_path / "loop-a")
        with pytest.raises(InvalidSourceError, match=r"gone\.bin' does not exist"):
            await session.upload(server.url("/f"), str(tmp_path / "gone.bin"))
        with pytest.raises(InvalidSourceError, match="cannot be used"):
            await session.upload(server.url("/f"), str(tmp_path / "nul\0.bin"))
        with pytest.raises(InvalidSourceError, match="is a directory"):
            await session.upload(server.url("/f"), "")
        assert session.tasks() == []
    assert not server.uploads
