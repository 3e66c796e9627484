"""The daemon protocol's values survive JSON, and wrong ones are refused."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import attrs
import pytest

from bgtransfer import (
    CancelledEvent,
    Configuration,
    DownloadRequest,
    EventsDeliveredEvent,
    EventsGapEvent,
    FinishedEvent,
    HTTPStatusError,
    InvalidDestinationError,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
    RetryPolicy,
    SessionInUseError,
    SupervisorStatistics,
    TaskState,
)
from bgtransfer._core.naming import Origin
from bgtransfer._core.wire import (
    WireError,
    decode_config,
    decode_event,
    decode_exception,
    decode_request,
    encode_config,
    encode_event,
    encode_exception,
    encode_request,
    encode_snapshot,
    snapshot_fields,
)
from bgtransfer._core.wire_stats import decode_statistics, encode_statistics
from bgtransfer._engine.backend import TaskSnapshot


def through_json(value: object) -> object:
    return json.loads(json.dumps(value))


def test_a_snapshot_round_trips() -> None:
    snapshot = TaskSnapshot(
        id=3,
        url="http://h/a",
        description="label",
        destination=Path("/out/a"),
        state=TaskState.COMPLETED,
        bytes_received=10,
        bytes_expected=10,
        terminal=FinishedEvent(task_id=3, location=Path("/out/a"), total_bytes=10, seq=4),
    )
    decoded = TaskSnapshot(**snapshot_fields(through_json(encode_snapshot(snapshot))))
    assert decoded == snapshot
    assert decoded.terminal is not None
    assert decoded.terminal.seq == 4  # (not part of equality)


@pytest.mark.parametrize("reply_to", [None, "/home/u/reply.json"])
def test_an_upload_snapshot_round_trips(reply_to: str | None) -> None:
    source = Path("/home/u/video.bin")
    snapshot = TaskSnapshot(
        id=7,
        url="https://example.com/up",
        description=None,
        destination=source if reply_to is None else Path(reply_to),
        state=TaskState.RUNNING,
        bytes_received=0,
        bytes_expected=5000,
        terminal=None,
        kind="upload",
        source=source,
    )
    decoded = TaskSnapshot(**snapshot_fields(through_json(encode_snapshot(snapshot))))
    assert decoded == snapshot
    # Without reply_to the one file is both (one Path made, not two).
    assert (decoded.source is decoded.destination) is (reply_to is None)


def test_a_request_round_trips_and_a_relative_destination_is_refused() -> None:
    request = DownloadRequest(
        "http://h/a",
        "/out/a",
        description="d",
        headers={"X-A": "1"},
        segments=2,
        checksum="sha256:" + "0" * 64,
        expected_size=10,
    )
    assert decode_request(through_json(encode_request(request))) == request
    relative = encode_request(DownloadRequest("http://h/a", "out/a"))
    with pytest.raises(InvalidDestinationError, match="relative"):
        decode_request(relative)


def test_a_configuration_round_trips_and_secrets_can_be_left_out() -> None:
    config = Configuration(
        headers={"Authorization": "Bearer s3cret", "X-Plain": "1"},
        retry=RetryPolicy(max_attempts=3, retry_statuses=frozenset({503})),
        secret_headers={"X-Mine"},
        acknowledge="explicit",
        request_timeout=None,
    )
    assert decode_config(through_json(encode_config(config))) == config
    stored = json.dumps(encode_config(config, keep_secrets=False))
    assert "s3cret" not in stored
    assert decode_config(json.loads(stored)).headers == (("X-Plain", "1"),)


def test_a_wrong_configuration_is_refused_as_the_constructor_does() -> None:
    with pytest.raises(ValueError, match="segments"):
        decode_config({"segments": 99})
    with pytest.raises(TypeError):
        decode_config({"no_such_field": 1})


@pytest.mark.parametrize(
    "event",
    [
        ProgressEvent(task_id=1, bytes_written=5, total_bytes_written=9, total_bytes_expected=None),
        ResumedEvent(task_id=1, offset=4, expected_total=10),
        RetryEvent(
            task_id=1,
            attempt=2,
            error=HTTPStatusError(503, "Service Unavailable", url="http://h/a"),
            delay=0.5,
        ),
        CancelledEvent(task_id=1),
        EventsDeliveredEvent(replayed=2),
    ],
    ids=lambda e: type(e).__name__,
)
def test_events_round_trip(event: object) -> None:
    decoded = decode_event(through_json(encode_event(event)))  # type: ignore[arg-type]
    if isinstance(event, RetryEvent):
        assert isinstance(decoded, RetryEvent)
        assert str(decoded.error) == str(event.error)
        assert decoded.error.status == 503  # type: ignore[attr-defined]
    else:
        assert decoded == event


@pytest.mark.parametrize(
    "event",
    [
        ResumedEvent(task_id=1, offset=4, expected_total=10, seq=7),
        RetryEvent(
            task_id=1,
            attempt=2,
            error=HTTPStatusError(503, "Service Unavailable", url="http://h/a"),
            delay=0.5,
            seq=8,
        ),
        FinishedEvent(task_id=1, location=Path("/out/a"), total_bytes=10, seq=9),
        CancelledEvent(task_id=1, seq=10),
        CancelledEvent(task_id=1),
    ],
    ids=lambda e: f"{type(e).__name__}-{e.seq}",
)
def test_logged_events_keep_their_number(event: object) -> None:
    """``seq`` is excluded from equality, so it is checked by itself."""
    decoded = decode_event(through_json(encode_event(event)))  # type: ignore[arg-type]
    assert type(decoded) is type(event)
    assert decoded.seq == event.seq  # type: ignore[union-attr, attr-defined]


@pytest.mark.parametrize("cursor", [None, 0, 41])
def test_events_delivered_keeps_its_cursor(cursor: int | None) -> None:
    decoded = decode_event(
        through_json(encode_event(EventsDeliveredEvent(replayed=3, cursor=cursor)))
    )
    assert isinstance(decoded, EventsDeliveredEvent)
    assert (decoded.replayed, decoded.cursor) == (3, cursor)


@pytest.mark.parametrize("latest", [None, 12])
def test_a_gap_round_trips(latest: int | None) -> None:
    gap = EventsGapEvent(since=2, earliest=5, latest=latest)
    assert decode_event(through_json(encode_event(gap))) == gap


def test_launch_settings_and_the_log_size_cross() -> None:
    config = Configuration(
        launch_command=["/bin/true", "--x"],
        launch_delay=0.5,
        launch_delay_max=8.0,
        event_log_size=10,
    )
    assert decode_config(through_json(encode_config(config))) == config
    assert decode_config(through_json(encode_config(Configuration()))) == Configuration()


def test_every_field_but_the_headers_provider_crosses() -> None:
    """A field the wire forgets would silently take its default in the daemon."""
    encoded = encode_config(Configuration())
    names = {field.name for field in attrs.fields(Configuration)} - {"headers_provider"}
    assert set(encoded) == names
    config = Configuration(resume_data_max_age=None)
    assert decode_config(through_json(encode_config(config))) == config
    limited = Configuration(max_bytes_per_second=250_000)
    assert decode_config(through_json(encode_config(limited))) == limited


def test_an_unknown_event_is_refused() -> None:
    with pytest.raises(WireError, match="unknown event kind"):
        decode_event({"kind": "teleported", "task_id": 1})


def test_statistics_round_trip_with_their_origins() -> None:
    origin = Origin("http", "127.0.0.1", 80)
    stats = SupervisorStatistics(
        active=1, queued=2, active_by_origin={origin: 1}, queued_by_origin={origin: 2}
    )
    assert decode_statistics(through_json(encode_statistics(stats))) == stats


def test_errors_come_back_as_their_class_with_their_fields() -> None:
    error = decode_exception(through_json(encode_exception(SessionInUseError("a", 42))))
    assert isinstance(error, SessionInUseError)
    assert error.pid == 42
    assert str(error) == "session 'a' is in use by process 42"
    noted = ValueError("bad")
    noted.add_note("request 1 of 2")
    back = decode_exception(through_json(encode_exception(noted)))
    assert type(back) is ValueError
    assert back.__notes__ == ["request 1 of 2"]
    unknown = decode_exception({"type": "EvalError", "message": "x"})
    assert "EvalError" in str(unknown)


def test_network_settings_cross_and_the_proxy_s_password_is_not_stored() -> None:
    config = Configuration(
        proxy="http://alice:pr0xy-pw@127.0.0.1:3128",
        ssl="/etc/ca.pem",
        client_cert=("/etc/me.pem", "/etc/me.key"),
        user_agent="app/1",
    )
    assert decode_config(through_json(encode_config(config))) == config
    stored = json.dumps(encode_config(config, keep_secrets=False))
    assert "pr0xy-pw" not in stored
    assert decode_config(json.loads(stored)).proxy == "http://127.0.0.1:3128"
    assert decode_config(through_json(encode_config(Configuration(proxy=False)))).proxy is False


def test_an_ssl_context_cannot_cross() -> None:
    with pytest.raises(TypeError, match="SSLContext cannot cross"):
        encode_config(Configuration(ssl=ssl.create_default_context()))
