"""The metrics' bookkeeping without a socket: the recorder's times, the bound on
a task's attempts, the session's tally, the wire form and its checks."""

from __future__ import annotations

import json

import attrs
import pytest

from bgtransfer import AttemptMetrics, SessionMetrics, TaskMetrics, TimingSummary
from bgtransfer._core.metrics import MAX_ATTEMPTS, SessionTally, TaskMetricsLog
from bgtransfer._core.wire import WireError
from bgtransfer._core.wire_metrics import (
    decode_session_metrics,
    decode_task_metrics,
    encode_session_metrics,
    encode_task_metrics,
)

URL = "https://example.org/files/a.bin?signature=abc"


def _one_attempt(log: TaskMetricsLog, *, start: float, counted: int) -> None:
    recorder = log.begin(URL, now=start, wall=1000.0 + start, counted=counted)
    recorder.request_started(start + 0.1, None)
    recorder.connect_started(start + 0.2)
    recorder.dns_started(start + 0.3)
    recorder.dns_ended(start + 0.4)
    recorder.connect_ended(start + 0.5)
    recorder.request_head_sent(start + 0.6)
    recorder.response_started(start + 0.7, 200)


def test_times_are_offsets_from_the_attempt_s_start_and_the_url_is_redacted() -> None:
    log = TaskMetricsLog()
    _one_attempt(log, start=50.0, counted=0)
    log.end(now=51.0, wall=1051.0, counted=4096, outcome="ok")
    metrics = log.snapshot(7, counted=4096, kind="download")
    [attempt] = metrics.attempts
    assert attempt.url == "https://example.org/files/a.bin"
    offsets = [
        attempt.request_start,
        attempt.connect_start,
        attempt.dns_start,
        attempt.dns_end,
        attempt.connect_end,
        attempt.request_sent,
        attempt.response_start,
        attempt.duration,
    ]
    assert offsets == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0])
    assert (attempt.started_at, attempt.ended_at) == (1050.0, 1051.0)
    assert (attempt.bytes_received, attempt.bytes_sent) == (4096, 0)
    assert (attempt.reused_connection, attempt.connections_opened) == (False, 1)
    assert metrics.bytes_received == 4096


def test_a_running_attempt_counts_the_bytes_so_far_and_has_no_end() -> None:
    log = TaskMetricsLog()
    _one_attempt(log, start=0.0, counted=100)
    [attempt] = log.snapshot(1, counted=350, kind="upload").attempts
    assert (attempt.outcome, attempt.duration, attempt.ended_at) == ("running", None, None)
    assert (attempt.bytes_sent, attempt.bytes_received) == (250, 0)


def test_the_first_connection_says_whether_the_attempt_reused_one() -> None:
    log = TaskMetricsLog()
    recorder = log.begin(URL, now=0.0, wall=0.0, counted=0)
    recorder.connection_reused()
    recorder.connect_ended(1.0)  # a redirect to another host: a new one
    [attempt] = log.snapshot(1, counted=0, kind="download").attempts
    assert (attempt.reused_connection, attempt.connections_reused) == (True, 1)
    assert attempt.connections_opened == 1


def test_a_task_keeps_its_latest_attempts_and_counts_the_dropped_ones() -> None:
    log = TaskMetricsLog()
    total = 0
    for number in range(MAX_ATTEMPTS + 5):
        log.begin(URL, now=float(number), wall=0.0, counted=total)
        total += 10
        log.end(now=number + 0.5, wall=0.0, counted=total, outcome="retried", error="NetworkError")
    metrics = log.snapshot(3, counted=total, kind="download")
    assert len(metrics.attempts) == MAX_ATTEMPTS
    assert metrics.dropped_attempts == 5
    assert metrics.attempt_count == MAX_ATTEMPTS + 5
    assert [a.number for a in metrics.attempts] == list(range(6, MAX_ATTEMPTS + 6))
    assert metrics.bytes_received == total  # the dropped ones' bytes included


def test_the_task_s_chain_is_the_latest_attempt_s_that_followed_one() -> None:
    log = TaskMetricsLog()
    first = log.begin(URL, now=0.0, wall=0.0, counted=0)
    first.redirected([URL, "https://cdn.example.org/a.bin?sig=s3cret"])
    log.end(now=1.0, wall=1.0, counted=0, outcome="retried")
    log.begin(URL, now=2.0, wall=2.0, counted=0)
    metrics = log.snapshot(1, counted=0, kind="download")
    assert metrics.redirects == ("https://cdn.example.org/a.bin",)
    assert metrics.attempts[1].redirects == ()
    assert "s3cret" not in repr(metrics)


def test_the_tally_adds_up_ended_attempts() -> None:
    tally = SessionTally()
    log = TaskMetricsLog()
    for start, outcome in ((0.0, "retried"), (10.0, "ok")):
        _one_attempt(log, start=start, counted=0)
        ended = log.end(now=start + 1, wall=0.0, counted=500, outcome=outcome)  # type: ignore[arg-type]
        assert ended is not None
        tally.fold(ended, kind="download")
    value = tally.value()
    assert (value.attempts, value.retries, value.failures) == (2, 1, 0)
    assert (value.bytes_received, value.connections_opened) == (1000, 2)
    assert value.time_to_first_byte == TimingSummary(
        count=2, minimum=pytest.approx(0.7), mean=pytest.approx(0.7), maximum=pytest.approx(0.7)
    )
    assert SessionTally().value().time_to_first_byte == TimingSummary()


def _metrics() -> TaskMetrics:
    log = TaskMetricsLog()
    _one_attempt(log, start=0.0, counted=0)
    log.current.redirected([URL, "https://cdn.example.org/b"])  # type: ignore[union-attr]
    log.end(now=1.0, wall=2.0, counted=9, outcome="failed", error="HTTPStatusError")
    log.begin(URL, now=3.0, wall=4.0, counted=9)
    return log.snapshot(5, counted=12, kind="download")


def test_task_metrics_cross_the_wire_unchanged() -> None:
    metrics = _metrics()
    wire = json.loads(json.dumps(encode_task_metrics(metrics)))
    assert decode_task_metrics(wire) == metrics


def test_session_metrics_cross_the_wire_unchanged() -> None:
    tally = SessionTally()
    log = TaskMetricsLog()
    _one_attempt(log, start=0.0, counted=0)
    ended = log.end(now=2.0, wall=0.0, counted=3, outcome="ok")
    assert ended is not None
    tally.fold(ended, kind="upload")
    for value in (tally.value(), SessionTally().value()):
        wire = json.loads(json.dumps(encode_session_metrics(value)))
        assert decode_session_metrics(wire) == value
        assert isinstance(decode_session_metrics(wire), SessionMetrics)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "200"),
        ("outcome", "exploded"),
        ("redirects", "https://x"),
        ("redirects", [1]),
        ("bytes_received", True),
        ("number", None),
        ("dns_start", "soon"),
    ],
)
def test_a_wrong_field_from_the_daemon_is_a_wire_error(field: str, value: object) -> None:
    wire = encode_task_metrics(_metrics())
    wire["attempts"][0][field] = value
    with pytest.raises(WireError, match=field):
        decode_task_metrics(wire)


def test_wrong_shapes_from_the_daemon_are_wire_errors() -> None:
    with pytest.raises(WireError):
        decode_task_metrics([])
    with pytest.raises(WireError):
        decode_task_metrics({**encode_task_metrics(_metrics()), "attempts": {}})
    with pytest.raises(WireError):
        decode_session_metrics({**encode_session_metrics(SessionTally().value()), "retries": 1.5})


def test_values_are_frozen() -> None:
    attempt = _metrics().attempts[0]
    assert isinstance(attempt, AttemptMetrics)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        attempt.status = 500  # type: ignore[misc]
