"""TLS settings (issue 22): a loopback HTTPS server whose certificate comes from
a throwaway CA (trustme), trusted only through ``Configuration.ssl``; failed
checks are ``TLSError`` saying which check failed."""

from __future__ import annotations

import datetime
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import trustme

from _helpers import collect, sha256_file
from bgtransfer import (
    Configuration,
    ErrorEvent,
    FinishedEvent,
    InvalidRequestError,
    RetryPolicy,
    Session,
    TLSError,
)
from bgtransfer.testing import TestServer

RETRIES = RetryPolicy(initial_delay=0, max_delay=0)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def _server_context(
    cert: trustme.LeafCert, *, client_ca: trustme.CA | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    if client_ca is not None:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest_asyncio.fixture
async def https(ca: trustme.CA) -> AsyncIterator[TestServer]:
    """HTTPS on 127.0.0.1 with a certificate for 127.0.0.1 from ``ca``."""
    async with TestServer(ssl_context=_server_context(ca.issue_cert("127.0.0.1"))) as server:
        server.add_file("/f.bin", size=150_000)
        yield server


async def _end(server: TestServer, out_dir: Path, config: Configuration) -> object:
    async with Session(config=config) as session:
        task = await session.download(server.url("/f.bin"), out_dir / "f.bin")
        return (await collect(task.events()))[-1]


async def _tls_failure(server: TestServer, out_dir: Path, config: Configuration) -> TLSError:
    end = await _end(server, out_dir, config.replace(retry=RETRIES))
    assert isinstance(end, ErrorEvent)
    assert isinstance(end.error, TLSError), repr(end.error)
    assert end.error.url == server.url("/f.bin")
    assert not (out_dir / "f.bin").exists()
    return end.error


@pytest.mark.asyncio
async def test_a_private_ca_is_untrusted_by_default_and_not_retried(
    https: TestServer, out_dir: Path
) -> None:
    error = await _tls_failure(https, out_dir, Configuration())
    assert error.check == "unknown_ca"
    assert "127.0.0.1" in str(error)
    assert not https.requests  # one handshake, no request, no retry


@pytest.mark.asyncio
async def test_a_ca_bundle_in_the_configuration_is_trusted(
    https: TestServer, out_dir: Path, ca_file: Path
) -> None:
    end = await _end(https, out_dir, Configuration(ssl=ca_file))
    assert isinstance(end, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == https.file("/f.bin").sha256


@pytest.mark.asyncio
async def test_an_ssl_context_is_used_as_given(
    https: TestServer, out_dir: Path, ca: trustme.CA
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    end = await _end(https, out_dir, Configuration(ssl=context))
    assert isinstance(end, FinishedEvent)


@pytest.mark.asyncio
async def test_a_hostname_mismatch_is_named(ca: trustme.CA, out_dir: Path, ca_file: Path) -> None:
    context = _server_context(ca.issue_cert("files.example.org"))
    async with TestServer(ssl_context=context) as server:
        server.add_file("/f.bin", size=1000)
        error = await _tls_failure(server, out_dir, Configuration(ssl=ca_file))
    assert error.check == "hostname_mismatch"


@pytest.mark.asyncio
async def test_an_expired_certificate_is_named(
    ca: trustme.CA, out_dir: Path, ca_file: Path
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert = ca.issue_cert(
        "127.0.0.1",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    async with TestServer(ssl_context=_server_context(cert)) as server:
        server.add_file("/f.bin", size=1000)
        error = await _tls_failure(server, out_dir, Configuration(ssl=ca_file))
    assert error.check == "expired"


@pytest.mark.asyncio
async def test_ssl_false_downloads_without_verifying_and_warns_once(
    https: TestServer, out_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bgtransfer")
    async with Session(config=Configuration(ssl=False)) as session:
        for name in ("a.bin", "b.bin"):
            task = await session.download(https.url("/f.bin"), out_dir / name)
            assert isinstance(await task.wait(), FinishedEvent)
    warnings = [r for r in caplog.records if "not verified" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


class _ClientCertServer:
    """A blocking TLS server in a thread that requires a client certificate.

    aiohttp's (asyncio's) server drops the connection without the TLS alert when
    a handshake fails; this one sends it (``certificate_required``), as nginx or
    any OpenSSL server does, and drains the client before closing so that a
    reset does not overtake it. With a certificate it answers any request
    with ``BODY``."""

    BODY = bytes(range(256)) * 200

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}/f.bin"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stopping = False

    def __enter__(self) -> _ClientCertServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        # (Closing a listening socket does not wake a thread blocked in accept().)
        socket.create_connection(self._listener.getsockname()).close()
        self._thread.join(timeout=10)
        self._listener.close()

    def _serve(self) -> None:
        while True:
            raw, _ = self._listener.accept()
            if self._stopping:
                raw.close()
                return
            tls = self._context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            tls.settimeout(10)
            try:
                tls.do_handshake()
                tls.recv(65536)
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.BODY)}\r\n"
                tls.sendall(head.encode() + b"Connection: close\r\n\r\n" + self.BODY)
            except OSError:
                try:
                    tls.shutdown(socket.SHUT_WR)
                    while tls.recv(65536):
                        pass
                except OSError:
                    pass
            finally:
                tls.close()


@pytest.mark.asyncio
async def test_a_client_certificate_the_server_requires(
    ca: trustme.CA, out_dir: Path, ca_file: Path, tmp_path: Path
) -> None:
    client_ca = trustme.CA()
    context = _server_context(ca.issue_cert("127.0.0.1"), client_ca=client_ca)
    client = client_ca.issue_cert("app@example.org")
    both = tmp_path / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(both))
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    with _ClientCertServer(context) as server:
        async with Session(config=Configuration(ssl=ca_file, retry=RETRIES)) as session:
            task = await session.download(server.url, out_dir / "f.bin")
            end = (await collect(task.events()))[-1]
        assert isinstance(end, ErrorEvent)
        assert isinstance(end.error, TLSError), repr(end.error)
        assert end.error.check == "client_certificate"
        assert "client certificate" in str(end.error)
        assert not (out_dir / "f.bin").exists()
        for given in (both, (cert, key)):
            async with Session(config=Configuration(ssl=ca_file, client_cert=given)) as session:
                task = await session.download(server.url, out_dir / "f.bin")
                assert isinstance(await task.wait(), FinishedEvent)
            assert (out_dir / "f.bin").read_bytes() == server.BODY
            (out_dir / "f.bin").unlink()


@pytest.mark.asyncio
async def test_a_ca_bundle_that_cannot_be_read_fails_the_session_s_opening(
    tmp_path: Path,
) -> None:
    with pytest.raises(InvalidRequestError, match=r"cannot load the CA bundle .*missing\.pem"):
        async with Session(config=Configuration(ssl=tmp_path / "missing.pem")):
            pass


def test_an_ssl_context_is_refused_for_a_daemon_session(state_dir: Path) -> None:
    config = Configuration(ssl=ssl.create_default_context())
    with pytest.raises(ValueError, match=r"cannot be an ssl\.SSLContext with daemon=True"):
        Session("com.example.tls", state_dir=state_dir, config=config, daemon=True)


def test_client_cert_with_an_ssl_context_is_refused() -> None:
    with pytest.raises(ValueError, match="load the certificate into the context"):
        Configuration(ssl=ssl.create_default_context(), client_cert="/x.pem")
