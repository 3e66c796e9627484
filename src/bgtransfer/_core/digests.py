"""Integrity checks, sans I/O: the ``checksum=`` a download names, its
``expected_size=``, and the RFC 9530 digest fields a server may send.

:func:`parse_checksum` turns ``"sha256:<hex>"`` into a :class:`Checksum`;
:class:`Integrity` is what a task must be checked against (carried by the
request, the journal, resume data and the daemon's wire, as :meth:`Integrity.to_json`).
:func:`parse_digest_field` reads a ``Repr-Digest``/``Content-Digest`` value
(a structured-field dictionary of byte sequences, RFC 8941) into the
algorithms this package checks; :func:`compare` says whether digests agree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Final

import attrs

__all__ = [
    "ALGORITHMS",
    "Checksum",
    "Integrity",
    "Mismatch",
    "check_expected_size",
    "compare",
    "new_hash",
    "parse_checksum",
    "parse_digest_field",
]

ALGORITHMS: Final[dict[str, int]] = {
    "sha256": 32,
    "sha512": 64,
    "blake2b": 64,
    "sha1": 20,
    "md5": 16,
}
"""The ``checksum=`` algorithms and their digest sizes in bytes (``blake2b`` is
the 64-byte one; ``md5`` and ``sha1`` only when named so: they detect
corruption, not tampering)."""

_RFC9530: Final[dict[str, str]] = {"sha-256": "sha256", "sha-512": "sha512"}
"""RFC 9530's active algorithms, by their registered names (the deprecated
ones, ``md5``, ``sha``, ``unixsum``..., are ignored like unknown ones)."""

_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")


def new_hash(algorithm: str) -> hashlib._Hash:
    """A fresh hash object for one of :data:`ALGORITHMS`."""
    return hashlib.new(algorithm)


@attrs.frozen
class Checksum:
    """One expected digest: ``algorithm`` (a key of :data:`ALGORITHMS`) and ``hex`` (lowercase)."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def parse_checksum(value: object) -> Checksum:
    """``"algorithm:hex"`` as a :class:`Checksum`; ``ValueError`` (``TypeError``
    for another type) naming what is wrong."""
    if not isinstance(value, str):
        raise TypeError(f"checksum must be a str like 'sha256:<hex>', not {type(value).__name__}")
    algorithm, sep, digest = value.partition(":")
    algorithm = algorithm.strip().lower()
    if not sep:
        raise ValueError(f"checksum must be 'algorithm:hex' (e.g. 'sha256:...'), got {value!r}")
    size = ALGORITHMS.get(algorithm)
    if size is None:
        known = ", ".join(ALGORITHMS)
        raise ValueError(f"unknown checksum algorithm {algorithm!r} (known: {known})")
    digest = digest.strip().lower()
    if len(digest) != 2 * size or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"a {algorithm} checksum is {2 * size} hexadecimal digits, got {digest!r}")
    return Checksum(algorithm, digest)


def check_expected_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected_size must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"expected_size must be 0 or more, got {value}")
    return value


@attrs.frozen
class Integrity:
    """What a download's bytes are checked against before its move into place."""

    checksum: Checksum | None = None
    expected_size: int | None = None

    @classmethod
    def of(cls, checksum: object, expected_size: object) -> Integrity | None:
        """Validated from ``download()``'s arguments; None when neither is given."""
        if checksum is None and expected_size is None:
            return None
        return cls(
            None if checksum is None else parse_checksum(checksum),
            None if expected_size is None else check_expected_size(expected_size),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict[str, object]:
        return {
            "checksum": None if self.checksum is None else str(self.checksum),
            "expected_size": self.expected_size,
        }

    @classmethod
    def from_dict(cls, document: object) -> Integrity:
        """The inverse of :meth:`to_dict`; ``ValueError`` when it is not one."""
        if not isinstance(document, dict):
            raise ValueError("integrity is not an object")  # noqa: TRY004 - a decode failure
        try:
            integrity = cls.of(document.get("checksum"), document.get("expected_size"))
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return cls() if integrity is None else integrity

    @classmethod
    def from_json(cls, text: str) -> Integrity:
        try:
            document = json.loads(text)
        except ValueError:
            raise ValueError("integrity is not JSON") from None
        return cls.from_dict(document)


@attrs.frozen
class Mismatch:
    """Two digests (or sizes) that differ, as :class:`~bgtransfer.IntegrityError` reports them."""

    algorithm: str
    expected: str
    actual: str
    source: str  # "checksum", "expected_size", "Repr-Digest", "Content-Digest"


def parse_digest_field(value: str) -> dict[str, bytes] | None:
    """A ``Repr-Digest``/``Content-Digest`` value: its digests by this package's
    algorithm names (unknown and deprecated algorithms left out, a wrong-sized
    digest too); None when the value is not a dictionary of byte sequences
    (RFC 8941 says a field that does not parse is ignored as a whole)."""
    found: dict[str, bytes] = {}
    for raw in value.split(","):
        key, eq, rest = raw.strip(" \t").partition("=")
        if not _KEY.fullmatch(key) or not eq:
            return None
        item = rest.split(";", 1)[0]  # (parameters are allowed and ignored)
        if len(item) < 2 or item[0] != ":" or item[-1] != ":":
            return None
        try:
            digest = base64.b64decode(item[1:-1], validate=True)
        except (binascii.Error, ValueError):
            return None
        algorithm = _RFC9530.get(key)
        if algorithm is not None and len(digest) == ALGORITHMS[algorithm]:
            found.setdefault(algorithm, digest)
    return found


def compare(
    expected: Mapping[str, bytes], actual: Mapping[str, bytes], source: str
) -> Mismatch | None:
    """The first of ``expected``'s digests that ``actual`` (computed for each)
    contradicts, or None when all agree."""
    for algorithm, digest in expected.items():
        got = actual[algorithm]
        if got != digest:
            return Mismatch(algorithm, digest.hex(), got.hex(), source)
    return None
