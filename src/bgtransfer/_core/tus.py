"""The tus 1.0.0 resumable upload protocol as a machine, without I/O.

https://tus.io/protocols/resumable-upload (core protocol plus the creation,
expiration, checksum and termination extensions). One upload goes::

    OPTIONS endpoint   -> Tus-Version, Tus-Extension, Tus-Max-Size,
                          Tus-Checksum-Algorithm   (skipped when already known)
    POST endpoint      -> 201, Location: the upload URL   (Upload-Length, Upload-Metadata)
    HEAD upload URL    -> Upload-Offset   (when resuming, or after an interruption,
                          a 409 or a 460)
    PATCH upload URL   -> 204, Upload-Offset   (the file from the offset; with
                          Upload-Checksum where offered)
    DELETE upload URL  (termination, when the upload is cancelled)

Every request carries ``Tus-Resumable: 1.0.0``; a 412 means the server speaks
another version (:class:`~bgtransfer.ResumableUploadError`). An upload the server
no longer has (404 or 410: expired, or removed) is started over with a new
creation, at most ``MAX_RESTARTS`` times: the spec lets the server drop expired
uploads, and the client still holds the whole file, so starting over is the only
way to finish (:class:`~bgtransfer.UploadExpiredError` past that).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Final, Literal

import attrs

from .._exceptions import ResumableUploadError, UploadChecksumError
from .upload_protocol import (
    GONE_STATUSES,
    MAX_CONFLICTS,
    UploadRequest,
    UploadResponse,
    check_offset,
    head_offset,
    parse_offset,
    resolve_upload_url,
    start_over,
    status_error,
)

__all__ = [
    "CHECKSUM_CHUNK",
    "CHECKSUM_PREFERENCE",
    "TUS_EXTENSIONS",
    "TUS_VERSION",
    "TusCapabilities",
    "TusUpload",
    "capabilities_from_document",
    "encode_metadata",
    "parse_capabilities",
]

TUS_VERSION: Final = "1.0.0"
OFFSET_TYPE: Final = "application/offset+octet-stream"
CHECKSUM_MISMATCH: Final = 460
MAX_CHECKSUM_FAILURES: Final = 3
CHECKSUM_CHUNK: Final = 8 * 1024 * 1024
"""Bytes per PATCH when a checksum is sent: the digest is computed before the
body goes out, so a smaller PATCH rereads less of the file."""
CHECKSUM_PREFERENCE: Final = ("sha1", "sha256", "md5")
"""Algorithms used, in this order, among those the server offers."""
TUS_EXTENSIONS: Final = frozenset(
    {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "expiration",
        "checksum",
        "checksum-trailer",
        "termination",
        "concatenation",
        "concatenation-unfinished",
    }
)
"""The extensions tus 1.0.0 defines (what resume data may name)."""

Phase = Literal["discover", "create", "locate", "send", "done"]


@attrs.frozen(kw_only=True)
class TusCapabilities:
    """What a tus server said of itself in its answer to ``OPTIONS``.

    Read-only for applications: it is what :attr:`ResumeData.tus` holds for a
    tus upload, so that an upload continued from resume data sends the same
    ``Upload-Checksum`` and termination as before without asking again.
    """

    versions: tuple[str, ...] = (TUS_VERSION,)
    """``Tus-Version``: the protocol versions the server speaks."""
    extensions: frozenset[str] = frozenset()
    """``Tus-Extension``: e.g. ``creation``, ``checksum``, ``termination``."""
    max_size: int | None = None
    """``Tus-Max-Size``: the largest upload the server takes, if it said."""
    checksum_algorithms: tuple[str, ...] = ()
    """``Tus-Checksum-Algorithm``: the algorithms it verifies, as it named them."""

    @property
    def checksum(self) -> str | None:
        """The checksum algorithm to send, or None without the checksum extension."""
        if "checksum" not in self.extensions:
            return None
        offered = {name.lower() for name in self.checksum_algorithms}
        return next((name for name in CHECKSUM_PREFERENCE if name in offered), None)

    def known(self) -> TusCapabilities:
        """Only what this client knows: tus 1.0.0, the spec's extensions, the
        checksum algorithms it can send (lower-case, once each). What resume
        data carries; the checksum and the termination chosen are the same."""
        offered = (name.lower() for name in self.checksum_algorithms)
        return TusCapabilities(
            extensions=self.extensions & TUS_EXTENSIONS,
            max_size=self.max_size,
            checksum_algorithms=tuple(
                dict.fromkeys(name for name in offered if name in CHECKSUM_PREFERENCE)
            ),
        )

    def document(self) -> dict[str, object]:
        """The capabilities as JSON-ready values (the journal keeps them with
        the upload, so a continued upload need not ask ``OPTIONS`` again)."""
        return {
            "versions": list(self.versions),
            "extensions": sorted(self.extensions),
            "max_size": self.max_size,
            "checksum_algorithms": list(self.checksum_algorithms),
        }


_MAX_NAMES: Final = 64
"""Names per list a journalled document may hold (a server's answer is bounded
by aiohttp's header size; this bounds what reading a journal accepts)."""


def _names(document: dict[str, object], key: str) -> tuple[str, ...]:
    value = document.get(key)
    if (
        not isinstance(value, list)
        or len(value) > _MAX_NAMES
        or not all(isinstance(item, str) and 0 < len(item) <= 200 for item in value)
    ):
        raise ValueError(f"invalid tus {key}")
    return tuple(value)


def capabilities_from_document(document: object) -> TusCapabilities:
    """What :meth:`TusCapabilities.document` made; ``ValueError`` naming the field."""
    if not isinstance(document, dict):
        raise ValueError("invalid tus capabilities")  # noqa: TRY004 - the journal's CorruptEntry
    max_size = document.get("max_size")
    if max_size is not None and (
        not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0
    ):
        raise ValueError("invalid tus max_size")
    return TusCapabilities(
        versions=_names(document, "versions"),
        extensions=frozenset(_names(document, "extensions")),
        max_size=max_size,
        checksum_algorithms=_names(document, "checksum_algorithms"),
    )


def _list(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


def parse_capabilities(response: UploadResponse, *, task_url: str) -> TusCapabilities:
    """The capabilities in an ``OPTIONS`` answer; :class:`ResumableUploadError`
    when the server does not speak tus 1.0.0 or sends a malformed ``Tus-Max-Size``."""
    versions = _list(response.header("Tus-Version"))
    if not versions:
        raise ResumableUploadError(
            "the server's OPTIONS answer has no Tus-Version: it is not a tus server",
            url=task_url,
        )
    if TUS_VERSION not in versions:
        raise ResumableUploadError(
            f"the server speaks tus {', '.join(versions)[:80]}, not {TUS_VERSION}", url=task_url
        )
    max_size_text = response.header("Tus-Max-Size")
    max_size = (
        None
        if max_size_text is None
        else parse_offset(max_size_text, header="Tus-Max-Size", task_url=task_url)
    )
    return TusCapabilities(
        versions=versions,
        extensions=frozenset(name.lower() for name in _list(response.header("Tus-Extension"))),
        max_size=max_size,
        checksum_algorithms=_list(response.header("Tus-Checksum-Algorithm")),
    )


def encode_metadata(metadata: Sequence[tuple[str, str]]) -> str:
    """``Upload-Metadata``: ``key base64(value)`` pairs, comma-separated.

    Keys must be non-empty ASCII without spaces or commas (the spec's rule);
    values are any text, sent as UTF-8.
    """
    parts = []
    for key, value in metadata:
        if not key or not key.isascii() or any(c in key for c in " ,\t\r\n"):
            raise ValueError(f"tus metadata key {key!r}: non-empty ASCII without spaces or commas")
        encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
        parts.append(f"{key} {encoded}" if encoded else key)
    return ",".join(parts)


@attrs.frozen(kw_only=True)
class TusUpload:
    """One tus upload of a ``size``-byte file to ``endpoint``, as a frozen machine.

    Make it with :meth:`start`; then, until :attr:`result` is set, send
    :meth:`next_request` and feed the answer to :meth:`on_response`.
    """

    endpoint: str
    size: int
    task_url: str
    metadata: tuple[tuple[str, str], ...] = ()
    phase: Phase = "discover"
    capabilities: TusCapabilities | None = None
    upload_url: str | None = None
    offset: int | None = None
    """Bytes the server acknowledged; None while it must be asked (HEAD)."""
    chunk_size: int | None = None
    """At most this many bytes per PATCH (None: the rest of the file at once)."""
    restarts: int = 0
    conflicts: int = 0
    checksum_failures: int = 0
    expires: str | None = None
    """The server's last ``Upload-Expires`` (an HTTP-date, as sent): after it,
    the upload may be gone and a resume may have to start over."""
    result: UploadResponse | None = None

    @classmethod
    def start(
        cls,
        endpoint: str,
        size: int,
        *,
        task_url: str | None = None,
        upload_url: str | None = None,
        offset: int | None = None,
        capabilities: TusCapabilities | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        chunk_size: int | None = None,
    ) -> TusUpload:
        """A machine for a new upload, or for one the server already has
        (``upload_url``, and the ``offset`` it last acknowledged, e.g. from the
        journal): that one starts by asking the server for its offset."""
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if upload_url is not None:
            phase: Phase = "locate"
        else:
            phase = "discover" if capabilities is None else "create"
        return cls(
            endpoint=endpoint,
            size=size,
            task_url=endpoint if task_url is None else task_url,
            metadata=tuple(metadata),
            phase=phase,
            capabilities=capabilities,
            upload_url=upload_url,
            offset=offset if upload_url is not None else None,
            chunk_size=chunk_size,
        )

    # -- requests ------------------------------------------------------------------

    def _headers(self, *more: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        return (("Tus-Resumable", TUS_VERSION), *more)

    def next_request(self) -> UploadRequest:
        """The request to make next."""
        if self.phase == "discover":
            return UploadRequest(method="OPTIONS", url=self.endpoint, headers=self._headers())
        if self.phase == "create":
            headers = [("Upload-Length", str(self.size))]
            if self.metadata:
                headers.append(("Upload-Metadata", encode_metadata(self.metadata)))
            return UploadRequest(method="POST", url=self.endpoint, headers=self._headers(*headers))
        assert self.upload_url is not None, self.phase
        if self.phase == "locate":
            return UploadRequest(method="HEAD", url=self.upload_url, headers=self._headers())
        if self.phase == "send":
            assert self.offset is not None
            checksum = None if self.capabilities is None else self.capabilities.checksum
            chunk = self.chunk_size
            if checksum is not None:
                chunk = min(chunk or CHECKSUM_CHUNK, CHECKSUM_CHUNK)
            end = self.size if chunk is None else min(self.size, self.offset + chunk)
            return UploadRequest(
                method="PATCH",
                url=self.upload_url,
                headers=self._headers(
                    ("Upload-Offset", str(self.offset)), ("Content-Type", OFFSET_TYPE)
                ),
                body=(self.offset, end),
                checksum=checksum,
            )
        raise RuntimeError(f"no request to make: the upload is {self.phase}")

    def cancel_request(self) -> UploadRequest | None:
        """DELETE of the upload (termination), if the server has one for us and
        did not say it lacks the termination extension."""
        if self.upload_url is None or self.phase == "done":
            return None
        if self.capabilities is not None and "termination" not in self.capabilities.extensions:
            return None
        return UploadRequest(method="DELETE", url=self.upload_url, headers=self._headers())

    # -- responses -----------------------------------------------------------------

    def on_interrupted(self) -> TusUpload:
        """After a request got no answer: ask for the offset (or create again)."""
        if self.upload_url is None:
            return attrs.evolve(self, phase="discover" if self.capabilities is None else "create")
        return attrs.evolve(self, phase="locate")

    def on_response(self, request: UploadRequest, response: UploadResponse) -> TusUpload:
        """The machine after ``response`` answered ``request``."""
        if response.status == 412:
            raise ResumableUploadError(
                f"the server refused tus {TUS_VERSION} (HTTP 412); it speaks "
                f"{response.header('Tus-Version') or 'another version'}",
                url=self.task_url,
            )
        expires = response.header("Upload-Expires")
        machine = self if expires in (None, self.expires) else attrs.evolve(self, expires=expires)
        return machine._dispatch(request, response)

    def _dispatch(self, request: UploadRequest, response: UploadResponse) -> TusUpload:
        status = response.status
        if self.phase == "discover":
            return self._on_options(response)
        if self.phase == "create":
            return self._on_created(request, response)
        if status in GONE_STATUSES:
            return start_over(self, status)
        if self.phase == "locate":
            return self._on_head(response)
        return self._on_patch(request, response)

    def _on_options(self, response: UploadResponse) -> TusUpload:
        if not 200 <= response.status < 300:
            # OPTIONS is optional for a server: go on knowing nothing of its
            # extensions (no checksum; termination is still tried on cancel).
            return attrs.evolve(self, phase="create")
        capabilities = parse_capabilities(response, task_url=self.task_url)
        if capabilities.extensions and "creation" not in capabilities.extensions:
            raise ResumableUploadError(
                "the tus server does not offer the creation extension", url=self.task_url
            )
        if capabilities.max_size is not None and self.size > capabilities.max_size:
            raise ResumableUploadError(
                f"the server takes uploads of at most {capabilities.max_size} bytes "
                f"(Tus-Max-Size); the file has {self.size}",
                url=self.task_url,
            )
        return attrs.evolve(self, phase="create", capabilities=capabilities)

    def _on_created(self, request: UploadRequest, response: UploadResponse) -> TusUpload:
        if not 200 <= response.status < 300:
            raise status_error(response, task_url=self.task_url)
        location = response.header("Location")
        if location is None:
            raise ResumableUploadError(
                f"the server answered the creation with {response.status} but no Location",
                url=self.task_url,
            )
        upload_url = resolve_upload_url(request.url, location, task_url=self.task_url)
        machine = attrs.evolve(self, phase="send", upload_url=upload_url, offset=0)
        if self.size == 0:
            return attrs.evolve(machine, phase="done", result=response)
        return machine

    def _on_head(self, response: UploadResponse) -> TusUpload:
        if not 200 <= response.status < 300:
            raise status_error(response, task_url=self.task_url)
        offset = head_offset(
            response, size=self.size, acknowledged=self.offset, task_url=self.task_url
        )
        if offset == self.size:
            return attrs.evolve(self, phase="done", offset=offset, result=response)
        return attrs.evolve(self, phase="send", offset=offset)

    def _on_patch(self, request: UploadRequest, response: UploadResponse) -> TusUpload:
        status = response.status
        if status == 409:
            conflicts = self.conflicts + 1
            if conflicts > MAX_CONFLICTS:
                raise ResumableUploadError(
                    f"the server refused the upload's offset {conflicts} times in a row (409)",
                    url=self.task_url,
                )
            return attrs.evolve(self, phase="locate", conflicts=conflicts)
        if status == CHECKSUM_MISMATCH:
            failures = self.checksum_failures + 1
            if failures >= MAX_CHECKSUM_FAILURES:
                raise UploadChecksumError(
                    f"the server refused the checksum of the bytes sent {failures} times (460)",
                    url=self.task_url,
                )
            return attrs.evolve(self, phase="locate", checksum_failures=failures)
        if not 200 <= status < 300:
            raise status_error(response, task_url=self.task_url)
        assert request.body is not None
        offset = check_offset(
            parse_offset(
                response.header("Upload-Offset"), header="Upload-Offset", task_url=self.task_url
            ),
            acknowledged=request.body[0],
            limit=request.body[1],
            size=self.size,
            task_url=self.task_url,
        )
        machine = _after_append(self, offset, request)
        if offset == self.size:
            return attrs.evolve(machine, phase="done", result=response)
        return machine


def _after_append(machine: TusUpload, offset: int, request: UploadRequest) -> TusUpload:
    """The machine after an append the server answered with ``offset``: a server
    that keeps taking appends without moving on is not trusted forever."""
    assert request.body is not None
    if offset > request.body[0] or request.body_length == 0:
        return attrs.evolve(machine, offset=offset, conflicts=0, checksum_failures=0)
    conflicts = machine.conflicts + 1
    if conflicts > MAX_CONFLICTS:
        raise ResumableUploadError(
            f"the server took {conflicts} appends in a row without moving the offset",
            url=machine.task_url,
        )
    return attrs.evolve(machine, offset=offset, conflicts=conflicts)
