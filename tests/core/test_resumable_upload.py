"""The IETF resumable-upload draft machine (``_core.resumable_upload``) and the rules
both protocols share (``_core.upload_protocol``), without a network."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from bgtransfer import HTTPStatusError, ResumableUploadError, UploadExpiredError
from bgtransfer._core.resumable_upload import (
    INTEROP_VERSION,
    PARTIAL_UPLOAD,
    IetfUpload,
    UploadLimits,
    parse_limits,
)
from bgtransfer._core.upload_protocol import (
    UploadResponse,
    advertised_protocol,
    check_offset,
    discovery_request,
    resolve_upload_url,
)

ENDPOINT = "https://up.example/project/files"
UPLOAD = "https://up.example/uploads/abc"


def answer(status: int, **headers: str) -> UploadResponse:
    return UploadResponse.of(status, [(k.replace("_", "-"), v) for k, v in headers.items()])


def sending(offset: int, size: int = 1000, **kw: Any) -> IetfUpload:
    return attrs.evolve(
        IetfUpload.start(ENDPOINT, size), phase="send", upload_url=UPLOAD, offset=offset, **kw
    )


def step(machine: IetfUpload, response: UploadResponse) -> IetfUpload:
    return machine.on_response(machine.next_request(), response)


# -- requests ------------------------------------------------------------------------


def test_every_request_carries_the_interop_version() -> None:
    machines = [
        IetfUpload.start(ENDPOINT, 10),
        IetfUpload.start(ENDPOINT, 10, upload_url=UPLOAD),
        sending(0),
    ]
    requests = [m.next_request() for m in machines]
    cancel = sending(0).cancel_request()
    assert cancel is not None
    for request in [*requests, cancel]:
        assert ("Upload-Draft-Interop-Version", INTEROP_VERSION) in request.headers
    assert INTEROP_VERSION == "8"


@pytest.mark.parametrize(
    ("size", "complete"),
    [(1000, "?0"), (0, "?1")],
)
def test_creation_is_careful(size: int, complete: str) -> None:
    machine = IetfUpload.start(
        ENDPOINT, size, method="PUT", headers=[("Content-Type", "image/png")]
    )
    request = machine.next_request()
    headers = dict(request.headers)
    assert (request.method, request.url, request.body) == ("PUT", ENDPOINT, None)
    assert headers["Upload-Complete"] == complete
    assert headers["Upload-Length"] == str(size)
    assert headers["Content-Type"] == "image/png"


def test_append_sends_the_rest_and_completes() -> None:
    request = sending(400).next_request()
    headers = dict(request.headers)
    assert (request.method, request.url, request.body) == ("PATCH", UPLOAD, (400, 1000))
    assert headers["Upload-Offset"] == "400"
    assert headers["Upload-Complete"] == "?1"
    assert headers["Content-Type"] == PARTIAL_UPLOAD


def test_append_limit_splits_the_rest() -> None:
    request = sending(400, limits=UploadLimits(max_append_size=100)).next_request()
    assert request.body == (400, 500)
    assert dict(request.headers)["Upload-Complete"] == "?0"


def test_head_when_resuming() -> None:
    request = IetfUpload.start(ENDPOINT, 10, upload_url=UPLOAD, offset=4).next_request()
    assert (request.method, request.url, request.body) == ("HEAD", UPLOAD, None)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_start_refuses_a_method_without_content(method: str) -> None:
    with pytest.raises(ValueError, match="POST, PUT or PATCH"):
        IetfUpload.start(ENDPOINT, 10, method=method)


# -- answers -------------------------------------------------------------------------


def test_creation_then_append() -> None:
    machine = IetfUpload.start(ENDPOINT, 1000)
    machine = step(
        machine,
        answer(201, Location="/uploads/abc", Upload_Limit="max-size=5000, max-append-size=600"),
    )
    assert (machine.phase, machine.upload_url, machine.offset) == ("send", UPLOAD, 0)
    assert machine.limits.max_append_size == 600
    machine = step(machine, answer(204, Upload_Complete="?0", Upload_Offset="600"))
    assert (machine.phase, machine.offset) == ("send", 600)
    machine = step(machine, answer(200, Upload_Complete="?1"))
    assert machine.result is not None
    assert machine.result.status == 200


def test_own_append_limit_is_kept_below_the_servers() -> None:
    machine = IetfUpload.start(ENDPOINT, 1000, max_append_size=100)
    machine = step(machine, answer(201, Location=UPLOAD, Upload_Limit="max-append-size=600"))
    assert machine.limits.max_append_size == 100


def test_zero_bytes_are_one_request() -> None:
    machine = step(IetfUpload.start(ENDPOINT, 0), answer(200, Upload_Complete="?1"))
    assert machine.result is not None
    assert machine.upload_url is None


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "no Location: it does not support resumable uploads"),
        ({"Location": "ftp://up.example/x"}, "does not accept"),
        ({"Location": "http://up.example/x"}, "leaves https for http"),
        ({"Location": UPLOAD, "Upload_Limit": "max-size=999"}, "at most 999 bytes"),
    ],
)
def test_creation_answers_that_end_the_upload(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ResumableUploadError, match=message) as caught:
        step(IetfUpload.start(ENDPOINT, 1000), answer(201, **headers))
    assert caught.value.url == ENDPOINT


@pytest.mark.parametrize("status", [400, 405, 500])
def test_creation_refused(status: int) -> None:
    with pytest.raises(HTTPStatusError, match=str(status)):
        step(IetfUpload.start(ENDPOINT, 1000), answer(status))


@pytest.mark.parametrize(
    ("known", "headers", "phase", "offset"),
    [
        (None, {"Upload_Offset": "0", "Upload_Complete": "?0"}, "send", 0),
        (200, {"Upload_Offset": "700", "Upload_Complete": "?0"}, "send", 700),
        (200, {"Upload_Offset": "1000", "Upload_Complete": "?1"}, "done", 1000),
        (200, {"Upload_Offset": "1000", "Upload_Complete": "?0"}, "send", 1000),
    ],
)
def test_head_tells_where_to_continue(
    known: int | None, headers: dict[str, str], phase: str, offset: int
) -> None:
    machine = IetfUpload.start(ENDPOINT, 1000, upload_url=UPLOAD, offset=known)
    machine = step(machine, answer(204, Upload_Length="1000", **headers))
    assert (machine.phase, machine.offset) == (phase, offset)


def test_an_empty_completing_append_follows_a_full_offset() -> None:
    machine = IetfUpload.start(ENDPOINT, 1000, upload_url=UPLOAD, offset=0)
    machine = step(machine, answer(204, Upload_Offset="1000", Upload_Complete="?0"))
    request = machine.next_request()
    assert request.body == (1000, 1000)
    assert dict(request.headers)["Upload-Complete"] == "?1"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Upload_Offset": "199"}, "backwards, from 200 to 199"),
        ({"Upload_Offset": "1001"}, "of a 1000-byte file"),
        ({"Upload_Offset": "12.5"}, "not a non-negative integer"),
        ({"Upload_Offset": "500", "Upload_Complete": "?1"}, "complete at 500 of 1000"),
        ({"Upload_Offset": "500", "Upload_Length": "2000"}, "upload is of 2000 bytes"),
        ({}, "no Upload-Offset"),
    ],
)
def test_head_answers_that_end_the_upload(headers: dict[str, str], message: str) -> None:
    machine = IetfUpload.start(ENDPOINT, 1000, upload_url=UPLOAD, offset=200)
    with pytest.raises(ResumableUploadError, match=message):
        step(machine, answer(204, **headers))


@pytest.mark.parametrize("status", [200, 400, 500])
def test_a_completing_answer_is_the_uploads_whatever_its_status(status: int) -> None:
    machine = step(sending(0), answer(status, Upload_Complete="?1"))
    assert machine.result is not None
    assert machine.result.status == status


def test_completion_before_the_end_is_refused() -> None:
    machine = sending(0, limits=UploadLimits(max_append_size=100))
    with pytest.raises(ResumableUploadError, match="completed the upload at 100 of 1000"):
        step(machine, answer(200, Upload_Complete="?1"))


def test_a_2xx_to_the_last_append_completes_without_the_header() -> None:
    machine = step(sending(0), answer(204))
    assert machine.result is not None


@pytest.mark.parametrize(
    ("answered", "message"),
    [("50", "backwards, from 100 to 50"), ("300", "more than the 200 sent")],
)
def test_append_answers_that_end_the_upload(answered: str, message: str) -> None:
    machine = sending(100, limits=UploadLimits(max_append_size=100))
    with pytest.raises(ResumableUploadError, match=message):
        step(machine, answer(204, Upload_Complete="?0", Upload_Offset=answered))


def test_an_append_answer_without_offset_means_all_was_taken() -> None:
    machine = sending(100, limits=UploadLimits(max_append_size=100))
    assert step(machine, answer(204, Upload_Complete="?0")).offset == 200


def test_conflict_asks_for_the_offset_until_it_makes_no_sense() -> None:
    machine = sending(100)
    for _ in range(3):
        machine = step(machine, answer(409, Upload_Offset="100"))
        assert machine.phase == "locate"
        machine = step(machine, answer(204, Upload_Offset="100", Upload_Complete="?0"))
    with pytest.raises(ResumableUploadError, match="4 times in a row"):
        step(machine, answer(409))


@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_upload_is_started_over_then_given_up(status: int) -> None:
    machine = sending(300)
    for _ in range(2):
        machine = step(machine, answer(status))
        assert (machine.phase, machine.upload_url) == ("create", None)
        machine = step(machine, answer(201, Location=UPLOAD))
    with pytest.raises(UploadExpiredError) as caught:
        step(machine, answer(status))
    assert caught.value.status == status


def test_after_an_interruption() -> None:
    assert IetfUpload.start(ENDPOINT, 10).on_interrupted().phase == "create"
    assert sending(5).on_interrupted().phase == "locate"


# -- shared rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "limits"),
    [
        (None, None),
        ("max-size=10", UploadLimits(max_size=10)),
        (
            "max-age=60, max-append-size=5;x=1, future=?1",
            UploadLimits(max_age=60, max_append_size=5),
        ),
        ("min-append-size=3, flag", UploadLimits(min_append_size=3)),
        ("max-size=-1", None),  # a known key of the wrong kind: the whole field is ignored
        ("max-size=1.5", None),
        ('max-size="10"', None),
        ("Max-Size=1", None),  # keys are lower case
    ],
)
def test_parse_limits(value: str | None, limits: UploadLimits | None) -> None:
    assert parse_limits(value) == limits


@pytest.mark.parametrize(
    ("base", "location", "resolved"),
    [
        ("https://a.example/up/", "x", "https://a.example/up/x"),
        ("https://a.example/up/", "/x?t=1", "https://a.example/x?t=1"),
        ("http://a.example/up", "https://b.example/x", "https://b.example/x"),
        ("http://a.example/up", " http://a.example/y ", "http://a.example/y"),
    ],
)
def test_resolve_upload_url(base: str, location: str, resolved: str) -> None:
    assert resolve_upload_url(base, location, task_url=base) == resolved


@pytest.mark.parametrize(
    ("offset", "acknowledged", "limit", "message"),
    [
        (5, 6, 10, "backwards"),
        (11, None, 100, "of a 10-byte file"),
        (8, 0, 7, "more than the 7 sent"),
    ],
)
def test_check_offset(offset: int, acknowledged: int | None, limit: int, message: str) -> None:
    with pytest.raises(ResumableUploadError, match=message):
        check_offset(offset, acknowledged=acknowledged, limit=limit, size=10, task_url=ENDPOINT)


@pytest.mark.parametrize(
    ("status", "headers", "protocol"),
    [
        (204, {"Tus_Version": "1.0.0"}, "tus"),
        (200, {"Tus_Version": "0.2.2,1.0.0", "Accept_Patch": PARTIAL_UPLOAD}, "tus"),
        (204, {"Accept_Patch": "text/plain, application/partial-upload"}, "ietf"),
        (204, {"Accept_Patch": "*/*"}, None),
        (204, {"Tus_Version": "0.2.2"}, None),
        (405, {"Tus_Version": "1.0.0"}, None),
        (200, {}, None),
    ],
)
def test_advertised_protocol(status: int, headers: dict[str, str], protocol: str | None) -> None:
    assert advertised_protocol(answer(status, **headers)) == protocol


def test_discovery_request_names_both_protocols() -> None:
    request = discovery_request(ENDPOINT)
    assert request.method == "OPTIONS"
    assert {name for name, _ in request.headers} == {
        "Tus-Resumable",
        "Upload-Draft-Interop-Version",
    }
