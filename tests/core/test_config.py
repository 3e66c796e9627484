"""Configuration: defaults, validators, header normalisation, frozen/hashable, evolve."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any

import attrs
import pytest

import bgtransfer
from bgtransfer._core.config import Configuration, normalize_headers

INT_FIELDS = ("max_connections_per_host", "max_concurrent_transfers")
OPTIONAL_SECONDS = ("request_timeout", "resource_timeout")  # None allowed, 0 rejected
SECONDS_FIELDS = (*OPTIONAL_SECONDS, "progress_interval")


def test_public_name() -> None:
    assert bgtransfer.Configuration is Configuration


def test_defaults() -> None:
    config = Configuration()
    assert config.max_connections_per_host == 6
    assert config.max_concurrent_transfers == 32
    assert config.request_timeout == 60.0
    assert config.resource_timeout is None
    assert config.headers == ()
    assert config.progress_interval == 0.1
    assert config.retry == bgtransfer.RetryPolicy()
    assert config.min_speed == 1024
    assert config.min_speed_window == 60.0
    assert config.durability == "process"
    assert config.checkpoint_interval == 1.0
    assert config.headers_provider is None
    assert config.secret_headers == frozenset()
    assert config.allow_insecure_redirects is False
    assert config.handle_sigterm is True
    assert config.acknowledge == "auto"
    assert config.launch_command is None
    assert config.launch_delay == 5.0
    assert config.launch_delay_max == 3600.0
    assert config.upload_reply_max_bytes == 64 * 1024
    assert config.fetch_max_bytes == 1024 * 1024
    assert config.max_bytes_per_second is None


def test_field_names_and_order() -> None:
    assert [f.name for f in attrs.fields(Configuration)] == [
        "max_connections_per_host",
        "max_concurrent_transfers",
        "request_timeout",
        "resource_timeout",
        "headers",
        "progress_interval",
        "retry",
        "min_speed",
        "min_speed_window",
        "durability",
        "checkpoint_interval",
        "headers_provider",
        "secret_headers",
        "allow_insecure_redirects",
        "segments",
        "handle_sigterm",
        "acknowledge",
        "event_log_size",
        "resume_data_max_age",
        "launch_command",
        "launch_delay",
        "launch_delay_max",
        "proxy",
        "ssl",
        "client_cert",
        "user_agent",
        "upload_reply_max_bytes",
        "auth",
        "netrc",
        "max_redirects",
        "redirect_policy",
        "fetch_max_bytes",
        "max_bytes_per_second",
    ]


@pytest.mark.parametrize("value", [1, None, "yes"])
def test_handle_sigterm_must_be_a_bool(value: Any) -> None:
    message = rf"^handle_sigterm must be a bool, not {type(value).__name__}$"
    with pytest.raises(TypeError, match=message):
        Configuration(handle_sigterm=value)


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        Configuration(6)  # type: ignore[misc]


def test_unknown_keyword_rejected() -> None:
    with pytest.raises(TypeError):
        Configuration(max_connections=3)  # type: ignore[call-arg]


# -- integer limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize("value", [1, 2, 6, 1000])
def test_int_field_accepts_positive_ints(field: str, value: int) -> None:
    assert getattr(Configuration(**{field: value}), field) == value


@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize("value", [0, -1, -100])
def test_int_field_rejects_zero_and_negative(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be at least 1, got {value}$"):
        Configuration(**{field: value})


@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize("value", [True, False, 6.0, 1.5, "6", None, math.nan], ids=repr)
def test_int_field_rejects_non_ints_including_bools(field: str, value: Any) -> None:
    with pytest.raises(TypeError, match=rf"^{field} must be an int, not {type(value).__name__}$"):
        Configuration(**{field: value})


# -- seconds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", SECONDS_FIELDS)
@pytest.mark.parametrize("value", [0.001, 1, 2.5, 3600, 86400.0])
def test_seconds_field_accepts_positive_numbers(field: str, value: float) -> None:
    assert getattr(Configuration(**{field: value}), field) == value


@pytest.mark.parametrize("field", SECONDS_FIELDS)
def test_infinite_seconds_rejected(field: str) -> None:
    # request_timeout becomes aiohttp's sock_connect/sock_read; aiohttp computes
    # ceil(loop.time() + timeout), so math.inf made every request raise OverflowError.
    # "No limit" is spelled None, so every seconds field refuses infinity alike.
    with pytest.raises(ValueError, match=f"{field} must be a finite number"):
        Configuration(**{field: math.inf})


@pytest.mark.parametrize("field", OPTIONAL_SECONDS)
def test_timeouts_accept_none(field: str) -> None:
    assert getattr(Configuration(**{field: None}), field) is None


def test_progress_interval_accepts_zero() -> None:
    assert Configuration(progress_interval=0).progress_interval == 0
    assert Configuration(progress_interval=0.0).progress_interval == 0.0


def test_progress_interval_rejects_none() -> None:
    with pytest.raises(
        TypeError, match=r"^progress_interval must be a number of seconds, not None$"
    ):
        Configuration(progress_interval=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", OPTIONAL_SECONDS)
@pytest.mark.parametrize("value", [0, 0.0, -0.0, -1, -0.5], ids=repr)
def test_timeouts_reject_zero_and_negative(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be greater than 0 seconds, got "):
        Configuration(**{field: value})


@pytest.mark.parametrize("value", [-1, -0.001], ids=repr)
def test_progress_interval_rejects_negative(value: float) -> None:
    with pytest.raises(ValueError, match=r"^progress_interval must be at least 0 seconds, got "):
        Configuration(progress_interval=value)


@pytest.mark.parametrize("field", SECONDS_FIELDS)
@pytest.mark.parametrize("value", [math.nan, -math.inf], ids=repr)
def test_seconds_fields_reject_nan_and_negative_infinity(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be a finite number of seconds"):
        Configuration(**{field: value})


@pytest.mark.parametrize("field", SECONDS_FIELDS)
@pytest.mark.parametrize("value", [True, False, "1", b"1", 1j, [1]], ids=repr)
def test_seconds_field_rejects_wrong_types(field: str, value: Any) -> None:
    with pytest.raises(
        TypeError, match=rf"^{field} must be a number of seconds, not {type(value).__name__}$"
    ):
        Configuration(**{field: value})


# -- headers --------------------------------------------------------------------------------------


def test_headers_from_mapping_keep_order() -> None:
    config = Configuration(headers=OrderedDict([("X-B", "2"), ("X-A", "1")]))
    assert config.headers == (("X-B", "2"), ("X-A", "1"))


def test_headers_from_pairs() -> None:
    pairs = [("Accept", "*/*"), ("X-Token", "abc"), ("Accept", "text/plain")]
    assert Configuration(headers=pairs).headers == tuple(pairs)


def test_headers_from_generator() -> None:
    assert normalize_headers(iter([("A", "1")])) == (("A", "1"),)


def test_headers_none_and_empty() -> None:
    assert normalize_headers(None) == ()
    assert Configuration(headers=None).headers == ()  # type: ignore[arg-type]
    assert normalize_headers({}) == ()
    assert normalize_headers([]) == ()


def test_headers_result_is_tuple_of_tuples() -> None:
    result = normalize_headers([["A", "1"]])  # type: ignore[list-item]
    assert result == (("A", "1"),)
    assert type(result) is tuple
    assert type(result[0]) is tuple


def test_header_values_may_be_empty_or_contain_spaces_and_tabs() -> None:
    assert normalize_headers({"X-Empty": "", "X-Sp": "a b\tc"}) == (
        ("X-Empty", ""),
        ("X-Sp", "a b\tc"),
    )


@pytest.mark.parametrize(
    "name", ["A", "x-custom", "!#$%&'*+-.^_`|~", "Accept-Encoding", "X9"], ids=repr
)
def test_token_header_names_accepted(name: str) -> None:
    assert normalize_headers({name: "v"}) == ((name, "v"),)


@pytest.mark.parametrize(
    "name",
    ["", "Bad Name", "X:Y", "X\r\nY", "(paren)", "é", "X\x00", "a/b", "a@b", "a\tb", '"q"'],
    ids=repr,
)
def test_invalid_header_names_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="is not a valid HTTP token"):
        normalize_headers({name: "v"})
    with pytest.raises(ValueError, match="is not a valid HTTP token"):
        Configuration(headers=[(name, "v")])


@pytest.mark.parametrize(
    "value", ["a\rb", "a\nb", "a\r\nX-Injected: 1", "a\x00b", "\n", "\r", "\0"], ids=repr
)
def test_header_injection_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="must not contain CR, LF or NUL"):
        normalize_headers({"X-A": value})
    with pytest.raises(ValueError, match="'X-A'"):
        Configuration(headers=[("X-A", value)])


@pytest.mark.parametrize(
    "headers",
    [{b"X": "v"}, {"X": b"v"}, {"X": 1}, {1: "v"}, {"X": None}, [("X", 1)], [(None, "v")]],
    ids=repr,
)
def test_non_str_names_or_values_rejected(headers: Any) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        normalize_headers(headers)


@pytest.mark.parametrize(
    "headers", ["X: y", b"X: y", 42, 1.5, object()], ids=lambda v: type(v).__name__
)
def test_headers_of_wrong_container_type_rejected(headers: Any) -> None:
    with pytest.raises(TypeError, match="headers must be a mapping of str to str"):
        normalize_headers(headers)
    with pytest.raises(TypeError):
        Configuration(headers=headers)


@pytest.mark.parametrize("item", [("X",), ("X", "1", "2"), 5, None, "Accept"], ids=repr)
def test_items_that_are_not_pairs_rejected(item: Any) -> None:
    with pytest.raises(TypeError, match=r"headers must be \(name, value\) pairs"):
        normalize_headers([item])


def test_two_character_string_item_is_not_a_pair() -> None:
    # "ab" unpacks into ("a", "b") but is not a (name, value) pair: it must be rejected
    # like any other non-pair item instead of silently becoming the header "a: b".
    with pytest.raises(TypeError, match=r"headers must be \(name, value\) pairs"):
        normalize_headers(["ab"])  # type: ignore[list-item]


# -- frozen, hashable, evolve ---------------------------------------------------------------------


def test_frozen() -> None:
    config = Configuration()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.max_connections_per_host = 1  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.headers = ()  # type: ignore[misc]


def test_equal_and_hashable() -> None:
    a = Configuration(headers={"A": "1"}, max_connections_per_host=2)
    b = Configuration(headers=[("A", "1")], max_connections_per_host=2)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, Configuration()}) == 2
    assert a != Configuration(headers={"A": "2"}, max_connections_per_host=2)


def test_evolve_changes_one_field() -> None:
    base = Configuration(headers={"A": "1"})
    changed = attrs.evolve(base, max_connections_per_host=2)
    assert changed.max_connections_per_host == 2
    assert changed.headers == (("A", "1"),)
    assert base.max_connections_per_host == 6


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"max_connections_per_host": 0}, ValueError),
        ({"max_concurrent_transfers": True}, TypeError),
        ({"request_timeout": -1}, ValueError),
        ({"resource_timeout": 0}, ValueError),
        ({"progress_interval": math.nan}, ValueError),
        ({"headers": {"X": "a\nb"}}, ValueError),
        ({"headers": {"X": 1}}, TypeError),
    ],
    ids=repr,
)
def test_evolve_revalidates(changes: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        attrs.evolve(Configuration(), **changes)


def test_evolve_normalizes_headers() -> None:
    changed = attrs.evolve(Configuration(), headers={"B": "2"})
    assert changed.headers == (("B", "2"),)


@pytest.mark.parametrize("value", ["auto", "explicit"])
def test_acknowledge_accepts_auto_and_explicit(value: str) -> None:
    assert Configuration(acknowledge=value).acknowledge == value  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["at-least-once", "", None, True, "Auto"], ids=repr)
def test_acknowledge_rejects_anything_else(value: object) -> None:
    with pytest.raises(ValueError, match=r"^acknowledge must be 'auto' or 'explicit', got "):
        Configuration(acknowledge=value)  # type: ignore[arg-type]


# -- replace --------------------------------------------------------------------------------------


def test_replace_returns_a_changed_copy() -> None:
    config = Configuration(segments=2)
    changed = config.replace(max_connections_per_host=2, request_timeout=None)
    assert changed == Configuration(segments=2, max_connections_per_host=2, request_timeout=None)
    assert config == Configuration(segments=2)  # the original is unchanged


def test_replace_without_changes_is_an_equal_copy() -> None:
    config = Configuration(headers={"X-A": "1"}, secret_headers={"X-Mine"})
    assert config.replace() == config


def test_replace_validates_like_a_new_value() -> None:
    config = Configuration()
    with pytest.raises(ValueError, match="segments must be at most 16"):
        config.replace(segments=17)
    with pytest.raises(TypeError, match="handle_sigterm must be a bool"):
        config.replace(handle_sigterm=1)
    assert config.replace(headers={"X-B": "2"}).headers == (("X-B", "2"),)  # converted too


def test_replace_names_an_unknown_field() -> None:
    with pytest.raises(TypeError, match=r"'max_connections'.*max_connections_per_host"):
        Configuration().replace(max_connections=3)


# -- launch_command, launch_delay, launch_delay_max ------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (["/usr/bin/app", "--collect"], ("/usr/bin/app", "--collect")),
        (("app",), ("app",)),  # a bare name: looked up in the daemon's PATH
        (iter(["/opt/app", ""]), ("/opt/app", "")),  # empty arguments are arguments
        (None, None),
    ],
)
def test_launch_command_is_kept_as_a_tuple_of_str(given: Any, stored: Any) -> None:
    assert Configuration(launch_command=given).launch_command == stored


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("/usr/bin/app --collect", TypeError, "sequence of str .*no shell.*not str"),
        (b"/usr/bin/app", TypeError, "not bytes"),
        (42, TypeError, "not int"),
        (["/usr/bin/app", 1], TypeError, "every argument must be a str, not int"),
        ([b"/usr/bin/app"], TypeError, "not bytes"),
        ([], ValueError, "must name a program"),
        ([""], ValueError, "must name a program"),
        (["/usr/bin/app", "a\0b"], ValueError, "NUL"),
        (["./app"], ValueError, "'./app' is a relative path"),
        (["bin/app"], ValueError, "relative path"),
    ],
)
def test_launch_command_rejects_what_cannot_be_run(value: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Configuration(launch_command=value)


@pytest.mark.parametrize("field", ["launch_delay", "launch_delay_max"])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.inf, ValueError),
        (None, TypeError),
        ("5", TypeError),
    ],
)
def test_launch_delays_are_positive_seconds(field: str, value: Any, error: type) -> None:
    with pytest.raises(error, match=field):
        Configuration(**{field: value})


def test_launch_delay_max_is_at_least_launch_delay() -> None:
    assert Configuration(launch_delay=10, launch_delay_max=10).launch_delay_max == 10
    with pytest.raises(
        ValueError, match=r"launch_delay_max \(5.0\) must be at least launch_delay \(10\)"
    ):
        Configuration(launch_delay=10, launch_delay_max=5.0)
    with pytest.raises(ValueError, match="launch_delay_max"):
        Configuration().replace(launch_delay=7200)  # above the default cap
    assert Configuration().replace(launch_delay=7200, launch_delay_max=7200).launch_delay == 7200


def test_launch_fields_round_trip_through_plain_values() -> None:
    """What a daemon client sends: JSON of the plain fields, rebuilt on the other side."""
    config = Configuration(launch_command=["/usr/bin/app", "--bg"], launch_delay=0.5)
    plain = json.loads(
        json.dumps(attrs.asdict(config, filter=lambda a, v: a.name.startswith("launch")))
    )
    assert plain == {
        "launch_command": ["/usr/bin/app", "--bg"],
        "launch_delay": 0.5,
        "launch_delay_max": 3600.0,
    }
    assert Configuration(**plain) == config
    assert hash(Configuration(**plain)) == hash(config)


def test_resume_data_max_age_is_positive_seconds_or_none() -> None:
    assert Configuration().resume_data_max_age == 7 * 24 * 3600
    assert Configuration(resume_data_max_age=None).resume_data_max_age is None
    with pytest.raises(ValueError, match="resume_data_max_age"):
        Configuration(resume_data_max_age=0)
    with pytest.raises(TypeError, match="resume_data_max_age"):
        Configuration(resume_data_max_age="7d")  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-1, ValueError), ("1", TypeError)])
def test_upload_reply_max_bytes_is_validated(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="upload_reply_max_bytes"):
        Configuration(upload_reply_max_bytes=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), ("1", TypeError), (True, TypeError)]
)
def test_fetch_max_bytes_is_validated(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="fetch_max_bytes"):
        Configuration(fetch_max_bytes=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, r"at least 1 \(None means no limit\), got 0"),
        (-100, ValueError, "at least 1"),
        (1.5e6, TypeError, "an int .bytes per second. or None, not float"),
        ("2M", TypeError, "not str"),
        (True, TypeError, "not bool"),
    ],
)
def test_max_bytes_per_second_is_validated(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"max_bytes_per_second must be .*{message}"):
        Configuration(max_bytes_per_second=value)  # type: ignore[arg-type]
    with pytest.raises(error, match="max_bytes_per_second"):
        Configuration().replace(max_bytes_per_second=value)
    assert Configuration(max_bytes_per_second=1).max_bytes_per_second == 1
