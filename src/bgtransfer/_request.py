"""``DownloadRequest``: one download of a batch for ``Session.download_many``."""

from __future__ import annotations

import os

import attrs

from ._core.config import HeaderPairs, check_description, normalize_headers

__all__ = ["DownloadRequest"]


def _description(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    check_description(value)


@attrs.frozen
class DownloadRequest:
    """What one :meth:`Session.download` call takes, as a value (for
    :meth:`Session.download_many`). ``headers`` are checked and kept as
    ``(name, value)`` pairs; the URL, destination and segments are checked by
    ``download_many``, with every other request of the batch."""

    url: str
    destination: str | os.PathLike[str] | None = None
    description: str | None = attrs.field(default=None, kw_only=True, validator=_description)
    headers: HeaderPairs = attrs.field(default=(), kw_only=True, converter=normalize_headers)
    segments: int | None = attrs.field(default=None, kw_only=True)
