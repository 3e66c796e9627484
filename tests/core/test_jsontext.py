"""``jsontext.loads``: the same values and the same errors as ``json.loads``."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bgtransfer._core import jsontext

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def _outcome(text: str) -> object:
    """json.loads's value, or its error's type and message."""
    try:
        return ("value", json.loads(text))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc), str(exc))


def _ours(text: str) -> object:
    try:
        return ("value", jsontext.loads(text))
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc), str(exc))


@given(VALUES)
def test_what_json_dumps_writes_reads_back_the_same(value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, separators=(",", ":"))):
        assert _ours(text) == _outcome(text)


@given(st.text(max_size=40))
def test_any_text_gives_json_loads_value_or_error(text: str) -> None:
    assert _ours(text) == _outcome(text)


@pytest.mark.parametrize(
    "text",
    ["", " ", "[]", " [] ", "[1] ", "\n{}", "[1] x", "[1", "nul", '{"a":}', "NaN", "1e999"],
)
def test_edges_as_json_loads(text: str) -> None:
    assert _ours(text) == _outcome(text)


def test_absurd_nesting_is_a_recursion_error_as_in_json_loads() -> None:
    with pytest.raises(RecursionError):
        jsontext.loads("[" * 100_000)
