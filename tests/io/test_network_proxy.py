"""Proxies (issue 22): the environment's by default, Configuration.proxy over it,
credentials never shown or stored; every test goes through a real tinyproxy on
loopback and proves it by the ``Via`` header the test server received and by
the proxy's own log."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from _helpers import collect, kill_daemon, sha256_file
from _tinyproxy import VIA, TinyProxy
from bgtransfer import (
    Configuration,
    ErrorEvent,
    FinishedEvent,
    ProxyError,
    RetryPolicy,
    Session,
)
from bgtransfer.testing import TestServer

pytestmark = pytest.mark.tinyproxy

ID = "com.example.proxy"
ONCE = RetryPolicy(max_attempts=1)
PASSWORD = "pr0xy-s3cret-pw"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on: bound, never listening (refused), and
    held for the test, so no other socket can take it meanwhile (a port bound
    then released could be some other process's by the time it is used)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _via(server: TestServer) -> list[bool]:
    """For each request the server received: did it come through the test proxy?"""
    return [VIA in request.headers.get("Via", "") for request in server.requests]


async def _download(url: str, destination: Path, config: Configuration) -> object:
    async with Session(config=config) as session:
        task = await session.download(url, destination)
        return (await collect(task.events()))[-1]


@pytest.mark.asyncio
async def test_the_environment_s_http_proxy_carries_the_download(
    server: TestServer, tinyproxy: TinyProxy, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = server.add_file("/f.bin", size=300_000)
    monkeypatch.setenv("http_proxy", tinyproxy.url)
    end = await _download(server.url("/f.bin"), out_dir / "f.bin", Configuration())
    assert isinstance(end, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == served.sha256
    assert _via(server) == [True]
    assert tinyproxy.requests() == [f"GET {server.url('/f.bin')}"]


@pytest.mark.asyncio
async def test_a_bogus_http_proxy_fails_the_download_naming_the_proxy(
    server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    server.add_file("/f.bin", size=1000)
    port = closed_port
    monkeypatch.setenv("HTTP_PROXY", f"http://someone:{PASSWORD}@127.0.0.1:{port}")
    end = await _download(server.url("/f.bin"), out_dir / "f.bin", Configuration(retry=ONCE))
    assert isinstance(end, ErrorEvent)
    error = end.error
    assert isinstance(error, ProxyError)
    assert error.proxy == f"http://127.0.0.1:{port}"
    assert error.status is None
    assert f"cannot connect to the proxy http://127.0.0.1:{port}" in str(error)
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(error)
    assert error.url == server.url("/f.bin")
    assert not server.requests
    assert not (out_dir / "f.bin").exists()


@pytest.mark.asyncio
async def test_no_proxy_sends_its_hosts_directly(
    server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    served = server.add_file("/f.bin", size=1000)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("no_proxy", "example.org, 127.0.0.0/8")
    end = await _download(server.url("/f.bin"), out_dir / "f.bin", Configuration(retry=ONCE))
    assert isinstance(end, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == served.sha256
    assert _via(server) == [False]


@pytest.mark.asyncio
async def test_the_configured_proxy_wins_over_the_environment(
    server: TestServer,
    tinyproxy: TinyProxy,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    closed_port: int,
) -> None:
    server.add_file("/f.bin", size=1000)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # the configured proxy ignores it too
    config = Configuration(proxy=tinyproxy.url, retry=ONCE)
    end = await _download(server.url("/f.bin"), out_dir / "f.bin", config)
    assert isinstance(end, FinishedEvent)
    assert _via(server) == [True]


@pytest.mark.asyncio
async def test_proxy_false_connects_directly_whatever_the_environment_says(
    server: TestServer, out_dir: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    server.add_file("/f.bin", size=1000)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port}")
    config = Configuration(proxy=False, retry=ONCE)
    end = await _download(server.url("/f.bin"), out_dir / "f.bin", config)
    assert isinstance(end, FinishedEvent)
    assert _via(server) == [False]


@pytest.fixture
def guarded_proxy(tinyproxy_binary: str, tmp_path: Path) -> TinyProxy:
    return TinyProxy(tmp_path / "guarded", binary=tinyproxy_binary, credentials=("alice", PASSWORD))


@pytest.mark.asyncio
async def test_credentials_open_a_guarded_proxy_and_are_never_shown(
    server: TestServer,
    guarded_proxy: TinyProxy,
    out_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    served = server.add_file("/f.bin", size=200_000)
    with guarded_proxy:
        config = Configuration(proxy=guarded_proxy.url_with_credentials)
        assert PASSWORD not in repr(config)
        end = await _download(server.url("/f.bin"), out_dir / "f.bin", config)
    assert isinstance(end, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == served.sha256
    assert _via(server) == [True]
    # The proxy took the credentials; the server never saw them.
    assert "Proxy-Authorization" not in server.requests[0].headers
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


@pytest.mark.asyncio
async def test_a_guarded_proxy_without_credentials_is_a_407_proxy_error_not_retried(
    server: TestServer, guarded_proxy: TinyProxy, out_dir: Path
) -> None:
    server.add_file("/f.bin", size=1000)
    with guarded_proxy:
        config = Configuration(proxy=guarded_proxy.url, retry=RetryPolicy(initial_delay=0))
        end = await _download(server.url("/f.bin"), out_dir / "f.bin", config)
        requests = guarded_proxy.requests()
    assert isinstance(end, ErrorEvent)
    assert isinstance(end.error, ProxyError)
    assert end.error.status == 407
    assert end.error.proxy == guarded_proxy.url
    assert "wants credentials" in str(end.error)
    assert requests == [f"GET {server.url('/f.bin')}"]  # one attempt: 407 is final
    assert not server.requests


@pytest.mark.asyncio
async def test_a_daemon_session_gets_the_proxy_s_credentials_but_never_stores_them(
    server: TestServer, guarded_proxy: TinyProxy, state_dir: Path, out_dir: Path
) -> None:
    served = server.add_file("/f.bin", size=100_000)
    try:
        with guarded_proxy:
            config = Configuration(proxy=guarded_proxy.url_with_credentials)
            async with Session(ID, state_dir=state_dir, config=config, daemon=True) as session:
                task = await session.download(server.url("/f.bin"), out_dir / "f.bin")
                end = await task.wait()
    finally:
        kill_daemon(state_dir)
    assert isinstance(end, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == served.sha256
    assert _via(server) == [True]
    stored = [path for path in state_dir.rglob("*") if path.is_file()]
    assert stored
    for path in stored:
        assert PASSWORD.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("proxy", "match"),
    [
        ("https://127.0.0.1:3128", "only http:// proxies"),
        ("socks5://127.0.0.1:1080", "only http:// proxies"),
        ("http://:3128", "has no host"),
        ("http://127.0.0.1:3128/path", "no path"),
        (f"ftp://u:{PASSWORD}@h", "only http://"),
    ],
)
def test_a_proxy_url_that_cannot_be_used_is_refused_without_its_password(
    proxy: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match) as raised:
        Configuration(proxy=proxy)
    assert PASSWORD not in str(raised.value)


def test_proxy_takes_a_url_false_or_none_only() -> None:
    with pytest.raises(TypeError, match="proxy must be"):
        Configuration(proxy=True)  # type: ignore[arg-type]
    assert Configuration(proxy=False).proxy is False
    assert Configuration().proxy is None


@pytest.mark.asyncio
async def test_https_goes_through_the_proxy_in_a_connect_tunnel(
    guarded_proxy: TinyProxy, out_dir: Path, tmp_path: Path
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with TestServer(ssl_context=context) as server:
        served = server.add_file("/f.bin", size=200_000)
        with guarded_proxy:
            # Without credentials: the proxy refuses the tunnel (CONNECT answered 407).
            config = Configuration(proxy=guarded_proxy.url, ssl=ca_file, retry=ONCE)
            end = await _download(server.url("/f.bin"), out_dir / "f.bin", config)
            assert isinstance(end, ErrorEvent)
            assert isinstance(end.error, ProxyError)
            assert end.error.status == 407
            config = config.replace(proxy=guarded_proxy.url_with_credentials)
            end = await _download(server.url("/f.bin"), out_dir / "f.bin", config)
            requests = guarded_proxy.requests()
    assert isinstance(end, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == served.sha256
    # The proxy saw a tunnel, not the request (no Via: it cannot read inside).
    assert requests == [f"CONNECT 127.0.0.1:{server.port}"] * 2
    assert _via(server) == [False]


@pytest.mark.asyncio
async def test_dot_netrc_is_not_read(
    server: TestServer, out_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp's trust_env would send ~/.netrc's credentials to any host it names;
    bgtransfer honours the environment's proxies without that."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login me password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text(netrc.read_text())
    server.add_file("/f.bin", size=1000)
    end = await _download(server.url("/f.bin"), out_dir / "f.bin", Configuration())
    assert isinstance(end, FinishedEvent)
    assert "Authorization" not in server.requests[0].headers


@pytest.mark.asyncio
async def test_a_tunnel_the_proxy_cannot_open_is_a_retried_proxy_error(
    tinyproxy: TinyProxy, out_dir: Path, monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    """https_proxy from the environment; the server is down: tinyproxy answers the
    CONNECT with 500, a retry status, so the task tries again, then fails."""
    monkeypatch.setenv("https_proxy", tinyproxy.url)
    port = closed_port
    config = Configuration(retry=RetryPolicy(max_attempts=2, initial_delay=0, max_delay=0))
    end = await _download(f"https://127.0.0.1:{port}/f.bin", out_dir / "f.bin", config)
    assert isinstance(end, ErrorEvent)
    assert isinstance(end.error, ProxyError)
    assert end.error.status == 500
    assert end.error.proxy == tinyproxy.url
    assert f"the proxy {tinyproxy.url} answered 500" in str(end.error)
    assert tinyproxy.requests() == [f"CONNECT 127.0.0.1:{port}"] * 2
