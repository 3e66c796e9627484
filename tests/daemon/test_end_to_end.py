"""The daemon with real processes: transfers outlive the application's process."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from _helpers import daemon_pid, kill_daemon, sha256_file, wait_daemon_gone
from bgtransfer import Configuration, Session, SessionInUseError
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

FAST = {"checkpoint_interval": 0.05, "progress_interval": 0.0}


def files_for(server: TestServer, out: Path, count: int, size: int) -> list[dict[str, Any]]:
    items = []
    for index in range(count):
        path = f"/f{index}.bin"
        server.add_file(path, size=size)
        items.append({"url": server.url(path), "destination": str(out / f"f{index}.bin")})
    return items


async def test_a_client_enqueues_and_exits_another_collects_every_event(
    server: TestServer, daemon_state: Path, out_dir: Path, run_app: Any
) -> None:
    items = files_for(server, out_dir, 5, 200_000)
    for index in range(5):  # throttled: still running when the first client exits
        server.set_faults(f"/f{index}.bin", Faults(drip=(20_000, 0.02)))
    common = {"identifier": "e2e", "state_dir": str(daemon_state), "config": FAST}
    first = await run_app({**common, "mode": "enqueue", "files": items})
    created = [(await first.until("created"))["created"] for _ in items]
    assert await first.finish() == 0
    assert first.lines[-1] == {"done": True}
    second = await run_app({**common, "mode": "collect", "expect": 5})
    terminals = [await second.until("terminal") for _ in items]
    assert await second.finish() == 0
    assert sorted(line["terminal"] for line in terminals) == sorted(created)
    assert {line["kind"] for line in terminals} == {"FinishedEvent"}
    for index, item in enumerate(items):
        assert sha256_file(Path(item["destination"])) == server.file(f"/f{index}.bin").sha256


async def test_sigkilled_daemon_is_replaced_and_continues_from_the_journal(
    server: TestServer, daemon_state: Path, out_dir: Path
) -> None:
    size, enough = 2_000_000, 300_000
    served = server.add_file("/big.bin", size=size)
    # Throttled (a checkpoint records progress, so bytes must keep coming), then
    # held well past ``enough`` (still running at the kill however slow the test
    # is to get there), the first request only.
    server.set_faults("/big.bin", Faults(drip=(16_384, 0.02), hold_after=enough + 300_000), times=1)
    config = Configuration(**FAST)
    destination = out_dir / "big.bin"
    session = Session("kill", state_dir=daemon_state, config=config, daemon=True)
    async with session:  # (left before the kill: an attached client would reconnect)
        task = await session.download(server.url("/big.bin"), destination)
        journal = session.directory / "journal.sqlite3"
        await wait_vouched(journal, task.id, enough)
    pid = daemon_pid(daemon_state)
    assert pid is not None
    kill_daemon(daemon_state)  # SIGKILL mid-transfer, with no client attached
    await wait_daemon_gone(daemon_state)
    vouched = await wait_vouched(journal, task.id, enough)  # what it holds now, for good
    assert vouched < size
    async with Session("kill", state_dir=daemon_state, config=config, daemon=True) as session:
        assert daemon_pid(daemon_state) not in (None, pid)  # a new daemon
        (task,) = session.tasks()
        finished = await asyncio.wait_for(task.wait(), 60)
    assert finished.location == destination
    assert sha256_file(destination) == served.sha256
    ranged = [r for r in server.requests if r.path == "/big.bin" and "Range" in r.headers]
    assert ranged, "the new daemon fetched the whole file again"
    assert ranged[-1].headers["Range"] == f"bytes={vouched}-"


async def wait_vouched(journal: Path, task_id: int, at_least: int) -> int:
    """Until the journal vouches for ``at_least`` bytes of the task; return its count."""
    async with asyncio.timeout(30):
        while True:
            with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
                row = db.execute("SELECT offset FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is not None and row[0] >= at_least:
                return int(row[0])
            # A real condition, read as another process would (SQLite has no
            # change notification): the journal's row.
            await asyncio.sleep(0.01)


async def test_a_second_client_gets_session_in_use_naming_the_holder(
    daemon_state: Path, run_app: Any
) -> None:
    common = {"identifier": "one", "state_dir": str(daemon_state), "mode": "hold"}
    holder = await run_app(common)
    pid = (await holder.until("attached"))["attached"]
    with pytest.raises(SessionInUseError) as caught:
        async with Session("one", state_dir=daemon_state, daemon=True):
            pass
    assert caught.value.pid == pid
    assert str(pid) in str(caught.value)
    # An in-process session cannot open what the daemon serves: its lock is held.
    with pytest.raises(SessionInUseError) as local:
        async with Session("one", state_dir=daemon_state):
            pass
    assert local.value.pid == daemon_pid(daemon_state)


async def test_a_sigkilled_client_releases_its_lease_and_tasks_go_on(
    server: TestServer, daemon_state: Path, out_dir: Path, run_app: Any
) -> None:
    served = server.add_file("/slow.bin", size=300_000)
    server.set_faults("/slow.bin", Faults(hold_after=100_000), times=1)
    destination = out_dir / "slow.bin"
    common = {"identifier": "k", "state_dir": str(daemon_state), "config": FAST}
    files = [{"url": server.url("/slow.bin"), "destination": str(destination)}]
    first = await run_app({**common, "mode": "enqueue", "files": files})
    await first.until("created")
    assert await first.finish() == 0
    streaming = await run_app({**common, "mode": "collect", "expect": 1})
    await streaming.until("attached")
    await asyncio.wait_for(server.wait_held("/slow.bin"), 30)
    streaming.kill()  # SIGKILL while it reads the event stream
    assert await streaming.finish() == -9
    server.release("/slow.bin")
    again = await run_app({**common, "mode": "collect", "expect": 1})
    terminal = await again.until("terminal")
    assert terminal["kind"] == "FinishedEvent"
    assert await again.finish() == 0
    assert sha256_file(destination) == served.sha256


async def test_two_clients_starting_the_daemon_at_once_share_one(
    daemon_state: Path, run_app: Any
) -> None:
    common = {"state_dir": str(daemon_state), "mode": "hold"}
    a = await run_app({**common, "identifier": "a"})
    b = await run_app({**common, "identifier": "b"})
    await a.until("attached")
    await b.until("attached")
    pid = daemon_pid(daemon_state)
    async with Session("c", state_dir=daemon_state, daemon=True) as session:
        assert session.tasks() == []
    assert daemon_pid(daemon_state) == pid
    log = (daemon_state / "daemon.log").read_text()
    assert log.count("listening on") == 1, log


async def test_a_restarted_daemon_continues_without_any_client(
    server: TestServer, daemon_state: Path, out_dir: Path
) -> None:
    """At start the daemon reopens every session with running tasks: nothing
    waits for the application to come back."""
    served = server.add_file("/alone.bin", size=1_000_000)
    # Dripped (checkpoints follow progress), then held: still running at the kill.
    server.set_faults("/alone.bin", Faults(drip=(16_384, 0.02), hold_after=400_000), times=1)
    config = Configuration(**FAST)
    destination = out_dir / "alone.bin"
    async with Session("alone", state_dir=daemon_state, config=config, daemon=True) as session:
        task = await session.download(server.url("/alone.bin"), destination)
        journal = session.directory / "journal.sqlite3"
        await wait_vouched(journal, task.id, 100_000)
    kill_daemon(daemon_state)  # (with no client attached: one would launch it again)
    await wait_daemon_gone(daemon_state)
    vouched = await wait_vouched(journal, task.id, 100_000)
    # A daemon started by hand, no client ever attaching; it exits once idle.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bgtransfer",
        "daemon",
        "--state-dir",
        str(daemon_state),
        "--idle-timeout",
        "0.1",
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err
    assert b"session 'alone' open (1 tasks)" in err
    assert sha256_file(destination) == served.sha256
    assert server.requests[-1].headers["Range"] == f"bytes={vouched}-"


async def test_a_client_killed_while_streaming_is_followed_from_its_cursor(
    server: TestServer, daemon_state: Path, out_dir: Path, run_app: Any
) -> None:
    """Issue 20: a client SIGKILLed while it reads events; the next one passes
    the last ``seq`` it saw as ``since`` and gets every terminal event after it
    (those that ended while no client was attached included), and none before."""
    items = files_for(server, out_dir, 4, 100_000)
    for index in (2, 3):
        server.set_faults(f"/f{index}.bin", Faults(hold_after=50_000), times=1)
    common = {"identifier": "cursor", "state_dir": str(daemon_state), "config": FAST}
    first = await run_app({**common, "mode": "enqueue", "files": items})
    created = [(await first.until("created"))["created"] for _ in items]
    assert await first.finish() == 0
    reader = await run_app({**common, "mode": "collect", "expect": 4, "since": 0})
    seen = [await reader.until("terminal") for _ in range(2)]
    for index in (2, 3):
        await asyncio.wait_for(server.wait_held(f"/f{index}.bin"), 30)
    reader.kill()  # SIGKILL while it streams
    assert await reader.finish() == -9
    assert sorted(line["terminal"] for line in seen) == created[:2]
    cursor = max(line["seq"] for line in seen)
    for index in (2, 3):
        server.release(f"/f{index}.bin")
    again = await run_app({**common, "mode": "collect", "expect": 2, "since": cursor})
    rest = [await again.until("terminal") for _ in range(2)]
    assert await again.finish() == 0
    assert sorted(line["terminal"] for line in rest) == created[2:]
    assert {line["kind"] for line in rest} == {"FinishedEvent"}
    assert all(line["seq"] > cursor for line in rest)
    for index, item in enumerate(items):
        assert sha256_file(Path(item["destination"])) == server.file(f"/f{index}.bin").sha256
