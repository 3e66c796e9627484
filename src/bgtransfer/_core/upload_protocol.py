"""What the resumable-upload machines share, without I/O: requests, responses, checks.

A machine (``_core.tus.TusUpload``, ``_core.resumable_upload.IetfUpload``) is a
frozen value. It says the next request to make (:class:`UploadRequest`: method,
URL, headers, the byte range of the file to send) and, given the response
(:class:`UploadResponse`), returns the machine's next value or raises a typed
error. The I/O shell (``_io.resumable``) only sends what it is told.

The rules every protocol needs live here: resolving an upload URL from a
``Location`` (it must stay on http(s) and never go from https to http), reading
an offset (a non-negative integer), and refusing an offset that moves backwards
or past the file's size: the server is untrusted input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal, Protocol, Self, TypeVar
from urllib.parse import urljoin, urlsplit

import attrs

from .._exceptions import HTTPStatusError, ResumableUploadError, UploadExpiredError
from .secrets import redacted_url

__all__ = [
    "GONE_STATUSES",
    "MAX_CONFLICTS",
    "MAX_RESTARTS",
    "UploadMachine",
    "UploadRequest",
    "UploadResponse",
    "advertised_protocol",
    "check_offset",
    "discovery_request",
    "head_offset",
    "parse_offset",
    "resolve_upload_url",
    "start_over",
    "status_error",
]

MAX_RESTARTS: Final = 2
"""How many times an upload the server lost (404/410) is started over, at most."""

MAX_CONFLICTS: Final = 3
"""Offset mismatches (409) in a row, without progress, before the server is distrusted."""

GONE_STATUSES: Final = frozenset({404, 410})
"""The statuses that say an upload URL no longer exists (expired or removed)."""

_ACCEPTED_SCHEMES: Final = frozenset({"http", "https"})
_DIGITS: Final = re.compile(r"[0-9]{1,19}")


Headers = tuple[tuple[str, str], ...]


@attrs.frozen(kw_only=True)
class UploadRequest:
    """One request a machine wants sent."""

    method: str
    url: str
    headers: Headers = ()
    body: tuple[int, int] | None = None
    """``(start, end)``: send the file's bytes ``[start, end)``; None: no body."""
    checksum: str | None = None
    """A hash algorithm (``"sha1"``): send ``Upload-Checksum: <algorithm> <base64
    digest of the body>`` (the tus checksum extension)."""

    @property
    def body_length(self) -> int:
        """How many bytes the body has (0 without one)."""
        return 0 if self.body is None else self.body[1] - self.body[0]


@attrs.frozen(kw_only=True)
class UploadResponse:
    """A response as a machine reads it: status, headers and (bounded) body."""

    status: int
    headers: Headers = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitively), or None."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    @classmethod
    def of(cls, status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> Self:
        """A response from any iterable of header pairs."""
        return cls(status=status, headers=tuple(headers), body=body)


class UploadMachine(Protocol):
    """What ``_io.resumable.send_resumable`` drives: both protocols' machines."""

    @property
    def task_url(self) -> str:
        """The URL errors name (the task's)."""

    @property
    def size(self) -> int:
        """The file's size in bytes."""

    @property
    def upload_url(self) -> str | None:
        """The upload's URL once the server made one; None before."""

    @property
    def offset(self) -> int | None:
        """The bytes the server acknowledged holding; None when it must be asked."""

    @property
    def result(self) -> UploadResponse | None:
        """The upload's final response once it is complete; None before."""

    def next_request(self) -> UploadRequest:
        """The request to make next (only while ``result`` is None)."""

    def on_response(self, request: UploadRequest, response: UploadResponse) -> Self:
        """The machine after ``response`` answered ``request``; raises a
        :class:`~bgtransfer.TransferError` when the upload cannot go on."""

    def on_interrupted(self) -> Self:
        """The machine after ``next_request()`` got no answer (connection lost):
        it asks the server where the upload stands before sending more."""

    def cancel_request(self) -> UploadRequest | None:
        """The request that removes the upload from the server, if there is one."""


def resolve_upload_url(request_url: str, location: str, *, task_url: str) -> str:
    """The upload URL a ``Location`` names, resolved against ``request_url``.

    Raises :class:`ResumableUploadError` for a URL that is not http(s), has no
    host or userinfo, or leads from https to http: sending the file there would
    leave the protection the app asked for.
    """
    text = location.strip()
    try:
        resolved = urljoin(request_url, text)
        parts = urlsplit(resolved)
        host = parts.hostname
    except ValueError:
        raise ResumableUploadError(
            "the server gave an upload URL that cannot be parsed", url=task_url
        ) from None
    scheme = parts.scheme.lower()
    shown = redacted_url(resolved)
    if scheme not in _ACCEPTED_SCHEMES or not host:
        raise ResumableUploadError(
            f"the server gave an upload URL bgtransfer does not accept: {shown} "
            "(only http and https URLs with a host)",
            url=task_url,
        )
    if "@" in parts.netloc:
        raise ResumableUploadError(
            f"the server gave an upload URL with credentials in it: {shown}", url=task_url
        )
    if scheme == "http" and urlsplit(request_url).scheme.lower() == "https":
        raise ResumableUploadError(
            f"the server gave an upload URL that leaves https for http: {shown}", url=task_url
        )
    return resolved


def parse_offset(value: str | None, *, header: str, task_url: str) -> int:
    """An offset header's value as an int; :class:`ResumableUploadError` if it
    is missing or not a non-negative integer."""
    if value is None:
        raise ResumableUploadError(f"the server's answer has no {header} header", url=task_url)
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise ResumableUploadError(
            f"the server's {header} is not a non-negative integer: {text[:40]!r}", url=task_url
        )
    return int(text)


def check_offset(
    offset: int, *, acknowledged: int | None, limit: int, size: int, task_url: str
) -> int:
    """``offset`` if the server may say it, else :class:`ResumableUploadError`.

    The offset never decreases below what the server ``acknowledged`` before
    (the protocols forbid it: acknowledged bytes are never asked for again), and
    never passes ``limit`` (what was sent so far) nor ``size`` (the file's).
    """
    if acknowledged is not None and offset < acknowledged:
        raise ResumableUploadError(
            f"the server moved the upload's offset backwards, from {acknowledged} to {offset} "
            "bytes it holds",
            url=task_url,
        )
    if offset > size:
        raise ResumableUploadError(
            f"the server says it holds {offset} bytes of a {size}-byte file", url=task_url
        )
    if offset > limit:
        raise ResumableUploadError(
            f"the server says it holds {offset} bytes, more than the {limit} sent", url=task_url
        )
    return offset


def head_offset(
    response: UploadResponse, *, size: int, acknowledged: int | None, task_url: str
) -> int:
    """The offset a HEAD answer reports (both protocols ask the same way): an
    ``Upload-Length`` it gives must be the file's ``size``, and its
    ``Upload-Offset`` what :func:`check_offset` allows."""
    length = response.header("Upload-Length")
    if length is not None:
        announced = parse_offset(length, header="Upload-Length", task_url=task_url)
        if announced != size:
            raise ResumableUploadError(
                f"the server's upload is of {announced} bytes, the file of {size}",
                url=task_url,
            )
    offset = parse_offset(
        response.header("Upload-Offset"), header="Upload-Offset", task_url=task_url
    )
    return check_offset(offset, acknowledged=acknowledged, limit=size, size=size, task_url=task_url)


def status_error(response: UploadResponse, *, task_url: str) -> HTTPStatusError:
    """A status the protocol has no answer for, as the task's error (with the
    server's ``Retry-After``, which the retry policy honours)."""
    return HTTPStatusError(
        response.status, url=task_url, retry_after=response.header("Retry-After")
    )


class _Restartable(Protocol):
    """What :func:`start_over` needs of a machine (both protocols' have it)."""

    @property
    def task_url(self) -> str: ...

    @property
    def upload_url(self) -> str | None: ...

    @property
    def restarts(self) -> int: ...


R = TypeVar("R", bound=_Restartable)


def start_over(machine: R, status: int) -> R:
    """The machine after the server lost its upload (``status`` 404/410): a
    new creation, with the offset unknown and the conflicts forgotten;
    :class:`UploadExpiredError` when it has been started over
    :data:`MAX_RESTARTS` times already."""
    upload_url = machine.upload_url
    assert upload_url is not None
    if machine.restarts >= MAX_RESTARTS:
        raise UploadExpiredError(
            f"the server no longer has the upload {redacted_url(upload_url)} (HTTP {status}), "
            f"after starting it over {machine.restarts} times",
            url=machine.task_url,
            status=status,
        )
    return attrs.evolve(  # type: ignore[misc]  # (R is an attrs class: both machines are)
        machine,
        phase="create",
        upload_url=None,
        offset=None,
        restarts=machine.restarts + 1,
        conflicts=0,
    )


def discovery_request(endpoint: str) -> UploadRequest:
    """An ``OPTIONS`` request that either protocol's server answers about itself
    (for ``protocol="auto"``): it names tus 1.0.0 and the draft's interop version."""
    return UploadRequest(
        method="OPTIONS",
        url=endpoint,
        headers=(("Tus-Resumable", "1.0.0"), ("Upload-Draft-Interop-Version", "8")),
    )


def advertised_protocol(response: UploadResponse) -> Literal["tus", "ietf"] | None:
    """Which resumable protocol an ``OPTIONS`` answer advertises, if any.

    tus: a 2xx with ``Tus-Version`` naming 1.0.0. The IETF draft: a 2xx whose
    ``Accept-Patch`` lists ``application/partial-upload`` (the draft requires it
    of a resource that can create uploads). tus wins when both are there: it is
    the older, settled protocol.
    """
    if not 200 <= response.status < 300:
        return None
    versions = response.header("Tus-Version") or ""
    if "1.0.0" in (item.strip() for item in versions.split(",")):
        return "tus"
    accepted = response.header("Accept-Patch") or ""
    media = (item.split(";", 1)[0].strip().lower() for item in accepted.split(","))
    if "application/partial-upload" in media:
        return "ietf"
    return None
