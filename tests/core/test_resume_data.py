"""ResumeData: a versioned, self-describing blob, checked field by field when read back."""

from __future__ import annotations

import json
import random
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bgtransfer
from bgtransfer._core.digests import Checksum, Integrity
from bgtransfer._core.resume_data import (
    FORMAT,
    KEY_SIZE,
    InvalidResumeDataError,
    ResumeData,
    canonical_bytes,
    decode_stored,
    ephemeral_partial,
    sign,
    verify,
)
from bgtransfer._core.tus import TusCapabilities

KEY = bytes(range(KEY_SIZE))
OTHER_KEY = bytes(reversed(range(KEY_SIZE)))
UNSIGNED = ResumeData(
    url="https://example.com/d\u00e9j\u00e0/file.bin?x=1&y=%20",
    partial="/var/tmp/bgtransfer/\u6587\u4ef6.bin.part",
    offset=1234,
    validator='"etag-\u00e9"',
    total=99_999,
    encoding="gzip",
    destination="/home/u/T\u00e9l\u00e9chargements/file.bin",
    description="the \U0001f4e6 file",
    headers=(("User-Agent", "demo/1.0"), ("X-Empty", ""), ("Accept", "*/*"), ("X-Dup", "a")),
)
FULL = sign(UNSIGNED, KEY)
MINIMAL = sign(
    ResumeData(url="http://h/f", partial="/p", offset=0, validator='"x"', total=None), KEY
)


def _document(**changes: Any) -> dict[str, Any]:
    """The JSON document of FULL, with fields changed (or removed when the value is ...)."""
    document: dict[str, Any] = json.loads(FULL.to_bytes())
    for name, value in changes.items():
        if value is ...:
            del document[name]
        else:
            document[name] = value
    return document


def _blob(**changes: Any) -> bytes:
    return json.dumps(_document(**changes)).encode()


def _rejects(blob: bytes) -> InvalidResumeDataError:
    with pytest.raises(InvalidResumeDataError) as info:
        ResumeData.from_bytes(blob)
    return info.value


# -- round trip ----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [FULL, MINIMAL], ids=["full", "minimal"])
def test_round_trip(data: ResumeData) -> None:
    assert ResumeData.from_bytes(data.to_bytes()) == data


def test_defaults() -> None:
    assert MINIMAL.encoding == "identity"
    assert MINIMAL.destination is None
    assert MINIMAL.description is None
    assert MINIMAL.headers == ()


def test_round_trip_keeps_none_fields_none() -> None:
    data = attrs.evolve(FULL, total=None, destination=None, description=None, headers=())
    back = ResumeData.from_bytes(data.to_bytes())
    assert back == data
    assert back.total is None
    assert back.destination is None
    assert back.description is None
    assert back.headers == ()


def test_round_trip_headers_are_a_tuple_of_pairs_in_order() -> None:
    back = ResumeData.from_bytes(FULL.to_bytes())
    assert back.headers == FULL.headers
    assert type(back.headers) is tuple
    assert all(type(pair) is tuple for pair in back.headers)


def test_round_trip_offset_equal_to_total_and_big_numbers() -> None:
    for offset, total in [(0, 0), (10, 10), (2**70, 2**70), (2**64, None)]:
        data = attrs.evolve(FULL, offset=offset, total=total)
        assert ResumeData.from_bytes(data.to_bytes()) == data


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_from_bytes_accepts_bytes_like(kind: type) -> None:
    assert ResumeData.from_bytes(kind(FULL.to_bytes())) == FULL


def test_to_bytes_is_utf8_json_with_format_and_version() -> None:
    blob = FULL.to_bytes()
    assert isinstance(blob, bytes)
    document = json.loads(blob.decode("utf-8"))
    assert document["format"] == FORMAT == "bgtransfer.resume-data"
    assert document["version"] == 2  # without integrity: what bgtransfer wrote before 3
    assert ResumeData.VERSION == 4  # (4: a tus upload with its capabilities)
    assert document["mac"] == FULL.mac
    assert document["url"] == FULL.url
    assert document["partial"] == FULL.partial
    assert document["offset"] == 1234
    assert document["validator"] == FULL.validator
    assert document["total"] == 99_999
    assert document["encoding"] == "gzip"
    assert document["destination"] == FULL.destination
    assert document["description"] == FULL.description
    assert document["headers"] == [list(pair) for pair in FULL.headers]


def test_to_bytes_writes_none_as_null() -> None:
    document = json.loads(MINIMAL.to_bytes())
    assert document["total"] is None
    assert document["destination"] is None
    assert document["description"] is None
    assert document["headers"] == []


def test_to_bytes_is_deterministic() -> None:
    assert FULL.to_bytes() == FULL.to_bytes()
    assert attrs.evolve(FULL).to_bytes() == FULL.to_bytes()


def test_resume_data_is_frozen_and_keyword_only() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        FULL.offset = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        ResumeData("http://h/f", "/p", 0, '"x"', None)  # type: ignore[misc]


# -- the error -----------------------------------------------------------------------------------


def test_invalid_resume_data_error_is_a_value_error_and_a_bgtransfer_error() -> None:
    assert issubclass(InvalidResumeDataError, ValueError)
    assert issubclass(InvalidResumeDataError, bgtransfer.BgTransferError)
    assert issubclass(InvalidResumeDataError, bgtransfer.InvalidRequestError)
    assert not issubclass(InvalidResumeDataError, bgtransfer.TransferError)
    error = _rejects(b"")
    assert isinstance(error, ValueError)
    assert isinstance(error, bgtransfer.BgTransferError)


# -- rejected blobs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b" ",
        b"garbage",
        b"\x00\x01\x02\x03",
        b"{",
        b"}",
        b"{'format': 'bgtransfer.resume-data'}",
        b"bgtransfer.resume-data",
        b"\xef\xbb\xbf{}",  # a BOM is not JSON
    ],
    ids=repr,
)
def test_garbage_rejected(blob: bytes) -> None:
    assert "not bgtransfer resume data" in str(_rejects(blob))


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_rejected(seed: int) -> None:
    rng = random.Random(seed)
    blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    _rejects(blob)


@pytest.mark.parametrize(
    "blob",
    [b"\xff\xfe", b"\x80", b'{"url": "\xe9"}', "{}".encode("utf-16"), FULL.to_bytes() + b"\xff"],
    ids=repr,
)
def test_non_utf8_rejected(blob: bytes) -> None:
    _rejects(blob)


@pytest.mark.parametrize(
    "blob",
    [b"null", b"true", b"0", b"1.5", b'"bgtransfer.resume-data"', b"[]", b"[1, 2]", b"{}"],
    ids=repr,
)
def test_json_that_is_not_resume_data_rejected(blob: bytes) -> None:
    assert "not bgtransfer resume data" in str(_rejects(blob))


@pytest.mark.parametrize(
    "blob",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"0" + b"}" * 100_000,
    ],
    ids=["open-arrays", "closed-arrays", "objects"],
)
def test_deeply_nested_json_rejected(blob: bytes) -> None:
    # json.loads raises RecursionError past the interpreter's depth: still garbage.
    _rejects(blob)


def test_bare_number_too_long_for_int_rejected() -> None:
    # int() refuses more than sys.get_int_max_str_digits() (4300) digits with a plain ValueError.
    _rejects(b"9" * 5000)


def test_offset_too_long_for_int_rejected() -> None:
    good = _blob()
    blob = good.replace(b'"offset": 1234', b'"offset": ' + b"1" * 5000)
    assert blob != good
    _rejects(blob)


@pytest.mark.parametrize(
    "fmt", [..., None, "", "bgtransfer", "bgtransfer.resume-data2", "BGTRANSFER.RESUME-DATA", 1]
)
def test_wrong_format_tag_rejected(fmt: object) -> None:
    assert "format" in str(_rejects(_blob(format=fmt)))


@pytest.mark.parametrize("version", [..., None, True, False, "1", 1.0, [1], {"v": 1}])
def test_invalid_version_rejected(version: object) -> None:
    assert "version" in str(_rejects(_blob(version=version)))


@pytest.mark.parametrize("version", [0, -1])
def test_version_that_never_existed_rejected(version: int) -> None:
    assert "version" in str(_rejects(_blob(version=version)))


@pytest.mark.parametrize("version", [5, 10**6, 10**30])
def test_newer_version_rejected_with_advice(version: int) -> None:
    message = str(_rejects(_blob(version=version)))
    assert "newer" in message
    assert "upgrade" in message
    assert str(version) in message


def test_newer_version_rejected_even_when_fields_changed() -> None:
    # A newer format may change anything; the version is checked before the fields.
    blob = json.dumps({"format": FORMAT, "version": 5, "url": 5}).encode()
    assert "newer" in str(_rejects(blob))


@pytest.mark.parametrize("field", ["url", "partial", "offset", "validator", "encoding"])
def test_missing_required_field_rejected(field: str) -> None:
    assert repr(field) in str(_rejects(_blob(**{field: ...})))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", None),
        ("url", 5),
        ("url", ["http://h/f"]),
        ("partial", None),
        ("partial", True),
        ("offset", None),
        ("offset", "1234"),
        ("offset", 1234.0),
        ("offset", True),
        ("offset", float("nan")),
        ("validator", None),
        ("validator", 1),
        ("total", "99999"),
        ("total", 99999.0),
        ("total", [99999]),
        ("encoding", None),
        ("encoding", 0),
        ("destination", 1),
        ("destination", ["/x"]),
        ("description", 1),
        ("description", {"a": "b"}),
        ("headers", None),
        ("headers", "User-Agent: x"),
        ("headers", {"User-Agent": "x"}),
        ("headers", [["User-Agent"]]),
        ("headers", [["User-Agent", "x", "y"]]),
        ("headers", [["User-Agent", 1]]),
        ("headers", [[1, "x"]]),
        ("headers", [["User-Agent", None]]),
        ("headers", ["User-Agent"]),
        ("headers", [[["User-Agent", "x"]]]),
        ("headers", [["a", "b"], "c"]),
    ],
    ids=repr,
)
def test_wrong_field_type_rejected(field: str, value: object) -> None:
    message = str(_rejects(_blob(**{field: value})))
    assert repr(field) in message
    assert "wrong type" in message


@pytest.mark.parametrize("total", [True, False])
def test_bool_total_rejected(total: bool) -> None:
    _rejects(_blob(total=total, offset=0))


@pytest.mark.parametrize(("offset", "total"), [(-1, None), (-1, 10), (-(2**70), None), (11, 10)])
def test_offset_out_of_range_rejected(offset: int, total: int | None) -> None:
    assert "out of range" in str(_rejects(_blob(offset=offset, total=total)))


def test_negative_total_rejected() -> None:
    _rejects(_blob(offset=0, total=-1))


def test_every_truncation_rejected() -> None:
    blob = FULL.to_bytes()
    for end in range(len(blob)):
        with pytest.raises(InvalidResumeDataError):
            ResumeData.from_bytes(blob[:end])


def test_every_truncation_of_the_minimal_blob_rejected() -> None:
    blob = MINIMAL.to_bytes()
    for end in range(len(blob)):
        with pytest.raises(InvalidResumeDataError):
            ResumeData.from_bytes(blob[:end])


@pytest.mark.parametrize(
    "value", [FULL.to_bytes().decode(), None, 0, [1, 2], {"format": FORMAT}], ids=repr
)
def test_non_bytes_argument_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="bytes"):
        ResumeData.from_bytes(value)  # type: ignore[arg-type]


# -- properties ----------------------------------------------------------------------------------


_text = st.text(max_size=30)


@st.composite
def _resume_data(draw: st.DrawFn) -> ResumeData:
    offset = draw(st.integers(min_value=0, max_value=2**70))
    total = draw(st.none() | st.integers(min_value=offset, max_value=2**71))
    return ResumeData(
        url=draw(_text),
        partial=draw(_text),
        offset=offset,
        validator=draw(_text),
        total=total,
        encoding=draw(_text),
        destination=draw(st.none() | _text),
        description=draw(st.none() | _text),
        headers=tuple(draw(st.lists(st.tuples(_text, _text), max_size=5))),
        mac=draw(st.text("0123456789abcdef", min_size=64, max_size=64)),
    )


@settings(max_examples=150, deadline=None)
@given(_resume_data())
def test_any_resume_data_round_trips(data: ResumeData) -> None:
    blob = data.to_bytes()
    blob.decode("utf-8")
    assert ResumeData.from_bytes(blob) == data
    assert ResumeData.from_bytes(blob).to_bytes() == blob


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_rejected_cleanly(blob: bytes) -> None:
    with pytest.raises(InvalidResumeDataError):
        ResumeData.from_bytes(blob)


# -- the signature (HMAC-SHA256 under the state directory's key) ---------------------------------


def test_sign_then_verify() -> None:
    assert len(FULL.mac) == 64
    assert UNSIGNED.mac == ""
    verify(FULL, KEY)
    verify(ResumeData.from_bytes(FULL.to_bytes()), KEY)


def test_signing_is_deterministic_and_depends_on_the_key() -> None:
    assert sign(UNSIGNED, KEY) == FULL
    assert sign(UNSIGNED, OTHER_KEY).mac != FULL.mac


def test_verify_with_another_key_is_refused() -> None:
    with pytest.raises(InvalidResumeDataError, match="another state directory"):
        verify(FULL, OTHER_KEY)


def test_unsigned_data_is_refused() -> None:
    with pytest.raises(InvalidResumeDataError, match="not signed"):
        verify(UNSIGNED, KEY)


_CHANGES: dict[str, object] = {
    "url": "https://example.com/other.bin",
    "partial": "/etc/passwd",
    "offset": 1233,
    "validator": '"other"',
    "total": 99_998,
    "encoding": "identity",
    "destination": "/home/u/.bashrc",
    "description": "another",
    "headers": (("User-Agent", "demo/1.0"),),
    "integrity": Integrity(Checksum("md5", "0" * 32), 99_999),
}


_UPLOAD = sign(
    ResumeData(
        kind="upload",
        url="https://example.com/files/",
        partial="",
        offset=1000,
        validator="",
        total=5000,
        source="/home/u/video.bin",
        identity=(5000, 1_700_000_000_000_000_000, 2049, 77),
        upload_url="https://example.com/files/u1",
        protocol="tus",
        method="PUT",
    ),
    KEY,
)
_UPLOAD_CHANGES: dict[str, object] = {
    "kind": "download",
    "source": "/home/u/other.bin",
    "identity": (5000, 1_700_000_000_000_000_001, 2049, 77),
    "upload_url": "https://example.com/files/u2",
    "protocol": "ietf",
    "method": "POST",
    "offset": 2000,
    "tus": TusCapabilities(extensions=frozenset({"checksum"}), checksum_algorithms=("md5",)),
}


def test_every_field_but_the_mac_is_covered() -> None:
    names = {field.name for field in attrs.fields(ResumeData)} - {"mac"}
    assert names == set(_CHANGES) | set(_UPLOAD_CHANGES)


def test_upload_resume_data_round_trips_and_verifies() -> None:
    again = ResumeData.from_bytes(_UPLOAD.to_bytes())
    assert again == _UPLOAD
    verify(again, KEY)


@pytest.mark.parametrize("name", sorted(_UPLOAD_CHANGES))
def test_any_changed_upload_field_is_refused(name: str) -> None:
    changed = attrs.evolve(_UPLOAD, **{name: _UPLOAD_CHANGES[name]})
    with pytest.raises(InvalidResumeDataError, match="does not match"):
        verify(changed, KEY)


@pytest.mark.parametrize(
    "upload_url", ["ftp://example.com/u1", "https://user:pw@example.com/u1", "/u1", "x"]
)
def test_upload_resume_data_with_a_bad_upload_url_is_refused(upload_url: str) -> None:
    blob = attrs.evolve(_UPLOAD, upload_url=upload_url).to_bytes()
    with pytest.raises(InvalidResumeDataError, match="upload URL"):
        ResumeData.from_bytes(blob)


def test_a_download_blob_is_unchanged_by_the_upload_fields() -> None:
    assert b"kind" not in FULL.to_bytes()
    assert b"upload_url" not in FULL.to_bytes()


@pytest.mark.parametrize("name", sorted(_CHANGES))
def test_any_changed_field_is_refused(name: str) -> None:
    changed = attrs.evolve(FULL, **{name: _CHANGES[name]})
    assert canonical_bytes(changed) != canonical_bytes(FULL)
    with pytest.raises(InvalidResumeDataError, match="does not match"):
        verify(changed, KEY)
    # The same through bytes, as an application would hand it back.
    with pytest.raises(InvalidResumeDataError, match="does not match"):
        verify(ResumeData.from_bytes(changed.to_bytes()), KEY)


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ({"destination": None}, {"destination": "None"}),
        ({"description": None}, {"description": ""}),
        ({"total": None}, {"total": 0, "offset": 0}),
        ({"headers": (("a", "bc"),)}, {"headers": (("ab", "c"),)}),
        ({"headers": (("a", "b"), ("c", "d"))}, {"headers": (("a", "b,c"), ("d", ""))}),
    ],
)
def test_canonical_bytes_tell_apart_values_that_print_alike(
    one: dict[str, Any], two: dict[str, Any]
) -> None:
    assert canonical_bytes(attrs.evolve(UNSIGNED, **one)) != canonical_bytes(
        attrs.evolve(UNSIGNED, **two)
    )


@pytest.mark.parametrize("mac", ["", "0" * 63, "0" * 65, "g" * 64, "A" * 64, FULL.mac[:32]])
def test_blob_with_a_malformed_mac_is_refused(mac: str) -> None:
    assert "signature" in str(_rejects(_blob(mac=mac)))


def test_blob_without_a_mac_is_refused() -> None:
    assert "signature" in str(_rejects(_blob(mac=...)))


@pytest.mark.parametrize("mac", [None, 5, ["x"]])
def test_blob_with_a_mac_of_the_wrong_type_is_refused(mac: object) -> None:
    assert "'mac'" in str(_rejects(_blob(mac=mac)))


def test_flipped_mac_is_refused_by_verify() -> None:
    flipped = ("1" if FULL.mac[0] == "0" else "0") + FULL.mac[1:]
    data = ResumeData.from_bytes(_blob(mac=flipped))
    with pytest.raises(InvalidResumeDataError, match="does not match"):
        verify(data, KEY)


def test_version_1_blob_is_refused_as_unsigned() -> None:
    message = str(_rejects(_blob(version=1, mac=...)))
    assert "unsigned" in message
    assert "older" in message


def test_stored_blobs_of_version_1_and_2_decode() -> None:
    # What a journal written by an older version holds: no MAC, version 1.
    assert decode_stored(_blob(version=1, mac=...)) == UNSIGNED
    assert decode_stored(FULL.to_bytes()) == FULL
    assert decode_stored(_blob(mac="junk")).mac == ""


def test_hand_built_data_with_fields_of_the_wrong_types_is_refused() -> None:
    odd = ResumeData(url=object(), partial="/p", offset=0, validator="v", total=None, mac="0" * 64)  # type: ignore[arg-type]
    with pytest.raises(InvalidResumeDataError):
        verify(odd, KEY)


@pytest.mark.parametrize("mac", [None, 5, "\ud800" * 64])
def test_hand_built_data_with_an_odd_mac_is_refused(mac: Any) -> None:
    with pytest.raises(InvalidResumeDataError):
        verify(attrs.evolve(FULL, mac=mac), KEY)


@settings(max_examples=100, deadline=None)
@given(_resume_data())
def test_any_signed_resume_data_verifies_through_bytes(data: ResumeData) -> None:
    signed = sign(data, KEY)
    verify(ResumeData.from_bytes(signed.to_bytes()), KEY)


@pytest.mark.parametrize(
    ("partial", "expected"),
    [
        ("/tmp/bgtransfer-k2_9x0ab/partials/3.part", True),
        ("/state/bgtransfer-abcdefgh/partials/12.part", True),
        ("/state/com.example.app/partials/3.part", False),
        ("/tmp/bgtransfer-k2_9x0ab/downloads/3.part", False),
        ("/tmp/bgtransfer-short/partials/3.part", False),
        ("relative/bgtransfer-k2_9x0ab/partials/3.part", False),
    ],
)
def test_an_ephemeral_partial_is_told_by_its_path(partial: str, expected: bool) -> None:
    assert ephemeral_partial(partial) is expected


def test_integrity_round_trips_signed_and_cannot_be_stripped() -> None:
    data = sign(attrs.evolve(UNSIGNED, integrity=Integrity(Checksum("sha256", "a" * 64))), KEY)
    blob = data.to_bytes()
    assert json.loads(blob)["version"] == 3
    back = ResumeData.from_bytes(blob)
    assert back == data
    verify(back, KEY)
    # Dropping the check (as version 2 data, which has none) breaks the signature.
    document = json.loads(blob)
    del document["integrity"]
    document["version"] = 2
    stripped = ResumeData.from_bytes(json.dumps(document).encode())
    assert stripped.integrity is None
    with pytest.raises(InvalidResumeDataError, match="does not match"):
        verify(stripped, KEY)


def test_bad_integrity_is_refused() -> None:
    document = json.loads(
        sign(attrs.evolve(UNSIGNED, integrity=Integrity(None, 5)), KEY).to_bytes()
    )
    document["integrity"] = {"checksum": "sha256:xyz"}
    with pytest.raises(InvalidResumeDataError, match="integrity"):
        ResumeData.from_bytes(json.dumps(document).encode())


# -- a tus upload's server capabilities (version 4) ----------------------------------------------

_OFFERED = TusCapabilities(
    versions=("1.0.0", "0.2.2"),
    extensions=frozenset({"creation", "checksum", "termination", "x-vendor-thing"}),
    max_size=1 << 40,
    checksum_algorithms=("CRC32", "SHA256", "sha1", "sha256"),
)
_WITH_TUS = sign(attrs.evolve(_UPLOAD, tus=_OFFERED.known()), KEY)


def _tus_blob(**tus: object) -> bytes:
    document = json.loads(_WITH_TUS.to_bytes())
    document["tus"] = {**document["tus"], **tus}
    return json.dumps(document).encode()


def test_known_keeps_what_this_client_knows_and_chooses_the_same() -> None:
    known = _OFFERED.known()
    assert known.extensions == {"creation", "checksum", "termination"}
    assert known.checksum_algorithms == ("sha256", "sha1")  # lower-case, once each
    assert (known.versions, known.max_size) == (("1.0.0",), 1 << 40)
    assert known.checksum == _OFFERED.checksum == "sha1"


def test_upload_resume_data_with_tus_is_version_4_and_round_trips() -> None:
    document = json.loads(_WITH_TUS.to_bytes())
    assert document["version"] == 4
    assert document["tus"] == {
        "extensions": ["checksum", "creation", "termination"],
        "checksum_algorithms": ["sha256", "sha1"],
        "max_size": 1 << 40,
    }
    again = ResumeData.from_bytes(_WITH_TUS.to_bytes())
    assert again == _WITH_TUS
    assert again.tus is not None
    assert again.tus.checksum == "sha1"
    verify(again, KEY)
    assert decode_stored(_WITH_TUS.to_bytes()) == _WITH_TUS  # as the journal keeps it


def test_resume_data_without_tus_is_written_as_before() -> None:
    # Version 2, no "tus" key, the same MAC: what earlier releases wrote and read.
    document = json.loads(_UPLOAD.to_bytes())
    assert document["version"] == 2
    assert "tus" not in document
    assert ResumeData.from_bytes(_UPLOAD.to_bytes()).tus is None
    assert json.loads(canonical_bytes(_UPLOAD))[1] == 2


def test_a_changed_capability_is_refused_by_the_mac() -> None:
    without_checksum = _tus_blob(extensions=["creation", "termination"])
    with pytest.raises(InvalidResumeDataError, match="does not match"):
        verify(ResumeData.from_bytes(without_checksum), KEY)
    with pytest.raises(InvalidResumeDataError, match="does not match"):
        verify(attrs.evolve(_WITH_TUS, tus=None), KEY)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"extensions": ["checksum", "x-vendor-thing"]}, "'tus.extensions' names an unknown"),
        ({"checksum_algorithms": ["crc32"]}, "'tus.checksum_algorithms' names an unknown"),
        ({"checksum_algorithms": ["SHA1"]}, "'tus.checksum_algorithms' names an unknown"),
        ({"extensions": "checksum"}, "'tus.extensions' has the wrong type"),
        ({"extensions": [1]}, "'tus.extensions' has the wrong type"),
        ({"checksum_algorithms": None}, "'tus.checksum_algorithms' has the wrong type"),
        ({"max_size": -1}, "'tus.max_size'"),
        ({"max_size": True}, "'tus.max_size'"),
        ({"max_size": "5"}, "'tus.max_size'"),
        ({"versions": ["1.0.0"]}, "unknown key 'versions'"),
    ],
)
def test_unknown_or_malformed_capabilities_are_refused(
    change: dict[str, object], words: str
) -> None:
    assert words in str(_rejects(_tus_blob(**change)))


def test_a_very_long_unknown_name_is_cut_in_the_message() -> None:
    message = str(_rejects(_tus_blob(extensions=["x" * 10_000])))
    assert len(message) < 200


@pytest.mark.parametrize("tus", [None, [], "sha1", 1])
def test_capabilities_of_the_wrong_type_are_refused(tus: object) -> None:
    document = json.loads(_WITH_TUS.to_bytes())
    document["tus"] = tus
    assert "'tus' has the wrong type" in str(_rejects(json.dumps(document).encode()))


def test_version_4_without_capabilities_is_refused() -> None:
    document = json.loads(_WITH_TUS.to_bytes())
    del document["tus"]
    assert "'tus'" in str(_rejects(json.dumps(document).encode()))


@pytest.mark.parametrize("change", [{"protocol": "ietf"}, {"kind": "download"}])
def test_capabilities_of_anything_but_a_tus_upload_are_refused(change: dict[str, str]) -> None:
    document = {**json.loads(_WITH_TUS.to_bytes()), **change}
    assert "not a tus upload's" in str(_rejects(json.dumps(document).encode()))


def test_capabilities_in_an_older_version_are_not_read() -> None:
    # A version 2 blob is read as version 2 said: a "tus" key in it is nobody's.
    document = json.loads(_UPLOAD.to_bytes())
    document["tus"] = {"extensions": ["checksum"], "checksum_algorithms": ["md5"]}
    assert ResumeData.from_bytes(json.dumps(document).encode()).tus is None


def test_capabilities_of_the_wrong_type_built_by_hand_are_refused_by_verify() -> None:
    forged = attrs.evolve(_WITH_TUS, tus="checksum")  # type: ignore[arg-type]
    with pytest.raises(InvalidResumeDataError, match="wrong types"):
        verify(forged, KEY)
