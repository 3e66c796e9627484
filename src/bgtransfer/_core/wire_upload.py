"""Upload requests on the daemon protocol, as plain JSON and back (beside
:mod:`.wire`, whose checks it shares). Pure: no I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._exceptions import InvalidDestinationError
from .upload import UploadRequest
from .wire import _object, _optional_str, _pairs, _str

__all__ = ["decode_upload", "encode_upload"]


def encode_upload(request: UploadRequest) -> dict[str, Any]:
    """An upload request; its paths must already be absolute (the client's job)."""
    reply_to = request.reply_to
    return {
        "url": request.url,
        "source": str(request.file),
        "method": request.method,
        "description": request.description,
        "headers": [list(pair) for pair in request.headers],
        "reply_to": None if reply_to is None else str(reply_to),
        "protocol": request.protocol,
    }


def decode_upload(document: object) -> UploadRequest:
    """An upload request :func:`encode_upload` wrote; relative paths are refused
    (the daemon's working directory is not the client's)."""
    doc = _object(document, "upload")
    url, source, reply_to = _str(doc, "url"), _str(doc, "source"), _optional_str(doc, "reply_to")
    for name, path in (("file", source), ("reply_to", reply_to)):
        if path is not None and not Path(path).is_absolute():
            raise InvalidDestinationError(
                f"{name} {path!r} for {url} is a relative path; "
                "the daemon takes absolute paths only"
            )
    return UploadRequest(
        url,
        source,
        method=_str(doc, "method"),
        description=_optional_str(doc, "description"),
        headers=_pairs(doc.get("headers", [])),
        reply_to=reply_to,
        protocol=_str(doc, "protocol") if "protocol" in doc else "plain",
    )
