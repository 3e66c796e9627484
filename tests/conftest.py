"""Shared fixtures for the bgtransfer test suite."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from _helpers import kill_daemon
from _nginx import NginxServer
from _tinyproxy import TinyProxy
from bgtransfer import Configuration, Session
from bgtransfer._io import threads
from bgtransfer.testing import TestServer

# --------------------------------------------------------------------------------------
# nginx: a real HTTP server on loopback (tests marked @pytest.mark.nginx)
#
# `nginx_binary` skips when nginx is missing, except under CI=true where it fails:
# CI installs nginx, so a missing binary there is a broken job, not a reason to skip.
# `nginx` serves a fresh document root; write files into `nginx.root` and fetch
# `nginx.url("name")`.  For several ports or a throttled server, build your own:
# `with NginxServer(root, binary=nginx_binary, ports=4, limit_rate=...) as server:`.
# --------------------------------------------------------------------------------------

_NGINX_FALLBACK_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


@pytest.fixture(autouse=True)
def inline_file_io_never_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small bodies are written on the loop in every test, whatever the machine's
    load: a call slower than ``INLINE_SLOW`` would otherwise send the next ones
    to the file thread, and which path a test takes would depend on timing
    (the pause itself is tested in tests/io/test_threads.py)."""
    monkeypatch.setattr(threads, "_inline_paused_until", 0.0)
    monkeypatch.setattr(threads, "INLINE_SLOW", float("inf"))


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    """Path to the nginx executable (skip if absent; fail if absent and CI=true)."""
    found = shutil.which("nginx")
    if found is None:
        found = next((p for p in _NGINX_FALLBACK_PATHS if os.access(p, os.X_OK)), None)
    if found is None:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(
                "nginx is not installed but CI=true: CI must install nginx "
                "(`apt-get install nginx`, see .ci/run) instead of skipping nginx tests",
                pytrace=False,
            )
        pytest.skip("nginx not installed")
    return found


@pytest.fixture
def nginx(nginx_binary: str, tmp_path: Path) -> Iterator[NginxServer]:
    """A running single-port nginx whose document root is ``nginx.root``."""
    server = NginxServer(tmp_path / "www", binary=nginx_binary, prefix=tmp_path / "nginx")
    with server:
        yield server


# --------------------------------------------------------------------------------------
# tinyproxy: a real HTTP proxy on loopback (tests marked @pytest.mark.tinyproxy), skipped
# or failed as nginx is. The environment's proxy variables are cleared for every test
# (bgtransfer honours them: a developer's own proxy must not carry the suite's traffic);
# a test sets them with monkeypatch, and daemons it starts inherit them.
# --------------------------------------------------------------------------------------

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def no_proxy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="session")
def tinyproxy_binary() -> str:
    """Path to tinyproxy (skip if absent; fail if absent and CI=true)."""
    found = shutil.which("tinyproxy") or next(
        (p for p in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy") if os.access(p, os.X_OK)), None
    )
    if found is None:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(
                "tinyproxy is not installed but CI=true: CI must install it "
                "(`apt-get install tinyproxy`, see .ci/run) instead of skipping proxy tests",
                pytrace=False,
            )
        pytest.skip("tinyproxy not installed")
    return found


@pytest.fixture
def tinyproxy(tinyproxy_binary: str, tmp_path: Path) -> Iterator[TinyProxy]:
    """A running tinyproxy on loopback, without credentials."""
    with TinyProxy(tmp_path / "tinyproxy", binary=tinyproxy_binary) as proxy:
        yield proxy


# --------------------------------------------------------------------------------------
# bgtransfer's own loopback server, and directories for sessions
# (helpers for driving sessions live in tests/_helpers.py)
# --------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def server() -> AsyncIterator[TestServer]:
    """A running :class:`bgtransfer.testing.TestServer` on 127.0.0.1."""
    async with TestServer() as running:
        yield running


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A state directory for background sessions (not created yet)."""
    return tmp_path / "state"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An existing directory for download destinations."""
    path = tmp_path / "out"
    path.mkdir()
    return path


# --------------------------------------------------------------------------------------
# A background session in this process or in the transfer daemon: tests that take
# `background` run against both (the daemon is the second task backend).
# --------------------------------------------------------------------------------------


@pytest.fixture(params=["in_process", "daemon"])
def background(request: pytest.FixtureRequest) -> Iterator[Callable[..., Session]]:
    """``background(identifier, state_dir=..., config=...)``: a ``Session``, in this
    process or (``daemon``) served by a daemon killed when the test ends."""
    daemon = request.param == "daemon"
    used: list[Path] = []

    def make(identifier: str, *, state_dir: Path, config: Configuration | None = None) -> Session:
        if daemon:
            used.append(Path(state_dir))
        return Session(identifier, state_dir=state_dir, config=config, daemon=daemon)

    try:
        yield make
    finally:
        for state in used:
            kill_daemon(state)
