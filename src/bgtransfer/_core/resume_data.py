"""``ResumeData``: everything needed to continue a download (or a resumable
upload: ``kind="upload"``) elsewhere, as a value.

The ``cancelByProducingResumeData:`` analog. Serialised as UTF-8 JSON with a
format tag and a version, so a blob is self-describing, readable when debugging,
and checked field by field when read back.

Resume data leaves the process and comes back from the application, so it is
*authenticated*: the session that hands it out sets :attr:`ResumeData.mac`, an
HMAC-SHA256 over every other field under a secret key of its state directory
(:func:`sign`), and a session takes it back only if the MAC is right for its own
key (:func:`verify`). An edited blob (another partial file, another URL) or one
made by another state directory is refused before any file is touched. Pure:
the key comes from the caller, and whether the partial file still exists is
checked by the session that uses the data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import PurePosixPath
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import attrs

from .._exceptions import InvalidRequestError
from .digests import Integrity
from .secrets import redacted_url
from .tus import CHECKSUM_PREFERENCE, TUS_EXTENSIONS, TusCapabilities

__all__ = [
    "EPHEMERAL_NOTE",
    "FORMAT",
    "KEY_SIZE",
    "KINDS",
    "InvalidResumeDataError",
    "ResumeData",
    "canonical_bytes",
    "decode_stored",
    "ephemeral_partial",
    "resume_data_of",
    "sign",
    "tus_document",
    "verify",
    "version_of",
]

FORMAT: Final = "bgtransfer.resume-data"
KEY_SIZE: Final = 32
"""Bytes of the secret key resume data is signed with (HMAC-SHA256's block of entropy)."""
_MAC_TEXT: Final = re.compile(r"[0-9a-f]{64}")
EPHEMERAL_NOTE: Final = (
    "resume data of an ephemeral session is good only while that session is open"
)
"""Said by every refusal of resume data that names an ephemeral session's partial file."""
_EPHEMERAL_DIR: Final = re.compile(r"bgtransfer-[a-z0-9_]{8}")  # what tempfile.mkdtemp names it


class InvalidResumeDataError(InvalidRequestError):
    """Resume data that cannot be used: garbage, truncated, from a newer version,
    unsigned or not signed by this state directory (edited, or made elsewhere),
    or pointing at a partial file that is gone (or already taken by another task)."""


KINDS: Final = ("download", "upload")
_UPLOAD_PROTOCOLS: Final = ("tus", "ietf")


@attrs.frozen(kw_only=True)
class ResumeData:
    """A paused download: where its bytes are and how to ask for the rest safely;
    or (``kind="upload"``) a paused resumable upload: the file as it was, the
    upload URL on the server and the offset the server acknowledged. For an
    upload, ``partial`` and ``validator`` are empty and ``total`` is the file's
    size; ``Session.upload_with_resume_data()`` takes it."""

    VERSION: ClassVar[int] = 4
    """The newest version. Each blob is written in the oldest version that holds
    it: 4 with ``tus``, 3 with ``integrity``, else 2 (what earlier releases read
    and signed the same way); see :func:`version_of`."""

    url: str
    """The URL the bytes came from (after redirects, the original URL is kept)."""
    partial: str
    """Absolute path of the partial file holding the first ``offset`` bytes."""
    offset: int
    """Bytes already in the partial file."""
    validator: str
    """The strong ETag or strong Last-Modified date sent as ``If-Range``."""
    total: int | None
    """The representation's complete length, when the server said."""
    encoding: str = "identity"
    """The content coding of the stored bytes; a resumed answer must match it."""
    destination: str | None = None
    """Where the finished file was to go."""
    description: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """Request headers to send again; never credentials (Authorization,
    Proxy-Authorization, Cookie), which the application supplies again."""
    kind: str = "download"
    """``"download"`` or ``"upload"`` (the fields below are an upload's)."""
    source: str | None = None
    """The uploaded file (absolute path)."""
    identity: tuple[int, int, int, int] | None = None
    """The file's size, mtime_ns, device and inode when the upload was made."""
    upload_url: str | None = None
    """The upload's URL on the server (never with credentials)."""
    protocol: str | None = None
    """``"tus"`` or ``"ietf"``."""
    method: str | None = None
    """The upload's method (the IETF draft's creation)."""
    integrity: Integrity | None = None
    """The download's ``checksum=``/``expected_size=`` (version 3): the resumed
    task checks its bytes against them too."""
    tus: TusCapabilities | None = None
    """A tus upload's server, as its ``OPTIONS`` answer described it (version 4;
    the extensions and checksum algorithms bgtransfer knows): the continued
    upload sends ``Upload-Checksum`` where it offered the checksum extension, and
    a ``DELETE`` on cancel only if it offered termination. None: not known (the
    continued upload sends no checksum)."""
    mac: str = ""
    """HMAC-SHA256 of every other field under the state directory's key, as hex;
    set by the session that handed the data out. Any change to a field (or data
    built by hand) makes it wrong, and the data is refused. Not a secret."""

    def to_bytes(self) -> bytes:
        """The serialised form (UTF-8 JSON with a format tag and version)."""
        body = attrs.asdict(self, recurse=False)
        body["headers"] = [list(pair) for pair in self.headers]
        if self.kind == "download":  # a download's blob is as it always was
            for name in ("kind", "source", "identity", "upload_url", "protocol", "method"):
                del body[name]
        else:
            body["identity"] = None if self.identity is None else list(self.identity)
        version = version_of(self)
        if self.integrity is None:
            del body["integrity"]
        else:
            body["integrity"] = self.integrity.to_dict()
        if self.tus is None:
            del body["tus"]
        else:
            body["tus"] = tus_document(self.tus)
        return json.dumps(
            {"format": FORMAT, "version": version, **body}, separators=(",", ":")
        ).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ResumeData:
        """Read resume data; raise :class:`InvalidResumeDataError` saying what is wrong.

        Only the form is checked here (an unsigned or older blob is refused); the
        MAC is checked against the key by the session given the data."""
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise TypeError(f"resume data must be bytes, not {type(blob).__name__}")
        data = _decode(bytes(blob), stored=False)
        if _MAC_TEXT.fullmatch(data.mac) is None:
            raise InvalidResumeDataError(
                "resume data without a valid signature (mac): altered or truncated"
            )
        return data


def resume_data_of(data: object, kind: str) -> ResumeData:
    """Resume data of ``kind`` (``download``/``upload``) from a value or its bytes
    (the form checked here, the signature by the session's engine)."""
    if isinstance(data, bytes | bytearray | memoryview):
        data = ResumeData.from_bytes(bytes(data))
    elif not isinstance(data, ResumeData):
        raise TypeError(f"resume_data must be ResumeData or bytes, not {type(data).__name__}")
    if data.kind != kind:
        call = f"{data.kind}_with_resume_data"
        raise InvalidResumeDataError(
            f"this resume data continues a {data.kind}: use Session.{call}()"
        )
    return data


def decode_stored(blob: bytes) -> ResumeData:
    """Resume data as the journal stored it: version 1 (unsigned, written before
    resume data was signed) or 2, the MAC kept as it is (the journal is trusted;
    the engine signs what it hands out again)."""
    return _decode(blob, stored=True)


def version_of(data: ResumeData) -> int:
    """The version ``data`` is written in: the oldest that holds all it has, so
    that an older bgtransfer still reads (and verifies) what it can use, and
    refuses the rest as newer than it understands."""
    if data.tus is not None:
        return 4
    return 2 if data.integrity is None else 3


def tus_document(capabilities: TusCapabilities) -> dict[str, object]:
    """The ``tus`` field of version 4: what :meth:`TusCapabilities.known` keeps."""
    known = capabilities.known()
    return {
        "extensions": sorted(known.extensions),
        "checksum_algorithms": list(known.checksum_algorithms),
        "max_size": known.max_size,
    }


def canonical_bytes(data: ResumeData) -> bytes:
    """What the MAC covers: every field but the MAC, in a fixed order and form."""
    fields: list[object] = [
        FORMAT,
        version_of(data),
        data.url,
        data.partial,
        data.offset,
        data.validator,
        data.total,
        data.encoding,
        data.destination,
        data.description,
        [list(pair) for pair in data.headers],
    ]
    if data.kind != "download":  # (a download's MAC is what it always was)
        identity = data.identity
        fields += [
            data.kind,
            data.source,
            None if identity is None else list(identity),
            data.upload_url,
            data.protocol,
            data.method,
        ]
    if data.integrity is not None:
        fields.append(data.integrity.to_dict())
    if data.tus is not None:
        fields.append(tus_document(data.tus))
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _mac(data: ResumeData, key: bytes) -> str:
    return hmac.new(key, canonical_bytes(data), hashlib.sha256).hexdigest()


def sign(data: ResumeData, key: bytes) -> ResumeData:
    """``data`` with its MAC under ``key`` (the state directory's secret)."""
    return attrs.evolve(data, mac=_mac(data, key))


def verify(data: ResumeData, key: bytes) -> None:
    """Raise :class:`InvalidResumeDataError` unless ``data``'s MAC is right for ``key``."""
    if not data.mac or not isinstance(data.mac, str):
        raise InvalidResumeDataError(
            f"{redacted_url(data.url)}: resume data is not signed (built by hand, or from an "
            "older bgtransfer); only resume data a session handed out can be used"
        )
    try:
        expected = _mac(data, key)
    except (TypeError, ValueError, AttributeError):  # built by hand with wrong types
        raise InvalidResumeDataError("resume data with fields of the wrong types") from None
    if not hmac.compare_digest(expected.encode(), str(data.mac).encode("utf-8", "replace")):
        if ephemeral_partial(data.partial):
            raise InvalidResumeDataError(
                f"{redacted_url(data.url)}: resume data signature does not match: it names a "
                f"partial file of an ephemeral session, and {EPHEMERAL_NOTE}, in that session "
                "(or, if it was given a state_dir, in a session of that state directory); "
                "or the data was altered"
            )
        raise InvalidResumeDataError(
            f"{redacted_url(data.url)}: resume data signature does not match: it was altered, or "
            "made by a session of another state directory (or an ephemeral session "
            "of another process)"
        )


def ephemeral_partial(partial: object) -> bool:
    """Whether resume data's ``partial`` names a file of an ephemeral session:
    ``<dir>/bgtransfer-XXXXXXXX/partials/<n>.part``, the temporary directory
    ``tempfile.mkdtemp`` makes for one (under the system's temporary directory,
    or under the ``state_dir`` it was given). Told from the text alone, to word a
    refusal: a background session named like such a directory would look the same.
    """
    if not isinstance(partial, str):
        return False
    path = PurePosixPath(partial)
    return (
        path.is_absolute()
        and len(path.parts) >= 4
        and path.parent.name == "partials"
        and _EPHEMERAL_DIR.fullmatch(path.parent.parent.name) is not None
    )


def _decode(blob: bytes, *, stored: bool) -> ResumeData:
    cls = ResumeData
    try:
        document = json.loads(blob.decode("utf-8"))
    except (ValueError, RecursionError):  # bad UTF-8, bad JSON, absurd nesting/numbers
        raise InvalidResumeDataError(
            "not bgtransfer resume data (not JSON: garbage or truncated)"
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidResumeDataError("not bgtransfer resume data (no format tag)")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidResumeDataError("resume data without a valid version")
    if version > cls.VERSION:
        raise InvalidResumeDataError(
            f"resume data version {version} is newer than this bgtransfer "
            f"understands ({cls.VERSION}); upgrade bgtransfer"
        )
    if version < 2 and not stored:
        raise InvalidResumeDataError(
            f"resume data version {version} is unsigned (from an older bgtransfer) "
            "and cannot be trusted; start the download again"
        )
    try:
        upload = _upload_fields(document)
        return cls(
            **upload,
            url=_field(document, "url", str),
            partial=_field(document, "partial", str),
            offset=_offset(document),
            validator=_field(document, "validator", str),
            total=_optional(document, "total", int),
            encoding=_field(document, "encoding", str),
            destination=_optional(document, "destination", str),
            description=_optional(document, "description", str),
            headers=_headers(document),
            integrity=_integrity(document, version),
            tus=_tus(document, version),
            mac=_mac_field(document, stored=stored),
        )
    except KeyError as exc:
        raise InvalidResumeDataError(f"resume data lacks {exc.args[0]!r} (truncated?)") from None


def _upload_fields(document: dict[str, Any]) -> dict[str, Any]:
    """An upload's fields (none for a download's blob)."""
    kind = document.get("kind", "download")
    if kind not in KINDS:
        raise InvalidResumeDataError("resume data field 'kind' is not 'download' or 'upload'")
    if kind == "download":
        return {}
    identity = document["identity"]
    if not (
        isinstance(identity, list)
        and len(identity) == 4
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in identity)
    ):
        raise InvalidResumeDataError("resume data field 'identity' has the wrong type")
    protocol = _field(document, "protocol", str)
    if protocol not in _UPLOAD_PROTOCOLS:
        raise InvalidResumeDataError(f"resume data names an unknown protocol {protocol[:20]!r}")
    upload_url = _field(document, "upload_url", str)
    try:
        parts = urlsplit(upload_url)
    except ValueError:
        parts = urlsplit("")
    if "@" in parts.netloc or parts.scheme not in {"http", "https"} or not parts.netloc:
        raise InvalidResumeDataError(
            "resume data's upload URL is not an http(s) URL without credentials"
        )
    return {
        "kind": kind,
        "source": _field(document, "source", str),
        "identity": tuple(identity),
        "upload_url": upload_url,
        "protocol": protocol,
        "method": _field(document, "method", str),
    }


def _integrity(document: dict[str, Any], version: int) -> Integrity | None:
    if version < 3:
        return None  # (a field an older version never wrote is not read)
    if version > 3 and "integrity" not in document:
        return None  # (from version 4 on, a blob may have other reasons to be new)
    try:
        return Integrity.from_dict(document["integrity"])
    except ValueError as exc:
        raise InvalidResumeDataError(f"resume data field 'integrity': {exc}") from None


_KNOWN_TUS: Final = {
    "extensions": TUS_EXTENSIONS,
    "checksum_algorithms": frozenset(CHECKSUM_PREFERENCE),
}


def _tus(document: dict[str, Any], version: int) -> TusCapabilities | None:
    """Version 4's ``tus`` field: a tus upload's server capabilities, each value
    one this bgtransfer knows (anything else is refused, saying which)."""
    if version < 4:
        return None  # (a field an older version never wrote is not read)
    if document.get("kind") != "upload" or document.get("protocol") != "tus":
        raise InvalidResumeDataError("resume data with tus capabilities is not a tus upload's")
    value = document["tus"]
    if not isinstance(value, dict):
        raise InvalidResumeDataError("resume data field 'tus' has the wrong type")
    unknown = sorted(set(value) - {"max_size", *_KNOWN_TUS})
    if unknown:
        raise InvalidResumeDataError(f"resume data field 'tus' has an unknown key {unknown[0]!r}")
    names: dict[str, tuple[str, ...]] = {}
    for key, known in _KNOWN_TUS.items():
        found = value.get(key)
        if not isinstance(found, list) or not all(isinstance(name, str) for name in found):
            raise InvalidResumeDataError(f"resume data field 'tus.{key}' has the wrong type")
        for name in found:
            if name not in known:
                raise InvalidResumeDataError(
                    f"resume data field 'tus.{key}' names an unknown value {name[:40]!r}"
                )
        names[key] = tuple(dict.fromkeys(found))
    max_size = value.get("max_size")
    if max_size is not None and (type(max_size) is not int or max_size < 0):
        raise InvalidResumeDataError("resume data field 'tus.max_size' has the wrong type")
    return TusCapabilities(
        extensions=frozenset(names["extensions"]),
        max_size=max_size,
        checksum_algorithms=names["checksum_algorithms"],
    )


def _field(document: dict[str, Any], name: str, kind: type) -> Any:
    value = document[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidResumeDataError(f"resume data field {name!r} has the wrong type")
    return value


def _optional(document: dict[str, Any], name: str, kind: type) -> Any:
    return None if document.get(name) is None else _field(document, name, kind)


def _offset(document: dict[str, Any]) -> int:
    offset: int = _field(document, "offset", int)
    total = document.get("total")
    if offset < 0 or (isinstance(total, int) and offset > total):
        raise InvalidResumeDataError(f"resume data offset {offset} is out of range")
    return offset


def _headers(document: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = document.get("headers", [])
    if not isinstance(raw, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        for pair in raw
    ):
        raise InvalidResumeDataError("resume data field 'headers' has the wrong type")
    return tuple((name, value) for name, value in raw)


def _mac_field(document: dict[str, Any], *, stored: bool) -> str:
    value = document.get("mac", "")
    if not isinstance(value, str):
        raise InvalidResumeDataError("resume data field 'mac' has the wrong type")
    return value if not stored or _MAC_TEXT.fullmatch(value) else ""
