"""``bgtransfer ls|pause|resume|cancel``: a session's tasks, from another process."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_helpers import Cli, json_lines, make_cli, read_until

from _helpers import kill_daemon
from bgtransfer import Session
from bgtransfer.testing import Faults, ThreadedTestServer

SESSION = "cli-tasks"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return make_cli(tmp_path)


@pytest.fixture
def threaded_server() -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer() as server:
        yield server


def ls(cli: Cli) -> list[dict[str, object]]:
    result = cli.run("ls", "--session", SESSION, "--json")
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout)


def test_ls_pause_resume_cancel_a_session_left_by_an_interrupted_get(
    cli: Cli, threaded_server: ThreadedTestServer
) -> None:
    one = threaded_server.add_file("/t/one.bin", size=200_000)
    two = threaded_server.add_file("/t/two.bin", size=200_000)
    for file in (one, two):  # every request is held after 10 kB: nothing ends meanwhile
        threaded_server.set_faults(file.path, Faults(hold_after=10_000))
    urls = [threaded_server.url(one.path), threaded_server.url(two.path)]
    get = cli.start("get", "--json", "--session", SESSION, *urls)
    held: set[object] = set()

    def both_held(record: dict[str, object]) -> bool:
        if record["event"] == "progress" and record["bytes"] == 10_000:
            held.add(record["url"])
        return len(held) == 2

    read_until(get, both_held)
    get.send_signal(signal.SIGINT)
    get.communicate(timeout=60)
    assert get.returncode == 130
    for file in (one, two):  # the commands below open the session: its tasks go on, held
        threaded_server.set_faults(file.path, Faults(hold_after=0))

    tasks = ls(cli)
    assert [(t["url"], t["state"]) for t in tasks] == [(urls[0], "running"), (urls[1], "running")]
    assert tasks[0]["bytes_expected"] == 200_000
    assert tasks[0]["destination"] == str(cli.cwd / "one.bin")
    first, second = (str(t["id"]) for t in tasks)

    plain = cli.run("ls", "--session", SESSION)
    assert plain.returncode == 0
    assert f"{urls[0]} -> {cli.cwd / 'one.bin'}" in plain.stdout

    paused = cli.run("pause", "--session", SESSION, first)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == f"task {first}: suspended  {urls[0]}\n"
    assert [t["state"] for t in ls(cli)] == ["suspended", "running"]

    assert cli.run("resume", "--session", SESSION).returncode == 0  # all of them
    assert [t["state"] for t in ls(cli)] == ["running", "running"]

    cancelled = cli.run("cancel", "--session", SESSION, second)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"task {second}: cancelled  {urls[1]}\n"
    left = ls(cli)[1]
    assert (left["url"], left["state"], left["outcome"]) == (urls[1], "completed", "cancelled")
    partials = cli.state / SESSION / "partials"
    assert len([p for p in partials.iterdir() if not p.name.startswith(".")]) == 1

    missing = cli.run("pause", "--session", SESSION, "99")
    assert missing.returncode == 1
    assert missing.stderr == "bgtransfer: no task 99 in this session\n"

    # get continues what is left: the paused-then-resumed task finishes.
    for file in (one, two):
        threaded_server.set_faults(file.path, Faults())
        threaded_server.release(file.path)
    again = cli.run("get", "--session", SESSION, urls[0])
    assert again.returncode == 0, again.stderr
    assert (cli.cwd / "one.bin").read_bytes() == one.data
    assert not (cli.cwd / "two.bin").exists()


def test_ls_of_a_session_that_does_not_exist_says_so(cli: Cli) -> None:
    result = cli.run("ls", "--session", "nothing-here")
    assert result.returncode == 1
    assert result.stderr == f"bgtransfer: no session 'nothing-here' in {cli.state}\n"
    assert not (cli.state / "nothing-here").exists()


def test_state_dir_option_is_honoured(cli: Cli, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / SESSION).mkdir(parents=True)
    result = cli.run("ls", "--session", SESSION, "--state-dir", str(elsewhere), "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_ls_pause_cancel_through_the_daemon(cli: Cli, threaded_server: ThreadedTestServer) -> None:
    file = threaded_server.add_file("/d/data.bin", size=100_000)
    threaded_server.set_faults(file.path, Faults(hold_after=0))  # it stays running
    url = threaded_server.url(file.path)

    async def enqueue() -> None:
        async with Session(SESSION, state_dir=cli.state, daemon=True) as session:
            await session.download(url, cli.cwd / "data.bin")

    try:
        asyncio.run(enqueue())  # the client leaves; the daemon keeps the task
        tasks = json_lines(cli.run("ls", "--daemon", "--session", SESSION, "--json").stdout)
        assert [(t["url"], t["state"]) for t in tasks] == [(url, "running")]
        task = str(tasks[0]["id"])
        paused = cli.run("pause", "--daemon", "--session", SESSION, task)
        assert paused.stdout == f"task {task}: suspended  {url}\n", paused.stderr
        cancelled = cli.run("cancel", "--daemon", "--session", SESSION)
        assert cancelled.stdout == f"task {task}: cancelled  {url}\n", cancelled.stderr
    finally:
        threaded_server.release(file.path)
        kill_daemon(cli.state)
    assert not (cli.cwd / "data.bin").exists()
