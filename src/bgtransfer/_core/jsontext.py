"""JSON text the package wrote itself (the journal's columns), read back.

``json.loads`` wraps the C scanner in Python methods that match a whitespace
pattern before and after the value: for the short compact documents of a
journal row, the wrapper costs about as much as the scan (a 190-character
upload document: 3.7 us through ``json.loads``, 1.4 us scanned directly). A
reopened session reads one or two per task, for 10,000 tasks and more. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["loads"]

# The C scanner json.loads itself uses (set by JSONDecoder.__init__; typeshed
# does not declare the attribute).
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def loads(text: str) -> Any:
    """``json.loads(text)``, with its errors: compact text (nothing around the
    value, as ``json.dumps`` writes it) goes straight to the scanner, anything
    else (whitespace, garbage, nothing) through ``json.loads`` for its verdict."""
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError):  # not a value at 0: json.loads says why
        return json.loads(text)
    if end != len(text):  # whitespace or more after it
        return json.loads(text)
    return value
