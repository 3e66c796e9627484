"""check_response: status and headers into a decision or the task's error."""

from __future__ import annotations

import attrs
import pytest

import bgtransfer
from bgtransfer._core.response import ResponseInfo, check_response, parse_content_length

URL = "http://example.com/file.bin"


def test_200_with_content_length() -> None:
    info = check_response(URL, 200, "OK", {"content-length": "1234"})
    assert info == ResponseInfo(
        status=200,
        expected_length=1234,
        etag=None,
        last_modified=None,
        accept_ranges=False,
        content_encoding="identity",
    )


def test_200_without_content_length() -> None:
    assert check_response(URL, 200, "OK", {}).expected_length is None


def test_content_length_zero() -> None:
    assert check_response(URL, 200, "OK", {"content-length": "0"}).expected_length == 0


@pytest.mark.parametrize("status", [201, 202, 203, 226, 299])
def test_other_2xx_accepted(status: int) -> None:
    info = check_response(URL, status, "", {"content-length": "5"})
    assert info.status == status
    assert info.expected_length == 5


@pytest.mark.parametrize("status", [204, 205])
@pytest.mark.parametrize("headers", [{}, {"content-length": "99"}, {"content-length": "junk"}])
def test_no_body_statuses_have_length_zero(status: int, headers: dict[str, str]) -> None:
    assert check_response(URL, status, "No Content", headers).expected_length == 0


def test_206_without_range_is_protocol_error() -> None:
    with pytest.raises(bgtransfer.ProtocolError, match="206") as info:
        check_response(URL, 206, "Partial Content", {"content-length": "10"})
    assert info.value.url == URL
    assert str(info.value).startswith(f"{URL}: ")
    assert not isinstance(info.value, bgtransfer.HTTPStatusError)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (100, "Continue"),
        (199, ""),
        (300, "Multiple Choices"),
        (301, "Moved Permanently"),
        (302, "Found"),
        (304, "Not Modified"),
        (307, "Temporary Redirect"),
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (416, "Range Not Satisfiable"),
        (429, "Too Many Requests"),
        (500, "Internal Server Error"),
        (502, "Bad Gateway"),
        (503, "Service Unavailable"),
        (599, ""),
    ],
)
def test_non_2xx_is_http_status_error(status: int, reason: str) -> None:
    with pytest.raises(bgtransfer.HTTPStatusError) as info:
        check_response(URL, status, reason, {"content-length": "10"})
    error = info.value
    assert error.status == status
    assert error.reason == reason
    assert error.url == URL
    assert str(error) == f"{URL}: HTTP {status} {reason}".rstrip()
    assert isinstance(error, bgtransfer.TransferError)


@pytest.mark.parametrize(
    ("value", "length"),
    [
        ("0", 0),
        ("42", 42),
        ("007", 7),
        (" 42 ", 42),
        ("42,42", 42),
        ("42, 42", 42),
        ("42 , 42 ,42", 42),
        ("18446744073709551616", 2**64),
    ],
)
def test_content_length_accepted(value: str, length: int) -> None:
    assert check_response(URL, 200, "OK", {"content-length": value}).expected_length == length
    assert parse_content_length(value, url=URL) == length


@pytest.mark.parametrize("value", ["42,43", "1, 2", "10,10,11", "42,"], ids=repr)
def test_conflicting_content_length_rejected(value: str) -> None:
    with pytest.raises(bgtransfer.ProtocolError, match="conflicting Content-Length") as info:
        check_response(URL, 200, "OK", {"content-length": value})
    assert info.value.url == URL
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    "value", ["", " ", "abc", "-1", "+5", "1.5", "1e3", "0x10", "12 34", "١٢", "²", "10a"], ids=repr
)
def test_non_digit_content_length_rejected(value: str) -> None:
    with pytest.raises(bgtransfer.ProtocolError, match="invalid Content-Length") as info:
        check_response(URL, 200, "OK", {"content-length": value})
    assert str(info.value).startswith(f"{URL}: ")


def test_content_length_too_long_for_int_is_protocol_error() -> None:
    # int() refuses strings of more than sys.get_int_max_str_digits() (4300) digits with a
    # ValueError; a strict parser must still answer with the task's ProtocolError.
    value = "9" * 5000
    with pytest.raises(bgtransfer.ProtocolError) as info:
        parse_content_length(value, url=URL)
    assert info.value.url == URL


def test_parse_content_length_none() -> None:
    assert parse_content_length(None, url=URL) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("bytes", True), ("Bytes", True), (" bytes ", True), ("none", False), ("", False)],
    ids=repr,
)
def test_accept_ranges(value: str, expected: bool) -> None:
    assert check_response(URL, 200, "OK", {"accept-ranges": value}).accept_ranges is expected


def test_accept_ranges_absent() -> None:
    assert check_response(URL, 200, "OK", {}).accept_ranges is False


@pytest.mark.parametrize(
    ("headers", "encoding"),
    [
        ({}, "identity"),
        ({"content-encoding": "gzip"}, "gzip"),
        ({"content-encoding": "GZIP"}, "gzip"),
        ({"content-encoding": " Br "}, "br"),
        ({"content-encoding": ""}, "identity"),
        ({"content-encoding": "   "}, "identity"),
        ({"content-encoding": "Identity"}, "identity"),
    ],
    ids=repr,
)
def test_content_encoding(headers: dict[str, str], encoding: str) -> None:
    assert check_response(URL, 200, "OK", headers).content_encoding == encoding


def test_content_encoding_on_204() -> None:
    assert check_response(URL, 204, "", {"content-encoding": "GZIP"}).content_encoding == "gzip"


def test_validators_carried_as_sent() -> None:
    headers = {
        "etag": 'W/"abc"',
        "last-modified": "Wed, 21 Oct 2015 07:28:00 GMT",
        "content-length": "3",
    }
    info = check_response(URL, 200, "OK", headers)
    assert info.etag == 'W/"abc"'
    assert info.last_modified == "Wed, 21 Oct 2015 07:28:00 GMT"


def test_header_names_must_be_lower_case() -> None:
    # The shell lower-cases names; mixed-case keys are simply not seen.
    info = check_response(URL, 200, "OK", {"Content-Length": "5", "ETag": '"x"'})
    assert info.expected_length is None
    assert info.etag is None


def test_response_info_is_frozen() -> None:
    info = check_response(URL, 200, "OK", {})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        info.status = 201  # type: ignore[misc]
