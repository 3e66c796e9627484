"""Uploads without the I/O: the request value, the source file's identity, the
journal's upload fields and the answer's judgement. Pure (the reattach rule
is :func:`~.reattach.plan_upload_reattach`).

A plain upload sends a file's bytes as the body of one ``PUT`` or ``POST``;
the file is named by path, and what it was when ``Session.upload()`` took it
(:class:`SourceIdentity`: size, modification time, device, inode) is checked
before every attempt and while and after its body is sent, so a task never
sends a mix of two versions of a file. The journal keeps an upload's own
fields (:class:`UploadFields`) beside the columns every task has; the
``upload_url``/``upload_offset`` slot is for resumable uploads (tus, the IETF
draft), which continue from what the server holds, where a plain upload starts
again from its first byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

import attrs

from .._exceptions import HTTPStatusError
from .challenge import www_authenticate
from .config import HeaderPairs, check_description, headers_repr, normalize_headers
from .secrets import SecretHeaders, check_no_userinfo
from .tus import TusCapabilities, capabilities_from_document

if TYPE_CHECKING:
    from _typeshed import StrPath

# The string encoder json.dumps uses by default (ensure_ascii): C, when built.
_quoted: Callable[[str], str] = json.encoder.encode_basestring_ascii

__all__ = [
    "METHODS",
    "PROTOCOLS",
    "SourceIdentity",
    "UploadFields",
    "UploadRequest",
    "check_upload_status",
    "reply_headers",
    "source_change",
]

METHODS: Final = ("PUT", "POST")
"""The methods a plain upload sends its file with."""

PROTOCOLS: Final = ("plain", "tus", "ietf", "auto")
"""How an upload is sent: ``plain`` (the whole file per attempt), ``tus`` (tus
1.0), ``ietf`` (the IETF resumable-upload draft, interop version 8), ``auto``
(what the server advertises, asked once with ``OPTIONS``)."""
RESUMABLE: Final = frozenset({"tus", "ietf"})


def _url(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"url must be a str, not {type(value).__name__}")
    check_no_userinfo(value)


def _method(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"method must be a str, not {type(value).__name__}")
    if value not in METHODS:
        raise ValueError(f"method must be 'PUT' or 'POST', got {value!r}")


def _protocol(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"protocol must be a str, not {type(value).__name__}")
    if value not in PROTOCOLS:
        choices = ", ".join(map(repr, PROTOCOLS))
        raise ValueError(f"protocol must be one of {choices}, got {value!r}")


def _description(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    check_description(value)


def _reply_to(instance: object, attribute: attrs.Attribute[StrPath | None], value: object) -> None:
    if value is not None and not isinstance(value, str) and not hasattr(value, "__fspath__"):
        raise TypeError(f"reply_to must be a str, os.PathLike or None, not {type(value).__name__}")


@attrs.frozen
class UploadRequest:
    """What one :meth:`Session.upload` call takes, as a value (for
    :meth:`Session.upload_many`; the task backend's argument). The method, the
    protocol, the description, the headers and the type of ``reply_to`` are
    checked here (``ValueError``, ``TypeError``; a URL with credentials:
    :class:`~bgtransfer.InvalidURLError`);
    the rest of the URL, ``file`` and ``reply_to`` need the file system and are
    checked by ``upload_many``, with every other request of the batch
    (:class:`~bgtransfer.InvalidSourceError`,
    :class:`~bgtransfer.InvalidDestinationError`)."""

    url: str = attrs.field(validator=_url)
    file: StrPath
    method: str = attrs.field(default="PUT", kw_only=True, validator=_method)
    description: str | None = attrs.field(default=None, kw_only=True, validator=_description)
    headers: HeaderPairs = attrs.field(
        default=(), kw_only=True, converter=normalize_headers, repr=headers_repr
    )
    reply_to: StrPath | None = attrs.field(default=None, kw_only=True, validator=_reply_to)
    protocol: str = attrs.field(default="plain", kw_only=True, validator=_protocol)

    def __attrs_post_init__(self) -> None:
        if self.reply_to is not None and self.protocol != "plain":
            raise ValueError(
                f"{self.url}: reply_to is for plain uploads, not protocol={self.protocol!r} "
                "(a resumable upload's answer is kept in FinishedEvent.reply)"
            )


@attrs.frozen
class SourceIdentity:
    """A source file as ``stat`` saw it."""

    size: int
    mtime_ns: int
    device: int
    inode: int


def source_change(expected: SourceIdentity, found: SourceIdentity | None) -> str | None:
    """What changed between the identity taken at ``upload()`` and ``found``
    (None: the file is gone), as the error's words; None if nothing did."""
    if found is None:
        return "it is gone"
    if (found.device, found.inode) != (expected.device, expected.inode):
        return "another file is at its path now (replaced)"
    if found.size != expected.size:
        return f"its size changed from {expected.size} to {found.size} bytes"
    if found.mtime_ns != expected.mtime_ns:
        return "its modification time changed (it was written to)"
    return None


@attrs.frozen(kw_only=True)
class UploadFields:
    """What the journal keeps of an upload, beside the columns of every task
    (its URL, description, headers without secrets, phase, bytes sent)."""

    method: str
    source: str
    """The absolute, resolved path of the file sent."""
    identity: SourceIdentity
    reply_to: str | None = None
    """Where the response body goes (absolute), if anywhere."""
    upload_url: str | None = None
    """A resumable upload's URL on the server (None for a plain upload); never
    with userinfo."""
    upload_offset: int = 0
    """The bytes a resumable upload's server confirmed holding."""
    protocol: str = "plain"
    """``plain``, ``tus``, ``ietf``, or ``auto`` until the server was asked."""
    tus: TusCapabilities | None = None
    """What a tus server said of itself (``OPTIONS``), once it did: a continued
    upload sends the checksum it offers and terminates only if it may, without
    asking again. None: not asked, not answered, or not tus."""

    _json: str | None = attrs.field(default=None, init=False, repr=False, eq=False)
    """:meth:`to_json`'s text, once made: every entry an upload puts (at least
    one per upload() call) holds these same fields."""

    def to_json(self) -> str:
        if self._json is None:
            object.__setattr__(self, "_json", self._encoded())
        assert self._json is not None
        return self._json

    def _encoded(self) -> str:
        identity = self.identity
        if self.tus is None:
            # What json.dumps writes for the dict below (its separators, its
            # ASCII escapes by the same C function), without making the dict and
            # an encoder for it: one of these per upload() call.
            return (
                f'{{"method": {_quoted(self.method)}, "source": {_quoted(self.source)}, '
                f'"identity": [{int(identity.size)}, {int(identity.mtime_ns)}, '
                f"{int(identity.device)}, {int(identity.inode)}], "
                f'"reply_to": {_quoted_or_null(self.reply_to)}, '
                f'"upload_url": {_quoted_or_null(self.upload_url)}, '
                f'"upload_offset": {int(self.upload_offset)}, '
                f'"protocol": {_quoted(self.protocol)}}}'
            )
        more = {"tus": self.tus.document()}
        return json.dumps(
            {
                "method": self.method,
                "source": self.source,
                "identity": [identity.size, identity.mtime_ns, identity.device, identity.inode],
                "reply_to": self.reply_to,
                "upload_url": self.upload_url,
                "upload_offset": self.upload_offset,
                "protocol": self.protocol,
                **more,
            }
        )

    @classmethod
    def from_json(cls, text: object) -> UploadFields:
        """The fields :meth:`to_json` wrote; ``ValueError`` naming what is wrong."""
        try:
            document = json.loads(text) if isinstance(text, str) else None
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")  # noqa: TRY004 - the caller's CorruptEntry
        # Checked inline (type() is int: JSON makes no bool subclass of it here):
        # a reopened session decodes one of these per upload in its journal.
        get = document.get
        method, source = get("method"), get("source")
        if method not in METHODS or type(source) is not str or not source:
            raise ValueError("invalid method or source")
        identity = get("identity")
        if not (
            type(identity) is list
            and len(identity) == 4
            and all(type(n) is int and n >= 0 for n in identity)
        ):
            raise ValueError("invalid identity")
        reply_to, upload_url = get("reply_to"), get("upload_url")
        if not all(value is None or type(value) is str for value in (reply_to, upload_url)):
            raise ValueError("invalid reply_to or upload_url")
        offset = get("upload_offset", 0)
        if type(offset) is not int or offset < 0:
            raise ValueError("invalid upload_offset")
        protocol = get("protocol", "plain")
        if protocol not in PROTOCOLS:
            raise ValueError("invalid protocol")
        if upload_url is not None:
            check_no_userinfo(upload_url)
        tus = get("tus")  # (absent from rows before the capabilities were kept)
        return cls(
            method=method,
            source=source,
            identity=SourceIdentity(*identity),
            reply_to=reply_to,
            upload_url=upload_url,
            upload_offset=offset,
            protocol=protocol,
            tus=None if tus is None else capabilities_from_document(tus),
        )


def _quoted_or_null(text: str | None) -> str:
    return "null" if text is None else _quoted(text)


def check_upload_status(url: str, status: int, reason: str, headers: Mapping[str, str]) -> None:
    """A 2xx answer accepted the upload; anything else raises the task's
    :class:`~bgtransfer.HTTPStatusError` (the retry policy decides what next),
    as for a download. ``headers`` is looked up by lower-case names."""
    if not 200 <= status < 300:
        raise HTTPStatusError(
            status,
            reason,
            url=url,
            retry_after=headers.get("retry-after"),
            www_authenticate=www_authenticate(status, headers),
        )


def reply_headers(
    headers: Iterable[tuple[str, str]], secrets: SecretHeaders
) -> tuple[tuple[str, str], ...]:
    """The response's headers as ``UploadReply.headers`` keeps them: without the
    secret ones (``Set-Cookie`` and ``WWW-Authenticate`` among them, by the
    session's rule)."""
    return secrets.public(headers)
