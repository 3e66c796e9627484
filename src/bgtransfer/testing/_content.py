"""The files a :class:`~bgtransfer.testing.TestServer` serves, and their validators."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta

import attrs

__all__ = [
    "ServedFile",
    "deterministic_bytes",
    "make_served_file",
    "next_last_modified",
    "normalise_last_modified",
]

# How far in the past a default Last-Modified lies.  RFC 9110 §8.8.2.2 lets a
# client treat a Last-Modified date as a strong validator only when the
# response's Date is at least one second later; an hour of margin also keeps
# repeated replacements (one second apart each) from reaching into the future,
# which §8.8.2.1 forbids.
_DEFAULT_AGE = timedelta(hours=1)
_ONE_SECOND = timedelta(seconds=1)


@attrs.frozen(kw_only=True)
class ServedFile:
    """One file as the server currently serves it.

    Instances are immutable snapshots: :meth:`TestServer.replace_file
    <bgtransfer.testing.TestServer.replace_file>` registers a new instance (with a
    higher :attr:`generation`, a new :attr:`etag` and a later
    :attr:`last_modified`) rather than changing this one.
    """

    path: str
    """The URL path the file is served at, e.g. ``"/files/a.bin"``."""
    data: bytes = attrs.field(repr=False)
    """The complete content."""
    sha256: str
    """Lower-case hex SHA-256 of :attr:`data`."""
    etag: str
    """The strong entity tag, quoted: ``'"<hex>"'``.  Unique per generation."""
    last_modified: datetime
    """Modification time: timezone-aware UTC, whole seconds."""
    generation: int
    """0 for the file as first added, incremented by every replacement."""

    @property
    def size(self) -> int:
        """Length of :attr:`data` in bytes."""
        return len(self.data)

    @property
    def weak_etag(self) -> str:
        """:attr:`etag` in its weak form, ``'W/"<hex>"'``."""
        return f"W/{self.etag}"


def deterministic_bytes(size: int, seed: int | str) -> bytes:
    """Return ``size`` pseudo-random bytes that depend only on ``seed``.

    String seeds are hashed by :class:`random.Random` with SHA-512, so the result
    is stable across processes and independent of ``PYTHONHASHSEED``.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return random.Random(seed).randbytes(size)


def next_last_modified(previous: datetime | None, now: datetime | None = None) -> datetime:
    """Pick a Last-Modified time for new content.

    The result is one hour before ``now`` (default: the current time), truncated to
    whole seconds, but always at least one second after ``previous`` so that every
    replacement gets a distinct, strong date validator.
    """
    current = (now or datetime.now(UTC)).replace(microsecond=0) - _DEFAULT_AGE
    if previous is not None and current <= previous:
        return previous + _ONE_SECOND
    return current


def normalise_last_modified(value: datetime) -> datetime:
    """Validate an explicit Last-Modified time and return it as UTC, whole seconds."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"last_modified must be timezone-aware, got {value!r}")
    return value.astimezone(UTC).replace(microsecond=0)


def make_served_file(
    path: str, data: bytes, *, generation: int, last_modified: datetime
) -> ServedFile:
    """Build a :class:`ServedFile`, computing its digest and entity tag."""
    digest = hashlib.sha256(data).hexdigest()
    return ServedFile(
        path=path,
        data=data,
        sha256=digest,
        # The generation keeps the tag unique even when a replacement happens to
        # carry identical bytes: a strong tag may change without the content
        # changing, but must never stay the same when the content changes.
        etag=f'"{digest[:32]}-{generation}"',
        last_modified=normalise_last_modified(last_modified),
        generation=generation,
    )
