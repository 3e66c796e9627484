"""What the test server's resumable-upload endpoints share: stored uploads, fault
knobs (:class:`UploadFaults`) and the reading of request bodies under faults."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket
import struct
from typing import Any, Final

import attrs
from aiohttp import web

__all__ = ["StoredUpload", "UploadEndpoint", "UploadFaults"]

_LINGER_RESET: Final = struct.pack("ii", 1, 0)
_READ: Final = 64 * 1024
_METHODS: Final = frozenset({"OPTIONS", "POST", "PUT", "HEAD", "PATCH", "DELETE"})


def _method(_instance: Any, _attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in _METHODS:
        raise ValueError(f"UploadFaults.method must be one of {sorted(_METHODS)}, got {value!r}")


def _status(_instance: Any, _attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 200 <= value <= 599:
        raise ValueError(f"UploadFaults.status must be between 200 and 599, got {value!r}")


def _non_negative(_instance: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"UploadFaults.{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class UploadFaults:
    """How an upload endpoint misbehaves for requests of one ``method``.

    Every knob but ``method`` defaults to "off"; set them with
    ``endpoint.set_faults(UploadFaults(method="PATCH", reset_after=1000), times=1)``.
    """

    method: str = attrs.field(validator=_method)
    """The request method the faults apply to (``"PATCH"``, ``"HEAD"``, ``"POST"``...)."""
    status: int | None = attrs.field(default=None, validator=_status)
    """Answer with this status (after reading the body), e.g. 409, 460, 500; with
    ``forget``, 404 or 410 for an upload that expired."""
    reset_after: int | None = attrs.field(default=None, validator=_non_negative)
    """Keep this many body bytes of the request, then reset the connection (RST)."""
    hold_after: int | None = attrs.field(default=None, validator=_non_negative)
    """Stop reading the body after this many bytes (kept) until
    :meth:`UploadEndpoint.release`; :meth:`UploadEndpoint.wait_held` returns once
    a request is held there. A request without a body (``DELETE``, ``HEAD``) is
    held before it is acted on; one whose client went away meanwhile is not."""
    offset_shift: int = attrs.field(default=0, validator=attrs.validators.instance_of(int))
    """Add this to the ``Upload-Offset`` answered: below 0 the server "loses" bytes
    it acknowledged, above 0 it claims more than it holds."""
    forget: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Drop the upload before answering (it expired): later requests get 404."""
    location: str | None = None
    """Answer a creation with this ``Location`` (any text, e.g. ``ftp://...``)."""


@attrs.define
class StoredUpload:
    """One upload an endpoint holds."""

    id: str
    length: int | None
    data: bytearray = attrs.field(factory=bytearray)
    complete: bool = False
    metadata: dict[str, str] = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)
    """The creation request's headers."""

    @property
    def offset(self) -> int:
        """Bytes held."""
        return len(self.data)

    def sha256(self) -> str:
        """The hex sha256 of the bytes held."""
        return hashlib.sha256(self.data).hexdigest()


@attrs.define
class _Override:
    faults: UploadFaults
    remaining: int


_BODILESS = frozenset({"DELETE", "HEAD", "OPTIONS", "GET"})
"""Methods whose requests ``hold_after`` holds before they are acted on."""


class _Aborted(Exception):
    """The connection was reset on purpose (``reset_after``)."""


class UploadEndpoint:
    """Base of the tus and IETF-draft endpoints: storage, faults, counters."""

    def __init__(self, prefix: str) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"an upload endpoint's prefix must end with '/', got {prefix!r}")
        self.prefix = prefix
        self.uploads: dict[str, StoredUpload] = {}
        self.removed: set[str] = set()
        self.bytes_received = 0
        """Request body bytes the endpoint read, over all requests."""
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        """``(method, path, headers)`` of every request, in arrival order."""
        self._ids = itertools.count(1)
        self._standing: dict[str, UploadFaults] = {}
        self._overrides: list[_Override] = []
        self._gate = asyncio.Event()
        self._held = asyncio.Event()

    # -- holding requests ------------------------------------------------------------

    async def wait_held(self) -> None:
        """Return once a request is held by ``UploadFaults(hold_after=...)``."""
        await self._held.wait()

    def release(self) -> None:
        """Let held requests (and later ones) read on; the server's close does it too."""
        self._gate.set()

    # -- configuration ---------------------------------------------------------------

    def set_faults(self, faults: UploadFaults, *, times: int | None = None) -> None:
        """Apply ``faults`` to the next ``times`` requests of ``faults.method`` (or,
        with None, until changed; ``UploadFaults(method=m)`` turns them off)."""
        if not isinstance(faults, UploadFaults):
            raise TypeError(f"faults must be an UploadFaults, got {faults!r}")
        if times is None:
            self._standing[faults.method] = faults
            self._overrides = [o for o in self._overrides if o.faults.method != faults.method]
            return
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be a positive int or None, got {times!r}")
        self._overrides.append(_Override(faults, times))

    def _take(self, method: str) -> UploadFaults:
        for override in reversed(self._overrides):
            if override.faults.method == method:
                override.remaining -= 1
                if override.remaining == 0:
                    self._overrides.remove(override)
                return override.faults
        return self._standing.get(method, UploadFaults(method=method))

    def upload(self, upload_id_or_url: str) -> StoredUpload:
        """The stored upload with this id (or URL ending in it); KeyError if none."""
        key = upload_id_or_url.rstrip("/").rsplit("/", 1)[-1]
        return self.uploads[key]

    def _create(self, length: int | None, headers: dict[str, str]) -> StoredUpload:
        upload = StoredUpload(id=f"u{next(self._ids)}", length=length, headers=headers)
        self.uploads[upload.id] = upload
        return upload

    def _find(self, path: str) -> StoredUpload | None:
        return self.uploads.get(path[len(self.prefix) :])

    # -- handling --------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one request under the prefix."""
        self.requests.append((request.method, request.path, dict(request.headers)))
        faults = self._take(request.method)
        upload = self._find(request.path)
        if faults.forget and upload is not None:
            del self.uploads[upload.id]
            self.removed.add(upload.id)
            upload = None
        try:
            if faults.hold_after is not None and request.method in _BODILESS:
                await self._hold(request)
            if faults.status is not None:
                await self._drain(request)
                return self._fault_response(faults, upload)
            return await self._answer(request, faults, upload)
        except _Aborted:
            response = web.Response(status=503)
            response.force_close()
            return response

    def _fault_response(self, faults: UploadFaults, upload: StoredUpload | None) -> web.Response:
        assert faults.status is not None
        headers = self._protocol_headers()
        if upload is not None:
            headers["Upload-Offset"] = str(upload.offset + faults.offset_shift)
        return web.Response(status=faults.status, headers=headers)

    def _protocol_headers(self) -> dict[str, str]:
        return {}

    async def _answer(
        self, request: web.BaseRequest, faults: UploadFaults, upload: StoredUpload | None
    ) -> web.StreamResponse:
        raise NotImplementedError

    async def _drain(self, request: web.BaseRequest) -> None:
        while piece := await request.content.read(_READ):
            self.bytes_received += len(piece)

    async def _read_into(
        self,
        request: web.BaseRequest,
        upload: StoredUpload,
        faults: UploadFaults,
        *,
        buffer_first: bool = False,
    ) -> bytes | None:
        """Append the body to ``upload`` (or, ``buffer_first``, return it whole
        without storing); reset the connection after ``faults.reset_after`` bytes."""
        budget = faults.reset_after
        hold = faults.hold_after
        taken = 0
        kept = bytearray()
        while budget is None or taken < budget:
            if hold is not None and taken >= hold:
                hold = None
                await self._hold(request)
            limits = [_READ]
            limits += [] if budget is None else [budget - taken]
            limits += [] if hold is None else [hold - taken]
            piece = await request.content.read(min(limits))
            if not piece:
                break
            self.bytes_received += len(piece)
            taken += len(piece)
            if buffer_first:
                kept += piece
            else:
                upload.data += piece
        if budget is not None and taken >= budget:
            if buffer_first:
                upload.data += kept
            self._reset(request)
            raise _Aborted
        return bytes(kept) if buffer_first else None

    async def _hold(self, request: web.BaseRequest) -> None:
        """Wait for :meth:`release`; :class:`_Aborted` if the client went away."""
        self._held.set()
        await self._gate.wait()
        transport = request.transport
        if transport is None or transport.is_closing():
            raise _Aborted  # the client went away while held: keep nothing more

    @staticmethod
    def _reset(request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
