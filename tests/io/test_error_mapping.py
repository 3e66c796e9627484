"""The one boundary where aiohttp, asyncio and OS exceptions become bgtransfer's."""

from __future__ import annotations

import asyncio
import errno
import os
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from aioresponses import aioresponses
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL as YURL

import bgtransfer
from bgtransfer._io.errors import file_error, map_errors, translate
from bgtransfer._io.proxy import ProxyFailure

URL = "http://example.com/files/big.iso"


def _key(host: str = "example.com", port: int = 8080) -> ConnectionKey:
    return ConnectionKey(
        host=host,
        port=port,
        is_ssl=False,
        ssl=True,
        proxy=None,
        proxy_auth=None,
        proxy_headers_hash=None,
        server_hostname=None,
    )


def _request_info() -> RequestInfo:
    return RequestInfo(
        url=YURL(URL), method="GET", headers=CIMultiDictProxy(CIMultiDict()), real_url=YURL(URL)
    )


def _translate(exc: BaseException, timeout: float | None = 30.0) -> bgtransfer.TransferError | None:
    return translate(exc, url=URL, request_timeout=timeout)


# -- translate ------------------------------------------------------------------------------------


def test_connector_error_names_host_port_and_cause() -> None:
    cause = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    exc = aiohttp.ClientConnectorError(_key("example.com", 8080), cause)
    mapped = _translate(exc)
    assert type(mapped) is bgtransfer.NetworkError
    assert mapped.url == URL
    message = str(mapped)
    assert message.startswith(f"{URL}: cannot connect to example.com:8080: ")
    assert "Connection refused" in message


def test_connector_error_with_empty_os_error_uses_type_name() -> None:
    exc = aiohttp.ClientConnectorError(_key("h", 1), OSError())
    mapped = _translate(exc)
    assert type(mapped) is bgtransfer.NetworkError
    assert str(mapped) == f"{URL}: cannot connect to h:1: OSError"


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientConnectorDNSError(_key(), OSError(-2, "Name or service not known")),
        aiohttp.ClientProxyConnectionError(_key(), OSError(errno.ECONNREFUSED, "refused")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connector_error_subclasses_are_network_errors(exc: Exception) -> None:
    mapped = _translate(exc)
    assert type(mapped) is bgtransfer.NetworkError
    assert "cannot connect to example.com:8080" in str(mapped)


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ClientPayloadError(),
    ],
    ids=["with-message", "empty"],
)
def test_payload_error_is_incomplete_body(exc: Exception) -> None:
    mapped = _translate(exc)
    assert type(mapped) is bgtransfer.IncompleteBodyError
    assert isinstance(mapped, bgtransfer.NetworkError)
    assert "the body was cut short" in str(mapped)
    assert (str(exc) or "ClientPayloadError") in str(mapped)


def test_server_disconnected_is_incomplete_body() -> None:
    mapped = _translate(aiohttp.ServerDisconnectedError())
    assert type(mapped) is bgtransfer.IncompleteBodyError
    assert str(mapped) == f"{URL}: the server closed the connection before the body ended"


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
        aiohttp.ConnectionTimeoutError("Connection timeout"),
        aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("seconds", [30.0, 2.5])
def test_timeouts_mention_the_seconds(exc: Exception, seconds: float) -> None:
    mapped = _translate(exc, timeout=seconds)
    assert type(mapped) is bgtransfer.TransferTimeoutError
    assert isinstance(mapped, TimeoutError)
    assert str(mapped) == f"{URL}: no data for {seconds} seconds (request_timeout)"


def test_too_many_redirects_is_protocol_error() -> None:
    exc = aiohttp.TooManyRedirects(_request_info(), (), status=302, message="Too many redirects")
    mapped = _translate(exc)
    assert type(mapped) is bgtransfer.ProtocolError
    assert str(mapped) == f"{URL}: too many redirects (last status 302)"


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientResponseError(_request_info(), (), status=400, message="bad header line"),
        aiohttp.ContentTypeError(_request_info(), (), message="bad header line"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_response_errors_are_protocol_errors(exc: Exception) -> None:
    mapped = _translate(exc)
    assert type(mapped) is bgtransfer.ProtocolError
    assert not isinstance(mapped, bgtransfer.HTTPStatusError)
    assert str(mapped) == f"{URL}: malformed response: bad header line"


def test_invalid_url_in_redirect_shows_no_query_or_userinfo() -> None:
    mapped = _translate(aiohttp.InvalidURL("http://u:pw-s3cret@example.com/x?token=s3cret"))
    assert type(mapped) is bgtransfer.ProtocolError
    assert "s3cret" not in str(mapped)
    assert "http://example.com/x" in str(mapped)


def test_invalid_url_in_redirect_is_protocol_error() -> None:
    mapped = _translate(aiohttp.InvalidURL("http://bad host/"))
    assert type(mapped) is bgtransfer.ProtocolError
    assert "invalid URL in response or redirect" in str(mapped)
    assert "http://bad host/" in str(mapped)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"), "reset by peer"),
        (aiohttp.ClientOSError(), "ClientOSError"),
        (aiohttp.ClientConnectionResetError("Cannot write to closing transport"), "closing"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "reset by peer"),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), "Broken pipe"),
        (ConnectionAbortedError(), "ConnectionAbortedError"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_os_level_connection_errors_are_network_errors(exc: Exception, reason: str) -> None:
    mapped = _translate(exc)
    assert type(mapped) is bgtransfer.NetworkError
    assert str(mapped).startswith(f"{URL}: connection failed: ")
    assert reason in str(mapped)


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE], ids=errno.errorcode.get)
def test_out_of_descriptors_for_a_socket_is_a_network_error(code: int) -> None:
    """No socket could be made: transient like any failure to connect (issue 18, item 7)."""
    mapped = _translate(OSError(code, os.strerror(code)))
    assert type(mapped) is bgtransfer.NetworkError
    assert str(mapped) == f"{URL}: cannot open a connection: [Errno {code}] {os.strerror(code)}"
    assert bgtransfer.RetryPolicy().is_transient(mapped)


def test_out_of_descriptors_for_a_file_names_the_cause() -> None:
    error = file_error(OSError(errno.EMFILE, "x"), url=URL, action="open partial file", path="/p")
    assert str(error) == f"{URL}: cannot open partial file /p: too many open files in the process"
    assert bgtransfer.RetryPolicy().is_transient(error)


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (aiohttp.ClientError("boom"), "ClientError: boom"),
        (aiohttp.ClientError(), "ClientError: ClientError"),
        (aiohttp.ClientConnectionError("connection closed"), "ClientConnectionError: connection"),
        (aiohttp.ServerFingerprintMismatch(b"a", b"b", "h", 443), "ServerFingerprintMismatch: "),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_generic_client_errors_are_network_errors(exc: Exception, message: str) -> None:
    mapped = _translate(exc)
    assert type(mapped) is bgtransfer.NetworkError
    assert str(mapped).startswith(f"{URL}: {message}")


@pytest.mark.parametrize(
    "exc",
    [
        bgtransfer.NetworkError("x", url="http://other/"),
        bgtransfer.HTTPStatusError(500, url=URL),
        bgtransfer.LocalFileError("disk", url=URL, errno=errno.ENOSPC),
        bgtransfer.TransferTimeoutError("slow", url=URL),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transfer_errors_pass_through_unchanged(exc: bgtransfer.TransferError) -> None:
    assert _translate(exc) is exc


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("v"),
        KeyError("k"),
        RuntimeError("r"),
        TypeError("t"),
        PermissionError(errno.EACCES, "denied"),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
        bgtransfer.InvalidURLError("not a transfer error"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_foreign_errors_are_not_translated(exc: BaseException) -> None:
    assert _translate(exc) is None


# -- map_errors -----------------------------------------------------------------------------------


def test_map_errors_raises_from_the_original() -> None:
    original = aiohttp.ServerDisconnectedError()
    with (
        pytest.raises(bgtransfer.IncompleteBodyError) as info,
        map_errors(url=URL, request_timeout=10),
    ):
        raise original
    assert info.value.__cause__ is original
    assert info.value.url == URL


def test_map_errors_without_exception_is_transparent() -> None:
    with map_errors(url=URL, request_timeout=10):
        result = 1 + 1
    assert result == 2


def test_map_errors_passes_transfer_error_through_unchanged() -> None:
    original = bgtransfer.ProtocolError("bad", url=URL)
    with pytest.raises(bgtransfer.ProtocolError) as info, map_errors(url=URL, request_timeout=10):
        raise original
    assert info.value is original
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("v"),
        KeyError("k"),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
        OSError(5, "io"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_map_errors_reraises_untranslated_as_is(exc: BaseException) -> None:
    with pytest.raises(type(exc)) as info, map_errors(url=URL, request_timeout=10):
        raise exc
    assert info.value is exc
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    ("exc", "mapped_type"),
    [
        (aiohttp.ClientConnectorError(_key(), OSError(111, "refused")), bgtransfer.NetworkError),
        (aiohttp.ClientPayloadError("cut"), bgtransfer.IncompleteBodyError),
        (aiohttp.ServerTimeoutError("t"), bgtransfer.TransferTimeoutError),
        (aiohttp.ClientOSError(104, "reset"), bgtransfer.NetworkError),
        (aiohttp.ClientError("x"), bgtransfer.NetworkError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_map_errors_keeps_cause(exc: Exception, mapped_type: type[Exception]) -> None:
    with pytest.raises(mapped_type) as info, map_errors(url=URL, request_timeout=10):
        raise exc
    assert type(info.value) is mapped_type
    assert info.value.__cause__ is exc


# -- file_error -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "operation not permitted"),
        (errno.ENOENT, "no such file or directory"),
        (errno.EROFS, "read-only file system"),
        (errno.EISDIR, "is a directory"),
        (errno.ENOTDIR, "not a directory"),
    ],
    ids=lambda v: errno.errorcode.get(v, str(v)) if isinstance(v, int) else "",
)
def test_file_error_known_causes(code: int, cause: str, tmp_path: Path) -> None:
    path = tmp_path / "dl" / "x.part"
    error = file_error(OSError(code, os.strerror(code)), url=URL, action="write", path=path)
    assert type(error) is bgtransfer.LocalFileError
    assert str(error) == f"{URL}: cannot write {path}: {cause}"
    assert error.errno == code
    assert error.filename == str(path)
    assert error.strerror == os.strerror(code)
    assert error.url == URL


def test_file_error_unknown_errno_uses_strerror() -> None:
    error = file_error(OSError(errno.EIO, "Input/output error"), url=URL, action="read", path="/p")
    assert str(error) == f"{URL}: cannot read /p: Input/output error"
    assert error.errno == errno.EIO


def test_file_error_without_errno_uses_str() -> None:
    error = file_error(OSError("weird failure"), url=URL, action="move", path=Path("/a/b"))
    assert str(error) == f"{URL}: cannot move /a/b: weird failure"
    assert error.errno is None
    assert error.filename == "/a/b"


def test_file_error_from_real_oserror(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "file"
    with pytest.raises(FileNotFoundError) as info:
        missing.open("rb")
    error = file_error(info.value, url=URL, action="open", path=missing)
    assert error.errno == errno.ENOENT
    assert str(missing) in str(error)
    assert "no such file or directory" in str(error)


def test_file_error_raise_from_keeps_cause() -> None:
    original = OSError(errno.ENOSPC, "No space left on device")

    def write() -> None:
        try:
            raise original
        except OSError as exc:
            raise file_error(exc, url=URL, action="write", path="/x") from exc

    with pytest.raises(bgtransfer.LocalFileError) as info:
        write()
    assert info.value.__cause__ is original
    assert isinstance(info.value, OSError)


# -- through a real aiohttp.ClientSession, with aioresponses --------------------------------------


@pytest.mark.asyncio
async def test_client_connection_error_in_get_becomes_network_error() -> None:
    with aioresponses() as mocked:
        mocked.get(URL, exception=aiohttp.ClientConnectionError("connection refused"))
        async with aiohttp.ClientSession() as session:
            with (
                pytest.raises(bgtransfer.NetworkError) as info,
                map_errors(url=URL, request_timeout=5),
            ):
                await session.get(URL)
    error = info.value
    assert type(error) is bgtransfer.NetworkError
    assert error.url == URL
    assert str(error).startswith(f"{URL}: ")
    assert "connection refused" in str(error)
    assert isinstance(error.__cause__, aiohttp.ClientConnectionError)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("exc", "mapped_type"),
    [
        (aiohttp.ClientConnectorError(_key(), OSError(111, "refused")), bgtransfer.NetworkError),
        (aiohttp.ServerDisconnectedError(), bgtransfer.IncompleteBodyError),
        (aiohttp.ClientPayloadError("cut"), bgtransfer.IncompleteBodyError),
        (TimeoutError(), bgtransfer.TransferTimeoutError),
        (aiohttp.ServerTimeoutError("t"), bgtransfer.TransferTimeoutError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
async def test_errors_raised_by_session_get_are_mapped(
    exc: Exception, mapped_type: type[Exception]
) -> None:
    with aioresponses() as mocked:
        mocked.get(URL, exception=exc)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(mapped_type) as info, map_errors(url=URL, request_timeout=7):
                await session.get(URL)
    assert type(info.value) is mapped_type
    assert info.value.__cause__ is exc
    assert str(info.value).startswith(f"{URL}: ")


@pytest.mark.asyncio
async def test_cancellation_inside_map_errors_is_not_translated() -> None:
    started = asyncio.Event()

    async def worker() -> None:
        with map_errors(url=URL, request_timeout=7):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(worker())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    error.verify_code = code
    error.verify_message = message
    return error


@pytest.mark.parametrize(
    ("code", "check"),
    [
        (20, "unknown_ca"),
        (19, "self_signed"),
        (62, "hostname_mismatch"),
        (10, "expired"),
        (9, "not_yet_valid"),
        (50, "certificate"),
    ],
)
def test_a_certificate_error_is_a_tls_error_saying_which_check_failed(
    code: int, check: str
) -> None:
    exc = aiohttp.ClientConnectorCertificateError(_key(), _verify_error(code, "the reason"))
    mapped = _translate(exc)
    assert type(mapped) is bgtransfer.TLSError
    assert mapped.check == check
    assert "example.com:8080" in str(mapped)
    assert "the reason" in str(mapped)
    assert not bgtransfer.RetryPolicy().is_transient(mapped)


def test_a_proxy_failure_is_a_proxy_error_and_a_407_is_final() -> None:
    refused = _translate(ProxyFailure("http://127.0.0.1:3128", None, "refused"))
    assert type(refused) is bgtransfer.ProxyError
    assert refused.proxy == "http://127.0.0.1:3128"
    assert bgtransfer.RetryPolicy().is_transient(refused)
    wanted = _translate(ProxyFailure("http://127.0.0.1:3128", 407, "Proxy Authentication Required"))
    assert isinstance(wanted, bgtransfer.ProxyError)
    assert wanted.status == 407
    assert not bgtransfer.RetryPolicy().is_transient(wanted)
    gateway = _translate(ProxyFailure("http://127.0.0.1:3128", 502, "Bad Gateway"))
    assert isinstance(gateway, bgtransfer.ProxyError)
    assert bgtransfer.RetryPolicy().is_transient(gateway)
    assert "the proxy http://127.0.0.1:3128 answered 502 Bad Gateway" in str(gateway)
