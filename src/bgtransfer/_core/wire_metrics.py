"""Metrics on the daemon's wire (beside ``wire.py``, as ``wire_stats.py``).

The values are flat records of numbers and (already redacted) text, so each is
its fields as a JSON object, checked field by field on the way in: a daemon
that answers nonsense gets a :class:`~bgtransfer._core.wire.WireError`, never a
value with a wrong type inside.
"""

from __future__ import annotations

from typing import Any, TypeVar, get_args

import attrs

from .metrics import AttemptMetrics, Outcome, SessionMetrics, TaskMetrics, TimingSummary
from .wire import WireError, _object

__all__ = [
    "decode_session_metrics",
    "decode_task_metrics",
    "encode_session_metrics",
    "encode_task_metrics",
]

_OUTCOMES = frozenset(get_args(Outcome))

T = TypeVar("T")


def encode_task_metrics(metrics: TaskMetrics) -> dict[str, Any]:
    return attrs.asdict(metrics, value_serializer=_listed)


def encode_session_metrics(metrics: SessionMetrics) -> dict[str, Any]:
    return attrs.asdict(metrics, value_serializer=_listed)


def _listed(instance: object, field: object, value: object) -> object:
    """Tuples as JSON arrays (as ``json.dumps`` would write them)."""
    return list(value) if isinstance(value, tuple) else value


def decode_task_metrics(document: object) -> TaskMetrics:
    doc = _object(document, "task metrics")
    attempts = doc.get("attempts")
    if not isinstance(attempts, list):
        raise WireError("field 'attempts' is not a list")
    fields = _fields(TaskMetrics, doc, skip={"attempts"})
    fields["attempts"] = tuple(_decode(AttemptMetrics, item) for item in attempts)
    return TaskMetrics(**fields)


def decode_session_metrics(document: object) -> SessionMetrics:
    doc = _object(document, "session metrics")
    fields = _fields(SessionMetrics, doc, skip={"time_to_first_byte"})
    fields["time_to_first_byte"] = _decode(TimingSummary, doc.get("time_to_first_byte"))
    return SessionMetrics(**fields)


def _decode(cls: type[T], document: object) -> T:
    return cls(**_fields(cls, _object(document, cls.__name__), skip=set()))


def _fields(cls: type[Any], doc: dict[str, Any], *, skip: set[str]) -> dict[str, Any]:
    """Each field of ``cls`` (but ``skip``) from ``doc``, checked against its type."""
    values: dict[str, Any] = {}
    for field in attrs.fields(cls):
        name = field.name
        if name in skip:
            continue
        values[name] = _checked(name, str(field.type), doc.get(name))
    return values


def _checked(name: str, kind: str, value: object) -> object:
    if value is None and kind.endswith("| None"):
        return None
    base = kind.removesuffix(" | None")
    if base == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if base == "bool" and isinstance(value, bool):
        return value
    if base == "str" and isinstance(value, str):
        return value
    if base == "Outcome" and value in _OUTCOMES:
        return value
    if (
        base == "tuple[str, ...]"
        and isinstance(value, list)
        and all(isinstance(item, str) for item in value)
    ):
        return tuple(value)
    raise WireError(f"field {name!r} is missing or not {kind}")
