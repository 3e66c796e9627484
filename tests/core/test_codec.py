"""The codec: terminal events and transfer errors as plain JSON values, checked on the way back."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bgtransfer
from bgtransfer import (
    AuthenticationError,
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    HTTPStatusError,
    IncompleteBodyError,
    IntegrityError,
    JournalWriteError,
    LocalFileError,
    NetworkError,
    ProtocolError,
    ProxyError,
    RedirectError,
    ResourceTimeoutError,
    ResponseTooLargeError,
    ResumableUploadError,
    ResumeData,
    SourceChangedError,
    TLSError,
    TransferError,
    TransferTimeoutError,
    UploadChecksumError,
    UploadExpiredError,
)
from bgtransfer._core import codec
from bgtransfer._core.codec import (
    CodecError,
    decode_error,
    decode_terminal,
    encode_error,
    encode_terminal,
)
from bgtransfer._core.events import TerminalEvent
from bgtransfer._core.resume_data import decode_stored, sign

URL = "https://example.com/d\u00e9j\u00e0/file.bin?x=1"
RESUME = ResumeData(
    url=URL,
    partial="/var/tmp/\u6587\u4ef6.part",
    offset=1234,
    validator='"etag-\u00e9"',
    total=99_999,
    encoding="gzip",
    destination="/home/u/file.bin",
    description="the \U0001f4e6 file",
    headers=(("User-Agent", "demo/1.0"), ("X-Empty", "")),
)
ERROR_FIELDS = (
    "status",
    "reason",
    "retry_after",
    "errno",
    "filename",
    "strerror",
    "proxy",
    "check",
    "www_authenticate",
    "scheme",
)
MISSING = object()

# One instance of every class in the codec's registry (with all its typed fields set).
EXAMPLES: list[TransferError] = [
    TransferError("something failed", url=URL),
    HTTPStatusError(503, "Service Unavailable", url=URL, retry_after="120"),
    AuthenticationError(
        401, "Unauthorized", url=URL, www_authenticate='Bearer realm="r"', scheme="Bearer"
    ),
    NetworkError("connection reset by peer", url=URL),
    IncompleteBodyError("the body ended at 10 of 20 bytes", url=URL),
    ProtocolError("416 without Content-Range", url=URL),
    IntegrityError(
        "sha256 differs", url=URL, algorithm="sha256", expected="0" * 64, actual="1" * 64
    ),
    RedirectError("refused a redirect from https to http (http://h/x)", url=URL),
    ResponseTooLargeError("the body is larger than max_bytes (10 bytes)", url=URL, max_bytes=10),
    TransferTimeoutError("no byte for 30 s", url=URL),
    ResourceTimeoutError("the task outlived 600 s", url=URL),
    LocalFileError("disk full", url=URL, errno=errno.ENOSPC, filename="/tmp/x.part"),
    JournalWriteError(
        "cannot record the task in the journal /s/journal.sqlite3: database or disk is full",
        url=URL,
        errno=errno.ENOSPC,
        filename="/s/journal.sqlite3",
    ),
    ProxyError("the proxy answered 407", url=URL, proxy="http://127.0.0.1:3128", status=407),
    ProxyError("cannot connect to the proxy", url=URL, proxy="http://[::1]:80"),
    TLSError("TLS: hostname mismatch", url=URL, check="hostname_mismatch"),
    SourceChangedError(
        "the file /tmp/a.bin changed since the upload was made: its size changed",
        url=URL,
        filename="/tmp/a.bin",
    ),
    ResumableUploadError("the server moved the upload's offset backwards", url=URL),
    UploadExpiredError("the server no longer has the upload", url=URL, status=410),
    UploadChecksumError("the server refused the checksum 3 times (460)", url=URL),
]


def _roundtrip_error(error: TransferError) -> TransferError:
    """Through the codec and through JSON text, as the journal stores it."""
    return decode_error(json.loads(json.dumps(encode_error(error))))


def _roundtrip(event: TerminalEvent) -> TerminalEvent:
    return decode_terminal(event.task_id, json.loads(json.dumps(encode_terminal(event))))


def _assert_same_error(decoded: TransferError, original: TransferError) -> None:
    assert type(decoded) is type(original)
    assert str(decoded) == str(original)
    assert decoded.url == original.url
    assert decoded.args == original.args
    for name in ERROR_FIELDS:
        assert getattr(decoded, name, MISSING) == getattr(original, name, MISSING), name


def _rejects(document: object, task_id: int = 7) -> str:
    with pytest.raises(CodecError) as info:
        decode_terminal(task_id, document)
    return str(info.value)


def _rejects_error(document: object) -> str:
    with pytest.raises(CodecError) as info:
        decode_error(document)
    return str(info.value)


def _error_document(**changes: Any) -> dict[str, Any]:
    """The encoded HTTPStatusError example, with fields changed (removed when ...)."""
    document = encode_error(EXAMPLES[1])
    for name, value in changes.items():
        if value is ...:
            del document[name]
        else:
            document[name] = value
    return document


# -- the registry ----------------------------------------------------------------------------------


def test_registry_holds_every_public_transfer_error() -> None:
    public = {
        getattr(bgtransfer, name)
        for name in bgtransfer.__all__
        if isinstance(getattr(bgtransfer, name), type)
        and issubclass(getattr(bgtransfer, name), TransferError)
    }
    assert set(codec._ERROR_TYPES.values()) == public
    assert {type(error) for error in EXAMPLES} == public
    for name, cls in codec._ERROR_TYPES.items():
        assert cls.__name__ == name


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


# -- round trips -----------------------------------------------------------------------------------


def test_finished_round_trip() -> None:
    event = FinishedEvent(
        task_id=3, location=Path("/home/u/T\u00e9l\u00e9chargements/f"), total_bytes=0
    )
    document = encode_terminal(event)
    assert document == {
        "kind": "finished",
        "location": "/home/u/T\u00e9l\u00e9chargements/f",
        "total_bytes": 0,
        "length_verified": True,
    }
    assert _roundtrip(event) == event
    big = FinishedEvent(task_id=2**40, location=Path("rel/f.bin"), total_bytes=2**64)
    assert _roundtrip(big) == big
    unverified = FinishedEvent(task_id=1, location=Path("f"), total_bytes=5, length_verified=False)
    assert _roundtrip(unverified) == unverified


def test_finished_rows_written_before_length_verified_vouch_for_nothing() -> None:
    """Issue 18, item 4: a row without the field is decoded as unverified."""
    document = {"kind": "finished", "location": "/f", "total_bytes": 5}
    assert decode_terminal(7, document) == FinishedEvent(
        task_id=7, location=Path("/f"), total_bytes=5, length_verified=False
    )


@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_finished_length_verified_must_be_a_boolean(value: object) -> None:
    document = {"kind": "finished", "location": "/f", "total_bytes": 5, "length_verified": value}
    with pytest.raises(CodecError, match="length_verified"):
        decode_terminal(7, document)


def test_the_task_id_is_not_stored_but_given_back() -> None:
    event = FinishedEvent(task_id=3, location=Path("/f"), total_bytes=5)
    assert "task_id" not in encode_terminal(event)
    assert decode_terminal(99, encode_terminal(event)) == FinishedEvent(
        task_id=99, location=Path("/f"), total_bytes=5
    )


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda error: type(error).__name__)
def test_error_event_round_trip(error: TransferError) -> None:
    event = ErrorEvent(task_id=11, error=error)
    back = _roundtrip(event)
    assert isinstance(back, ErrorEvent)
    assert back.task_id == 11
    _assert_same_error(back.error, error)
    assert encode_terminal(back) == encode_terminal(event)


def test_http_status_error_keeps_status_reason_and_retry_after() -> None:
    back = _roundtrip_error(HTTPStatusError(429, "Too Many Requests", url=URL, retry_after="7"))
    assert isinstance(back, HTTPStatusError)
    assert back.status == 429
    assert back.reason == "Too Many Requests"
    assert back.retry_after == "7"
    assert str(back) == f"{URL}: HTTP 429 Too Many Requests"


def test_http_status_error_without_retry_after_or_reason() -> None:
    original = HTTPStatusError(500, url=URL)
    back = _roundtrip_error(original)
    assert isinstance(back, HTTPStatusError)
    assert back.status == 500
    assert back.reason == ""
    assert str(back) == f"{URL}: HTTP 500"
    assert back.retry_after is None


def test_local_file_error_keeps_errno_filename_and_strerror() -> None:
    back = _roundtrip_error(
        LocalFileError("permission denied", url=URL, errno=errno.EACCES, filename="/x/\u00e9")
    )
    assert isinstance(back, LocalFileError)
    assert isinstance(back, OSError)
    assert back.errno == errno.EACCES
    assert back.filename == "/x/\u00e9"
    assert back.strerror == LocalFileError("", url="", errno=errno.EACCES).strerror
    assert str(back) == f"{URL}: permission denied"


def test_local_file_error_without_errno_or_filename() -> None:
    back = _roundtrip_error(LocalFileError("it went wrong", url=URL))
    assert isinstance(back, LocalFileError)
    assert back.errno is None
    assert back.filename is None
    assert back.strerror is None
    assert str(back) == f"{URL}: it went wrong"


def test_decoded_errors_can_be_raised_and_caught_by_their_bases() -> None:
    back = _roundtrip_error(IncompleteBodyError("short", url=URL))
    with pytest.raises(NetworkError):
        raise back
    assert isinstance(back, ConnectionError)
    timeout = _roundtrip_error(ResourceTimeoutError("slow", url=URL))
    assert isinstance(timeout, TransferTimeoutError)
    assert isinstance(timeout, TimeoutError)


def test_cancelled_round_trip_without_resume_data() -> None:
    event = CancelledEvent(task_id=4)
    assert encode_terminal(event) == {"kind": "cancelled", "resume_data": None}
    assert _roundtrip(event) == event


def test_cancelled_round_trip_with_resume_data() -> None:
    event = CancelledEvent(task_id=4, resume_data=RESUME)
    document = encode_terminal(event)
    assert document["kind"] == "cancelled"
    assert isinstance(document["resume_data"], str)
    assert decode_stored(document["resume_data"].encode()) == RESUME
    assert _roundtrip(event) == event


def test_error_round_trip_with_resume_data() -> None:
    # Out of space: the error carries resume data for the partial file kept.
    error = LocalFileError("cannot write /p: no space left", url=URL, errno=28, filename="/p")
    event = ErrorEvent(task_id=4, error=error, resume_data=sign(RESUME, b"k" * 32))
    document = encode_terminal(event)
    assert isinstance(document["resume_data"], str)
    back = _roundtrip(event)
    assert isinstance(back, ErrorEvent)
    assert back.resume_data == event.resume_data  # the MAC too


def test_error_without_resume_data_stores_no_field_and_old_rows_decode() -> None:
    event = ErrorEvent(task_id=4, error=NetworkError("reset", url=URL))
    document = encode_terminal(event)
    assert "resume_data" not in document  # rows as older versions wrote them
    decoded = decode_terminal(4, document)
    assert isinstance(decoded, ErrorEvent)
    assert decoded.resume_data is None


def test_unsigned_version_1_resume_data_of_an_older_journal_still_decodes() -> None:
    # Journals written before resume data was signed: the journal is trusted,
    # and the engine signs what it hands out again.
    body = json.loads(RESUME.to_bytes())
    body["version"] = 1
    del body["mac"]
    event = decode_terminal(4, {"kind": "cancelled", "resume_data": json.dumps(body)})
    assert isinstance(event, CancelledEvent)
    assert event.resume_data == RESUME
    assert event.resume_data.mac == ""


def test_encoded_values_are_plain_json() -> None:
    for document in [
        encode_terminal(FinishedEvent(task_id=1, location=Path("/f"), total_bytes=1)),
        encode_terminal(CancelledEvent(task_id=1, resume_data=RESUME)),
        *(encode_terminal(ErrorEvent(task_id=1, error=error)) for error in EXAMPLES),
    ]:
        assert json.loads(json.dumps(document)) == document


# -- application subclasses ------------------------------------------------------------------------


class AppNetworkError(NetworkError):
    """What an application might derive to tag its own failures."""


class Tagged:
    """A mixin an application might put first in its bases."""


class TaggedNetworkError(Tagged, NetworkError):
    pass


def test_application_subclass_encodes_as_its_nearest_known_class() -> None:
    document = encode_error(AppNetworkError("boom", url=URL))
    assert document == {"type": "NetworkError", "message": f"{URL}: boom", "url": URL}
    back = decode_error(document)
    assert type(back) is NetworkError
    assert str(back) == f"{URL}: boom"


def test_application_subclass_named_like_a_known_class_is_not_mistaken_for_it() -> None:
    shadow = type("HTTPStatusError", (ProtocolError,), {})
    document = encode_error(shadow("odd", url=URL))
    assert document["type"] == "ProtocolError"
    assert type(decode_error(document)) is ProtocolError


def test_application_subclass_with_a_mixin_first_encodes_as_its_known_class() -> None:
    # Regression: walking __mro__[1] from class to class went from the mixin to object
    # and raised IndexError; the encoder searches the whole MRO for a known class.
    document = encode_error(TaggedNetworkError("boom", url=URL))
    assert document["type"] == "NetworkError"
    assert type(decode_error(document)) is NetworkError


# -- malformed terminal events ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [None, "finished", 5, [], ["kind", "finished"], True],
    ids=repr,
)
def test_outcome_that_is_not_an_object_rejected(document: object) -> None:
    assert "not an object" in _rejects(document)


@pytest.mark.parametrize("kind", [None, "", "FINISHED", "done", 1, ["finished"]], ids=repr)
def test_unknown_kind_rejected(kind: object) -> None:
    message = _rejects({"kind": kind, "location": "/f", "total_bytes": 1})
    assert "unknown outcome kind" in message
    assert repr(kind) in message


def test_missing_kind_rejected() -> None:
    assert "unknown outcome kind None" in _rejects({"location": "/f", "total_bytes": 1})


@pytest.mark.parametrize("total", [..., None, -1, True, False, 1.0, "5", [5]], ids=repr)
def test_finished_with_bad_total_rejected(total: object) -> None:
    document: dict[str, Any] = {"kind": "finished", "location": "/f"}
    if total is not ...:
        document["total_bytes"] = total
    assert "total_bytes" in _rejects(document)


@pytest.mark.parametrize("location", [..., None, 5, ["/f"], {"/f": 1}], ids=repr)
def test_finished_with_bad_location_rejected(location: object) -> None:
    document: dict[str, Any] = {"kind": "finished", "total_bytes": 1}
    if location is not ...:
        document["location"] = location
    assert "'location'" in _rejects(document)


@pytest.mark.parametrize("error", [..., None, "NetworkError", 5, []], ids=repr)
def test_error_outcome_without_an_error_object_rejected(error: object) -> None:
    document: dict[str, Any] = {"kind": "error"}
    if error is not ...:
        document["error"] = error
    assert "error is not an object" in _rejects(document)


@pytest.mark.parametrize("blob", [5, True, ["x"], {"format": "bgtransfer.resume-data"}], ids=repr)
def test_cancelled_with_resume_data_that_is_not_text_rejected(blob: object) -> None:
    assert "not text" in _rejects({"kind": "cancelled", "resume_data": blob})


@pytest.mark.parametrize(
    "blob",
    [
        "",
        "garbage",
        "{}",
        RESUME.to_bytes().decode()[:-10],
        RESUME.to_bytes().decode().replace('"version":2', '"version":9'),
        RESUME.to_bytes().decode().replace('"offset":1234', '"offset":-1'),
    ],
    ids=["empty", "garbage", "empty-object", "truncated", "newer", "negative-offset"],
)
def test_cancelled_with_bad_resume_data_text_rejected(blob: str) -> None:
    message = _rejects({"kind": "cancelled", "resume_data": blob})
    assert message.startswith("cancelled outcome: ")
    assert "resume data" in message


def test_cancelled_with_resume_data_that_is_not_utf8_encodable_rejected() -> None:
    # Regression: a lone surrogate (valid in JSON text as "\ud800") made
    # blob.encode("utf-8") raise UnicodeEncodeError instead of a CodecError.
    document = json.loads('{"kind": "cancelled", "resume_data": "\\ud800"}')
    assert "resume data" in _rejects(document)


# -- malformed errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("document", [None, "NetworkError", 5, [], True], ids=repr)
def test_error_that_is_not_an_object_rejected(document: object) -> None:
    assert "error is not an object" in _rejects_error(document)


@pytest.mark.parametrize(
    "kind",
    ["", "networkerror", "OSError", "ValueError", "JournalError", "BgTransferError", "Exception"],
)
def test_unknown_error_type_rejected(kind: str) -> None:
    message = _rejects_error(_error_document(type=kind))
    assert "unknown error type" in message
    assert repr(kind) in message


@pytest.mark.parametrize("kind", [..., None, 5, ["NetworkError"]], ids=repr)
def test_error_type_missing_or_not_text_rejected(kind: object) -> None:
    assert "'type'" in _rejects_error(_error_document(type=kind))


@pytest.mark.parametrize("field", ["message", "url"])
@pytest.mark.parametrize("value", [..., None, 5, True, ["x"]], ids=repr)
def test_error_message_or_url_missing_or_not_text_rejected(field: str, value: object) -> None:
    assert repr(field) in _rejects_error(_error_document(**{field: value}))


TYPED_FIELDS = {
    HTTPStatusError: {"status": int, "reason": str, "retry_after": str},
    LocalFileError: {"errno": int, "filename": str, "strerror": str},
}
NOT_SCALARS: list[object] = [True, False, 1.5, [1], {"a": 1}]


def _example(cls: type[TransferError]) -> TransferError:
    return next(error for error in EXAMPLES if type(error) is cls)


def test_typed_fields_are_written_even_when_none() -> None:
    assert encode_error(HTTPStatusError(500, url=URL)) == {
        "type": "HTTPStatusError",
        "message": f"{URL}: HTTP 500",
        "url": URL,
        "status": 500,
        "reason": "",
        "retry_after": None,
        "www_authenticate": None,
    }
    assert encode_error(LocalFileError("gone", url=URL)) == {
        "type": "LocalFileError",
        "message": f"{URL}: gone",
        "url": URL,
        "errno": None,
        "filename": None,
        "strerror": None,
    }


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (cls, field, value)
        for cls, fields in TYPED_FIELDS.items()
        for field, kind in fields.items()
        for value in [*NOT_SCALARS, "7" if kind is int else 7]
    ],
    ids=lambda value: getattr(value, "__name__", repr(value)),
)
def test_typed_field_of_the_wrong_type_rejected(
    cls: type[TransferError], field: str, value: object
) -> None:
    document = encode_error(_example(cls))
    document[field] = value
    message = _rejects_error(document)
    assert repr(field) in message
    assert "wrong type" in message


@pytest.mark.parametrize("value", [..., None], ids=["missing", "null"])
def test_http_status_error_without_status_rejected(value: object) -> None:
    assert "status" in _rejects_error(_error_document(status=value))


@pytest.mark.parametrize("value", [..., None], ids=["missing", "null"])
def test_http_status_error_without_reason_rejected(value: object) -> None:
    # HTTPStatusError.reason is a str and encode_error always writes one; a missing or
    # null reason is refused rather than decoded to reason = None.
    assert "reason" in _rejects_error(_error_document(reason=value))


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (HTTPStatusError, "retry_after"),
        (LocalFileError, "errno"),
        (LocalFileError, "filename"),
        (LocalFileError, "strerror"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
@pytest.mark.parametrize("value", [..., None], ids=["missing", "null"])
def test_optional_field_missing_or_null_is_none(
    cls: type[TransferError], field: str, value: object
) -> None:
    document = encode_error(_example(cls))
    if value is ...:
        del document[field]  # as an older bgtransfer wrote it: None fields left out
    else:
        document[field] = value
    back = decode_error(document)
    assert type(back) is cls
    assert getattr(back, field) is None
    assert str(back) == str(_example(cls))


def test_error_inside_an_outcome_is_checked_too() -> None:
    message = _rejects({"kind": "error", "error": _error_document(status=True)})
    assert "'status'" in message


# -- property: whatever the codec writes, it reads back --------------------------------------------

texts = st.text(max_size=30)
optional_texts = st.none() | texts


@st.composite
def errors(draw: st.DrawFn) -> TransferError:
    cls = draw(st.sampled_from(sorted(codec._ERROR_TYPES.values(), key=lambda c: c.__name__)))
    url = draw(texts)
    if cls is AuthenticationError:
        return AuthenticationError(
            401,
            draw(texts),
            url=url,
            www_authenticate=draw(st.none() | texts),
            scheme=draw(st.sampled_from(["Basic", "Bearer"])),
        )
    if cls is HTTPStatusError:
        return HTTPStatusError(
            draw(st.integers(100, 599)),
            draw(texts),
            url=url,
            retry_after=draw(st.none() | texts.filter(bool)),
        )
    if cls is LocalFileError:
        return LocalFileError(
            draw(texts),
            url=url,
            errno=draw(st.none() | st.sampled_from(sorted(errno.errorcode))),
            filename=draw(optional_texts),
        )
    if cls is ProxyError:
        status = draw(st.none() | st.integers(100, 599))
        return ProxyError(draw(texts), url=url, proxy=draw(texts), status=status)
    if cls is TLSError:
        return TLSError(draw(texts), url=url, check=draw(texts))
    if cls is UploadExpiredError:
        return UploadExpiredError(draw(texts), url=url, status=draw(st.sampled_from([404, 410])))
    if cls is IntegrityError:
        return IntegrityError(
            draw(texts), url=url, algorithm=draw(texts), expected=draw(texts), actual=draw(texts)
        )
    if cls is ResponseTooLargeError:
        return ResponseTooLargeError(draw(texts), url=url, max_bytes=draw(st.integers(1, 2**62)))
    return cls(draw(texts), url=url)


@st.composite
def resume_data(draw: st.DrawFn) -> ResumeData:
    offset = draw(st.integers(0, 2**63))
    return ResumeData(
        url=draw(texts),
        partial=draw(texts),
        offset=offset,
        validator=draw(texts),
        total=draw(st.none() | st.integers(offset, 2**64)),
        encoding=draw(texts),
        destination=draw(optional_texts),
        description=draw(optional_texts),
        headers=tuple(draw(st.lists(st.tuples(texts, texts), max_size=3))),
    )


ids = st.integers(1, 2**62)
terminal_events = st.one_of(
    st.builds(
        FinishedEvent,
        task_id=ids,
        location=texts.map(Path),
        total_bytes=st.integers(0, 2**64),
    ),
    st.builds(ErrorEvent, task_id=ids, error=errors()),
    st.builds(CancelledEvent, task_id=ids, resume_data=st.none() | resume_data()),
)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(event=terminal_events)
def test_every_terminal_event_round_trips(event: TerminalEvent) -> None:
    document = encode_terminal(event)
    back = _roundtrip(event)
    assert type(back) is type(event)
    assert back.task_id == event.task_id
    assert encode_terminal(back) == document
    if isinstance(event, ErrorEvent):
        assert isinstance(back, ErrorEvent)
        _assert_same_error(back.error, event.error)
    else:
        assert back == event
