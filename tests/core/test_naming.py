"""Names: URL parsing and origins, session identifiers, file names from URLs."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bgtransfer
from bgtransfer._core.naming import (
    MAX_IDENTIFIER_LENGTH,
    Origin,
    filename_from_url,
    origin_of,
    parse_url,
    unique_name,
    validate_identifier,
)

# -- parse_url: accepted --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://example.com/file.bin", Origin("http", "example.com", 80)),
        ("https://example.com/file.bin", Origin("https", "example.com", 443)),
        ("http://example.com", Origin("http", "example.com", 80)),
        ("https://example.com", Origin("https", "example.com", 443)),
        ("http://example.com:8080/x", Origin("http", "example.com", 8080)),
        ("https://example.com:8443/x", Origin("https", "example.com", 8443)),
        ("http://example.com:443/x", Origin("http", "example.com", 443)),
        ("https://example.com:80/x", Origin("https", "example.com", 80)),
        ("http://example.com:/x", Origin("http", "example.com", 80)),
        ("http://127.0.0.1:9000/x", Origin("http", "127.0.0.1", 9000)),
        ("http://[::1]/x", Origin("http", "::1", 80)),
        ("https://[::1]:8443/x", Origin("https", "::1", 8443)),
        ("http://[2001:DB8::1]:81/x", Origin("http", "2001:db8::1", 81)),
        ("HTTP://EXAMPLE.COM/Path", Origin("http", "example.com", 80)),
        ("HtTpS://Example.Com:444/", Origin("https", "example.com", 444)),
        ("http://example.com/a?b=c#d", Origin("http", "example.com", 80)),
    ],
)
def test_parse_url_accepts(url: str, origin: Origin) -> None:
    text, parsed = parse_url(url)
    assert text == url  # returned unchanged (only stripped)
    assert parsed == origin


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/file.bin",
        "http://example.com",
        "http://example.com?x=/y",
        "http://example.com#frag/x",
        "http://example.com:8080?q",
        "HtTpS://Example.Com:444/",
        "http://[2001:DB8::1]:81/x?y#z",
        "http://example.com:/x",
    ],
)
def test_origin_of_agrees_with_parse_url(url: str) -> None:
    cache: dict[str, Origin] = {}
    assert origin_of(url, cache) == parse_url(url)[1]
    assert origin_of(url, cache) == parse_url(url)[1]  # from the cache this time
    assert len(cache) == 1


@settings(max_examples=300, derandomize=True)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    host=st.sampled_from(["example.com", "EXAMPLE.org", "127.0.0.1", "[::1]", "a.b"]),
    port=st.sampled_from(["", ":", ":1", ":8080", ":65535"]),
    rest=st.text(alphabet="/?#=&.abcXYZ%:@", max_size=12),
)
def test_origin_of_agrees_with_parse_url_on_generated_urls(
    scheme: str, host: str, port: str, rest: str
) -> None:
    url = f"{scheme}://{host}{port}{rest}"
    try:
        expected = parse_url(url)[1]
    except ValueError:
        return  # origin_of is only for URLs parse_url accepted
    cache: dict[str, Origin] = {}
    assert origin_of(url, cache) == expected
    assert origin_of(url, cache) == expected


def test_origin_of_parses_each_authority_once() -> None:
    cache: dict[str, Origin] = {}
    for index in range(100):
        origin_of(f"http://example.com/q{index}.bin", cache)
        origin_of(f"https://example.com:8443/q{index}.bin", cache)
    assert cache == {
        "http://example.com": Origin("http", "example.com", 80),
        "https://example.com:8443": Origin("https", "example.com", 8443),
    }


@settings(max_examples=400, derandomize=True)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "ftp", ""]),
    sep=st.sampled_from(["://", ":/", ":", "//"]),
    host=st.sampled_from(["example.com", "EXAMPLE.org", "[::1]", "[::1", "", "a b", "u@h"]),
    port=st.sampled_from(["", ":", ":1", ":0", ":99999", ":x"]),
    rest=st.text(alphabet="/?#=&.aZ%:@ \t\x00", max_size=10),
)
def test_parse_url_with_a_cache_answers_as_without(
    scheme: str, sep: str, host: str, port: str, rest: str
) -> None:
    """The cache never changes an answer: each URL is parsed after one from the
    same authority (accepted or not) has filled it, and must raise the same error
    or return the same value as a parse without a cache."""
    url = f"{scheme}{sep}{host}{port}{rest}"
    cache: dict[str, Origin] = {}
    for warm in (f"{scheme}{sep}{host}{port}/", f"{scheme}{sep}{host}{port}"):
        with contextlib.suppress(ValueError):
            parse_url(warm, cache)
    try:
        expected: object = parse_url(url)
    except ValueError as exc:
        expected = (type(exc), str(exc))
    try:
        got: object = parse_url(url, cache)
    except ValueError as exc:
        got = (type(exc), str(exc))
    assert got == expected


def test_parse_url_cache_holds_accepted_authorities_only() -> None:
    cache: dict[str, Origin] = {}
    assert parse_url("http://example.com/a", cache)[1] == Origin("http", "example.com", 80)
    with pytest.raises(bgtransfer.InvalidURLError, match="Port"):
        parse_url("http://example.com:abc/a", cache)
    with pytest.raises(bgtransfer.InvalidURLError, match="whitespace or control"):
        parse_url("http://example.com/a b", cache)  # the authority is known; the rest is not
    assert cache == {"http://example.com": Origin("http", "example.com", 80)}


def test_parse_url_strips_surrounding_whitespace() -> None:
    assert parse_url("  \thttp://example.com/x\n ") == (
        "http://example.com/x",
        Origin("http", "example.com", 80),
    )


def test_parse_url_keeps_path_case() -> None:
    text, _ = parse_url("HTTP://Example.COM/Some/Path.TXT")
    assert text == "HTTP://Example.COM/Some/Path.TXT"


@pytest.mark.parametrize(
    ("origin", "text"),
    [
        (Origin("http", "example.com", 80), "http://example.com:80"),
        (Origin("https", "example.com", 8443), "https://example.com:8443"),
        (Origin("http", "::1", 8080), "http://[::1]:8080"),
    ],
)
def test_origin_str(origin: Origin, text: str) -> None:
    assert str(origin) == text


def test_origin_is_a_hashable_value() -> None:
    a = parse_url("http://Example.com/a")[1]
    b = parse_url("http://example.com:80/b")[1]
    assert a == b
    assert hash(a) == hash(b)
    assert a != parse_url("https://example.com/a")[1]
    assert a != parse_url("http://example.com:81/a")[1]
    assert a != parse_url("http://example.org/a")[1]


# -- parse_url: rejected --------------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, b"http://example.com/", 42, ["http://x/"]], ids=repr)
def test_parse_url_rejects_non_str(url: Any) -> None:
    with pytest.raises(TypeError, match=f"url must be a str, not {type(url).__name__}"):
        parse_url(url)


@pytest.mark.parametrize("url", ["", "   ", "\t\n"], ids=repr)
def test_parse_url_rejects_empty(url: str) -> None:
    with pytest.raises(bgtransfer.InvalidURLError, match="empty URL"):
        parse_url(url)


@pytest.mark.parametrize(
    ("url", "error", "why"),
    [
        ("http://exa mple.com/", bgtransfer.InvalidURLError, "whitespace or control"),
        ("http://example.com/a b", bgtransfer.InvalidURLError, "whitespace or control"),
        ("http://example.com/a\tb", bgtransfer.InvalidURLError, "whitespace or control"),
        ("http://example.com/a\x00b", bgtransfer.InvalidURLError, "whitespace or control"),
        ("http://example.com/a\x7fb", bgtransfer.InvalidURLError, "whitespace or control"),
        ("http://example.com/\nb", bgtransfer.InvalidURLError, "whitespace or control"),
        ("example.com/file", bgtransfer.InvalidURLError, "no scheme"),
        ("//example.com/file", bgtransfer.InvalidURLError, "no scheme"),
        ("/just/a/path", bgtransfer.InvalidURLError, "no scheme"),
        ("ftp://example.com/file", bgtransfer.UnsupportedSchemeError, "'ftp' is not supported"),
        ("FTP://example.com/file", bgtransfer.UnsupportedSchemeError, "'ftp' is not supported"),
        ("file:///etc/passwd", bgtransfer.UnsupportedSchemeError, "'file' is not supported"),
        ("data:text/plain,hi", bgtransfer.UnsupportedSchemeError, "'data' is not supported"),
        ("ws://example.com/", bgtransfer.UnsupportedSchemeError, "'ws' is not supported"),
        ("http:///path", bgtransfer.InvalidURLError, "no host"),
        ("http://", bgtransfer.InvalidURLError, "no host"),
        ("https://:443/x", bgtransfer.InvalidURLError, "no host"),
        ("http://user@/x", bgtransfer.InvalidURLError, "credentials in the URL"),
        ("http:example.com", bgtransfer.InvalidURLError, "no host"),
        ("http://example.com:99999/", bgtransfer.InvalidURLError, "Port out of range"),
        ("http://example.com:-1/", bgtransfer.InvalidURLError, "Port"),
        ("http://example.com:abc/", bgtransfer.InvalidURLError, "Port"),
        ("http://[::1/", bgtransfer.InvalidURLError, "IPv6"),
    ],
)
def test_parse_url_rejects(url: str, error: type[Exception], why: str) -> None:
    with pytest.raises(error) as info:
        parse_url(url)
    message = str(info.value)
    assert why in message
    assert repr(url.strip()) in message  # the message names the URL
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, bgtransfer.InvalidRequestError)


def test_unsupported_scheme_is_value_error_and_not_invalid_url() -> None:
    with pytest.raises(ValueError, match="ftp://h/f") as info:
        parse_url("ftp://h/f")
    assert type(info.value) is bgtransfer.UnsupportedSchemeError
    assert not isinstance(info.value, bgtransfer.InvalidURLError)


def test_parse_url_error_has_no_chained_value_error() -> None:
    with pytest.raises(bgtransfer.InvalidURLError) as info:
        parse_url("http://example.com:99999/")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


# -- validate_identifier --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "identifier",
    [
        "a",
        "com.example.bg",
        "my-session_1",
        "x" * MAX_IDENTIFIER_LENGTH,
        "café",
        "データ",
        "a.b",
        "with space",
        "trailing.",
    ],
)
def test_valid_identifiers_returned_unchanged(identifier: str) -> None:
    assert validate_identifier(identifier) is identifier


@pytest.mark.parametrize(
    ("identifier", "why"),
    [
        ("", "must not be empty"),
        ("x" * (MAX_IDENTIFIER_LENGTH + 1), f"the limit is {MAX_IDENTIFIER_LENGTH}"),
        ("a/b", "path separator"),
        ("/abs", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("..hidden", "'..'"),
        (".hidden", "must not start with '.'"),
        (".", "must not start with '.'"),
        ("a\x00b", "control characters"),
        ("a\nb", "control characters"),
        ("a\tb", "control characters"),
        ("a\x7fb", "control characters"),
        ("a\u200bb", "control characters"),  # zero-width space (Cf)
        ("a\x1bb", "control characters"),
    ],
)
def test_invalid_identifiers_rejected(identifier: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        validate_identifier(identifier)


def test_too_long_identifier_message_names_length() -> None:
    with pytest.raises(ValueError, match=f"is {MAX_IDENTIFIER_LENGTH + 1} characters long"):
        validate_identifier("y" * (MAX_IDENTIFIER_LENGTH + 1))


@pytest.mark.parametrize("identifier", [None, 1, b"abc", ["a"]], ids=repr)
def test_non_str_identifier_is_type_error(identifier: Any) -> None:
    with pytest.raises(TypeError, match=type(identifier).__name__):
        validate_identifier(identifier)


def test_max_identifier_length_value() -> None:
    assert MAX_IDENTIFIER_LENGTH == 200


# -- filename_from_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://h/file.bin", "file.bin"),
        ("http://h/a/b/c/report.pdf", "report.pdf"),
        ("http://h/dir/", "dir"),
        ("http://h/caf%C3%A9.txt", "café.txt"),
        ("http://h/hello%20world.txt", "hello world.txt"),
        ("http://h/a%2Fb.txt", "b.txt"),
        ("http://h/a%2fb%2fc", "c"),
        ("http://h/..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("http://h/a%5Cb.txt", "b.txt"),
        ("http://h/x/..", "download"),
        ("http://h/%2e%2e", "download"),
        ("http://h/..", "download"),
        ("http://h/.", "download"),
        ("http://h/...", "download"),
        ("http://h/file.txt?name=other.exe", "file.txt"),
        ("http://h/file.txt#frag/evil", "file.txt"),
        ("http://h/", "download"),
        ("http://h", "download"),
        ("http://h/?q=1", "download"),
        ("http://h/.bashrc", "bashrc"),
        ("http://h/name.", "name"),
        ("http://h/%20padded%20", "padded"),
        ("http://h/a%3Cb%3E.txt", "a_b_.txt"),
        ("http://h/a%22b%3A%7Cc%3F%2A.txt", "a_b__c__.txt"),
        ("http://h/a%00b", "a_b"),
        ("http://h/a%0Ab%0D", "a_b_"),
        ("http://h/%00", "download"),
        ("http://h/___", "download"),
        ("http://h/%E6%97%A5%E6%9C%AC.zip", "日本.zip"),
        ("http://h/e%CC%81.txt", "\u00e9.txt"),  # NFC
        ("http://h/%ff.bin", "\ufffd.bin"),
    ],
)
def test_filename_from_url(url: str, name: str) -> None:
    assert filename_from_url(url) == name


def test_long_name_truncated_keeping_extension() -> None:
    name = filename_from_url("http://h/" + "x" * 300 + ".tar.gz")
    assert name.endswith(".gz")
    assert len(name.encode()) == 200
    assert name == "x" * 197 + ".gz"


def test_long_multibyte_name_truncated_on_character_boundary() -> None:
    name = filename_from_url("http://h/" + "é" * 150 + ".txt")  # 300 bytes + 4
    assert name == "é" * 98 + ".txt"
    assert len(name.encode()) == 200


def test_long_multibyte_name_with_odd_budget_drops_partial_character() -> None:
    # 3-byte characters; the budget for the stem is 200 - len(".js") = 197 bytes,
    # which ends two bytes into the 66th character: that character is dropped whole.
    name = filename_from_url("http://h/" + "日" * 100 + ".js")
    assert name == "日" * 65 + ".js"
    assert len(name.encode()) == 198


def test_long_name_without_extension_truncated() -> None:
    assert filename_from_url("http://h/" + "y" * 500) == "y" * 200


def test_long_name_with_overlong_extension_is_cut_plainly() -> None:
    name = filename_from_url("http://h/" + "a" * 250 + "." + "b" * 17)
    assert name == "a" * 200


def test_name_at_limit_is_untouched() -> None:
    exact = "z" * 196 + ".txt"
    assert filename_from_url("http://h/" + exact) == exact


def test_name_is_never_a_path() -> None:
    for url in ("http://h/a%2F..%2F..", "http://h/%2F", "http://h/%5C%5C", "http://h/a%2F.."):
        name = filename_from_url(url)
        assert "/" not in name
        assert "\\" not in name
        assert name not in {".", ".."}


_FORBIDDEN = set('\x00/\\<>:"|?*') | {chr(c) for c in range(0x20)} | {"\x7f"}


@settings(max_examples=200, deadline=None)
@given(path=st.text())
def test_filename_property(path: str) -> None:
    for url in ("http://h/" + path, "https://h/dir/" + path.replace("?", "").replace("#", "")):
        name = filename_from_url(url)
        assert name
        assert not set(name) & _FORBIDDEN
        assert name not in {".", ".."}
        assert not name.startswith(".")
        assert len(name.encode("utf-8")) <= 200


@settings(max_examples=100, deadline=None)
@given(segment=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1))
def test_filename_property_percent_encoded(segment: str) -> None:
    name = filename_from_url("http://h/d/" + quote(segment, safe=""))
    assert name
    assert "/" not in name
    assert "\\" not in name
    assert "\x00" not in name
    assert name not in {".", ".."}
    assert not name.startswith(".")
    assert len(name.encode("utf-8")) <= 200


# -- unique_name ----------------------------------------------------------------------------------


def _taken_by(names: set[str]) -> Any:
    calls: list[str] = []

    def taken(candidate: str) -> bool:
        calls.append(candidate)
        return candidate in names

    taken.calls = calls  # type: ignore[attr-defined]
    return taken


def test_free_name_returned_as_is() -> None:
    taken = _taken_by(set())
    assert unique_name("a.txt", taken) == "a.txt"
    assert taken.calls == ["a.txt"]


def test_numbered_names_in_order() -> None:
    names = {"a.txt"}
    first = unique_name("a.txt", _taken_by(names))
    assert first == "a (1).txt"
    names.add(first)
    second = unique_name("a.txt", _taken_by(names))
    assert second == "a (2).txt"
    names.add(second)
    assert unique_name("a.txt", _taken_by(names)) == "a (3).txt"


def test_smallest_free_number_is_used() -> None:
    assert unique_name("a.txt", _taken_by({"a.txt", "a (2).txt"})) == "a (1).txt"


@pytest.mark.parametrize(
    ("name", "taken", "result"),
    [
        ("README", {"README"}, "README (1)"),
        ("README", {"README", "README (1)"}, "README (2)"),
        (".bashrc", {".bashrc"}, ".bashrc (1)"),
        ("archive.tar.gz", {"archive.tar.gz"}, "archive.tar (1).gz"),
        ("x.y", {"x.y", "x (1).y", "x (2).y"}, "x (3).y"),
    ],
)
def test_unique_name_variants(name: str, taken: set[str], result: str) -> None:
    assert unique_name(name, _taken_by(taken)) == result


def test_unique_name_gives_up() -> None:
    with pytest.raises(ValueError, match=r"no free file name like 'a\.txt'"):
        unique_name("a.txt", lambda _: True)
