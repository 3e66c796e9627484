"""Task events: frozen, keyword-only, slotted, final values forming a closed union."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import attrs
import pytest

import bgtransfer
from bgtransfer._core.events import (
    TERMINAL_EVENTS,
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
    TaskEvent,
    TerminalEvent,
    is_terminal,
    merge_progress,
)

ALL_CLASSES = (
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
    FinishedEvent,
    ErrorEvent,
    CancelledEvent,
)


def _error() -> bgtransfer.TransferError:
    return bgtransfer.NetworkError("connection refused", url="http://example.com/f")


def _progress(
    task_id: int = 1, written: int = 10, total: int = 10, expected: int | None = 100
) -> ProgressEvent:
    return ProgressEvent(
        task_id=task_id,
        bytes_written=written,
        total_bytes_written=total,
        total_bytes_expected=expected,
    )


KWARGS: dict[type, dict[str, Any]] = {
    ProgressEvent: {
        "task_id": 1,
        "bytes_written": 5,
        "total_bytes_written": 5,
        "total_bytes_expected": None,
    },
    FinishedEvent: {"task_id": 2, "location": Path("/tmp/x"), "total_bytes": 3},
    ErrorEvent: {"task_id": 3, "error": _error()},
    CancelledEvent: {"task_id": 4},
    ResumedEvent: {"task_id": 5, "offset": 100, "expected_total": 1000},
    RetryEvent: {"task_id": 6, "attempt": 2, "error": _error(), "delay": 0.5},
}


def _make(cls: type) -> Any:
    return cls(**KWARGS[cls])


def test_public_names_are_the_core_classes() -> None:
    assert bgtransfer.ProgressEvent is ProgressEvent
    assert bgtransfer.FinishedEvent is FinishedEvent
    assert bgtransfer.ErrorEvent is ErrorEvent
    assert bgtransfer.CancelledEvent is CancelledEvent
    assert bgtransfer.TaskEvent is TaskEvent
    assert bgtransfer.TerminalEvent is TerminalEvent


def test_union_covers_exactly_the_six_classes() -> None:
    assert typing.get_args(TaskEvent) == ALL_CLASSES
    assert typing.get_args(TerminalEvent) == (FinishedEvent, ErrorEvent, CancelledEvent)
    assert (FinishedEvent, ErrorEvent, CancelledEvent) == TERMINAL_EVENTS
    assert set(typing.get_args(TaskEvent)) - set(TERMINAL_EVENTS) == {
        ProgressEvent,
        ResumedEvent,
        RetryEvent,
    }


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_class_is_final(cls: type) -> None:
    assert getattr(cls, "__final__", False) is True


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_class_is_attrs_frozen_and_slotted(cls: type) -> None:
    assert attrs.has(cls)
    assert "__slots__" in cls.__dict__
    event = _make(cls)
    assert not hasattr(event, "__dict__")
    with pytest.raises(AttributeError):
        event.not_a_field = 1


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_assigning_a_field_raises_frozen(cls: type) -> None:
    event = _make(cls)
    for field in attrs.fields(cls):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(event, field.name, getattr(event, field.name))
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            delattr(event, field.name)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_positional_arguments_are_rejected(cls: type) -> None:
    values = list(KWARGS[cls].values())
    with pytest.raises(TypeError):
        cls(*values)
    with pytest.raises(TypeError):
        cls(values[0], **dict(list(KWARGS[cls].items())[1:]))


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_keyword_construction_keeps_values_and_compares_by_value(cls: type) -> None:
    event = _make(cls)
    for name, value in KWARGS[cls].items():
        assert getattr(event, name) is value
    assert event == _make(cls)
    assert hash(event) == hash(_make(cls))
    other = attrs.evolve(event, task_id=event.task_id + 100)
    assert other != event
    assert other.task_id == event.task_id + 100


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_events_of_different_kinds_are_unequal(cls: type) -> None:
    event = _make(cls)
    for other_cls in ALL_CLASSES:
        if other_cls is not cls:
            assert event != _make(other_cls)


def test_field_names() -> None:
    names = {cls: [f.name for f in attrs.fields(cls)] for cls in ALL_CLASSES}
    assert names == {
        ProgressEvent: ["task_id", "bytes_written", "total_bytes_written", "total_bytes_expected"],
        FinishedEvent: ["task_id", "location", "total_bytes", "length_verified", "reply", "seq"],
        ErrorEvent: ["task_id", "error", "resume_data", "seq"],
        CancelledEvent: ["task_id", "resume_data", "seq"],
        ResumedEvent: ["task_id", "offset", "expected_total", "seq"],
        RetryEvent: ["task_id", "attempt", "error", "delay", "seq"],
    }


def test_cancelled_resume_data_defaults_to_none() -> None:
    assert CancelledEvent(task_id=9).resume_data is None


def test_error_resume_data_defaults_to_none() -> None:
    error = bgtransfer.TransferError("x", url="http://h/")
    assert ErrorEvent(task_id=9, error=error).resume_data is None


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_missing_required_field_raises_type_error(cls: type) -> None:
    with pytest.raises(TypeError):
        cls()


# -- is_terminal ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "terminal"),
    [(ProgressEvent, False), (FinishedEvent, True), (ErrorEvent, True), (CancelledEvent, True)],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_is_terminal(cls: type, terminal: bool) -> None:
    assert is_terminal(_make(cls)) is terminal


# -- merge_progress -------------------------------------------------------------------------------


def test_merge_adds_deltas_and_keeps_newer_totals() -> None:
    older = _progress(task_id=7, written=10, total=10, expected=None)
    newer = _progress(task_id=7, written=15, total=25, expected=100)
    merged = merge_progress(older, newer)
    assert merged == ProgressEvent(
        task_id=7, bytes_written=25, total_bytes_written=25, total_bytes_expected=100
    )
    # inputs unchanged (they are frozen values)
    assert older.bytes_written == 10
    assert newer.bytes_written == 15


def test_merge_takes_expected_from_newer_even_when_it_is_none() -> None:
    older = _progress(written=1, total=1, expected=100)
    newer = _progress(written=2, total=3, expected=None)
    assert merge_progress(older, newer).total_bytes_expected is None


def test_merge_is_associative_on_deltas() -> None:
    a = _progress(written=1, total=1)
    b = _progress(written=2, total=3)
    c = _progress(written=4, total=7)
    assert merge_progress(merge_progress(a, b), c) == merge_progress(a, merge_progress(b, c))
    assert merge_progress(merge_progress(a, b), c).bytes_written == 7


def test_merge_rejects_different_tasks() -> None:
    with pytest.raises(ValueError, match="different tasks"):
        merge_progress(_progress(task_id=1), _progress(task_id=2))


# -- exhaustive match -----------------------------------------------------------------------------


def _describe(event: TaskEvent) -> str:
    match event:
        case ProgressEvent(total_bytes_written=n):
            return f"progress {n}"
        case FinishedEvent(location=path):
            return f"finished {path}"
        case ErrorEvent(error=exc):
            return f"error {type(exc).__name__}"
        case CancelledEvent(resume_data=data):
            return f"cancelled {data}"
        case _:
            typing.assert_never(event)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (ProgressEvent, "progress 5"),
        (FinishedEvent, f"finished {Path('/tmp/x')}"),
        (ErrorEvent, "error NetworkError"),
        (CancelledEvent, "cancelled None"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_exhaustive_match(cls: type, expected: str) -> None:
    assert _describe(_make(cls)) == expected


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_match_is_by_keyword_only(cls: type) -> None:
    # keyword-only classes have no positional match arguments: ``case X(a)`` is an error
    assert cls.__match_args__ == ()
    event = _make(cls)
    seen: int | None = None
    match event:
        case ProgressEvent(task_id=n) | FinishedEvent(task_id=n) | ErrorEvent(task_id=n):
            seen = n
        case CancelledEvent(task_id=n):
            seen = -n
        case ResumedEvent(task_id=n) | RetryEvent(task_id=n):
            seen = n
    assert seen == (-event.task_id if cls is CancelledEvent else event.task_id)
