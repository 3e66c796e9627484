"""The upload endpoint: a ``PUT`` or ``POST`` to any path that serves no file
(a served file answers them 405) is received, hashed as it arrives.

The body is never kept: its length and SHA-256 are computed as it streams in,
recorded (:class:`ReceivedUpload`, :attr:`TestServer.uploads
<bgtransfer.testing.TestServer.uploads>`) and answered as a small JSON body
``{"method": ..., "length": ..., "sha256": ...}``. A query ``?pad=N`` adds a
``"pad"`` field of N characters to the answer (a long reply). The answer also
carries a ``Set-Cookie`` header, which a client must not keep.

The path's :class:`~bgtransfer.testing.Faults` apply to the request body:
``reset_after`` aborts the connection (RST) once that many body bytes were
received; ``hold_after`` waits at the path's gate once that many arrived;
``drip=(n, seconds)`` reads the body slowly, ``n`` bytes at a time (a slow
reader); ``status`` (with ``retry_after``) answers that status once the whole
body arrived; ``headers_delay`` waits before answering.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
from collections.abc import Callable
from typing import Final

import attrs
from aiohttp import hdrs, web

from ._faults import Faults
from ._sync import Gates, ServerClosingError, Shutdown

__all__ = ["UPLOAD_METHODS", "ReceivedUpload", "receive_upload"]

UPLOAD_METHODS: Final = frozenset({"PUT", "POST"})
_READ_BYTES: Final = 256 * 1024
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


@attrs.frozen(kw_only=True)
class ReceivedUpload:
    """One upload request's body as the server received it."""

    method: str
    path: str
    length: int
    """Body bytes received."""
    sha256: str
    """Hex SHA-256 of the bytes received."""
    complete: bool
    """The body ended as announced (False: the connection was reset or lost)."""


async def receive_upload(  # noqa: PLR0912 - one loop applying each fault knob in turn
    request: web.BaseRequest,
    faults: Faults,
    *,
    gates: Gates,
    shutdown: Shutdown,
    record: Callable[[ReceivedUpload], None],
) -> web.StreamResponse:
    """Receive one upload's body under ``faults`` and answer it."""
    digest = hashlib.sha256()
    length = 0
    complete = False
    try:
        drip = faults.drip
        size = _READ_BYTES if drip is None else drip[0]
        held = faults.hold_after is None
        while True:
            if faults.reset_after is not None and length >= faults.reset_after:
                _reset(request)
                return _dead()
            if not held and length >= (faults.hold_after or 0):
                held = True
                await gates.pass_through(request.path)
            want = size
            for mark in (faults.reset_after, None if held else faults.hold_after):
                if mark is not None and mark > length:
                    want = min(want, mark - length)
            chunk = await request.content.read(want)
            if not chunk:
                complete = True
                break
            digest.update(chunk)
            length += len(chunk)
            if drip is not None:
                await shutdown.sleep(drip[1])
    except ServerClosingError:
        _reset(request)
        return _dead()
    except ConnectionError:
        return _dead()
    finally:
        record(
            ReceivedUpload(
                method=request.method,
                path=request.path,
                length=length,
                sha256=digest.hexdigest(),
                complete=complete,
            )
        )
    if faults.headers_delay:
        await shutdown.sleep(faults.headers_delay)
    headers = {hdrs.SET_COOKIE: "upload-session=secret-value; HttpOnly"}
    if faults.status is not None:
        if faults.retry_after is not None:
            headers[hdrs.RETRY_AFTER] = faults.retry_after
        return web.Response(status=faults.status, text=f"{faults.status}\n", headers=headers)
    answer: dict[str, object] = {
        "method": request.method,
        "length": length,
        "sha256": digest.hexdigest(),
    }
    pad = request.query.get("pad", "")
    if pad.isdigit():
        answer["pad"] = "x" * int(pad)
    status = 201 if request.method == "PUT" else 200
    return web.Response(
        status=status, text=json.dumps(answer), content_type="application/json", headers=headers
    )


def _reset(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


def _dead() -> web.Response:
    response = web.Response(status=503)
    response.force_close()
    return response
