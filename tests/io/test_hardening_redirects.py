"""Redirects the library refuses, and the ones it still follows (issue 18, item 8).

Real loopback servers: an HTTPS :class:`TestServer` with a throwaway CA made by
the ``openssl`` command, plain ones, and a raw asyncio server for redirect
targets the test server will not send (``ftp://``, ``file://``). Every refused
redirect ends the task after one request (never retried) with a
:class:`RedirectError`, and leaves nothing at the destination.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp.connector
import pytest
import pytest_asyncio

from _helpers import collect, sha256_file
from bgtransfer import (
    Configuration,
    ErrorEvent,
    FinishedEvent,
    RedirectError,
    RetryEvent,
    RetryPolicy,
    Session,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

RETRYING = Configuration(retry=RetryPolicy(max_attempts=4, initial_delay=0, jitter=0))
"""Retries allowed (and instant): a refusal that were retried would show 4 requests."""


# -- a throwaway certificate authority and an HTTPS test server ------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for 127.0.0.1, server key), by ``openssl``."""
    openssl = shutil.which("openssl")
    if openssl is None:  # pragma: no cover - the CI image has it
        pytest.fail("the openssl command is needed to make a throwaway CA")
    work = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=work, check=True, capture_output=True)

    run(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=bgtransfer test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (work / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
    )  # fmt: skip
    return work / "ca.pem", work / "server.pem", work / "server.key"


@pytest.fixture
def trust_test_ca(tls_files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's verifying client context trusts the throwaway CA (and nothing else)."""
    context = ssl.create_default_context(cafile=str(tls_files[0]))
    monkeypatch.setattr(aiohttp.connector, "_SSL_CONTEXT_VERIFIED", context)


@pytest_asyncio.fixture
async def https_server(
    tls_files: tuple[Path, Path, Path], trust_test_ca: None
) -> AsyncIterator[TestServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files[1], tls_files[2])
    async with TestServer(ssl_context=context) as running:
        yield running


# -- a raw server answering every request with one redirect ---------------------------


class RawRedirector:
    """Answers every request with ``302`` and a fixed ``Location`` (keep-alive),
    whatever it holds: the test server only sends http(s) targets."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> RawRedirector:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                writer.write(
                    b"HTTP/1.1 302 Found\r\nLocation: "
                    + self.location.encode()
                    + b"\r\nContent-Length: 0\r\n\r\n"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


# -- refused ---------------------------------------------------------------------------


async def test_https_to_http_redirect_is_refused_once_and_never_retried(
    https_server: TestServer, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    target = server.add_file("/clear.bin", size=20_000)
    https_server.add_file("/secure.bin", data=b"never served")
    https_server.set_faults(
        "/secure.bin", Faults(redirect_to=server.url(target.path) + "?token=s3cret")
    )
    destination = out_dir / "file.bin"
    url = https_server.url("/secure.bin")
    async with Session(state_dir=state_dir, config=RETRYING) as session:
        task = await session.download(url, destination)
        events = await collect(task.events())
    end = events[-1]
    assert isinstance(end, ErrorEvent)
    assert isinstance(end.error, RedirectError)
    assert not any(isinstance(event, RetryEvent) for event in events)
    message = str(end.error)
    assert end.error.url == url
    assert message.startswith(f"{url}: ")
    assert "from https to http" in message
    assert f"({server.base_url}/clear.bin)" in message  # scheme://host/path only
    assert "s3cret" not in message
    assert [r.path for r in https_server.requests] == ["/secure.bin"]
    assert server.requests == ()  # nothing went out in clear
    assert not destination.exists()


async def test_https_to_http_redirect_is_followed_when_allowed(
    https_server: TestServer, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    target = server.add_file("/clear.bin", size=20_000)
    https_server.add_file("/secure.bin", data=b"never served")
    https_server.set_faults("/secure.bin", Faults(redirect_to=server.url(target.path)))
    config = Configuration(allow_insecure_redirects=True)
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(https_server.url("/secure.bin"), out_dir / "file.bin")
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(result.location) == target.sha256


async def test_https_redirect_chain_is_followed(
    https_server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    target = https_server.add_file("/real.bin", size=300_000)
    https_server.add_file("/alias.bin", data=b"not this")
    https_server.set_faults("/alias.bin", Faults(redirect_to="/real.bin"))
    async with Session(state_dir=state_dir) as session:
        task = await session.download(https_server.url("/alias.bin"), out_dir / "r.bin")
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(result.location) == target.sha256
    assert [r.path for r in https_server.requests] == ["/alias.bin", "/real.bin"]


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("ftp://user:pw@127.0.0.1/pub/file.bin", "ftp://127.0.0.1/pub/file.bin"),
        ("file:///etc/passwd", "file:///etc/passwd"),
    ],
)
async def test_redirect_to_another_scheme_is_refused_once(
    location: str, shown: str, state_dir: Path, out_dir: Path
) -> None:
    destination = out_dir / "file.bin"
    async with RawRedirector(location) as redirector:
        url = redirector.url("/file.bin")
        async with Session(state_dir=state_dir, config=RETRYING) as session:
            task = await session.download(url, destination)
            events = await collect(task.events())
    end = events[-1]
    assert isinstance(end, ErrorEvent)
    assert isinstance(end.error, RedirectError)
    assert not any(isinstance(event, RetryEvent) for event in events)
    assert str(end.error).startswith(f"{url}: refused a redirect to a ")
    assert f"({shown})" in str(end.error)
    assert "pw" not in str(end.error)
    assert len(redirector.requests) == 1
    assert not destination.exists()


async def test_endless_redirects_end_at_the_loop_and_are_not_retried(
    state_dir: Path, out_dir: Path
) -> None:
    async with (
        RawRedirector("/again") as redirector,
        Session(state_dir=state_dir, config=RETRYING) as session,
    ):
        task = await session.download(redirector.url("/start"), out_dir / "f.bin")
        events = await collect(task.events())
    end = events[-1]
    assert isinstance(end, ErrorEvent)
    assert isinstance(end.error, RedirectError)
    assert "redirect loop: " in str(end.error)
    assert len(redirector.requests) == 2  # /start, /again: /again again is the loop
    assert not any(isinstance(event, RetryEvent) for event in events)


# -- followed, as before -----------------------------------------------------------------


async def test_cross_origin_redirect_drops_secret_headers_and_keeps_range(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    async with TestServer() as other:
        target = other.add_file("/real.bin", size=200_000)
        server.add_file("/alias.bin", data=b"not this")
        server.set_faults("/alias.bin", Faults(redirect_to=other.url(target.path)))
        config = Configuration(
            secret_headers=("X-Custom-Private",),
            headers=(("X-Session-Default", "d-s3cret"),),
        )
        sent = {
            "Authorization": "Bearer a-s3cret",
            "Cookie": "c=s3cret",
            "X-Api-Key": "k-s3cret",
            "X-Custom-Private": "p-s3cret",
            "X-Trace": "kept",
        }
        async with Session(state_dir=state_dir, config=config) as session:
            task = await session.download(server.url("/alias.bin"), out_dir / "r.bin", headers=sent)
            result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(result.location) == target.sha256
    first = server.requests[0].headers
    assert all(first[name] == value for name, value in sent.items())  # the origin gets them
    second = other.requests[0].headers
    assert second.get("X-Trace") == "kept"
    for name in (*sent.keys() - {"X-Trace"}, "X-Session-Default"):
        assert name not in second, name


async def test_userinfo_in_a_redirect_location_is_never_sent(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    async with TestServer() as other:
        target = other.add_file("/real.bin", size=10_000)
        location = other.url(target.path).replace("://", "://user:pw-s3cret@")
        server.add_file("/alias.bin", data=b"not this")
        server.set_faults("/alias.bin", Faults(redirect_to=location))
        async with Session(state_dir=state_dir) as session:
            task = await session.download(server.url("/alias.bin"), out_dir / "r.bin")
            result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(result.location) == target.sha256
    basic = base64.b64encode(b"user:pw-s3cret").decode()
    assert [r.headers.get("Authorization") for r in other.requests] == [None]
    assert all(basic not in str(r.headers) for r in other.requests)


async def test_range_and_if_range_follow_a_same_origin_redirect_on_resume(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    target = server.add_file("/real.bin", size=400_000)
    server.add_file("/alias.bin", data=b"not this")
    server.set_faults("/alias.bin", Faults(redirect_to="/real.bin"))
    server.set_faults("/real.bin", Faults(reset_after=150_000), times=1)
    config = Configuration(retry=RetryPolicy(initial_delay=0, jitter=0))
    async with Session(state_dir=state_dir, config=config) as session:
        task = await session.download(server.url("/alias.bin"), out_dir / "r.bin")
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(result.location) == target.sha256
    resumed = [r for r in server.requests if r.path == "/real.bin"][-1]
    assert resumed.headers["Range"].startswith("bytes=")
    assert resumed.headers["If-Range"]
    # The redirect response was released, not leaked: its connection was reused.
    assert server.requests[0].connection_id == server.requests[1].connection_id
