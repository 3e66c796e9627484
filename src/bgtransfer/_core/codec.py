"""Terminal events and transfer errors as plain JSON values, and back.

The journal stores the terminal event of a task until a consumer has seen it, so
a fresh process can deliver it again; the daemon will send the same values over
its socket. Plain JSON, not pickle: a journal must never be able to run code,
and a value written by one version must be checked field by field when read by
another. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any, Final, TypeGuard

import attrs

from .._exceptions import (
    AuthenticationError,
    HTTPStatusError,
    IncompleteBodyError,
    IntegrityError,
    JournalWriteError,
    LocalFileError,
    NetworkError,
    ProtocolError,
    ProxyError,
    RedirectError,
    ResourceTimeoutError,
    ResponseTooLargeError,
    ResumableUploadError,
    SourceChangedError,
    TLSError,
    TransferError,
    TransferTimeoutError,
    UploadChecksumError,
    UploadExpiredError,
)
from .events import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    LoggedEvent,
    ResumedEvent,
    RetryEvent,
    TerminalEvent,
    UploadReply,
)
from .resume_data import InvalidResumeDataError, ResumeData, decode_stored

__all__ = [
    "CodecError",
    "decode_error",
    "decode_logged",
    "decode_terminal",
    "encode_error",
    "encode_logged",
    "encode_terminal",
]

_ERROR_TYPES: Final[dict[str, type[TransferError]]] = {
    cls.__name__: cls
    for cls in (
        TransferError,
        HTTPStatusError,
        AuthenticationError,
        NetworkError,
        IncompleteBodyError,
        ProxyError,
        TLSError,
        ProtocolError,
        IntegrityError,
        RedirectError,
        ResponseTooLargeError,
        TransferTimeoutError,
        ResourceTimeoutError,
        LocalFileError,
        JournalWriteError,
        SourceChangedError,
        ResumableUploadError,
        UploadExpiredError,
        UploadChecksumError,
    )
}
_FIELDS: Final[dict[type[TransferError], tuple[str, ...]]] = {
    HTTPStatusError: ("status", "reason", "retry_after", "www_authenticate"),
    AuthenticationError: ("status", "reason", "retry_after", "www_authenticate", "scheme"),
    LocalFileError: ("errno", "filename", "strerror"),
    JournalWriteError: ("errno", "filename", "strerror"),
    ProxyError: ("proxy", "status"),
    TLSError: ("check",),
    IntegrityError: ("algorithm", "expected", "actual"),
    ResponseTooLargeError: ("max_bytes",),
    SourceChangedError: ("errno", "filename", "strerror"),
    UploadExpiredError: ("status",),
}
"""The typed attributes each class carries beyond ``url`` (every one is restored)."""
_REQUIRED: Final[dict[type[TransferError], tuple[str, ...]]] = {
    HTTPStatusError: ("status", "reason"),
    AuthenticationError: ("status", "reason"),
    UploadExpiredError: ("status",),
}
"""Those of them that are never None."""


class CodecError(ValueError):
    """A stored value is not what this version of bgtransfer wrote (says which part)."""


def encode_error(error: TransferError) -> dict[str, Any]:
    """A transfer error as a JSON object: its class, message, URL and typed fields."""
    # An application subclass (mixins included) is stored as its nearest known class.
    cls = next(c for c in type(error).__mro__ if _ERROR_TYPES.get(c.__name__) is c)
    document: dict[str, Any] = {"type": cls.__name__, "message": str(error), "url": error.url}
    for name in _FIELDS.get(cls, ()):
        document[name] = getattr(error, name, None)
    return document


def decode_error(document: object) -> TransferError:
    """The error :func:`encode_error` wrote; :class:`CodecError` if it is not one."""
    if not isinstance(document, dict):
        raise CodecError("error is not an object")
    cls = _ERROR_TYPES.get(_text(document, "type"))
    if cls is None:
        raise CodecError(f"unknown error type {document.get('type')!r}")
    message, url = _text(document, "message"), _text(document, "url")
    error = cls.__new__(cls, message)
    BaseException.__init__(error, message)
    error.url = url
    for name in _FIELDS.get(cls, ()):
        value = document.get(name)
        expected = int if name in ("status", "errno", "max_bytes") else str
        if value is None and name in _REQUIRED.get(cls, ()):
            raise CodecError(f"{cls.__name__} without a {name}")
        if value is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            raise CodecError(f"error field {name!r} has the wrong type")
        setattr(error, name, value)
    return error


def encode_terminal(event: TerminalEvent) -> dict[str, Any]:
    """A terminal event as a JSON object (the task id is stored beside it, not in it)."""
    if isinstance(event, FinishedEvent):
        document: dict[str, Any] = {
            "kind": "finished",
            "location": str(event.location),
            "total_bytes": event.total_bytes,
            "length_verified": event.length_verified,
        }
        if event.reply is not None:
            document["reply"] = _encode_reply(event.reply)
        return document
    if isinstance(event, ErrorEvent):
        document = {"kind": "error", "error": encode_error(event.error)}
        if event.resume_data is not None:  # out of space: the partial file was kept
            document["resume_data"] = _encode_resume_data(event.resume_data)
        return document
    data = event.resume_data
    return {
        "kind": "cancelled",
        "resume_data": None if data is None else _encode_resume_data(data),
    }


def _encode_reply(reply: UploadReply) -> dict[str, Any]:
    return {
        "status": reply.status,
        "headers": [list(pair) for pair in reply.headers],
        "body": base64.b64encode(reply.body).decode("ascii"),
        "truncated": reply.truncated,
        "saved_to": None if reply.saved_to is None else str(reply.saved_to),
    }


def _decode_reply(document: object) -> UploadReply | None:
    if document is None:
        return None
    if not isinstance(document, dict):
        raise CodecError("upload reply is not an object")
    status, truncated = document.get("status"), document.get("truncated")
    if not _count(status) or not isinstance(truncated, bool):
        raise CodecError("upload reply without a valid status or truncated flag")
    pairs = document.get("headers")
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        for pair in pairs
    ):
        raise CodecError("upload reply with invalid headers")
    body, saved_to = document.get("body"), document.get("saved_to")
    if not isinstance(body, str) or (saved_to is not None and not isinstance(saved_to, str)):
        raise CodecError("upload reply with an invalid body or saved_to")
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise CodecError("upload reply body is not base64") from None
    return UploadReply(
        status=status,
        headers=tuple((name, value) for name, value in pairs),
        body=data,
        truncated=truncated,
        saved_to=None if saved_to is None else Path(saved_to),
    )


def _encode_resume_data(data: ResumeData) -> str:
    return data.to_bytes().decode("utf-8")


def _decode_resume_data(kind: str, blob: object) -> ResumeData | None:
    """Resume data stored with an outcome (older, unsigned versions too: the
    journal is trusted, and the engine signs what it hands out again)."""
    if blob is None:
        return None
    if not isinstance(blob, str):
        raise CodecError(f"{kind} outcome with resume data that is not text")
    try:
        return decode_stored(blob.encode("utf-8"))
    except UnicodeEncodeError:
        raise CodecError(f"{kind} outcome with resume data that is not UTF-8") from None
    except InvalidResumeDataError as exc:
        raise CodecError(f"{kind} outcome: {exc}") from None


def decode_terminal(task_id: int, document: object) -> TerminalEvent:
    """The terminal event :func:`encode_terminal` wrote for ``task_id``."""
    if not isinstance(document, dict):
        raise CodecError("outcome is not an object")
    kind = document.get("kind")
    if kind == "finished":
        total = document.get("total_bytes")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise CodecError("finished outcome without a valid total_bytes")
        # Rows written before the field existed vouch for nothing: False.
        verified = document.get("length_verified", False)
        if not isinstance(verified, bool):
            raise CodecError("finished outcome with a length_verified that is not a boolean")
        return FinishedEvent(
            task_id=task_id,
            location=Path(_text(document, "location")),
            total_bytes=total,
            length_verified=verified,
            reply=_decode_reply(document.get("reply")),
        )
    if kind == "error":
        return ErrorEvent(
            task_id=task_id,
            error=decode_error(document.get("error")),
            resume_data=_decode_resume_data("error", document.get("resume_data")),
        )
    if kind == "cancelled":
        data = _decode_resume_data("cancelled", document.get("resume_data"))
        return CancelledEvent(task_id=task_id, resume_data=data)
    raise CodecError(f"unknown outcome kind {kind!r}")


def encode_logged(event: LoggedEvent) -> dict[str, Any]:
    """An event of the session's event log as a JSON object (its number and task
    id are stored beside it): a terminal event as :func:`encode_terminal` writes it."""
    if isinstance(event, ResumedEvent):
        return {"kind": "resumed", "offset": event.offset, "expected_total": event.expected_total}
    if isinstance(event, RetryEvent):
        return {
            "kind": "retry",
            "attempt": event.attempt,
            "delay": event.delay,
            "error": encode_error(event.error),
        }
    return encode_terminal(event)


def decode_logged(task_id: int, seq: int, document: object) -> LoggedEvent:
    """The event :func:`encode_logged` wrote, numbered ``seq``."""
    if not isinstance(document, dict):
        raise CodecError("logged event is not an object")
    kind = document.get("kind")
    if kind == "resumed":
        offset, total = document.get("offset"), document.get("expected_total")
        if not _count(offset) or (total is not None and not _count(total)):
            raise CodecError("resumed event without a valid offset or expected_total")
        return ResumedEvent(task_id=task_id, offset=offset, expected_total=total, seq=seq)
    if kind == "retry":
        attempt, delay = document.get("attempt"), document.get("delay")
        if not _count(attempt) or not isinstance(delay, int | float) or isinstance(delay, bool):
            raise CodecError("retry event without a valid attempt or delay")
        error = decode_error(document.get("error"))
        return RetryEvent(task_id=task_id, attempt=attempt, error=error, delay=delay, seq=seq)
    event = decode_terminal(task_id, document)
    return attrs.evolve(event, seq=seq)


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise CodecError(f"field {name!r} is missing or not text")
    return value
