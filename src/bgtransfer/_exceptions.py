"""The exception tree. Every error bgtransfer raises or reports is one of these.

::

    BgTransferError                          (Exception)
    ├── InvalidRequestError                  (+ ValueError)  wrong before any I/O
    │   ├── InvalidURLError                  malformed URL, no host
    │   ├── UnsupportedSchemeError           not http/https
    │   ├── InvalidDestinationError          destination unusable: directory missing, claimed
    │   │                                     twice, in the state directory, not a regular file
    │   └── InvalidSourceError               an upload's file: missing, not a regular file
    ├── TransferError                        a transfer failed; carries .url
    │   ├── HTTPStatusError                  the server answered 4xx/5xx; carries .status
    │   │   └── AuthenticationError          a 401 again with the credentials given;
    │   │                                     never retried
    │   ├── NetworkError                     (+ ConnectionError) refused, reset, DNS
    │   │   ├── IncompleteBodyError          the body ended before its announced length
    │   │   ├── ProxyError                   the proxy refused, wants credentials (407),
    │   │   │                                 or could not reach the server; .proxy, .status
    │   │   └── TLSError                     a TLS check failed; .check says which
    │   │                                     (unknown_ca, hostname_mismatch, expired...);
    │   │                                     never retried
    │   ├── ProtocolError                    the server broke HTTP rules we rely on
    │   │   └── ResumableUploadError         a tus or IETF-draft upload server broke its
    │   │                                     protocol (offset backwards or past the end,
    │   │                                     upload URL on another scheme, 412...)
    │   ├── UploadExpiredError               the server no longer has the resumable upload
    │   │                                     (404/410), even after starting it over
    │   ├── UploadChecksumError              the server kept refusing an upload's checksum
    │   │                                     (tus 460)
    │   ├── IntegrityError                   checksum/size/digest mismatch; .algorithm,
    │   │                                     .expected, .actual; never retried
    │   ├── RedirectError                    a redirect refused (https to http, not
    │   │                                     http(s), too many); never retried
    │   ├── ResponseTooLargeError            a fetch()'s body is over its cap (.max_bytes);
    │   │                                     never retried
    │   ├── TransferTimeoutError             (+ TimeoutError) no byte for request_timeout,
    │   │   │                                 or slower than the minimum speed
    │   │   └── ResourceTimeoutError         the whole task outlived resource_timeout
    │   └── LocalFileError                   (+ OSError) disk full, permission denied...
    │       ├── JournalWriteError            the journal could not record the task
    │       │                                 (.filename: the journal; disk full...)
    │       └── SourceChangedError           an upload's file changed (size, mtime, inode)
    └── SessionError                         (+ RuntimeError) the session cannot be used
        ├── SessionClosedError               the session is not open
        ├── SessionInUseError                another Session owns the identifier (.pid)
        ├── TaskSuspendedError               task.wait() on a suspended task (.task_id)
        ├── DaemonError                      the transfer daemon cannot be reached or
        │                                     started, or speaks another protocol version
        └── JournalError                     the journal is unreadable or unwritable (.path)

Errors split the way h11 splits them: :class:`InvalidRequestError` and
:class:`SessionError` mean "you called us wrong" and are raised at the call;
every :class:`TransferError` means "the world went wrong" and arrives as the
``error`` of an :class:`~bgtransfer.ErrorEvent` (and is raised by
``task.wait()``). aiohttp and OS exceptions never escape: they are translated
in one place (``bgtransfer._io.errors``) with ``raise ... from exc`` so the
original stays on ``__cause__``.

Cancellation is not an error: a cancelled task ends with a ``CancelledEvent``.
"""

from __future__ import annotations

import os as _os

__all__ = [
    "AuthenticationError",
    "BgTransferError",
    "DaemonError",
    "HTTPStatusError",
    "IncompleteBodyError",
    "IntegrityError",
    "InvalidDestinationError",
    "InvalidRequestError",
    "InvalidSourceError",
    "InvalidURLError",
    "JournalError",
    "JournalWriteError",
    "LocalFileError",
    "NetworkError",
    "ProtocolError",
    "ProxyError",
    "RedirectError",
    "ResourceTimeoutError",
    "ResponseTooLargeError",
    "ResumableUploadError",
    "SessionClosedError",
    "SessionError",
    "SessionInUseError",
    "SourceChangedError",
    "TLSError",
    "TaskSuspendedError",
    "TransferError",
    "TransferTimeoutError",
    "UnsupportedSchemeError",
    "UploadChecksumError",
    "UploadExpiredError",
]


class BgTransferError(Exception):
    """Root of every exception bgtransfer raises or reports."""


# --- "you called us wrong" -------------------------------------------------


class InvalidRequestError(BgTransferError, ValueError):
    """An argument is wrong before any I/O happens; raised at the call."""


class InvalidURLError(InvalidRequestError):
    """The URL cannot be parsed or has no host."""


class UnsupportedSchemeError(InvalidRequestError):
    """The URL's scheme is not one bgtransfer can download (http, https)."""


class InvalidDestinationError(InvalidRequestError):
    """The destination cannot be used: its directory does not exist, another task
    claims the same path, it is inside the state directory (but for the session's
    ``downloads/``), it exists and is not a regular file, or it is no possible path
    (empty, a NUL byte)."""


class InvalidSourceError(InvalidRequestError):
    """The file to upload cannot be used: it does not exist, is not a regular file
    (a directory, a device, a FIFO), or cannot be read."""


class SessionError(BgTransferError, RuntimeError):
    """The session was used in a way its state does not allow."""


class SessionClosedError(SessionError):
    """The session is not open (not entered yet, or already closed)."""


class DaemonError(SessionError):
    """``Session(..., daemon=True)`` cannot use the transfer daemon: it did not
    start or answer in time (the message says why and where its log is), or it
    speaks another protocol version (the message names both)."""


class TaskSuspendedError(SessionError):
    """``task.wait()`` found the task suspended, at the call or while waiting:
    nothing ends it until it is resumed or cancelled, so waiting would hang.

    ``task_id`` and ``url`` name the task.
    """

    def __init__(self, task_id: int, url: str) -> None:
        super().__init__(
            f"task {task_id} ({url}) is suspended: resume() or cancel() it to see it end"
        )
        self.task_id = task_id
        self.url = url

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.task_id, self.url))


class SessionInUseError(SessionError):
    """Another open ``Session`` (in this process or another) owns the identifier.

    ``pid`` is the owner's process id when it could be read, else None.
    """

    def __init__(self, identifier: str, pid: int | None) -> None:
        owner = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"session {identifier!r} is in use by {owner}")
        self.identifier = identifier
        self.pid = pid

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.identifier, self.pid))


class JournalError(SessionError):
    """A background session's journal cannot be used: corrupt, truncated, written by
    a newer bgtransfer, or not writable. ``path`` names the file. Nothing is deleted:
    partial and finished files stay where they are."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"journal {path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.path, self.problem))


# --- "the world went wrong" ------------------------------------------------


class TransferError(BgTransferError):
    """A transfer failed. ``url`` names what was being fetched; ``str()`` names the cause."""

    url: str

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructors defeat the default pickling and copying of
        # exceptions; errors must survive both (the daemon sends them to clients).
        state = dict(self.__dict__)
        if isinstance(self, OSError):
            os_state = {"errno": self.errno, "filename": self.filename, "strerror": self.strerror}
            state.update({k: v for k, v in os_state.items() if v is not None})
        return (_restore, (type(self), self.args, state))

    def __str__(self) -> str:
        # The OSError-derived classes would format "[Errno N] ..." from their
        # attributes; every transfer error reads "<url>: <cause>".
        return str(self.args[0]) if self.args else ""


def _restore(
    cls: type[TransferError], args: tuple[object, ...], state: dict[str, object]
) -> TransferError:
    error = cls.__new__(cls, *args)
    BaseException.__init__(error, *args)
    for name, value in state.items():
        setattr(error, name, value)
    return error


class HTTPStatusError(TransferError):
    """The server answered with a status that is not a success (4xx, 5xx, or unexpected)."""

    status: int
    reason: str
    retry_after: str | None
    """The response's Retry-After header, if it sent one."""
    www_authenticate: str | None
    """A 401's ``WWW-Authenticate`` header (several joined by ``", "``), if it sent one."""

    def __init__(
        self,
        status: int,
        reason: str = "",
        *,
        url: str,
        retry_after: str | None = None,
        www_authenticate: str | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.www_authenticate = www_authenticate
        text = f"HTTP {status} {reason}".rstrip()
        super().__init__(text, url=url)


class AuthenticationError(HTTPStatusError):
    """The server answered 401 again to the credentials given for it
    (``Configuration.auth``, ``netrc``): each is tried once, and the task ends
    here rather than asking again. Never retried. ``status`` is 401; the
    message names the scheme tried, never the credentials."""

    def __init__(
        self,
        status: int,
        reason: str = "",
        *,
        url: str,
        retry_after: str | None = None,
        www_authenticate: str | None = None,
        scheme: str = "",
    ) -> None:
        super().__init__(
            status, reason, url=url, retry_after=retry_after, www_authenticate=www_authenticate
        )
        self.scheme = scheme
        shown = f" ({scheme})" if scheme else ""
        self.args = (
            f"{url}: HTTP {status} {reason}".rstrip()
            + f": the server refused the credentials given{shown}",
        )


class NetworkError(TransferError, ConnectionError):
    """The connection could not be made or was lost."""


class IncompleteBodyError(NetworkError):
    """The body ended before the length the server announced (a truncated transfer)."""


class ProxyError(NetworkError):
    """The proxy could not be used: it refused the connection, asked for
    credentials (status 407), or answered the tunnel or request with an error
    of its own (502 Bad Gateway: it could not reach the server...).

    ``proxy`` names it as ``scheme://host:port`` (never its credentials);
    ``status`` is the proxy's status code, or None when there was no answer.
    Retried as a network error is, but for a status that is not one of
    ``RetryPolicy.retry_statuses`` (407: credentials will not appear by waiting).
    """

    proxy: str
    status: int | None

    def __init__(self, message: str, *, url: str, proxy: str, status: int | None = None) -> None:
        super().__init__(message, url=url)
        self.proxy = proxy
        self.status = status


class TLSError(NetworkError):
    """A TLS check failed: the server's certificate could not be verified, or
    the handshake failed. Never retried: the certificate will not change.

    ``check`` says which: ``"unknown_ca"`` (no trusted authority vouches for
    it), ``"self_signed"``, ``"hostname_mismatch"``, ``"expired"``,
    ``"not_yet_valid"``, ``"revoked"``, ``"certificate"`` (another verification
    failure), ``"client_certificate"`` (the server wants a client certificate or
    refused the one given) or ``"handshake"`` (any other TLS failure).
    """

    check: str

    def __init__(self, message: str, *, url: str, check: str) -> None:
        super().__init__(message, url=url)
        self.check = check


class ProtocolError(TransferError):
    """The server's answer breaks an HTTP rule the download relies on."""


class ResumableUploadError(ProtocolError):
    """A resumable-upload server (tus 1.0 or the IETF draft) broke its protocol: it
    moved the upload's offset backwards or past the file's size, gave an upload URL
    on a scheme bgtransfer does not accept (or from https to http), left out a
    header the protocol requires, or speaks another protocol version (tus 412).
    Never retried: the server would answer the same."""


class UploadExpiredError(TransferError):
    """The server no longer has the resumable upload (it answered 404 or 410 for
    its upload URL: expired or removed), and starting the upload over with a new
    one met the same fate. ``status`` is the last status."""

    status: int

    def __init__(self, message: str, *, url: str, status: int) -> None:
        self.status = status
        super().__init__(message, url=url)


class UploadChecksumError(TransferError):
    """The server refused the checksum of what was sent (tus ``460``) again and
    again: the bytes are corrupted on the way, or the file changes while it is
    read."""


class IntegrityError(TransferError):
    """The downloaded bytes are not the ones asked for: their digest or size
    differs from the ``checksum=`` or ``expected_size=`` of the download, or
    from a ``Repr-Digest``/``Content-Digest`` the server sent. ``algorithm``
    (``"sha256"``, ..., or ``"size"``), ``expected`` and ``actual`` (lowercase
    hex, or the sizes as decimal text) say which. Never retried; the bytes
    never reach the destination (the partial file is removed)."""

    algorithm: str
    expected: str
    actual: str

    def __init__(
        self, message: str, *, url: str, algorithm: str, expected: str, actual: str
    ) -> None:
        super().__init__(message, url=url)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


class ResponseTooLargeError(TransferError):
    """A response body :meth:`Session.fetch` was to keep in memory is longer
    than its cap (``max_bytes``, default ``Configuration.fetch_max_bytes``);
    nothing past the cap was buffered."""

    max_bytes: int

    def __init__(self, message: str, *, url: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(message, url=url)


class RedirectError(TransferError):
    """A redirect was refused: from https to http (unless
    ``Configuration.allow_insecure_redirects``), to a scheme other than http or
    https, or past the redirect limit. Never retried: the server would answer
    the same. The message shows the target as ``scheme://host/path`` only."""


class TransferTimeoutError(TransferError, TimeoutError):
    """No byte for ``request_timeout`` seconds, or the task outlived ``resource_timeout``."""


class ResourceTimeoutError(TransferTimeoutError):
    """The whole task took longer than ``resource_timeout``. Never retried."""


class LocalFileError(TransferError, OSError):
    """Reading or writing a local file failed (disk full, permission denied, ...).

    ``errno`` and ``filename`` are those of the underlying :class:`OSError`.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        errno: int | None = None,
        filename: str | None = None,
    ) -> None:
        TransferError.__init__(self, message, url=url)
        self.errno = errno
        self.filename = filename
        self.strerror = _os.strerror(errno) if errno is not None else None


class JournalWriteError(LocalFileError):
    """A background session's journal could not record the task: its file system is
    full or read-only, or the task's record could not be stored. The task ends
    with this error (its state cannot be vouched for to a later process).

    ``filename`` is the journal's path; ``errno`` that of the cause when it was a
    system error (``ENOSPC``, ``EROFS``, ``EIO``...), else None. A later process
    finds the task as the journal last recorded it, and may continue it.
    """


class SourceChangedError(LocalFileError):
    """An upload's source file changed after ``Session.upload()`` took its
    identity (size, modification time, device and inode): its size or
    modification time changed, or another file is at its path now. The task
    fails rather than send a mix of two versions; ``filename`` is the source."""
