"""The ``bgtransfer`` logger (issue 22): DEBUG says every attempt, its outcome,
retries and their delay, redirects and resumes; INFO says how each task ended;
no secret ever reaches a record, a repr, an error or the state directory."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from _helpers import collect, sha256_file
from _tinyproxy import TinyProxy
from bgtransfer import (
    Configuration,
    ErrorEvent,
    FinishedEvent,
    InvalidURLError,
    RetryPolicy,
    Session,
)
from bgtransfer.testing import Faults, TestServer

FAST = RetryPolicy(initial_delay=0.01, max_delay=0.01, jitter=0)


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("bgtransfer")]


@pytest.mark.asyncio
async def test_debug_says_attempts_outcomes_retries_redirects_and_resumes(
    server: TestServer, out_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bgtransfer")
    served = server.add_file("/f.bin", size=200_000)
    server.add_file("/old.bin", size=1)
    server.set_faults("/old.bin", Faults(redirect_to="/f.bin"))
    server.set_faults("/f.bin", Faults(reset_after=50_000), times=1)
    async with Session(config=Configuration(retry=FAST)) as session:
        task = await session.download(server.url("/old.bin"), out_dir / "f.bin")
        events = await collect(task.events())
    assert isinstance(events[-1], FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == served.sha256
    text = "\n".join(_messages(caplog))
    url = server.url("/old.bin")
    assert f"task {task.id}: GET {url} (Range: none, from byte 0)" in text
    assert f"{url}: redirect 1 (302) to {server.url('/f.bin')}" in text
    assert f"task {task.id}: GET failed (status 200, " in text
    assert f"task {task.id}: attempt 2 in 0.010 s, from byte " in text
    assert f"task {task.id}: resuming at byte " in text
    assert f"task {task.id}: GET {url} (Range: bytes=" in text
    assert f"task {task.id}: GET answered 206, 200000 bytes on disk" in text
    finished = [r for r in caplog.records if "finished" in r.getMessage()]
    assert len(finished) == 1
    assert finished[0].levelno == logging.INFO
    assert f"task {task.id} finished: 200000 bytes in " in finished[0].getMessage()


@pytest.mark.asyncio
async def test_info_says_failed_and_cancelled_ends_and_debug_stays_silent(
    server: TestServer, out_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bgtransfer")
    server.add_file("/held.bin", size=100_000)
    server.set_faults("/held.bin", Faults(hold_after=1_000))
    async with Session() as session:
        missing = await session.download(server.url("/missing.bin"), out_dir / "m.bin")
        assert isinstance((await collect(missing.events()))[-1], ErrorEvent)
        held = await session.download(server.url("/held.bin"), out_dir / "h.bin")
        stream = held.events()
        await server.wait_held("/held.bin")
        await held.cancel()
        await collect(stream)
    messages = _messages(caplog)
    assert any(
        m.startswith(f"task {missing.id} failed after ") and "HTTP 404" in m for m in messages
    )
    assert any(m.startswith(f"task {held.id} cancelled after ") for m in messages)
    assert not [r for r in caplog.records if r.levelno < logging.INFO]


SECRETS = ("s3cret-bearer-tok", "s3cret-api-key", "pr0xy-s3cret", "url-s3cret-pw")


@pytest.mark.asyncio
@pytest.mark.tinyproxy
async def test_no_secret_reaches_a_log_record_a_repr_an_error_or_the_state_dir(  # noqa: PLR0917
    server: TestServer,
    tinyproxy_binary: str,
    tmp_path: Path,
    state_dir: Path,
    out_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bearer, api_key, proxy_password, url_password = SECRETS
    server.add_file("/f.bin", size=120_000)
    server.set_faults("/f.bin", Faults(reset_after=30_000), times=1)
    shown: list[str] = []
    proxy = TinyProxy(
        tmp_path / "proxy", binary=tinyproxy_binary, credentials=("u", proxy_password)
    )
    with proxy:
        config = Configuration(
            proxy=proxy.url_with_credentials,
            headers={"X-Api-Key": api_key},
            retry=FAST,
        )
        shown.append(repr(config))
        async with Session("com.example.secrets", state_dir=state_dir, config=config) as session:
            headers = {"Authorization": f"Bearer {bearer}"}
            task = await session.download(server.url("/f.bin"), out_dir / "f.bin", headers=headers)
            failing = await session.download(
                server.url("/missing.bin"), out_dir / "m.bin", headers=headers
            )
            shown += [repr(task), repr(failing)]
            ends = [(await collect(t.events()))[-1] for t in (task, failing)]
            with pytest.raises(InvalidURLError) as refused:
                await session.download(
                    server.url("/f.bin").replace("http://", f"http://me:{url_password}@"),
                    out_dir / "u.bin",
                )
            shown += [str(refused.value), repr(refused.value)]
    assert isinstance(ends[0], FinishedEvent)
    assert isinstance(ends[1], ErrorEvent)
    shown += [repr(end) for end in ends] + [str(ends[1].error)]
    # The secrets went where they belong.
    assert server.requests[0].headers["Authorization"] == f"Bearer {bearer}"
    assert server.requests[0].headers["X-Api-Key"] == api_key
    shown += [record.getMessage() for record in caplog.records]
    shown += [str(record.args) for record in caplog.records]
    messages = _messages(caplog)
    assert any("GET failed" in m for m in messages)  # DEBUG did speak
    assert any("attempt 2" in m for m in messages)
    for secret in SECRETS:
        for text in shown:
            assert secret not in text, text
    for path in state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, path
