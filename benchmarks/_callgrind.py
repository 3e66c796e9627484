"""What the callgrind counting scripts (``daemon_callgrind.py``,
``enqueue_callgrind.py``) share: reading a callgrind output's total, and
printing the counts with the cost of one more unit."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path


def total_instructions(out_file: Path) -> int:
    """The instructions (Ir) of one callgrind output file."""
    text = out_file.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no total in {out_file}")
    return int(found.group(1))


def print_per_unit(
    counts: Sequence[dict[str, int]], unit: str, sides: Sequence[str], **labels: str
) -> None:
    """Each count as a JSON line, then the difference of the two counts over
    the difference of their sizes (``counts[i][unit + "s"]``), per side counted
    (``per_<unit>_<side>``), with ``labels``."""
    for one in counts:
        print(json.dumps(one))
    low, high = counts
    extra = high[unit + "s"] - low[unit + "s"]
    per_unit = {
        f"per_{unit}_{side}": round((high[side] - low[side]) / extra)
        for side in sides
        if side in low
    }
    print(json.dumps({**per_unit, **labels}))
