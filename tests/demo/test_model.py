"""The demo's rows folded from session events (no UI, no I/O)."""

from __future__ import annotations

from pathlib import Path

from bgtransfer._core.events import (
    CancelledEvent,
    ErrorEvent,
    EventsDeliveredEvent,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
)
from bgtransfer._demo.model import DEMO_FILES, DemoModel, RowState
from bgtransfer._exceptions import NetworkError


def started(model: DemoModel, index: int, task_id: int) -> None:
    row = model.rows[index]
    row.task_id, row.state = task_id, RowState.RUNNING


def test_the_five_files_are_700_kb_to_29_mb() -> None:
    sizes = [file.size for file in DEMO_FILES]
    assert len(sizes) == 5
    assert sizes == sorted(sizes)
    assert (sizes[0], sizes[-1]) == (700_000, 29_000_000)


def test_events_move_only_their_row() -> None:
    model = DemoModel()
    started(model, 1, 7)
    assert model.rows[1].label == "Waiting"
    assert (
        model.apply(
            ProgressEvent(
                task_id=7,
                bytes_written=100,
                total_bytes_written=1_100_000,
                total_bytes_expected=4_400_000,
            )
        )
        is model.rows[1]
    )
    assert model.rows[1].fraction == 0.25
    assert model.rows[1].label == "Downloading"
    assert (
        model.apply(
            ProgressEvent(task_id=8, bytes_written=1, total_bytes_written=1, total_bytes_expected=1)
        )
        is None
    )  # not a row's task
    assert model.apply(EventsDeliveredEvent(replayed=0)) is None
    assert [row.state for row in model.rows] == [RowState.IDLE, RowState.RUNNING] + [
        RowState.IDLE
    ] * 3


def test_resumed_finished_verified_and_the_all_done_notice_once() -> None:
    model = DemoModel()
    for index in range(5):
        started(model, index, index + 1)
    model.apply(ResumedEvent(task_id=1, offset=300_000, expected_total=700_000))
    assert model.rows[0].received == 300_000
    for index, file in enumerate(DEMO_FILES):
        row = model.apply(
            FinishedEvent(task_id=index + 1, location=Path(file.name), total_bytes=file.size)
        )
        assert row is not None
        assert row.state is RowState.VERIFYING
        assert not model.take_all_done_notice()
        model.verified(row, ok=True)
    assert model.all_ready
    assert model.take_all_done_notice()
    assert not model.take_all_done_notice()


def test_a_bad_digest_an_error_and_a_cancel_clear_the_row() -> None:
    model = DemoModel()
    started(model, 0, 1)
    started(model, 1, 2)
    started(model, 2, 3)
    row = model.apply(FinishedEvent(task_id=1, location=Path("a"), total_bytes=700_000))
    assert row is not None
    model.verified(row, ok=False)
    assert (row.state, row.note, row.received) == (RowState.FAILED, "sha256 mismatch", 0)
    error = NetworkError("connection refused", url="http://127.0.0.1:1/demo/x")
    model.apply(ErrorEvent(task_id=2, error=error))
    assert model.rows[1].state is RowState.FAILED
    assert "refused" in model.rows[1].note
    model.apply(CancelledEvent(task_id=3))
    assert (model.rows[2].state, model.rows[2].task_id) == (RowState.STOPPED, None)
