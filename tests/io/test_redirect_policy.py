"""The redirect policy (issue 22): Configuration.max_redirects, loops refused at
once, and an application's redirect_policy allowing, refusing or rewriting a
redirect. Real loopback test servers (``Faults(redirect_to=...)`` chains)."""

from __future__ import annotations

from pathlib import Path

import pytest

from _helpers import collect, sha256_file
from bgtransfer import (
    Configuration,
    ErrorEvent,
    FinishedEvent,
    RedirectError,
    RetryEvent,
    RetryPolicy,
    Session,
    TaskInfo,
    TransferError,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

RETRYING = RetryPolicy(max_attempts=4, initial_delay=0, jitter=0)


def chain(server: TestServer, hops: int) -> str:
    """``/r0`` redirects to ``/r1``... to ``/r<hops>``, the served file."""
    for n in range(hops):
        server.set_faults(f"/r{n}", Faults(redirect_to=f"/r{n + 1}"))
    return server.url("/r0")


def paths(server: TestServer) -> list[str]:
    return [request.path for request in server.requests]


@pytest.mark.parametrize("limit", [0, 2, 3])
async def test_max_redirects_is_honoured(
    server: TestServer, state_dir: Path, out_dir: Path, limit: int
) -> None:
    served = server.add_file("/r3", size=10_000)
    config = Configuration(max_redirects=limit, retry=RETRYING)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(chain(server, 3), out_dir / "f")
        events = await collect(task.events())
    end = events[-1]
    if limit >= 3:
        assert isinstance(end, FinishedEvent)
        assert sha256_file(out_dir / "f") == served.sha256
        return
    assert isinstance(end, ErrorEvent)
    assert isinstance(end.error, RedirectError)
    assert f"too many redirects: more than {limit} " in str(end.error)
    assert paths(server) == [f"/r{n}" for n in range(limit + 1)]
    assert not any(isinstance(event, RetryEvent) for event in events)
    assert not (out_dir / "f").exists()


async def test_a_redirect_loop_is_refused_at_once(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    server.set_faults("/a", Faults(redirect_to="/b"))
    server.set_faults("/b", Faults(redirect_to=server.url("/a")))
    config = Configuration(retry=RETRYING)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url("/a"), out_dir / "f")
        events = await collect(task.events())
    end = events[-1]
    assert isinstance(end, ErrorEvent)
    assert isinstance(end.error, RedirectError)
    assert f"redirect loop: {server.base_url}/b led back to {server.base_url}/a" in str(end.error)
    assert paths(server) == ["/a", "/b"]
    assert not any(isinstance(event, RetryEvent) for event in events)


async def test_a_policy_sees_every_redirect_and_may_refuse(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    server.add_file("/r2", size=1000)
    seen: list[tuple[TaskInfo, int, str]] = []

    async def policy(info: TaskInfo, status: int, url: str) -> bool:
        seen.append((info, status, url))
        return not url.endswith("/r2")

    config = Configuration(redirect_policy=policy, retry=RETRYING)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(chain(server, 2), out_dir / "f", description="d")
        with pytest.raises(
            RedirectError, match="redirect_policy refused the redirect to"
        ) as raised:
            await task.wait()
    info = TaskInfo(id=task.id, url=server.url("/r0"), description="d")
    assert seen == [(info, 302, server.url("/r1")), (info, 302, server.url("/r2"))]
    assert server.url("/r2") in str(raised.value)
    assert paths(server) == ["/r0", "/r1"]
    assert not (out_dir / "f").exists()


async def test_a_policy_may_rewrite_the_target(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    server.add_file("/wrong", size=1000, seed="wrong")
    right = server.add_file("/right", size=5000, seed="right")
    server.set_faults("/start", Faults(redirect_to="/wrong"))

    def policy(info: TaskInfo, status: int, url: str) -> str:  # (a plain function works too)
        return url.replace("/wrong", "/right")

    async with Session(
        state_dir=state_dir, config=Configuration(redirect_policy=policy)
    ) as session:
        task = await session.download(server.url("/start"), out_dir / "f")
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f") == right.sha256
    assert paths(server) == ["/start", "/right"]


@pytest.mark.parametrize(
    "case",
    [
        ("ftp://127.0.0.1/x", RedirectError, "only http and https are followed"),
        ("/start", RedirectError, "redirect loop"),
        (None, TransferError, "redirect_policy returned a NoneType, not a bool or a str"),
        (ValueError("boom"), TransferError, "the redirect_policy failed: ValueError"),
    ],
)
async def test_a_rewrite_is_checked_as_any_target_and_a_bad_policy_fails_the_task(
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    case: tuple[object, type[Exception], str],
) -> None:
    answer, error, match = case
    server.add_file("/next", size=1000)
    server.set_faults("/start", Faults(redirect_to="/next"))

    async def policy(info: TaskInfo, status: int, url: str) -> object:
        if isinstance(answer, Exception):
            raise answer
        return answer

    config = Configuration(redirect_policy=policy, retry=RETRYING)  # type: ignore[arg-type]
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url("/start"), out_dir / "f")
        with pytest.raises(error, match=match):
            await task.wait()
    assert paths(server) == ["/start"]
