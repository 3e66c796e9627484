"""The tus 1.0.0 machine (``_core.tus``), without a network: tables of states,
answers and what comes next."""

from __future__ import annotations

import base64
from typing import Any

import attrs
import pytest

from bgtransfer import (
    HTTPStatusError,
    ResumableUploadError,
    UploadChecksumError,
    UploadExpiredError,
)
from bgtransfer._core.tus import (
    CHECKSUM_CHUNK,
    TusCapabilities,
    TusUpload,
    encode_metadata,
    parse_capabilities,
)
from bgtransfer._core.upload_protocol import UploadResponse

ENDPOINT = "https://up.example/files/"
UPLOAD = "https://up.example/files/abc"
ALL = TusCapabilities(
    extensions=frozenset({"creation", "termination", "checksum", "expiration"}),
    checksum_algorithms=("sha1",),
)
PLAIN = TusCapabilities(extensions=frozenset({"creation"}))


def answer(status: int, **headers: str) -> UploadResponse:
    return UploadResponse.of(status, [(k.replace("_", "-"), v) for k, v in headers.items()])


def sending(offset: int, size: int = 1000, **kw: Any) -> TusUpload:
    return attrs.evolve(
        TusUpload.start(ENDPOINT, size, capabilities=PLAIN),
        phase="send",
        upload_url=UPLOAD,
        offset=offset,
        **kw,
    )


def step(machine: TusUpload, response: UploadResponse) -> TusUpload:
    return machine.on_response(machine.next_request(), response)


# -- requests ------------------------------------------------------------------------


def test_every_request_carries_tus_resumable() -> None:
    machines = [
        TusUpload.start(ENDPOINT, 10),
        TusUpload.start(ENDPOINT, 10, capabilities=ALL),
        TusUpload.start(ENDPOINT, 10, upload_url=UPLOAD),
        sending(0),
    ]
    for machine in machines:
        assert ("Tus-Resumable", "1.0.0") in machine.next_request().headers


@pytest.mark.parametrize(
    ("machine", "method", "url"),
    [
        (TusUpload.start(ENDPOINT, 10), "OPTIONS", ENDPOINT),
        (TusUpload.start(ENDPOINT, 10, capabilities=ALL), "POST", ENDPOINT),
        (TusUpload.start(ENDPOINT, 10, upload_url=UPLOAD, offset=3), "HEAD", UPLOAD),
        (sending(0), "PATCH", UPLOAD),
    ],
    ids=["new", "known-server", "journaled", "sending"],
)
def test_the_first_request(machine: TusUpload, method: str, url: str) -> None:
    request = machine.next_request()
    assert (request.method, request.url) == (method, url)


def test_creation_names_length_and_metadata() -> None:
    machine = TusUpload.start(
        ENDPOINT, 1234, capabilities=ALL, metadata=[("filename", "ü.bin"), ("empty", "")]
    )
    headers = dict(machine.next_request().headers)
    assert headers["Upload-Length"] == "1234"
    name = base64.b64encode("ü.bin".encode()).decode()
    assert headers["Upload-Metadata"] == f"filename {name},empty"
    assert machine.next_request().body is None


def test_patch_sends_the_rest_from_the_offset() -> None:
    request = sending(400).next_request()
    headers = dict(request.headers)
    assert headers["Upload-Offset"] == "400"
    assert headers["Content-Type"] == "application/offset+octet-stream"
    assert (request.body, request.checksum) == ((400, 1000), None)


def test_patch_is_cut_by_chunk_size() -> None:
    assert sending(400, chunk_size=100).next_request().body == (400, 500)


def test_checksum_is_asked_where_offered_and_bounds_the_patch() -> None:
    size = CHECKSUM_CHUNK * 2 + 1
    request = sending(0, size=size, capabilities=ALL).next_request()
    assert request.checksum == "sha1"
    assert request.body == (0, CHECKSUM_CHUNK)


@pytest.mark.parametrize(
    ("extensions", "algorithms", "chosen"),
    [
        ({"checksum"}, ("md5", "sha1"), "sha1"),
        ({"checksum"}, ("SHA256",), "sha256"),
        ({"checksum"}, ("crc32",), None),
        ({"creation"}, ("sha1",), None),
    ],
)
def test_checksum_algorithm_choice(
    extensions: set[str], algorithms: tuple[str, ...], chosen: str | None
) -> None:
    capabilities = TusCapabilities(extensions=frozenset(extensions), checksum_algorithms=algorithms)
    assert capabilities.checksum == chosen


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        (TusUpload.start(ENDPOINT, 10), None),
        (sending(5, capabilities=ALL), ("DELETE", UPLOAD)),
        (sending(5, capabilities=None), ("DELETE", UPLOAD)),  # never told
        (sending(5, capabilities=TusCapabilities()), None),  # told: no extensions
        (sending(5, capabilities=PLAIN), None),  # no termination extension
        (TusUpload.start(ENDPOINT, 10, upload_url=UPLOAD), ("DELETE", UPLOAD)),
    ],
)
def test_cancel_request(machine: TusUpload, expected: tuple[str, str] | None) -> None:
    request = machine.cancel_request()
    assert (None if request is None else (request.method, request.url)) == expected


# -- answers -------------------------------------------------------------------------


def test_options_then_creation_then_patch() -> None:
    machine = TusUpload.start(ENDPOINT, 1000)
    machine = step(
        machine,
        answer(
            204,
            Tus_Version="1.0.0,0.2.2",
            Tus_Extension="creation,checksum,termination",
            Tus_Max_Size="5000",
            Tus_Checksum_Algorithm="md5,sha1",
        ),
    )
    assert machine.capabilities is not None
    assert machine.capabilities.checksum == "sha1"
    assert machine.capabilities.max_size == 5000
    machine = step(machine, answer(201, Location="/files/xyz?sig=1"))
    assert machine.upload_url == "https://up.example/files/xyz?sig=1"
    assert (machine.phase, machine.offset) == ("send", 0)
    machine = step(machine, answer(204, Upload_Offset="1000"))
    assert machine.result is not None
    assert machine.offset == 1000


def test_options_refused_goes_on_without_extensions() -> None:
    machine = step(TusUpload.start(ENDPOINT, 10), answer(405))
    assert machine.phase == "create"
    assert machine.capabilities is None
    assert machine.on_interrupted().phase == "discover"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "no Tus-Version"),
        ({"Tus_Version": "0.2.2"}, "speaks tus 0.2.2, not 1.0.0"),
        ({"Tus_Version": "1.0.0", "Tus_Max_Size": "-1"}, "Tus-Max-Size"),
        ({"Tus_Version": "1.0.0", "Tus_Max_Size": "999"}, "at most 999 bytes"),
        ({"Tus_Version": "1.0.0", "Tus_Extension": "termination"}, "creation extension"),
    ],
)
def test_options_answers_that_end_the_upload(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ResumableUploadError, match=message) as caught:
        step(TusUpload.start(ENDPOINT, 1000), answer(204, **headers))
    assert caught.value.url == ENDPOINT


def test_parse_capabilities_reads_lists_loosely() -> None:
    response = answer(200, Tus_Version=" 1.0.0 ", Tus_Extension="Creation , ,termination")
    capabilities = parse_capabilities(response, task_url=ENDPOINT)
    assert capabilities.extensions == {"creation", "termination"}


def test_zero_byte_upload_is_done_at_creation() -> None:
    machine = TusUpload.start(ENDPOINT, 0, capabilities=ALL)
    machine = step(machine, answer(201, Location=UPLOAD))
    assert machine.result is not None
    assert machine.result.status == 201


@pytest.mark.parametrize(
    ("location", "message"),
    [
        (None, "no Location"),
        ("ftp://up.example/x", "does not accept"),
        ("file:///etc/passwd", "does not accept"),
        ("http://up.example/x", "leaves https for http"),
        ("https://user:pw@up.example/x", "credentials"),
        ("http:nohost", "does not accept"),
    ],
)
def test_creation_answers_that_end_the_upload(location: str | None, message: str) -> None:
    headers = {} if location is None else {"Location": location}
    with pytest.raises(ResumableUploadError, match=message) as caught:
        step(TusUpload.start(ENDPOINT, 10, capabilities=ALL), answer(201, **headers))
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(("status", "error"), [(413, HTTPStatusError), (500, HTTPStatusError)])
def test_creation_refused(status: int, error: type[Exception]) -> None:
    with pytest.raises(error, match=str(status)):
        step(TusUpload.start(ENDPOINT, 10, capabilities=ALL), answer(status))


@pytest.mark.parametrize("phase", ["create", "locate", "send"])
def test_412_is_a_version_mismatch(phase: str) -> None:
    machine = attrs.evolve(sending(0), phase=phase)
    with pytest.raises(ResumableUploadError, match="412"):
        step(machine, answer(412, Tus_Version="2.0.0"))


@pytest.mark.parametrize(
    ("known", "head", "phase", "offset"),
    [
        (None, "0", "send", 0),
        (300, "300", "send", 300),
        (300, "700", "send", 700),  # the server kept more than it acknowledged
        (300, "1000", "done", 1000),  # the last answer was lost: already complete
    ],
)
def test_head_tells_where_to_continue(
    known: int | None, head: str, phase: str, offset: int
) -> None:
    machine = TusUpload.start(ENDPOINT, 1000, upload_url=UPLOAD, offset=known)
    machine = step(machine, answer(200, Upload_Offset=head, Upload_Length="1000"))
    assert (machine.phase, machine.offset) == (phase, offset)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Upload_Offset": "299"}, "backwards, from 300 to 299"),
        ({"Upload_Offset": "1001"}, "holds 1001 bytes of a 1000-byte file"),
        ({"Upload_Offset": "x"}, "not a non-negative integer"),
        ({"Upload_Offset": "-5"}, "not a non-negative integer"),
        ({}, "no Upload-Offset"),
        ({"Upload_Offset": "300", "Upload_Length": "999"}, "upload is of 999 bytes"),
    ],
)
def test_head_answers_that_end_the_upload(headers: dict[str, str], message: str) -> None:
    machine = TusUpload.start(ENDPOINT, 1000, upload_url=UPLOAD, offset=300)
    with pytest.raises(ResumableUploadError, match=message):
        step(machine, answer(200, **headers))


@pytest.mark.parametrize(
    ("offset", "answered", "phase", "now"),
    [(0, "1000", "done", 1000), (0, "400", "send", 400), (200, "1000", "done", 1000)],
)
def test_patch_answers(offset: int, answered: str, phase: str, now: int) -> None:
    machine = step(sending(offset), answer(204, Upload_Offset=answered))
    assert (machine.phase, machine.offset) == (phase, now)


@pytest.mark.parametrize(
    ("offset", "chunk", "answered", "message"),
    [
        (200, None, "100", "backwards, from 200 to 100"),
        (0, 100, "150", "more than the 100 sent"),
        (0, None, "1001", "of a 1000-byte file"),
        (0, None, None, "no Upload-Offset"),
    ],
)
def test_patch_answers_that_end_the_upload(
    offset: int, chunk: int | None, answered: str | None, message: str
) -> None:
    headers = {} if answered is None else {"Upload_Offset": answered}
    with pytest.raises(ResumableUploadError, match=message):
        step(sending(offset, chunk_size=chunk), answer(204, **headers))


def test_conflict_asks_for_the_offset_until_it_makes_no_sense() -> None:
    machine = sending(100)
    for _ in range(3):
        machine = step(machine, answer(409))
        assert machine.phase == "locate"
        machine = step(machine, answer(200, Upload_Offset="100"))
    with pytest.raises(ResumableUploadError, match="4 times in a row"):
        step(machine, answer(409))


def test_progress_forgives_earlier_conflicts() -> None:
    machine = step(sending(100), answer(409))
    machine = step(machine, answer(200, Upload_Offset="100"))
    machine = step(machine, answer(204, Upload_Offset="200"))
    assert machine.conflicts == 0


def test_appends_that_never_move_the_offset_end_the_upload() -> None:
    machine = sending(100)
    for _ in range(3):
        machine = step(machine, answer(204, Upload_Offset="100"))
    with pytest.raises(ResumableUploadError, match="without moving the offset"):
        step(machine, answer(204, Upload_Offset="100"))


def test_checksum_mismatch_sends_again_then_gives_up() -> None:
    machine = sending(0, capabilities=ALL)
    for _ in range(2):
        machine = step(machine, answer(460))
        assert machine.phase == "locate"
        machine = step(machine, answer(200, Upload_Offset="0"))
    with pytest.raises(UploadChecksumError, match="3 times"):
        step(machine, answer(460))


@pytest.mark.parametrize("status", [404, 410])
@pytest.mark.parametrize("phase", ["locate", "send"])
def test_a_gone_upload_is_started_over_then_given_up(status: int, phase: str) -> None:
    machine = attrs.evolve(sending(300), phase=phase)
    machine = step(machine, answer(status))
    assert (machine.phase, machine.upload_url, machine.offset) == ("create", None, None)
    machine = step(machine, answer(201, Location=UPLOAD))
    machine = step(attrs.evolve(machine, phase=phase), answer(status))
    machine = step(machine, answer(201, Location=UPLOAD))
    with pytest.raises(UploadExpiredError, match=f"HTTP {status}") as caught:
        step(attrs.evolve(machine, phase=phase), answer(status))
    assert caught.value.status == status
    assert caught.value.url == ENDPOINT


@pytest.mark.parametrize("status", [400, 403, 500, 503])
def test_other_statuses_are_http_errors(status: int) -> None:
    with pytest.raises(HTTPStatusError) as caught:
        step(sending(0), answer(status, Retry_After="7"))
    assert (caught.value.status, caught.value.retry_after) == (status, "7")


@pytest.mark.parametrize(
    ("machine", "phase"),
    [
        (TusUpload.start(ENDPOINT, 10), "discover"),
        (TusUpload.start(ENDPOINT, 10, capabilities=ALL), "create"),
        (sending(5), "locate"),
    ],
)
def test_after_an_interruption(machine: TusUpload, phase: str) -> None:
    assert machine.on_interrupted().phase == phase


def test_done_has_no_next_request() -> None:
    machine = step(sending(0), answer(204, Upload_Offset="1000"))
    with pytest.raises(RuntimeError, match="done"):
        machine.next_request()
    assert machine.cancel_request() is None


@pytest.mark.parametrize("key", ["", "a b", "a,b", "ü"])
def test_metadata_keys_are_checked(key: str) -> None:
    with pytest.raises(ValueError, match="metadata key"):
        encode_metadata([(key, "v")])


@pytest.mark.parametrize(("size", "chunk"), [(-1, None), (10, 0)])
def test_start_refuses_nonsense(size: int, chunk: int | None) -> None:
    with pytest.raises(ValueError, match=">="):
        TusUpload.start(ENDPOINT, size, chunk_size=chunk)


def test_upload_expires_is_kept() -> None:
    date = "Wed, 25 Jun 2031 16:00:00 GMT"
    machine = step(
        TusUpload.start(ENDPOINT, 10, capabilities=ALL),
        answer(201, Location=UPLOAD, Upload_Expires=date),
    )
    assert machine.expires == date
    later = "Wed, 25 Jun 2031 17:00:00 GMT"
    machine = step(machine, answer(204, Upload_Offset="5", Upload_Expires=later))
    assert (machine.expires, machine.offset) == (later, 5)
