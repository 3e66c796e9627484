"""Answering one request: status and headers, range selection, faulty body streaming."""

from __future__ import annotations

import gzip
import socket
import struct
from http import HTTPStatus
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from ._content import ServedFile
from ._digests import corrupted, digest_fields
from ._faults import Faults
from ._http import ByteRange, RangeOutcome, format_http_date, if_range_holds, select_range
from ._stats import Recorder
from ._sync import Gates, ServerClosingError, Shutdown

__all__ = ["CHUNK_SIZE", "Responder"]

CHUNK_SIZE: Final = 64 * 1024
"""Body bytes per write, unless ``Faults.drip`` says otherwise."""

_ALLOWED_METHODS: Final = ("GET", "HEAD")
_NO_BODY_STATUSES: Final = frozenset({204, 304})
# SO_LINGER on, timeout 0: close() then sends RST instead of FIN.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


def _text_response(status: int, headers: dict[str, str] | None = None) -> web.Response:
    if status in _NO_BODY_STATUSES:
        return web.Response(status=status, headers=headers)
    return web.Response(
        status=status, text=f"{status} {HTTPStatus(status).phrase}\n", headers=headers
    )


class Responder:
    """Produces the response to one request, applying the faults chosen for it.

    The caller owns bookkeeping (request log, in-flight count); this class only
    adds the body bytes it sends to ``recorder``.
    """

    def __init__(
        self,
        request: web.BaseRequest,
        faults: Faults,
        file: ServedFile | None,
        *,
        date_is_strong: bool,
        gates: Gates,
        shutdown: Shutdown,
        recorder: Recorder,
    ) -> None:
        self._request = request
        self._faults = faults
        self._file = file
        self._date_is_strong = date_is_strong
        self._gates = gates
        self._shutdown = shutdown
        self._recorder = recorder
        self._response: web.StreamResponse | None = None

    async def respond(self) -> web.StreamResponse:
        """Build and, for file bodies, stream the response.

        Never raises for a client that goes away or for server shutdown: the
        connection is dropped and whatever response object exists is returned.
        """
        try:
            return await self._respond()
        except ServerClosingError:
            self._abort_connection(reset=True)
        except ConnectionError:
            pass  # the client went away mid-body
        if self._response is None:
            # Nothing was sent; aiohttp's attempt to send this fails quietly on
            # the dead connection.
            self._response = web.Response(status=503)
        self._response.force_close()
        return self._response

    async def _respond(self) -> web.StreamResponse:
        faults = self._faults
        if faults.headers_delay:
            await self._shutdown.sleep(faults.headers_delay)
        if faults.status is not None:
            headers: dict[str, str] = {}
            if faults.retry_after is not None:
                headers[hdrs.RETRY_AFTER] = faults.retry_after
            return _text_response(faults.status, headers)
        if faults.redirect_to is not None:
            return web.Response(status=302, headers={hdrs.LOCATION: faults.redirect_to})
        if self._request.method not in _ALLOWED_METHODS:
            return _text_response(405, {hdrs.ALLOW: ", ".join(_ALLOWED_METHODS)})
        if self._file is None:
            return _text_response(404)
        return await self._serve_file(self._file)

    def _validators(self, file: ServedFile) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self._faults.etag == "strong":
            headers[hdrs.ETAG] = file.etag
        elif self._faults.etag == "weak":
            headers[hdrs.ETAG] = file.weak_etag
        if self._faults.last_modified:
            headers[hdrs.LAST_MODIFIED] = format_http_date(file.last_modified)
        return headers

    def _select(self, file: ServedFile, length: int) -> RangeOutcome:
        request = self._request
        ranges = request.headers.getall(hdrs.RANGE, [])
        if request.method != "GET" or self._faults.ignore_range or not ranges:
            return "full"  # §14.2: Range is only defined for GET
        if_range = request.headers.get(hdrs.IF_RANGE)
        if if_range is not None and not if_range_holds(
            if_range,
            etag=self._validators(file).get(hdrs.ETAG),
            last_modified=file.last_modified if self._faults.last_modified else None,
            date_is_strong=self._date_is_strong,
        ):
            return "full"
        return select_range(", ".join(ranges), length)

    async def _serve_file(self, file: ServedFile) -> web.StreamResponse:
        faults = self._faults
        representation = gzip.compress(file.data, mtime=0) if faults.gzip else file.data
        total = len(representation)
        headers: dict[str, str] = {
            hdrs.ACCEPT_RANGES: "bytes",
            hdrs.CONTENT_TYPE: "application/octet-stream",
            **self._validators(file),
        }
        if faults.gzip:
            headers[hdrs.CONTENT_ENCODING] = "gzip"
        selected = self._select(file, total)
        if selected == "unsatisfiable":
            headers[hdrs.CONTENT_RANGE] = f"bytes */{total}"
            del headers[hdrs.CONTENT_TYPE]
            return _text_response(416, headers)
        if isinstance(selected, ByteRange):
            status = 206
            shift = faults.content_range_start_offset
            headers[hdrs.CONTENT_RANGE] = (
                f"bytes {selected.first + shift}-{selected.last + shift}/{total}"
            )
            body = memoryview(representation)[selected.first : selected.last + 1]
        else:
            status = 200
            body = memoryview(representation)
        if faults.repr_digest is not None or faults.content_digest is not None:
            headers.update(
                digest_fields(
                    repr_digest=faults.repr_digest,
                    content_digest=faults.content_digest,
                    representation=representation,
                    body=body,
                )
            )
        if faults.corrupt:
            body = corrupted(body)

        response = self._response = web.StreamResponse(status=status, headers=headers)
        if not faults.chunked:
            response.content_length = len(body)
        elif self._request.version >= HttpVersion11:
            response.enable_chunked_encoding()
        else:
            response.force_close()  # HTTP/1.0: the body ends with the connection
        await response.prepare(self._request)
        if self._request.method == "HEAD":
            await response.write_eof()
            return response
        await self._stream(response, body, status)
        return response

    async def _stream(self, response: web.StreamResponse, body: memoryview, status: int) -> None:
        faults = self._faults
        cut: int | None = None
        if faults.reset_after is not None:
            cut = faults.reset_after
        elif faults.close_after is not None:
            cut = faults.close_after
        elif faults.short_206 and status == 206:
            cut = len(body) // 2
        end = len(body) if cut is None else min(cut, len(body))

        position = 0
        if faults.hold_after is not None:
            position = await self._send(response, body, position, min(faults.hold_after, end))
            await self._gates.pass_through(self._request.path)
        await self._send(response, body, position, end)

        if cut is None:
            await response.write_eof()
            return
        self._abort_connection(reset=faults.reset_after is not None)
        response.force_close()

    async def _send(
        self, response: web.StreamResponse, body: memoryview, start: int, end: int
    ) -> int:
        """Write ``body[start:end]`` in chunks, dripping if asked; return ``end``."""
        drip = self._faults.drip
        chunk_size = CHUNK_SIZE if drip is None else drip[0]
        position = start
        while position < end:
            if drip is not None and position > 0:
                await self._shutdown.sleep(drip[1])
            size = min(chunk_size, end - position)
            await response.write(body[position : position + size])
            self._recorder.body_sent(size)
            position += size
        return position

    def _abort_connection(self, *, reset: bool) -> None:
        """Drop the connection: RST (``reset``) or a clean FIN after buffered data."""
        transport = self._request.transport
        if transport is None or transport.is_closing():
            return
        if not reset:
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
