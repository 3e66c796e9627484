"""An upload's source file as ``upload()`` takes it: where it really is, and what.

On the loop, once per new upload: a few system calls, no more. The file is
opened without being read (``O_PATH`` on Linux: no open for reading, so a FIFO
cannot block and a device is not touched), its identity taken from that
descriptor, and its resolved path read back from the kernel
(``/proc/self/fd``), so the path and the identity are of one and the same file
(no link swapped between a resolution and a ``stat``). Elsewhere, or without
``/proc``, the path is resolved by ``os.path.realpath`` and then ``stat``-ed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .._core.upload import SourceIdentity
from .._exceptions import InvalidSourceError

__all__ = ["inspect_source"]

_O_PATH = getattr(os, "O_PATH", 0)  # Linux only; 0: resolve with realpath instead
_OPEN_FLAGS = _O_PATH | os.O_CLOEXEC
_FD_LINKS = "/proc/self/fd/"


def inspect_source(url: str, source: object) -> tuple[str, SourceIdentity]:
    """The source file of a new upload, absolute and resolved (as text), and its identity;
    :class:`InvalidSourceError` naming the URL, the path and the cause when it
    is not a readable regular file."""
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"file must be a str or os.PathLike, not {type(source).__name__}")
    text = os.fspath(source)
    if not isinstance(text, str):
        raise TypeError("file must be a str or an os.PathLike returning str, not bytes")
    if text.startswith("~"):
        text = os.path.expanduser(text)
    text = text or "."  # (as pathlib reads an empty path)
    try:
        resolved, st = _resolved(text)
    except FileNotFoundError:
        raise InvalidSourceError(f"{url}: file {_shown(text)!r} does not exist") from None
    except (OSError, ValueError) as exc:  # a link loop, a name too long, a NUL, no permission
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InvalidSourceError(f"{url}: file {_shown(text)!r} cannot be used: {reason}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise InvalidSourceError(f"{url}: file {_shown(text)!r} is {kind}")
    if not os.access(resolved, os.R_OK):
        raise InvalidSourceError(f"{url}: file {_shown(text)!r} cannot be read (permission denied)")
    identity = SourceIdentity(
        size=st.st_size, mtime_ns=st.st_mtime_ns, device=st.st_dev, inode=st.st_ino
    )
    return resolved, identity


def _resolved(text: str) -> tuple[str, os.stat_result]:
    """``text`` resolved (strictly: it must exist) and what ``stat`` says of it."""
    if _O_PATH:
        fd = os.open(text, _OPEN_FLAGS)
        try:
            st = os.fstat(fd)
            try:
                resolved = os.readlink(f"{_FD_LINKS}{fd}")
            except OSError:  # no /proc: resolve by name (below)
                resolved = ""
        finally:
            os.close(fd)
        # The kernel's name for the open file: absolute unless the file is not
        # reachable from this process's root, and marked when it was unlinked.
        if resolved.startswith("/") and not resolved.endswith(" (deleted)"):
            return resolved, st
    resolved = os.path.realpath(text, strict=True)
    return resolved, os.stat(resolved)


def _shown(text: str) -> str:
    """The path as the messages show it (as ``pathlib`` writes it)."""
    return str(Path(text))
