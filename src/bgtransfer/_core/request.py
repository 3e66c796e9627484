"""``DownloadRequest``: one download as a value (``Session.download_many``, the task
backend); :func:`request_batch`: the items of a ``download_many``/``upload_many``
call, checked."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

import attrs

from .config import HeaderPairs, check_description, headers_repr, normalize_headers
from .digests import Integrity, check_expected_size, parse_checksum
from .secrets import check_no_userinfo

if TYPE_CHECKING:
    from _typeshed import StrPath  # str | os.PathLike[str], without importing os here

__all__ = ["DownloadRequest", "request_batch"]

R = TypeVar("R")


def _url(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if isinstance(value, str):  # (the rest is checked by download_many)
        check_no_userinfo(value)


def _checksum(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        parse_checksum(value)


def _expected_size(instance: object, attribute: attrs.Attribute[int | None], value: object) -> None:
    if value is not None:
        check_expected_size(value)


def _description(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    check_description(value)


@attrs.frozen
class DownloadRequest:
    """What one :meth:`Session.download` call takes, as a value (for
    :meth:`Session.download_many`). ``headers`` are checked and kept as
    ``(name, value)`` pairs (the secret ones shown as ``***`` by ``repr``); a URL
    with credentials is refused here (:class:`~bgtransfer.InvalidURLError`); the
    rest of the URL, the destination and segments are checked by
    ``download_many``, with every other request of the batch. ``checksum``
    (``"sha256:<hex>"``...) and ``expected_size`` are checked here (``ValueError``,
    ``TypeError``): see :meth:`Session.download`."""

    url: str = attrs.field(validator=_url)
    destination: StrPath | None = None
    description: str | None = attrs.field(default=None, kw_only=True, validator=_description)
    headers: HeaderPairs = attrs.field(
        default=(), kw_only=True, converter=normalize_headers, repr=headers_repr
    )
    segments: int | None = attrs.field(default=None, kw_only=True)
    checksum: str | None = attrs.field(default=None, kw_only=True, validator=_checksum)
    expected_size: int | None = attrs.field(default=None, kw_only=True, validator=_expected_size)

    @property
    def integrity(self) -> Integrity | None:
        """What the bytes are checked against (None: nothing asked)."""
        return Integrity.of(self.checksum, self.expected_size)


def request_batch(
    requests: object, kind: type[R], *, url_alone: Callable[[str], R] | None = None
) -> list[R]:
    """The items of ``requests`` (an iterable, not a ``str``), each a ``kind``
    (or, with ``url_alone``, a URL ``str`` it makes one of); a ``TypeError``
    naming the index of the first that is not. Checked at run time: callers are
    not always type-checked."""
    name = kind.__name__
    if isinstance(requests, str | bytes) or not isinstance(requests, Iterable):
        alone = " or str" if url_alone is not None else ""
        kind_given = type(requests).__name__
        raise TypeError(f"requests must be an iterable of {name}{alone}, not {kind_given}")
    batch: list[R] = []
    for index, item in enumerate(requests):
        if isinstance(item, kind):
            batch.append(item)
        elif url_alone is not None and isinstance(item, str):
            batch.append(url_alone(item))
        else:
            article = "an" if name[0] in "AEIOU" else "a"
            alone = " or a URL str" if url_alone is not None else ""
            raise TypeError(
                f"request {index}: expected {article} {name}{alone}, not {type(item).__name__}"
            )
    return batch
