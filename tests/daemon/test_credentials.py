"""Credentials from the application for daemon tasks (issues 20 and 22), with real processes.

A daemon session opened with ``Configuration(auth=<provider>)`` keeps the
provider in the application; a daemon task that meets a 401 waits for the app
(visible in ``bgtransfer status``, holding no connection slot), asks an
attached client (which calls its provider exactly as in-process), or has the
app launched (launch events) and asks it when it attaches. Credentials live in
the daemon's memory only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _helpers import (
    bgtransfer_status,
    daemon_pid,
    kill_daemon,
    sha256_file,
    wait_exited,
    wait_status,
)
from bgtransfer import (
    AuthenticationError,
    BasicAuth,
    BearerToken,
    CancelledEvent,
    Challenge,
    Configuration,
    HTTPStatusError,
    Session,
    TaskInfo,
    TransferError,
)
from bgtransfer.testing import AuthRequirement, TestServer

pytestmark = pytest.mark.asyncio

APP = Path(__file__).with_name("_creds_app.py")
USER, PASSWORD = "alice", "pw-7f3a9c-very-secret"
FAST = {"checkpoint_interval": 0.05, "progress_interval": 0.0}


def task_status(status: dict[str, Any], identifier: str, task_id: int) -> dict[str, Any] | None:
    for session in status["sessions"]:
        if session["identifier"] == identifier:
            for task in session["tasks"]:
                if task["id"] == task_id:
                    return dict(task)
    return None


def session_status(status: dict[str, Any], identifier: str) -> dict[str, Any] | None:
    return next((s for s in status["sessions"] if s["identifier"] == identifier), None)


def waiting_for_app(identifier: str, task_id: int) -> Callable[[dict[str, Any]], bool]:
    def check(status: dict[str, Any]) -> bool:
        task = task_status(status, identifier, task_id)
        return task is not None and task["waiting_for"] == "credentials"

    return check


def assert_no_secret_under(directory: Path, *texts: str) -> None:
    """No file under ``directory`` (journal, configuration, logs, launch status)
    holds any of ``texts``, nor the Basic header made of the credentials."""
    needles = [text.encode() for text in texts]
    needles.append(base64.b64encode(f"{USER}:{PASSWORD}".encode()))
    checked = 0
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            checked += 1
            for needle in needles:
                assert needle not in data, f"{needle!r} found in {path}"
    assert checked


async def test_an_attached_client_is_asked_and_the_task_waits_without_a_slot(
    server: TestServer, daemon_state: Path, out_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider (in this process) is asked with the task and the parsed
    challenge; while it has not answered, the task is "waiting for the app:
    credentials" and holds no connection slot (another task of the same origin,
    limit 1, runs and completes meanwhile); then the file completes byte-exact."""
    caplog.set_level(logging.DEBUG, logger="bgtransfer")
    secret = server.add_file("/secret.bin", size=300_000)
    server.add_file("/open.bin", size=50_000)
    server.require_auth("/secret.bin", AuthRequirement(basic=(USER, PASSWORD), realm="vault"))
    asked: list[tuple[TaskInfo, tuple[Challenge, ...]]] = []
    release = asyncio.Event()

    async def provider(task: TaskInfo, challenges: tuple[Challenge, ...]) -> BasicAuth | None:
        asked.append((task, challenges))
        await release.wait()
        return BasicAuth(USER, PASSWORD)

    config = Configuration(**FAST, auth=provider, max_connections_per_host=1)  # type: ignore[arg-type]
    async with Session("creds", state_dir=daemon_state, config=config, daemon=True) as session:
        task = await session.download(
            server.url("/secret.bin"), out_dir / "secret.bin", description="the vault"
        )
        status = await wait_status(daemon_state, waiting_for_app("creds", task.id))
        shown = task_status(status, "creds", task.id)
        assert shown is not None
        assert shown["activity"] == "waiting for the app: credentials"
        assert shown["state"] == "running"
        served = session_status(status, "creds")
        assert served is not None
        assert served["statistics"]["active"] == 0  # no slot held
        shown_text = await bgtransfer_status(daemon_state)
        assert "0 transferring, 0 waiting for a slot, 1 waiting for the app" in shown_text
        assert f"task {task.id} running" in shown_text
        assert "waiting for the app: credentials" in shown_text
        # The slot it gave back serves the origin's next task (limit 1).
        other = await session.download(server.url("/open.bin"), out_dir / "open.bin")
        await other.wait()
        assert len(asked) == 1
        info, challenges = asked[0]
        assert info == TaskInfo(id=task.id, url=server.url("/secret.bin"), description="the vault")
        assert [(c.scheme, c.realm, c.get("charset")) for c in challenges] == [
            ("basic", "vault", "UTF-8")
        ]
        release.set()
        finished = await task.wait()
    assert finished.location == out_dir / "secret.bin"
    assert sha256_file(out_dir / "secret.bin") == secret.sha256
    sent = [r.headers.get("Authorization") for r in server.requests if r.path == "/secret.bin"]
    assert len(sent) == 2
    assert sent[0] is None
    assert sent[1] is not None
    assert PASSWORD not in caplog.text
    assert_no_secret_under(daemon_state, PASSWORD)


async def test_a_waiting_task_launches_the_app_which_answers_and_the_file_completes(
    server: TestServer, daemon_state: Path, out_dir: Path, tmp_path: Path
) -> None:
    """The app enqueues an auth-protected download and exits before it answers:
    the task waits for the app (``bgtransfer status --json``), the daemon runs
    the launch command (for credentials), the launched app attaches with its
    provider, is asked at once, answers, and the file completes. No secret is
    written anywhere under the state dir (journal, configuration, daemon.log,
    launch.log, launch.json)."""
    secret = server.add_file("/secret.bin", size=200_000)
    server.require_auth("/secret.bin", AuthRequirement(basic=(USER, PASSWORD)))
    record, config_file = tmp_path / "answered.jsonl", tmp_path / "config.json"
    config = {
        **FAST,
        "launch_command": [sys.executable, str(APP), str(record), str(config_file), "answer"],
        "launch_delay": 0.2,
        "credentials": [USER, PASSWORD],
    }
    config_file.write_text(json.dumps(config))
    env = {"BGTRANSFER_IDENTIFIER": "launched", "BGTRANSFER_STATE_DIR": str(daemon_state)}
    destination = out_dir / "secret.bin"
    enqueue = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        str(record),
        str(config_file),
        "enqueue",
        server.url("/secret.bin"),
        str(destination),
        env={**_environ(), **env},
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(enqueue.wait(), 60) == 0

    # Waiting, visible, and the launch for it.
    status = await wait_status(
        daemon_state,
        lambda s: (
            (task := task_status(s, "launched", 1)) is not None
            and (task["waiting_for"] == "credentials" or task["state"] == "completed")
        ),
    )
    launched = await wait_status(
        daemon_state,
        lambda s: (
            (served := session_status(s, "launched")) is not None
            and bool(served["launches"]["history"])
        ),
    )
    served = session_status(launched, "launched")
    assert served is not None
    assert served["launches"]["history"][0]["reason"] == "credentials"
    task = task_status(status, "launched", 1)
    assert task is not None
    if task["state"] != "completed":  # (seen before the launched app answered)
        assert task["activity"] == "waiting for the app: credentials"

    # The launched app wrote its record before it exited; the session stays
    # open while its launch runs.
    await wait_status(
        daemon_state,
        lambda s: (
            (served := session_status(s, "launched")) is None
            or served["launches"]["history"][0]["ended_at"] is not None
        ),
    )
    (run,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert run["ended"] == [[1, "finished"]]
    assert run["asked"] == [[1, server.url("/secret.bin"), ["basic"], "bgtransfer-test"]]
    assert sha256_file(destination) == secret.sha256
    assert_no_secret_under(daemon_state, PASSWORD)


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BGTRANSFER_")}


async def test_cancel_and_suspend_of_a_task_waiting_for_the_app(
    server: TestServer, daemon_state: Path, out_dir: Path
) -> None:
    """Suspended while waiting: it stops waiting (no longer shown so) and, resumed,
    meets the 401 again and asks again; cancelled while waiting: it ends with a
    CancelledEvent, leaves nothing behind, and a late answer changes nothing."""
    server.add_file("/a.bin", size=100_000)
    server.add_file("/b.bin", size=100_000)
    server.require_auth("/a.bin", AuthRequirement(basic=(USER, PASSWORD)))
    # (a.bin's credentials are kept for the origin: b.bin wants others, so it asks)
    server.require_auth("/b.bin", AuthRequirement(basic=(USER, "another")))
    asked: list[int] = []
    answers: dict[int, asyncio.Future[BasicAuth | None]] = {}
    more = asyncio.Event()

    async def provider(task: TaskInfo, challenges: tuple[Challenge, ...]) -> BasicAuth | None:
        asked.append(task.id)
        future = answers[len(asked)] = asyncio.get_running_loop().create_future()
        more.set()
        return await future

    async def until_asked(count: int) -> None:
        async with asyncio.timeout(30):
            while len(asked) < count:
                more.clear()
                await more.wait()

    config = Configuration(**FAST, auth=provider)  # type: ignore[arg-type]
    async with Session("waits", state_dir=daemon_state, config=config, daemon=True) as session:
        a = await session.download(server.url("/a.bin"), out_dir / "a.bin")
        await wait_status(daemon_state, waiting_for_app("waits", a.id))
        a.suspend()
        status = await wait_status(
            daemon_state,
            lambda s: (
                (t := task_status(s, "waits", a.id)) is not None and t["state"] == "suspended"
            ),
        )
        shown = task_status(status, "waits", a.id)
        assert shown is not None
        assert shown["waiting_for"] is None
        a.resume()
        await wait_status(daemon_state, waiting_for_app("waits", a.id))
        await until_asked(2)
        answers[2].set_result(BasicAuth(USER, PASSWORD))
        await a.wait()
        assert sha256_file(out_dir / "a.bin") == server.file("/a.bin").sha256

        b = await session.download(server.url("/b.bin"), out_dir / "b.bin")
        await wait_status(daemon_state, waiting_for_app("waits", b.id))
        await until_asked(3)
        await b.cancel()
        events = [event async for event in b.events()]
        assert isinstance(events[-1], CancelledEvent)
        answers[3].set_result(BasicAuth(USER, PASSWORD))  # too late: refused, ignored
        assert b.state.value == "completed"
    assert asked == [a.id, a.id, b.id]
    assert not (out_dir / "b.bin").exists()
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.bin"]


PARITY_CASES = ["wrong", "none", "raises", "returns-junk"]


@pytest.mark.parametrize("case", PARITY_CASES)
async def test_the_app_provider_s_answers_end_tasks_as_in_process(
    case: str, background: Callable[..., Session], tmp_path: Path, server: TestServer
) -> None:
    """Each answer a provider may give ends the task the same way in both
    backends: wrong credentials are tried once and their second 401 is an
    AuthenticationError; None lets the 401 stand (HTTPStatusError 401); a
    provider that raises (or returns something else) fails the task naming the
    type, never the message."""
    server.add_file("/f.bin", size=10_000)
    server.require_auth("/f.bin", AuthRequirement(basic=(USER, PASSWORD)))
    calls: list[int] = []

    async def provider(task: TaskInfo, challenges: tuple[Challenge, ...]) -> Any:
        calls.append(task.id)
        if case == "wrong":
            return BasicAuth(USER, "a-wrong-guess")
        if case == "raises":
            raise ValueError(f"a message with {PASSWORD}")
        if case == "returns-junk":
            return 42
        return None

    config = Configuration(**FAST, auth=provider)
    async with background("parity", state_dir=tmp_path / "state", config=config) as session:
        task = await session.download(server.url("/f.bin"), tmp_path / "f.bin")
        with pytest.raises(TransferError) as caught:
            await task.wait()
    error = caught.value
    requests = [r for r in server.requests if r.path == "/f.bin"]
    if case == "wrong":
        assert type(error) is AuthenticationError
        assert (len(calls), len(requests)) == (2, 2)  # asked again on its 401: the same
    elif case == "none":
        assert type(error) is HTTPStatusError
        assert error.status == 401
        assert (len(calls), len(requests)) == (1, 1)
    elif case == "raises":
        assert str(error).endswith("the auth provider failed: ValueError")
        assert PASSWORD not in str(error)
    else:
        assert "the auth provider returned a int, not BasicAuth, BearerToken or None" in str(error)
    assert not (tmp_path / "f.bin").exists()


async def test_a_client_without_a_provider_takes_the_session_and_the_401_stands(
    server: TestServer, daemon_state: Path, out_dir: Path
) -> None:
    """A task waits for the app; a client attaches with a configuration without a
    provider: as for any configuration change, the session is reopened under it
    (the task goes on from where it stood), and the 401 is answered as an
    in-process session without a provider answers it: HTTPStatusError 401,
    never a silent drop nor an endless wait."""
    server.add_file("/f.bin", size=10_000)
    server.require_auth("/f.bin", AuthRequirement(basic=(USER, PASSWORD)))

    async def never(task: TaskInfo, challenges: tuple[Challenge, ...]) -> BasicAuth | None:
        await asyncio.Event().wait()
        return None

    with_provider = Configuration(**FAST, auth=never)  # type: ignore[arg-type]
    async with Session("swap", state_dir=daemon_state, config=with_provider, daemon=True) as s:
        task = await s.download(server.url("/f.bin"), out_dir / "f.bin")
        await wait_status(daemon_state, waiting_for_app("swap", task.id))
    plain = Configuration(**FAST)
    async with Session("swap", state_dir=daemon_state, config=plain, daemon=True) as session:
        with pytest.raises(HTTPStatusError) as caught:
            await session.tasks()[0].wait()
    assert type(caught.value) is HTTPStatusError
    assert caught.value.status == 401


async def test_after_a_daemon_crash_the_task_asks_again(
    server: TestServer, daemon_state: Path, out_dir: Path
) -> None:
    """The daemon is SIGKILLed while a task waits for the app: the credentials
    question was in its memory only, "the app answers" was not (it is no
    secret). The next client brings up a new daemon, whose task meets the 401
    again and asks that client, and the file completes byte-exact."""
    secret = server.add_file("/f.bin", size=150_000)
    server.require_auth("/f.bin", AuthRequirement(bearer=PASSWORD))

    async def never(task: TaskInfo, challenges: tuple[Challenge, ...]) -> BearerToken | None:
        await asyncio.Event().wait()
        return None

    asked: list[str] = []

    async def answer(task: TaskInfo, challenges: tuple[Challenge, ...]) -> BearerToken | None:
        asked.append(challenges[0].scheme)
        return BearerToken(PASSWORD)

    first = Configuration(**FAST, auth=never)  # type: ignore[arg-type]
    async with Session("crash", state_dir=daemon_state, config=first, daemon=True) as session:
        task = await session.download(server.url("/f.bin"), out_dir / "f.bin")
        await wait_status(daemon_state, waiting_for_app("crash", task.id))
    stored = json.loads((daemon_state / "crash" / "daemon-session.json").read_text())
    assert stored["auth"] == {"kind": "app"}
    # The app has gone; the task waits in the daemon, which is then killed.
    await wait_status(daemon_state, waiting_for_app("crash", task.id))
    pid = daemon_pid(daemon_state)
    assert pid is not None
    kill_daemon(daemon_state)
    await wait_exited(pid)
    second = Configuration(**FAST, auth=answer)  # type: ignore[arg-type]
    async with Session("crash", state_dir=daemon_state, config=second, daemon=True) as session:
        (again,) = session.tasks()
        assert again.id == task.id
        finished = await again.wait()
    assert asked == ["bearer"]
    assert finished.location == out_dir / "f.bin"
    assert sha256_file(out_dir / "f.bin") == secret.sha256
    assert_no_secret_under(daemon_state, PASSWORD)
