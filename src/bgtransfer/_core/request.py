"""``DownloadRequest``: one download as a value (``Session.download_many``, the task backend)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .config import HeaderPairs, check_description, headers_repr, normalize_headers
from .digests import Integrity, check_expected_size, parse_checksum
from .secrets import check_no_userinfo

if TYPE_CHECKING:
    from _typeshed import StrPath  # str | os.PathLike[str], without importing os here

__all__ = ["DownloadRequest"]


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
