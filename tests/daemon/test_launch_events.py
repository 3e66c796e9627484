"""Launch events through the daemon, with real processes (issue 20).

An application enqueues files on a throttled loopback server and exits; when
the batch is done the daemon runs its ``launch_command`` once, with the
session's identifier, state dir and cursor in the environment; the launched
process reads the events after that cursor and acknowledges nothing, so the
next launch waits twice as long. ``bgtransfer status --json`` shows it all.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _helpers import bgtransfer_status, kill_daemon, sha256_file, wait_daemon_gone, wait_status
from bgtransfer import Configuration, Session
from bgtransfer._daemon.control import daemon_status
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

LAUNCHED = Path(__file__).with_name("_launched.py")
EXAMPLE = Path(__file__).parents[2] / "examples" / "launch_app.py"
FAST = {"checkpoint_interval": 0.05, "progress_interval": 0.0}


async def wait_launches(
    state_dir: Path, identifier: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Until the session's launch status in ``bgtransfer status`` satisfies
    ``predicate``; return it. (The status is another process's: read as a
    script would, a few times a second, bounded.)"""

    def launches(status: dict[str, Any]) -> dict[str, Any] | None:
        for session in status["sessions"]:
            shown = session.get("launches")
            if session["identifier"] == identifier and shown and predicate(shown):
                return dict(shown)
        return None

    return launches(await wait_status(state_dir, lambda status: launches(status) is not None)) or {}


def ended(count: int) -> Callable[[dict[str, Any]], bool]:
    def check(launches: dict[str, Any]) -> bool:
        history = launches["history"]
        return len(history) >= count and history[count - 1]["ended_at"] is not None

    return check


async def test_the_app_is_launched_once_per_batch_and_backs_off_while_it_does_not_acknowledge(
    server: TestServer, daemon_state: Path, out_dir: Path, run_app: Any, tmp_path: Path
) -> None:
    items = []
    for index in range(3):  # throttled: still running when the application exits
        path = f"/f{index}.bin"
        server.add_file(path, size=100_000)
        server.set_faults(path, Faults(drip=(20_000, 0.02)))
        items.append({"url": server.url(path), "destination": str(out_dir / f"f{index}.bin")})
    record, config_file = tmp_path / "launched.jsonl", tmp_path / "config.json"
    delay = 0.3
    config = {
        **FAST,
        "launch_command": [sys.executable, str(LAUNCHED), str(record), str(config_file)],
        "launch_delay": delay,
    }
    config_file.write_text(json.dumps(config))
    common = {"identifier": "launch", "state_dir": str(daemon_state), "config": config}
    app = await run_app({**common, "mode": "enqueue", "files": items})
    created = [(await app.until("created"))["created"] for _ in items]
    assert await app.finish() == 0

    launches = await wait_launches(daemon_state, "launch", ended(2))
    first, second = launches["history"][:2]
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    # The first launch came once the whole batch had ended: it saw every file.
    assert sorted(task for task, _seq in runs[0]["finished"]) == sorted(created)
    assert runs[0]["env"] == {
        "BGTRANSFER_IDENTIFIER": "launch",
        "BGTRANSFER_STATE_DIR": str(daemon_state),
        "BGTRANSFER_CURSOR": "0",
    }
    assert runs[0]["cwd"] == os.path.expanduser("~")
    assert not runs[0]["listen"]
    assert (first["cursor"], first["status"], first["error"]) == (0, 0, None)
    assert first["through"] == max(seq for _task, seq in runs[0]["finished"])
    # Nobody acknowledged: the same events wait, and the next launch waited twice as long.
    assert second["cursor"] == 0
    assert sorted(runs[1]["finished"]) == sorted(runs[0]["finished"])
    assert second["started_at"] - first["ended_at"] >= 2 * delay - 1e-6
    assert launches["launches"] >= 2
    for index, item in enumerate(items):
        assert sha256_file(Path(item["destination"])) == server.file(f"/f{index}.bin").sha256

    # `bgtransfer status` says it in words too.
    shown = await bgtransfer_status(daemon_state)
    assert "launches: " in shown
    assert f"cursor 0: exit status 0  {sys.executable} {LAUNCHED}" in shown

    # The application acknowledges: nothing waits any more, and the session closes.
    await wait_launches(
        daemon_state, "launch", lambda status: status["history"][-1]["ended_at"] is not None
    )
    explicit = Configuration(**config, acknowledge="explicit")
    async with Session("launch", state_dir=daemon_state, config=explicit, daemon=True) as session:
        await session.acknowledge(*[task.id for task in session.tasks()])
    # Closed: nothing waits. (At once when the daemon has taken the acknowledgement
    # before the detach; else its watch closes it a moment later.)
    async with asyncio.timeout(60):
        while True:
            status = await daemon_status(daemon_state)
            assert status is not None
            if [s["identifier"] for s in status["sessions"]] == []:
                break
            await asyncio.sleep(0.02)
    stored = json.loads((daemon_state / "launch" / "launch.json").read_text())
    assert stored["acknowledged"] == stored["latest"]
    assert stored["delay"] == delay  # reset by the acknowledgement


async def test_the_seed_scenario_example_runs(
    server: TestServer, daemon_state: Path, tmp_path: Path
) -> None:
    """examples/launch_app.py: enqueue five files, exit, be launched when they
    are done, collect them (acknowledging: the session then closes)."""
    urls = []
    for index in range(5):
        server.add_file(f"/{index}.jpg", size=50_000)
        server.set_faults(f"/{index}.jpg", Faults(drip=(10_000, 0.02)))
        urls.append(server.url(f"/{index}.jpg"))
    inbox = tmp_path / "inbox"
    env = {**os.environ, "BGTRANSFER_STATE_DIR": str(daemon_state)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "enqueue",
        str(inbox),
        *urls,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert out == b"enqueued 5 downloads; exiting\n"
    identifier = "com.example.launch-app"
    stored = daemon_state / identifier / "launch.json"
    async with asyncio.timeout(60):  # the default launch_delay (5 s), then the collect
        while True:  # the session closed once its launch ended, all acknowledged
            status = await daemon_status(daemon_state)
            open_ids = [] if status is None else [s["identifier"] for s in status["sessions"]]
            # (launch.json is also written while the launch runs: wait for its end.)
            if identifier not in open_ids and _last_launch_ended(stored):
                break
            await asyncio.sleep(0.05)  # another process's state, read as a script would
    (launch,) = json.loads(stored.read_text())["history"]
    assert (launch["status"], launch["cursor"]) == (0, 0)
    log = (daemon_state / identifier / "launch.log").read_text()
    assert f"launched for {identifier} after event 0" in log
    for index in range(5):
        assert f"finished: {inbox / f'{index}.bin'}" in log
        assert sha256_file(inbox / f"{index}.bin") == server.file(f"/{index}.jpg").sha256


async def test_a_restarted_daemon_goes_on_with_the_launch_history(
    server: TestServer, daemon_state: Path, out_dir: Path, run_app: Any, tmp_path: Path
) -> None:
    """SIGKILL the daemon after a launch nobody acknowledged: the next daemon
    reopens the session, restores its launch status (history, doubled delay)
    and launches again for the same events."""
    server.add_file("/a.bin", size=20_000)
    record, config_file = tmp_path / "launched.jsonl", tmp_path / "config.json"
    config = {
        **FAST,
        "launch_command": [sys.executable, str(LAUNCHED), str(record), str(config_file)],
        "launch_delay": 0.2,
    }
    config_file.write_text(json.dumps(config))
    files = [{"url": server.url("/a.bin"), "destination": str(out_dir / "a.bin")}]
    common = {"identifier": "again", "state_dir": str(daemon_state), "config": config}
    app = await run_app({**common, "mode": "enqueue", "files": files})
    await app.until("created")
    assert await app.finish() == 0
    stored = daemon_state / "again" / "launch.json"
    first = (await wait_launches(daemon_state, "again", ended(1)))["history"][0]
    async with asyncio.timeout(30):  # written as soon as the launch ended
        while True:
            if stored.exists() and json.loads(stored.read_text())["history"][0]["ended_at"]:
                break
            await asyncio.sleep(0.02)  # another process's file, read as a script would
    kill_daemon(daemon_state)
    await wait_daemon_gone(daemon_state)
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bgtransfer",
        "daemon",
        "--state-dir",
        str(daemon_state),
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        launches = await wait_launches(daemon_state, "again", ended(2))
    finally:
        daemon.terminate()
        await asyncio.wait_for(daemon.wait(), 30)
    assert launches["history"][0] == first
    assert launches["history"][1]["cursor"] == 0
    assert launches["launches"] >= 2
    assert len(record.read_text().splitlines()) >= 2


async def test_acknowledging_out_of_order_moves_the_cursor_only_past_a_complete_prefix(
    server: TestServer, daemon_state: Path, out_dir: Path
) -> None:
    """The launch cursor means "every event up to here is acknowledged": an app
    that acknowledges the second end first leaves it below the first."""
    for name in ("a", "b"):
        server.add_file(f"/{name}", size=10_000)
    config = Configuration(
        **FAST, acknowledge="explicit", launch_command=["/bin/true"], launch_delay=3600.0
    )
    async with Session("order", state_dir=daemon_state, config=config, daemon=True) as session:
        first = await session.download(server.url("/a"), out_dir / "a")
        await first.wait()
        second = await session.download(server.url("/b"), out_dir / "b")
        ended = await second.wait()
        assert isinstance(ended.seq, int)
        await wait_launches(daemon_state, "order", lambda s: s["latest"] == ended.seq)
        await session.acknowledge(second.id)
        launches = await wait_launches(daemon_state, "order", lambda s: True)
        assert (launches["acknowledged"], launches["latest"]) == (0, ended.seq)
        await session.acknowledge(first.id)
        launches = await wait_launches(daemon_state, "order", lambda s: True)
        assert launches["acknowledged"] == ended.seq
        assert launches["history"] == []  # attached all along: nothing was launched


def _last_launch_ended(stored: Path) -> bool:
    """launch.json exists and its last launch has ended (written whole: by rename)."""
    try:
        history = json.loads(stored.read_text())["history"]
    except FileNotFoundError:
        return False
    return bool(history) and history[-1]["ended_at"] is not None
