"""The files served, and the check that a run's output is exactly them.

Every file is fresh random bytes (``os.urandom``), so no two 1 MiB blocks are
alike: a client that writes a range at the wrong offset, drops or repeats a
chunk, or saves a truncated body cannot produce the right SHA-256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from _model import SourceFile

__all__ = ["SourceStore", "verify_output"]

_BLOCK = 4 * 1024 * 1024


class SourceStore:
    """Creates each served file once (under ``root``) and remembers its digest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, SourceFile] = {}

    def file(self, name: str, size: int) -> SourceFile:
        """The file ``name`` of ``size`` random bytes, created on first use."""
        known = self._files.get(name)
        if known is not None:
            if known.size != size:
                raise ValueError(f"{name} exists with {known.size} bytes, not {size}")
            return known
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with path.open("wb") as out:
            left = size
            while left:
                block = os.urandom(min(left, _BLOCK))
                digest.update(block)
                out.write(block)
                left -= len(block)
        source = SourceFile(name=name, size=size, sha256=digest.hexdigest())
        self._files[name] = source
        return source


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def verify_output(out: Path, expected: tuple[SourceFile, ...]) -> str | None:
    """None when ``out`` holds exactly the expected files, byte for byte; else what is wrong."""
    wanted = {Path(file.name).name: file for file in expected}
    present = {entry.name for entry in os.scandir(out)}
    missing = sorted(set(wanted) - present)
    extra = sorted(present - set(wanted))
    if missing:
        return f"{len(missing)} file(s) missing, e.g. {missing[0]}"
    if extra:
        return f"{len(extra)} unexpected file(s) in the output, e.g. {extra[0]}"
    for name, file in wanted.items():
        path = out / name
        size = path.stat().st_size
        if size != file.size:
            return f"{name}: {size} bytes, expected {file.size}"
        if _sha256(path) != file.sha256:
            return f"{name}: SHA-256 differs from the source"
    return None
