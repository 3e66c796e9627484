"""The one boundary where aiohttp, asyncio and OS exceptions become bgtransfer's.

Everything below this line speaks aiohttp and ``OSError``; everything above it
sees only :class:`~bgtransfer.TransferError` subclasses, each naming the URL and
the cause, with the original exception on ``__cause__``.
"""

from __future__ import annotations

import errno
import sqlite3
import ssl
from types import TracebackType

import aiohttp

from .._core.network import tls_check_for_verify_code
from .._core.retry import OUT_OF_DESCRIPTORS
from .._core.secrets import redacted_url
from .._exceptions import (
    IncompleteBodyError,
    JournalError,
    JournalWriteError,
    LocalFileError,
    NetworkError,
    ProtocolError,
    ProxyError,
    RedirectError,
    TLSError,
    TransferError,
    TransferTimeoutError,
)
from .proxy import ProxyFailure

__all__ = ["file_error", "journal_write_error", "map_errors", "quiet_error", "translate"]

_FILE_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.EROFS: "read-only file system",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "not a directory",
    errno.ELOOP: "it is a symbolic link (bgtransfer does not follow links where it writes)",
    errno.EMFILE: "too many open files in the process",
    errno.ENFILE: "too many open files in the system",
}


def file_error(exc: OSError, *, url: str, action: str, path: object) -> LocalFileError:
    """A :class:`LocalFileError` for an ``OSError`` met while doing ``action`` on ``path``."""
    cause = _FILE_CAUSES.get(exc.errno or 0) or exc.strerror or str(exc)
    return LocalFileError(
        f"cannot {action} {path}: {cause}",
        url=url,
        errno=exc.errno,
        filename=str(path),
    )


_SQLITE_ERRNOS = {
    sqlite3.SQLITE_FULL: errno.ENOSPC,
    sqlite3.SQLITE_READONLY: errno.EROFS,
    sqlite3.SQLITE_IOERR: errno.EIO,
    sqlite3.SQLITE_PERM: errno.EACCES,
    sqlite3.SQLITE_CANTOPEN: errno.ENOENT,
    sqlite3.SQLITE_NOMEM: errno.ENOMEM,
}
"""The errno a SQLite result code (its primary part) stands for."""


def journal_write_error(problem: JournalError, *, url: str) -> JournalWriteError:
    """The task's error for a journal that could not record it: ``problem`` is
    the journal's error, its ``__cause__`` the SQLite, OS or encoding error."""
    cause = problem.__cause__
    code: int | None = None
    if isinstance(cause, OSError):
        code = cause.errno
        text = _FILE_CAUSES.get(code or 0) or cause.strerror or str(cause)
    elif isinstance(cause, sqlite3.Error):
        primary = getattr(cause, "sqlite_errorcode", None)
        code = None if primary is None else _SQLITE_ERRNOS.get(primary & 0xFF)
        text = str(cause)
    elif cause is not None:
        text = f"{type(cause).__name__}: {cause}"
    else:
        text = problem.problem
    return JournalWriteError(
        f"cannot record the task in the journal {problem.path}: {text}",
        url=url,
        errno=code,
        filename=problem.path,
    )


def quiet_error(request_timeout: float | None, *, url: str) -> TransferTimeoutError:
    """The error for a server that sent nothing for ``request_timeout`` seconds."""
    return TransferTimeoutError(f"no data for {request_timeout} seconds (request_timeout)", url=url)


def translate(
    exc: BaseException, *, url: str, request_timeout: float | None
) -> TransferError | None:
    """The bgtransfer error for a foreign exception, or None if it is not ours to translate.

    Cancellation and programming errors are never translated.
    """
    if isinstance(exc, TransferError):
        return exc
    if isinstance(exc, ProxyFailure):
        return _proxy_error(exc, url)
    return _tls_error(exc, url) or _http_error(exc, url=url, request_timeout=request_timeout)


def _http_error(
    exc: BaseException, *, url: str, request_timeout: float | None
) -> TransferError | None:
    if isinstance(exc, aiohttp.TooManyRedirects):
        return ProtocolError(f"too many redirects (last status {exc.status})", url=url)
    if isinstance(exc, aiohttp.ClientResponseError):
        # Statuses are judged by the core (we never call raise_for_status), so a
        # ClientResponseError here means aiohttp could not parse the answer.
        return ProtocolError(f"malformed response: {exc.message}", url=url)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return IncompleteBodyError(f"the body was cut short ({_reason(exc)})", url=url)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return IncompleteBodyError(
            "the server closed the connection before the body ended", url=url
        )
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        # aiohttp raises these for sock_connect/sock_read, i.e. request_timeout.
        return quiet_error(request_timeout, url=url)
    if isinstance(exc, aiohttp.RedirectClientError):
        # (Redirects are followed by _io.transfer, which refuses these first.)
        return RedirectError(f"refused a redirect ({type(exc).__name__})", url=url)
    if isinstance(exc, aiohttp.InvalidURL):
        # (Shown as scheme://host/path: a query or userinfo may hold a secret.)
        shown = redacted_url(str(exc.url))
        return ProtocolError(f"invalid URL in response or redirect: {shown}", url=url)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return NetworkError(
            f"cannot connect to {exc.host}:{exc.port}: {_reason(exc.os_error)}", url=url
        )
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        return NetworkError(f"connection failed: {_reason(exc)}", url=url)
    if isinstance(exc, OSError) and exc.errno in OUT_OF_DESCRIPTORS:
        # No socket for the request: transient, like any failure to connect.
        return NetworkError(f"cannot open a connection: {_reason(exc)}", url=url)
    if isinstance(exc, aiohttp.ClientError):
        return NetworkError(f"{type(exc).__name__}: {_reason(exc)}", url=url)
    return None


class map_errors:
    """Translate foreign exceptions raised in the block; let everything else through.

    A class, not ``@contextmanager``: it wraps every request (a generator-based
    manager costs several calls more each time)."""

    __slots__ = ("_request_timeout", "_url")

    def __init__(self, *, url: str, request_timeout: float | None) -> None:
        self._url = url
        self._request_timeout = request_timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(exc, Exception):
            return
        mapped = translate(exc, url=self._url, request_timeout=self._request_timeout)
        if mapped is not None and mapped is not exc:
            raise mapped from exc


def _proxy_error(exc: ProxyFailure, url: str) -> ProxyError:
    if exc.status == 407:
        message = (
            f"the proxy {exc.proxy} wants credentials (407 {exc.reason}): give them in "
            "Configuration.proxy (http://user:password@host:port) or the environment's "
            "proxy URL, or check the ones given"
        )
    elif exc.status is not None:
        message = f"the proxy {exc.proxy} answered {exc.status} {exc.reason}".rstrip()
    else:
        message = f"cannot connect to the proxy {exc.proxy}: {exc.reason}"
    return ProxyError(message, url=url, proxy=exc.proxy, status=exc.status)


_CLIENT_CERTIFICATE_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
)
"""Alerts a server sends when it wants a client certificate or refused ours."""


def _tls_error(exc: BaseException, url: str) -> TLSError | None:
    """The :class:`TLSError` for a failed TLS check, or None if ``exc`` is not one."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        failed = exc.certificate_error
        check = tls_check_for_verify_code(getattr(failed, "verify_code", None))
        detail = getattr(failed, "verify_message", None) or _reason(failed)
        return TLSError(
            f"TLS: the certificate of {exc.host}:{exc.port} failed verification "
            f"({check}: {detail})",
            url=url,
            check=check,
        )
    cause: BaseException | None
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        cause = exc.os_error
        where = f"{exc.host}:{exc.port}"
    elif isinstance(exc, ssl.SSLError) or (
        isinstance(exc, aiohttp.ClientOSError) and isinstance(exc.__cause__, ssl.SSLError)
    ):
        # An alert after the handshake (TLS 1.3 sends the refusal of a client
        # certificate there): it comes with the first read.
        cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
        where = "the server"
    else:
        return None
    assert cause is not None
    reason = getattr(cause, "reason", None) or ""
    # (Alerts read "TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE"...)
    wants_cert = "ALERT" in reason and any(a in reason for a in _CLIENT_CERTIFICATE_ALERTS)
    check = "client_certificate" if wants_cert else "handshake"
    text = (
        "the server wants a client certificate (Configuration.client_cert) or refused the one given"
        if wants_cert
        else "the handshake failed"
    )
    return TLSError(f"TLS with {where}: {text} ({_reason(cause)})", url=url, check=check)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
