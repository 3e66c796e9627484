"""Answering a 401 (issue 22): static credentials sent preemptively to the task's
origin only, a provider asked on a 401 with the parsed challenge, each credential
tried once (then AuthenticationError), .netrc, uploads alike, and no secret in
the journal, the state directory, logs, reprs or errors. Real loopback servers
(the test server's ``require_auth`` knob)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from _helpers import collect, sha256_file, wait_for_bytes
from bgtransfer import (
    AuthenticationError,
    BasicAuth,
    BearerToken,
    Challenge,
    Configuration,
    ErrorEvent,
    FinishedEvent,
    HTTPStatusError,
    RetryEvent,
    RetryPolicy,
    Session,
    TaskInfo,
)
from bgtransfer.testing import AuthRequirement, Faults, TestServer

pytestmark = pytest.mark.asyncio

SECRET = "s3cret-Pa55w0rd"
TOKEN = "tok3n-0f-the-day"
RETRYING = RetryPolicy(max_attempts=4, initial_delay=0, jitter=0, retry_statuses=frozenset({401}))
"""401 among the retried statuses: a test that sees one attempt proves auth decided it."""


def sent(server: TestServer, path: str) -> list[str | None]:
    return [r.headers.get("Authorization") for r in server.requests if r.path == path]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Provider:
    """An auth provider that hands out ``answers`` in turn, recording its calls."""

    def __init__(self, *answers: BasicAuth | BearerToken | None) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[TaskInfo, tuple[Challenge, ...]]] = []

    async def __call__(
        self, info: TaskInfo, challenges: tuple[Challenge, ...]
    ) -> BasicAuth | BearerToken | None:
        self.calls.append((info, challenges))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_static_basic_is_sent_preemptively(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    served = server.add_file("/f", size=50_000)
    server.require_auth("/f", AuthRequirement(basic=("alice", SECRET)))
    config = Configuration(auth=BasicAuth("alice", SECRET))
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        end = await task.wait()
    assert isinstance(end, FinishedEvent)
    assert sha256_file(out_dir / "f") == served.sha256
    assert sent(server, "/f") == [basic("alice", SECRET)]  # one request: no 401 first


async def test_wrong_static_credentials_end_in_authentication_error_never_retried(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    server.add_file("/f", size=1000)
    server.require_auth("/f", AuthRequirement(basic=("alice", SECRET)))
    config = Configuration(auth=BasicAuth("alice", "wrong"), retry=RETRYING)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        events = await collect(task.events())
    end = events[-1]
    assert isinstance(end, ErrorEvent)
    assert isinstance(end.error, AuthenticationError)
    assert end.error.status == 401
    assert "(Basic)" in str(end.error)
    assert 'realm="bgtransfer-test"' in (end.error.www_authenticate or "")
    assert not any(isinstance(event, RetryEvent) for event in events)
    assert len(sent(server, "/f")) == 1
    assert not (out_dir / "f").exists()


async def test_a_bearer_token_refreshed_by_the_provider_after_a_401(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    one = server.add_file("/one", size=10_000)
    two = server.add_file("/two", size=20_000)
    for path in ("/one", "/two"):
        server.require_auth(path, AuthRequirement(bearer="old-token"))
    provider = Provider(BearerToken("old-token"), BearerToken("new-token"))
    async with Session(state_dir=state_dir, config=Configuration(auth=provider)) as session:
        first = await session.download(server.url("/one"), out_dir / "one", description="d1")
        assert isinstance(await first.wait(), FinishedEvent)
        for path in ("/one", "/two"):  # the token expires on the server
            server.require_auth(path, AuthRequirement(bearer="new-token"))
        second = await session.download(server.url("/two"), out_dir / "two")
        assert isinstance(await second.wait(), FinishedEvent)
    assert sha256_file(out_dir / "one") == one.sha256
    assert sha256_file(out_dir / "two") == two.sha256
    assert sent(server, "/one") == [None, "Bearer old-token"]
    # the cached token went first (preemptively), then the refreshed one
    assert sent(server, "/two") == ["Bearer old-token", "Bearer new-token"]
    (info1, challenges1), (info2, challenges2) = provider.calls
    assert info1 == TaskInfo(id=first.id, url=server.url("/one"), description="d1")
    assert info2.id == second.id
    assert challenges1 == (Challenge("bearer", (("realm", "bgtransfer-test"),)),)
    assert challenges2[0].get("error") == "invalid_token"


async def test_wrong_credentials_from_a_provider_end_after_one_retry(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    server.add_file("/f", size=1000)
    server.require_auth("/f", AuthRequirement(basic=("alice", SECRET)))
    provider = Provider(BasicAuth("alice", "wrong"))
    config = Configuration(auth=provider, retry=RETRYING)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        events = await collect(task.events())
    end = events[-1]
    assert isinstance(end, ErrorEvent)
    assert isinstance(end.error, AuthenticationError)
    assert sent(server, "/f") == [None, basic("alice", "wrong")]
    assert len(provider.calls) == 2  # asked again after the second 401: the same answer
    assert not any(isinstance(event, RetryEvent) for event in events)


async def test_a_provider_that_keeps_inventing_credentials_is_cut_short(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    server.add_file("/f", size=1000)
    server.require_auth("/f", AuthRequirement(bearer="never"))
    counter = iter(range(1000))

    async def inventive(info: TaskInfo, challenges: object) -> BearerToken:
        return BearerToken(f"guess-{next(counter)}")

    async with Session(state_dir=state_dir, config=Configuration(auth=inventive)) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        with pytest.raises(AuthenticationError):
            await task.wait()
    assert 2 <= len(sent(server, "/f")) <= 6


async def test_a_provider_answering_none_lets_the_401_stand(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    server.add_file("/f", size=1000)
    server.require_auth("/f", AuthRequirement(basic=("alice", SECRET)))
    provider = Provider(None)
    async with Session(state_dir=state_dir, config=Configuration(auth=provider)) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        with pytest.raises(HTTPStatusError) as raised:
            await task.wait()
    assert type(raised.value) is HTTPStatusError
    assert raised.value.status == 401
    assert len(provider.calls) == 1
    assert sent(server, "/f") == [None]


async def test_a_failing_provider_fails_the_task_without_its_message(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    server.add_file("/f", size=1000)
    server.require_auth("/f", AuthRequirement(bearer=TOKEN))

    async def broken(info: TaskInfo, challenges: object) -> None:
        raise RuntimeError(f"vault said {SECRET}")

    async with Session(state_dir=state_dir, config=Configuration(auth=broken)) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        with pytest.raises(Exception, match="the auth provider failed: RuntimeError") as raised:
            await task.wait()
    assert SECRET not in str(raised.value)


async def test_credentials_never_follow_a_redirect_to_another_origin(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    async with TestServer() as other:
        other.add_file("/f", size=1000)
        other.require_auth("/f", AuthRequirement(basic=("alice", SECRET)))
        server.set_faults("/f", Faults(redirect_to=other.url("/f")))
        provider = Provider(BasicAuth("alice", SECRET))
        for auth in (BasicAuth("alice", SECRET), provider):
            config = Configuration(auth=auth)
            async with Session(state_dir=state_dir, config=config) as session:
                task = await session.download(server.url("/f"), out_dir / "f")
                with pytest.raises(HTTPStatusError) as raised:
                    await task.wait()
            # the other origin's 401 stands: no AuthenticationError, no provider call
            assert type(raised.value) is HTTPStatusError
            assert raised.value.status == 401
        assert sent(other, "/f") == [None, None]
        assert sent(server, "/f") == [basic("alice", SECRET), None]  # (the provider's: none yet)
        assert provider.calls == []


async def test_an_authorization_header_given_wins(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    server.add_file("/f", size=1000)
    server.require_auth("/f", AuthRequirement(bearer=TOKEN))
    config = Configuration(auth=BasicAuth("alice", "unused"))
    async with Session(state_dir=state_dir, config=config) as session:
        headers = {"authorization": f"Bearer {TOKEN}"}
        task = await session.download(server.url("/f"), out_dir / "f", headers=headers)
        assert isinstance(await task.wait(), FinishedEvent)
    assert sent(server, "/f") == [f"Bearer {TOKEN}"]


async def test_netrc_credentials_for_the_task_s_host_only(
    server: TestServer, state_dir: Path, out_dir: Path, tmp_path: Path
) -> None:
    served = server.add_file("/f", size=5000)
    server.require_auth("/f", AuthRequirement(basic=("bob", SECRET)))
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login bob password {SECRET}\nmachine other login x\n")
    localhost = server.url("/f").replace("127.0.0.1", "localhost")
    async with Session(state_dir=state_dir, config=Configuration(netrc=netrc)) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        assert isinstance(await task.wait(), FinishedEvent)
        elsewhere = await session.download(localhost, out_dir / "g")
        with pytest.raises(HTTPStatusError) as raised:
            await elsewhere.wait()
    assert type(raised.value) is HTTPStatusError  # nothing was sent there: the 401 stands
    assert sha256_file(out_dir / "f") == served.sha256
    assert sent(server, "/f") == [basic("bob", SECRET), None]


async def test_netrc_true_reads_the_netrc_variable_and_a_missing_path_is_an_error(
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.add_file("/f", size=5000)
    server.require_auth("/f", AuthRequirement(basic=("bob", SECRET)))
    netrc = tmp_path / "netrc"
    netrc.write_text(f"default login bob password {SECRET}\n")
    monkeypatch.setenv("NETRC", str(netrc))
    async with Session(state_dir=state_dir, config=Configuration(netrc=True)) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        assert isinstance(await task.wait(), FinishedEvent)
    config = Configuration(netrc=tmp_path / "missing")
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url("/f"), out_dir / "g")
        with pytest.raises(Exception, match=r"the netrc file .*missing' does not exist"):
            await task.wait()


async def test_uploads_answer_a_401_the_same_way(
    server: TestServer, state_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(b"x" * 100_000)
    server.require_auth("/up", AuthRequirement(bearer="new-token"))
    provider = Provider(BearerToken("new-token"))
    async with Session(state_dir=state_dir, config=Configuration(auth=provider)) as session:
        task = await session.upload(server.url("/up"), source)
        end = await task.wait()
        assert isinstance(end, FinishedEvent)
        assert end.reply is not None
        assert end.reply.status == 201
        wrong = Configuration(auth=BearerToken("old-token"), retry=RETRYING)
    assert sent(server, "/up") == [None, "Bearer new-token"]
    assert [u.length for u in server.uploads if u.complete] == [100_000]
    async with Session(state_dir=state_dir, config=wrong) as session:
        task = await session.upload(server.url("/up"), source)
        with pytest.raises(AuthenticationError):
            await task.wait()
    assert sent(server, "/up")[2:] == ["Bearer old-token"]


async def test_no_secret_in_the_state_dir_logs_reprs_or_errors(
    server: TestServer,
    state_dir: Path,
    out_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bgtransfer")
    server.add_file("/ok", size=200_000)
    server.add_file("/bad", size=1000)
    server.require_auth("/ok", AuthRequirement(bearer=TOKEN))
    server.require_auth("/bad", AuthRequirement(bearer="another"))
    provider = Provider(BearerToken(TOKEN))
    config = Configuration(auth=provider, retry=RETRYING)
    async with Session("com.example.auth", state_dir=state_dir, config=config) as session:
        ok = await session.download(server.url("/ok"), out_dir / "ok")
        bad = await session.download(server.url("/bad"), out_dir / "bad")
        ends = [await ok.wait(), await collect(bad.events())]
        shown = [repr(ok), repr(bad), repr(config), repr(session), *map(repr, ends)]
    assert isinstance(ends[0], FinishedEvent)
    error = ends[1][-1].error
    assert isinstance(error, AuthenticationError)
    shown += [str(error), repr(error), caplog.text]
    static = Configuration(auth=BasicAuth("alice", SECRET))
    shown += [repr(static), str(static)]
    secrets = (TOKEN, SECRET, base64.b64encode(f"alice:{SECRET}".encode()).decode())
    for text in shown:
        for secret in secrets:
            assert secret not in text
    stored = [path for path in state_dir.rglob("*") if path.is_file()]
    assert stored
    for path in stored:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, path
    assert "401" in caplog.text  # (the log does say what happened)


async def test_a_daemon_session_gets_static_credentials_but_never_stores_them(
    background: object, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    served = server.add_file("/f", size=30_000)
    server.require_auth("/f", AuthRequirement(basic=("alice", SECRET)))
    config = Configuration(auth=BasicAuth("alice", SECRET))
    async with background("com.example.auth", state_dir=state_dir, config=config) as session:  # type: ignore[operator]
        task = await session.download(server.url("/f"), out_dir / "f")
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f") == served.sha256
    encoded = base64.b64encode(f"alice:{SECRET}".encode())
    for path in [p for p in state_dir.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        assert SECRET.encode() not in data, path
        assert encoded not in data, path


async def test_every_segment_of_a_segmented_download_carries_the_credentials(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    served = server.add_file("/big", size=4 * 1024 * 1024)
    server.require_auth("/big", AuthRequirement(bearer=TOKEN))
    config = Configuration(auth=BearerToken(TOKEN), segments=4)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url("/big"), out_dir / "big")
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "big") == served.sha256
    assert len(sent(server, "/big")) > 1  # (it was split)
    assert set(sent(server, "/big")) == {f"Bearer {TOKEN}"}


async def test_a_401_that_stands_is_left_to_the_retry_policy(
    server: TestServer, state_dir: Path, out_dir: Path, tmp_path: Path
) -> None:
    server.add_file("/f", size=1000)
    server.require_auth("/f", AuthRequirement(basic=("bob", SECRET)))
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine elsewhere.example login bob password {SECRET}\n")
    config = Configuration(netrc=netrc, retry=RETRYING)  # (401 made retryable)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        events = await collect(task.events())
    end = events[-1]
    assert isinstance(end, ErrorEvent)
    assert type(end.error) is HTTPStatusError  # nothing was sent: not an AuthenticationError
    assert sum(isinstance(event, RetryEvent) for event in events) == 3
    assert sent(server, "/f") == [None] * 4


async def test_resume_data_holds_no_credentials_and_resumes_with_them(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    served = server.add_file("/f", size=300_000)
    server.require_auth("/f", AuthRequirement(bearer=TOKEN))
    server.set_faults("/f", Faults(hold_after=100_000), times=1)
    config = Configuration(auth=BearerToken(TOKEN))
    async with Session("com.example.auth", state_dir=state_dir, config=config) as session:
        task = await session.download(server.url("/f"), out_dir / "f")
        await wait_for_bytes(task, 100_000)
        data = await task.cancel_with_resume_data()
        server.release("/f")
        assert data is not None
        blob = data.to_bytes()
        assert TOKEN.encode() not in blob
        assert TOKEN not in repr(data)
        resumed = await session.download_with_resume_data(data)
        assert isinstance(await resumed.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f") == served.sha256
    assert set(sent(server, "/f")) == {f"Bearer {TOKEN}"}
    assert server.requests[-1].headers.get("Range") is not None
