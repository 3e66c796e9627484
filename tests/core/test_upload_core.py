"""The pure parts of uploads: the request value, the identity rule, the wire,
the reattach rule, the status judgement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgtransfer import CancelledEvent, FinishedEvent, HTTPStatusError, InvalidDestinationError
from bgtransfer._core.journal import Phase, TaskEntry
from bgtransfer._core.reattach import Action, plan_upload_reattach
from bgtransfer._core.secrets import SecretHeaders
from bgtransfer._core.states import Input, TaskState
from bgtransfer._core.tus import TusCapabilities
from bgtransfer._core.upload import (
    SourceIdentity,
    UploadFields,
    UploadRequest,
    check_upload_status,
    reply_headers,
    source_change,
)
from bgtransfer._core.wire_upload import decode_upload, encode_upload
from bgtransfer._exceptions import InvalidURLError

IDENTITY = SourceIdentity(size=10, mtime_ns=5, device=1, inode=2)


def test_the_request_checks_what_it_can_without_the_file_system() -> None:
    request = UploadRequest("http://h/u", "/a", headers={"Authorization": "x"})
    assert request.method == "PUT"
    assert "x" not in repr(request)
    with pytest.raises(ValueError, match="'PUT' or 'POST'"):
        UploadRequest("http://h/u", "/a", method="put")
    with pytest.raises(TypeError, match="method must be a str"):
        UploadRequest("http://h/u", "/a", method=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidURLError):
        UploadRequest("http://user:pw@h/u", "/a")
    with pytest.raises(TypeError, match="url must be a str"):
        UploadRequest(b"http://h/u", "/a")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("found", "words"),
    [
        (IDENTITY, None),
        (None, "it is gone"),
        (SourceIdentity(size=10, mtime_ns=5, device=1, inode=3), "replaced"),
        (SourceIdentity(size=11, mtime_ns=5, device=1, inode=2), "size changed from 10 to 11"),
        (SourceIdentity(size=10, mtime_ns=6, device=1, inode=2), "modification time"),
    ],
)
def test_source_change_names_what_changed(found: SourceIdentity | None, words: str | None) -> None:
    problem = source_change(IDENTITY, found)
    assert problem is None if words is None else words in (problem or "")


def test_upload_requests_cross_the_wire_with_absolute_paths_only() -> None:
    request = UploadRequest(
        "http://h/u", "/data/a.bin", method="POST", description="d", reply_to="/r.json"
    )
    assert decode_upload(encode_upload(request)) == request
    relative = encode_upload(UploadRequest("http://h/u", "a.bin"))
    with pytest.raises(InvalidDestinationError, match="relative path"):
        decode_upload(relative)
    relative = encode_upload(UploadRequest("http://h/u", "/a.bin", reply_to="r.json"))
    with pytest.raises(InvalidDestinationError, match=r"reply_to 'r\.json'"):
        decode_upload(relative)


def _entry(phase: Phase, **changes: object) -> TaskEntry:
    fields = UploadFields(method="PUT", source="/a", identity=IDENTITY)
    values: dict[str, object] = {
        "id": 4,
        "url": "http://h/u",
        "destination": "/a",
        "description": None,
        "headers": (),
        "phase": phase,
        "upload": fields,
    }
    values.update(changes)
    return TaskEntry(**values)  # type: ignore[arg-type]


def test_the_reattach_rule_of_plain_uploads() -> None:
    running = plan_upload_reattach(_entry(Phase.RUNNING, offset=5, total=10))
    assert (running.action, running.offset, running.restarted) == (Action.CONTINUE, 0, True)
    assert plan_upload_reattach(_entry(Phase.RUNNING)).restarted is False
    suspended = plan_upload_reattach(_entry(Phase.SUSPENDED, offset=5, total=10))
    assert (suspended.action, suspended.state, suspended.offset) == (
        Action.CONTINUE,
        TaskState.SUSPENDED,
        0,
    )
    assert suspended.inputs == (Input.SUSPEND,)
    canceling = plan_upload_reattach(_entry(Phase.CANCELING))
    assert (canceling.action, canceling.outcome) == (Action.END, CancelledEvent(task_id=4))
    done = FinishedEvent(task_id=4, location=Path("/a"), total_bytes=10)
    ended = plan_upload_reattach(_entry(Phase.ENDED, outcome=done))
    assert (ended.action, ended.outcome) == (Action.END, done)


def test_a_status_other_than_2xx_is_the_downloads_error() -> None:
    check_upload_status("http://h/u", 204, "No Content", {})
    with pytest.raises(HTTPStatusError) as info:
        check_upload_status("http://h/u", 503, "Busy", {"retry-after": "3"})
    assert (info.value.status, info.value.retry_after, info.value.url) == (503, "3", "http://h/u")
    with pytest.raises(HTTPStatusError):
        check_upload_status("http://h/u", 308, "Permanent Redirect", {})


def test_reply_headers_leave_secrets_out() -> None:
    headers = [("Content-Type", "a/b"), ("Set-Cookie", "s=1"), ("WWW-Authenticate", "Basic")]
    secrets = SecretHeaders({"x-private"})
    assert reply_headers([*headers, ("X-Private", "p")], secrets) == (("Content-Type", "a/b"),)


@pytest.mark.parametrize("protocol", ["plain", "tus", "ietf", "auto"])
def test_the_protocol_crosses_the_wire_and_the_journal(protocol: str) -> None:
    request = UploadRequest("http://h/u", "/data/a.bin", protocol=protocol)
    assert decode_upload(encode_upload(request)).protocol == protocol
    fields = UploadFields(
        method="PUT",
        source="/a",
        identity=IDENTITY,
        upload_url="http://h/files/1",
        upload_offset=7,
        protocol=protocol,
    )
    assert UploadFields.from_json(fields.to_json()) == fields


def test_a_request_from_an_older_client_is_plain() -> None:
    document = encode_upload(UploadRequest("http://h/u", "/data/a.bin"))
    del document["protocol"]
    assert decode_upload(document).protocol == "plain"


def test_protocol_and_reply_to_are_checked_in_the_request() -> None:
    with pytest.raises(ValueError, match="protocol must be one of"):
        UploadRequest("http://h/u", "/a", protocol="ftp")
    with pytest.raises(ValueError, match="reply_to is for plain uploads"):
        UploadRequest("http://h/u", "/a", protocol="tus", reply_to="/r")


def test_the_journal_refuses_an_upload_url_with_credentials_or_a_bad_protocol() -> None:
    fields = UploadFields(method="PUT", source="/a", identity=IDENTITY, protocol="tus")
    with pytest.raises(ValueError, match="credentials"):
        UploadFields.from_json(
            fields.to_json().replace('"upload_url": null', '"upload_url": "http://u:p@h/1"')
        )
    with pytest.raises(ValueError, match="invalid protocol"):
        UploadFields.from_json(fields.to_json().replace('"tus"', '"ftp"'))


def test_a_tus_servers_capabilities_go_through_the_journal() -> None:
    capabilities = TusCapabilities(
        extensions=frozenset({"creation", "checksum"}),
        max_size=1 << 40,
        checksum_algorithms=("md5", "sha1"),
    )
    fields = UploadFields(
        method="PUT", source="/a", identity=IDENTITY, protocol="tus", tus=capabilities
    )
    back = UploadFields.from_json(fields.to_json())
    assert back == fields
    assert back.tus is not None
    assert back.tus.checksum == "sha1"
    # A row written before the capabilities were kept has none.
    document = json.loads(fields.to_json())
    del document["tus"]
    assert UploadFields.from_json(json.dumps(document)).tus is None


@pytest.mark.parametrize(
    "tus",
    [
        [],
        {"versions": "1.0.0", "extensions": [], "max_size": None, "checksum_algorithms": []},
        {"versions": [], "extensions": [7], "max_size": None, "checksum_algorithms": []},
        {"versions": [], "extensions": [], "max_size": -1, "checksum_algorithms": []},
        {"versions": [], "extensions": [], "max_size": True, "checksum_algorithms": []},
        {"versions": [], "extensions": ["x"] * 65, "max_size": None, "checksum_algorithms": []},
        {"versions": [], "extensions": [], "max_size": None},
    ],
)
def test_the_journal_refuses_damaged_tus_capabilities(tus: object) -> None:
    fields = UploadFields(method="PUT", source="/a", identity=IDENTITY, protocol="tus")
    document = json.loads(fields.to_json())
    document["tus"] = tus
    with pytest.raises(ValueError, match="tus"):
        UploadFields.from_json(json.dumps(document))


@pytest.mark.parametrize(
    "source",
    [
        "/a",
        '/with "quotes" and \\ back\\slash',
        "/ünïcödé/ファイル",
        "/bad-\udcff-byte",
        "/tab\there",
    ],
)
@pytest.mark.parametrize(
    ("reply_to", "upload_url"), [(None, None), ("/r/é", None), (None, "https://h/u?x=1")]
)
def test_the_journal_json_is_what_json_dumps_writes(
    source: str, reply_to: str | None, upload_url: str | None
) -> None:
    """Written by hand for speed (one per upload() call): byte for byte json.dumps's."""
    fields = UploadFields(
        method="POST",
        source=source,
        identity=SourceIdentity(size=2**40, mtime_ns=1_700_000_000_123_456_789, device=0, inode=7),
        reply_to=reply_to,
        upload_url=upload_url,
        upload_offset=12,
        protocol="ietf",
    )
    document = {
        "method": "POST",
        "source": source,
        "identity": [2**40, 1_700_000_000_123_456_789, 0, 7],
        "reply_to": reply_to,
        "upload_url": upload_url,
        "upload_offset": 12,
        "protocol": "ietf",
    }
    assert fields.to_json() == json.dumps(document)
    assert UploadFields.from_json(fields.to_json()) == fields
