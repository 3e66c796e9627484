"""``DownloadRequest``: one download of a batch for ``Session.download_many``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import attrs

from ._core.config import HeaderPairs, normalize_headers

__all__ = ["DownloadRequest"]


def _headers(value: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> HeaderPairs:
    return normalize_headers(value)


def _description(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"description must be a str or None, not {type(value).__name__}")


@attrs.frozen
class DownloadRequest:
    """What one :meth:`Session.download` call takes, as a value (for
    :meth:`Session.download_many`). ``headers`` are checked and kept as
    ``(name, value)`` pairs; the URL, destination and segments are checked by
    ``download_many``, with every other request of the batch."""

    url: str
    destination: str | os.PathLike[str] | None = None
    description: str | None = attrs.field(default=None, kw_only=True, validator=_description)
    headers: HeaderPairs = attrs.field(default=(), kw_only=True, converter=_headers)
    segments: int | None = attrs.field(default=None, kw_only=True)
