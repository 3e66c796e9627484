"""What the file system says about a destination, for the engine's admission.

Quick metadata calls made on the loop, once per new task (a batch asks once per
directory): what is at a path, whether a directory exists, where a directory
really is; and what the platform's separators make of a destination's text.
Admission turns the answers into its decisions and errors.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["exists_or_link", "is_directory", "lstat_mode", "names_a_directory", "resolve"]

# ``dir/`` and ``dir/.``, with each separator of the platform.
_DIRECTORY_ENDINGS = tuple(
    ending for sep in (os.sep, os.altsep) if sep is not None for ending in (sep, sep + ".")
)


def names_a_directory(text: str) -> bool:
    """``text`` ends in a path separator (or in one and ``.``): it can only name a
    directory, though ``Path(text)`` drops the separator and looks like a file."""
    return text.endswith(_DIRECTORY_ENDINGS)


def lstat_mode(path: Path) -> int | None:
    """The mode of what is at ``path`` (a symbolic link itself, not its target);
    None when nothing is there, or nothing reachable. A name too long for a file
    path raises ``OSError`` (``ENAMETOOLONG``)."""
    try:
        return os.lstat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise
        return None


def is_directory(path: str | Path) -> bool:
    """A directory is there (a symbolic link to one counts)."""
    return os.path.isdir(path)


def exists_or_link(path: Path) -> bool:
    """Something is there, a dangling symbolic link included."""
    return os.path.lexists(path)


def resolve(path: Path) -> Path:
    """The absolute path with every symbolic link followed."""
    return path.resolve()
