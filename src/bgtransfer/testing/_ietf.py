"""An IETF resumable-upload draft endpoint (interop version 8) for the test server,
with the fault knobs of :class:`~bgtransfer.testing.UploadFaults`.

``server.add_ietf_endpoint("/ietf/")`` serves it: upload creation by ``POST`` or
``PUT`` on the prefix (``OPTIONS`` there lists ``Accept-Patch:
application/partial-upload``), ``HEAD``/``PATCH``/``DELETE`` on ``/ietf/<id>``. It is
strict: a request without ``Upload-Draft-Interop-Version: 8`` gets 400. It sends
no 104 interim responses (aiohttp's server cannot). The final response of a
completed upload is ``200`` with ``Upload-Complete: ?1`` and a JSON body
``{"id": ..., "size": ..., "sha256": ...}``.
"""

from __future__ import annotations

import json

from aiohttp import web

from ._uploads import StoredUpload, UploadEndpoint, UploadFaults

__all__ = ["IetfEndpoint"]

_INTEROP = "8"
_PARTIAL = "application/partial-upload"


def _boolean(value: str | None) -> bool | None:
    return {"?1": True, "?0": False}.get((value or "").strip())


def _integer(value: str | None) -> int | None:
    text = (value or "").strip()
    return int(text) if text.isdigit() else None


class IetfEndpoint(UploadEndpoint):
    """An IETF-draft upload server at ``prefix``; see the module's docstring."""

    def __init__(self, prefix: str, *, max_append_size: int | None = None) -> None:
        super().__init__(prefix)
        self.max_append_size = max_append_size

    def _limits(self) -> dict[str, str]:
        members = ["max-age=3600"]
        if self.max_append_size is not None:
            members.append(f"max-append-size={self.max_append_size}")
        return {"Upload-Limit": ", ".join(members)}

    def _finished(self, upload: StoredUpload) -> web.Response:
        body = {"id": upload.id, "size": upload.offset, "sha256": upload.sha256()}
        return web.Response(
            status=200,
            headers={"Upload-Complete": "?1"},
            text=json.dumps(body),
            content_type="application/json",
        )

    async def _answer(
        self, request: web.BaseRequest, faults: UploadFaults, upload: StoredUpload | None
    ) -> web.StreamResponse:
        if request.headers.get("Upload-Draft-Interop-Version") != _INTEROP:
            await self._drain(request)
            return web.Response(status=400, text="Upload-Draft-Interop-Version 8 expected\n")
        method = request.method
        if request.path == self.prefix and method == "OPTIONS":
            return web.Response(
                status=204,
                headers={"Accept-Patch": _PARTIAL, "Allow": "OPTIONS, POST, PUT", **self._limits()},
            )
        if request.path == self.prefix and method in {"POST", "PUT"}:
            return await self._on_create(request, faults)
        if upload is None:
            await self._drain(request)
            key = request.path[len(self.prefix) :]
            return web.Response(status=410 if key in self.removed else 404)
        if method == "HEAD":
            headers = {
                "Upload-Offset": str(upload.offset + faults.offset_shift),
                "Upload-Complete": "?1" if upload.complete else "?0",
                "Cache-Control": "no-store",
                **self._limits(),
            }
            if upload.length is not None:
                headers["Upload-Length"] = str(upload.length)
            return web.Response(status=204, headers=headers)
        if method == "PATCH":
            return await self._on_append(request, faults, upload)
        if method == "DELETE":
            del self.uploads[upload.id]
            self.removed.add(upload.id)
            return web.Response(status=204)
        await self._drain(request)
        return web.Response(status=405)

    def _fault_response(self, faults: UploadFaults, upload: StoredUpload | None) -> web.Response:
        response = super()._fault_response(faults, upload)
        if faults.status == 409 and upload is not None:
            response.content_type = "application/problem+json"
            response.text = json.dumps(
                {
                    "type": "https://iana.org/assignments/http-problem-types#"
                    "mismatching-upload-offset",
                    "expected-offset": upload.offset,
                }
            )
        return response

    async def _on_create(self, request: web.BaseRequest, faults: UploadFaults) -> web.Response:
        complete = _boolean(request.headers.get("Upload-Complete"))
        if complete is None:
            await self._drain(request)
            return web.Response(status=400, text="Upload-Complete expected\n")
        length = _integer(request.headers.get("Upload-Length"))
        if complete and length is None:
            length = request.content_length
        upload = self._create(length, dict(request.headers))
        await self._read_into(request, upload, faults)
        if length is not None and upload.offset > length:
            return web.Response(status=400, text="inconsistent length\n")
        if complete:
            upload.complete = True
            return self._finished(upload)
        return web.Response(
            status=201,
            headers={
                "Location": faults.location or self.prefix + upload.id,
                "Upload-Complete": "?0",
                "Upload-Offset": str(upload.offset),
                **self._limits(),
            },
        )

    async def _on_append(
        self, request: web.BaseRequest, faults: UploadFaults, upload: StoredUpload
    ) -> web.Response:
        if request.headers.get("Content-Type") != _PARTIAL:
            await self._drain(request)
            return web.Response(status=415)
        complete = _boolean(request.headers.get("Upload-Complete"))
        offset = _integer(request.headers.get("Upload-Offset"))
        if complete is None or offset is None:
            await self._drain(request)
            return web.Response(status=400)
        if upload.complete:
            await self._drain(request)
            return web.Response(status=400, text="upload already complete\n")
        if offset != upload.offset:
            await self._drain(request)
            return self._fault_response(UploadFaults(method="PATCH", status=409), upload)
        size = request.content_length
        if self.max_append_size is not None and (size or 0) > self.max_append_size:
            await self._drain(request)
            return web.Response(status=413, headers=self._limits())
        if upload.length is not None and size is not None and offset + size > upload.length:
            await self._drain(request)
            return web.Response(status=400, text="inconsistent length\n")
        await self._read_into(request, upload, faults)
        if complete and (upload.length is None or upload.offset == upload.length):
            upload.complete = True
            upload.length = upload.offset
            return self._finished(upload)
        return web.Response(
            status=204,
            headers={
                "Upload-Complete": "?0",
                "Upload-Offset": str(upload.offset + faults.offset_shift),
            },
        )
