"""A tus 1.0.0 endpoint for the test server (creation, expiration, checksum,
termination), with the fault knobs of :class:`~bgtransfer.testing.UploadFaults`.

``server.add_tus_endpoint("/tus/")`` serves it: ``OPTIONS``/``POST`` on the prefix,
``HEAD``/``PATCH``/``DELETE`` on ``/tus/<id>``. Uploads are held in memory
(:attr:`TusEndpoint.uploads`), so a test can compare their sha256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime, timedelta

from aiohttp import web

from ._http import format_http_date
from ._uploads import StoredUpload, UploadEndpoint, UploadFaults

__all__ = ["TusEndpoint"]

_VERSION = "1.0.0"
_OFFSET_TYPE = "application/offset+octet-stream"


def _decode_metadata(value: str | None) -> dict[str, str] | None:
    if not value:
        return {}
    found: dict[str, str] = {}
    for pair in value.split(","):
        key, _, encoded = pair.strip().partition(" ")
        try:
            found[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return found


class TusEndpoint(UploadEndpoint):
    """A tus 1.0.0 server at ``prefix``; see the module's docstring."""

    def __init__(
        self,
        prefix: str,
        *,
        max_size: int | None = None,
        checksum_algorithms: tuple[str, ...] = ("sha1",),
        termination: bool = True,
    ) -> None:
        super().__init__(prefix)
        self.max_size = max_size
        self.checksum_algorithms = checksum_algorithms
        self.termination = termination

    def _protocol_headers(self) -> dict[str, str]:
        return {"Tus-Resumable": _VERSION}

    def _extensions(self) -> str:
        names = ["creation", "expiration"]
        if self.checksum_algorithms:
            names.append("checksum")
        if self.termination:
            names.append("termination")
        return ",".join(names)

    def _plain(self, status: int, **headers: str) -> web.Response:
        return web.Response(status=status, headers={**self._protocol_headers(), **headers})

    async def _answer(
        self, request: web.BaseRequest, faults: UploadFaults, upload: StoredUpload | None
    ) -> web.StreamResponse:
        method = request.method
        at_prefix = request.path == self.prefix
        if method == "OPTIONS" and at_prefix:
            headers = {
                "Tus-Version": _VERSION,
                "Tus-Extension": self._extensions(),
            }
            if self.max_size is not None:
                headers["Tus-Max-Size"] = str(self.max_size)
            if self.checksum_algorithms:
                headers["Tus-Checksum-Algorithm"] = ",".join(self.checksum_algorithms)
            return self._plain(204, **headers)
        if request.headers.get("Tus-Resumable") != _VERSION:
            await self._drain(request)
            return self._plain(412, **{"Tus-Version": _VERSION})
        if method == "POST" and at_prefix:
            return await self._on_create(request, faults)
        if upload is None:
            await self._drain(request)
            key = request.path[len(self.prefix) :]
            return self._plain(410 if key in self.removed else 404)
        if method == "HEAD":
            return self._plain(
                200,
                **{
                    "Upload-Offset": str(upload.offset + faults.offset_shift),
                    "Upload-Length": str(upload.length),
                    "Cache-Control": "no-store",
                },
            )
        if method == "PATCH":
            return await self._on_patch(request, faults, upload)
        if method == "DELETE" and self.termination:
            del self.uploads[upload.id]
            self.removed.add(upload.id)
            return self._plain(204)
        await self._drain(request)
        return self._plain(405)

    async def _on_create(self, request: web.BaseRequest, faults: UploadFaults) -> web.Response:
        await self._drain(request)
        text = request.headers.get("Upload-Length", "")
        metadata = _decode_metadata(request.headers.get("Upload-Metadata"))
        if not text.isdigit() or metadata is None:
            return self._plain(400)
        length = int(text)
        if self.max_size is not None and length > self.max_size:
            return self._plain(413)
        upload = self._create(length, dict(request.headers))
        upload.metadata = metadata
        upload.complete = length == 0
        expires = datetime.now(UTC) + timedelta(hours=1)
        return self._plain(
            201,
            Location=faults.location or self.prefix + upload.id,
            **{"Upload-Expires": format_http_date(expires)},
        )

    async def _on_patch(
        self, request: web.BaseRequest, faults: UploadFaults, upload: StoredUpload
    ) -> web.Response:
        if request.headers.get("Content-Type") != _OFFSET_TYPE:
            await self._drain(request)
            return self._plain(415)
        offset = request.headers.get("Upload-Offset", "")
        if not offset.isdigit() or int(offset) != upload.offset:
            await self._drain(request)
            return self._plain(409)
        length = request.content_length
        assert upload.length is not None
        if length is None or upload.offset + length > upload.length:
            await self._drain(request)
            return self._plain(400)
        checksum = request.headers.get("Upload-Checksum")
        if checksum is None:
            await self._read_into(request, upload, faults)
        else:
            algorithm, _, expected = checksum.partition(" ")
            if algorithm not in self.checksum_algorithms:
                await self._drain(request)
                return self._plain(400)
            body = await self._read_into(request, upload, faults, buffer_first=True)
            assert body is not None
            digest = base64.b64encode(hashlib.new(algorithm, body).digest()).decode()
            if digest != expected:
                return self._plain(460)
            upload.data += body
        upload.complete = upload.offset == upload.length
        return self._plain(204, **{"Upload-Offset": str(upload.offset + faults.offset_shift)})
