"""Supervisor statistics on the daemon's wire (beside ``wire.py``, as ``wire_upload.py``)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .naming import Origin
from .supervisor import SupervisorStatistics
from .wire import WireError, _int, _object

__all__ = ["decode_statistics", "encode_statistics"]


def encode_statistics(statistics: SupervisorStatistics) -> dict[str, Any]:
    return {
        "active": statistics.active,
        "queued": statistics.queued,
        "active_by_origin": _by_origin(statistics.active_by_origin),
        "queued_by_origin": _by_origin(statistics.queued_by_origin),
        "borrowed": statistics.borrowed,
        "total_limit": statistics.total_limit,
    }


def decode_statistics(document: object) -> SupervisorStatistics:
    doc = _object(document, "statistics")
    return SupervisorStatistics(
        active=_int(doc, "active"),
        queued=_int(doc, "queued"),
        active_by_origin=_origins(doc.get("active_by_origin")),
        queued_by_origin=_origins(doc.get("queued_by_origin")),
        borrowed=_int(doc, "borrowed"),
        total_limit=_int(doc, "total_limit"),
    )


def _by_origin(counts: dict[Hashable, int]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for origin, count in counts.items():
        key = list(origin) if isinstance(origin, tuple) else str(origin)
        rows.append([key, count])
    return rows


def _origins(rows: object) -> dict[Hashable, int]:
    if not isinstance(rows, list):
        raise WireError("statistics by origin is not a list")
    counts: dict[Hashable, int] = {}
    for row in rows:
        if not (isinstance(row, list) and len(row) == 2 and isinstance(row[1], int)):
            raise WireError("statistics row is not [origin, count]")
        key = row[0]
        origin: Hashable = Origin(*key) if isinstance(key, list) and len(key) == 3 else str(key)
        counts[origin] = row[1]
    return counts
