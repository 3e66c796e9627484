"""The IETF resumable-upload draft as a machine, without I/O.

draft-ietf-httpbis-resumable-upload, the text after -11 (interop version 8; see
docs/design.md for why this one). One upload goes, by "careful upload creation"
(the draft's name for it)::

    POST endpoint       -> 201, Location: the upload resource
                           (Upload-Complete: ?0, Upload-Length, no content)
    HEAD upload URL     -> Upload-Offset, Upload-Complete, Upload-Length, Upload-Limit
                           (when resuming, after an interruption or a 409)
    PATCH upload URL    -> the target's final response, Upload-Complete: ?1
                           (Upload-Offset, Upload-Complete: ?1, application/partial-upload;
                           ?0 for all but the last part when Upload-Limit caps an append)
    DELETE upload URL   (cancellation)

Every request carries ``Upload-Draft-Interop-Version: 8``. The creation sends no
content because aiohttp does not surface ``104 (Upload Resumption Supported)``
interim responses: the upload URL must come in a final response, before the
first byte of the file goes out, so that it can be journaled. A 0-byte file is
sent in one creation request with ``Upload-Complete: ?1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Literal

import attrs

from .._exceptions import ResumableUploadError
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

__all__ = ["INTEROP_VERSION", "PARTIAL_UPLOAD", "IetfUpload", "UploadLimits", "parse_limits"]

INTEROP_VERSION: Final = "8"
"""``Upload-Draft-Interop-Version`` sent on every request (draft -09 to -12)."""
PARTIAL_UPLOAD: Final = "application/partial-upload"

Phase = Literal["create", "locate", "send", "done"]

_SF_INTEGER: Final = re.compile(r"-?[0-9]{1,15}")
_KEY: Final = re.compile(r"[a-z*][a-z0-9_\-.*]*")


@attrs.frozen(kw_only=True)
class UploadLimits:
    """The ``Upload-Limit`` members bgtransfer acts on (all in bytes but ``max_age``)."""

    max_size: int | None = None
    max_append_size: int | None = None
    min_append_size: int | None = None
    max_age: int | None = None


_LIMIT_KEYS: Final = {
    "max-size": "max_size",
    "max-append-size": "max_append_size",
    "min-append-size": "min_append_size",
    "max-age": "max_age",
}


def parse_limits(value: str | None) -> UploadLimits | None:
    """``Upload-Limit``, a structured-field Dictionary of Integers.

    Unknown keys are ignored; a known key whose value is not a non-negative
    Integer, or a member that does not parse, makes the whole field ignored
    (None), as the draft says.
    """
    if value is None:
        return None
    found: dict[str, int] = {}
    for member in value.split(","):
        text = member.strip(" \t")
        key, equals, rest = text.partition("=")
        item = rest.split(";", 1)[0].strip() if equals else "?1"
        if not _KEY.fullmatch(key):
            return None
        if key not in _LIMIT_KEYS:
            continue
        if not _SF_INTEGER.fullmatch(item) or item.startswith("-"):
            return None
        found[_LIMIT_KEYS[key]] = int(item)
    return UploadLimits(**found)


def _boolean(value: str | None) -> bool | None:
    """A structured-field Boolean (``?1``/``?0``); None for anything else."""
    if value is None:
        return None
    text = value.strip()
    return {"?1": True, "?0": False}.get(text)


def _integer(value: str | None, *, header: str, task_url: str) -> int:
    text = None if value is None else value.strip()
    return parse_offset(text, header=header, task_url=task_url)


@attrs.frozen(kw_only=True)
class IetfUpload:
    """One upload of a ``size``-byte file by the IETF draft, as a frozen machine.

    Make it with :meth:`start`; then, until :attr:`result` is set, send
    :meth:`next_request` and feed the answer to :meth:`on_response`.
    """

    endpoint: str
    size: int
    task_url: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    """Representation metadata sent with the creation (Content-Type, Content-Disposition)."""
    phase: Phase = "create"
    upload_url: str | None = None
    offset: int | None = None
    limits: UploadLimits = UploadLimits()
    restarts: int = 0
    conflicts: int = 0
    result: UploadResponse | None = None

    @classmethod
    def start(
        cls,
        endpoint: str,
        size: int,
        *,
        task_url: str | None = None,
        method: str = "POST",
        headers: Sequence[tuple[str, str]] = (),
        upload_url: str | None = None,
        offset: int | None = None,
        max_append_size: int | None = None,
    ) -> IetfUpload:
        """A machine for a new upload (creation with ``method``, POST or PUT), or
        for one the server already has (``upload_url`` and the ``offset`` it last
        acknowledged): that one starts by asking the server for its offset."""
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if method not in {"POST", "PUT", "PATCH"}:
            raise ValueError(f"method must be POST, PUT or PATCH, got {method!r}")
        return cls(
            endpoint=endpoint,
            size=size,
            task_url=endpoint if task_url is None else task_url,
            method=method,
            headers=tuple(headers),
            phase="create" if upload_url is None else "locate",
            upload_url=upload_url,
            offset=None if upload_url is None else offset,
            limits=UploadLimits(max_append_size=max_append_size),
        )

    # -- requests ------------------------------------------------------------------

    def next_request(self) -> UploadRequest:
        """The request to make next."""
        interop = ("Upload-Draft-Interop-Version", INTEROP_VERSION)
        if self.phase == "create":
            complete = "?1" if self.size == 0 else "?0"
            return UploadRequest(
                method=self.method,
                url=self.endpoint,
                headers=(
                    *self.headers,
                    interop,
                    ("Upload-Complete", complete),
                    ("Upload-Length", str(self.size)),
                ),
            )
        assert self.upload_url is not None, self.phase
        if self.phase == "locate":
            return UploadRequest(method="HEAD", url=self.upload_url, headers=(interop,))
        if self.phase == "send":
            assert self.offset is not None
            chunk = self.limits.max_append_size
            end = self.size if not chunk else min(self.size, self.offset + chunk)
            return UploadRequest(
                method="PATCH",
                url=self.upload_url,
                headers=(
                    interop,
                    ("Upload-Offset", str(self.offset)),
                    ("Upload-Complete", "?1" if end == self.size else "?0"),
                    ("Content-Type", PARTIAL_UPLOAD),
                ),
                body=(self.offset, end),
            )
        raise RuntimeError(f"no request to make: the upload is {self.phase}")

    def cancel_request(self) -> UploadRequest | None:
        """DELETE of the upload resource, if the server made one for us."""
        if self.upload_url is None or self.phase == "done":
            return None
        return UploadRequest(
            method="DELETE",
            url=self.upload_url,
            headers=(("Upload-Draft-Interop-Version", INTEROP_VERSION),),
        )

    # -- responses -----------------------------------------------------------------

    def on_interrupted(self) -> IetfUpload:
        """After a request got no answer: ask for the offset (or create again)."""
        return attrs.evolve(self, phase="create" if self.upload_url is None else "locate")

    def on_response(self, request: UploadRequest, response: UploadResponse) -> IetfUpload:
        """The machine after ``response`` answered ``request``."""
        if self.phase == "create":
            return self._on_created(request, response)
        if self.phase == "send" and _boolean(response.header("Upload-Complete")):
            # The target processed the whole representation: whatever the status
            # (a 4xx/5xx too), this is the upload's answer; resuming cannot change it.
            assert request.body is not None
            if request.body[1] != self.size:
                raise ResumableUploadError(
                    f"the server completed the upload at {request.body[1]} of {self.size} bytes",
                    url=self.task_url,
                )
            return attrs.evolve(self, phase="done", offset=self.size, result=response)
        if response.status in GONE_STATUSES:
            return start_over(self, response.status)
        if self.phase == "locate":
            return self._on_head(response)
        return self._on_append(request, response)

    def _with_limits(self, response: UploadResponse) -> UploadLimits:
        limits = parse_limits(response.header("Upload-Limit"))
        if limits is None:
            return self.limits
        if limits.max_size is not None and self.size > limits.max_size:
            raise ResumableUploadError(
                f"the server takes uploads of at most {limits.max_size} bytes (Upload-Limit "
                f"max-size); the file has {self.size}",
                url=self.task_url,
            )
        own = self.limits.max_append_size
        server = limits.max_append_size
        append = server if own is None else own if server is None else min(own, server)
        return attrs.evolve(limits, max_append_size=append or None)

    def _on_created(self, request: UploadRequest, response: UploadResponse) -> IetfUpload:
        if not 200 <= response.status < 300:
            raise status_error(response, task_url=self.task_url)
        if self.size == 0:
            return attrs.evolve(self, phase="done", offset=0, result=response)
        location = response.header("Location")
        if location is None:
            raise ResumableUploadError(
                f"the server answered the upload creation with {response.status} and no "
                "Location: it does not support resumable uploads there",
                url=self.task_url,
            )
        upload_url = resolve_upload_url(request.url, location, task_url=self.task_url)
        limits = self._with_limits(response)
        return attrs.evolve(self, phase="send", upload_url=upload_url, offset=0, limits=limits)

    def _on_head(self, response: UploadResponse) -> IetfUpload:
        if not 200 <= response.status < 300:
            raise status_error(response, task_url=self.task_url)
        limits = self._with_limits(response)
        offset = head_offset(
            response, size=self.size, acknowledged=self.offset, task_url=self.task_url
        )
        if _boolean(response.header("Upload-Complete")):
            if offset != self.size:
                raise ResumableUploadError(
                    f"the server says the upload is complete at {offset} of {self.size} bytes",
                    url=self.task_url,
                )
            return attrs.evolve(self, phase="done", offset=offset, limits=limits, result=response)
        return attrs.evolve(self, phase="send", offset=offset, limits=limits)

    def _on_append(self, request: UploadRequest, response: UploadResponse) -> IetfUpload:
        assert request.body is not None
        if response.status == 409:
            conflicts = self.conflicts + 1
            if conflicts > MAX_CONFLICTS:
                raise ResumableUploadError(
                    f"the server refused the upload's offset {conflicts} times in a row (409)",
                    url=self.task_url,
                )
            return attrs.evolve(self, phase="locate", conflicts=conflicts)
        if not 200 <= response.status < 300:
            raise status_error(response, task_url=self.task_url)
        if request.body[1] == self.size:
            # A 2xx to the completing append, without Upload-Complete: ?1 (which
            # draft -10 stopped requiring of every final response).
            return attrs.evolve(self, phase="done", offset=self.size, result=response)
        announced = response.header("Upload-Offset")
        offset = (
            request.body[1]
            if announced is None
            else _integer(announced, header="Upload-Offset", task_url=self.task_url)
        )
        offset = check_offset(
            offset,
            acknowledged=request.body[0],
            limit=request.body[1],
            size=self.size,
            task_url=self.task_url,
        )
        if offset > request.body[0]:
            return attrs.evolve(self, offset=offset, conflicts=0)
        conflicts = self.conflicts + 1
        if conflicts > MAX_CONFLICTS:
            raise ResumableUploadError(
                f"the server took {conflicts} appends in a row without moving the offset",
                url=self.task_url,
            )
        return attrs.evolve(self, offset=offset, conflicts=conflicts)
