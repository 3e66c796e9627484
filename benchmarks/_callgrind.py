"""What the callgrind counting scripts (``daemon_callgrind.py``,
``enqueue_callgrind.py``) share: reading a callgrind output's total."""

from __future__ import annotations

import re
from pathlib import Path


def total_instructions(out_file: Path) -> int:
    """The instructions (Ir) of one callgrind output file."""
    text = out_file.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no total in {out_file}")
    return int(found.group(1))
