"""Where a state directory's daemon listens, and the files beside it.

One daemon per state directory: its lock is ``<state_dir>/daemon.lock``, its
log ``<state_dir>/daemon.log``, its socket ``<state_dir>/daemon.sock``; for the
default state directory, ``$XDG_RUNTIME_DIR/bgtransfer/daemon.sock`` when that
variable is set. A Unix socket's path holds at most 107 bytes: a longer one is
replaced by ``<runtime dir>/<hash of the state dir>.sock``, the runtime dir being
``$XDG_RUNTIME_DIR/bgtransfer`` or ``/tmp/bgtransfer-<uid>``, a private
directory of this user (checked: never one somebody else made).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from .._exceptions import DaemonError
from .._io.files import make_private_dir

__all__ = ["SOCKET_PATH_MAX", "lock_path", "log_path", "socket_path"]

SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, with its NUL


def lock_path(state_dir: Path) -> Path:
    return state_dir / "daemon.lock"


def log_path(state_dir: Path) -> Path:
    return state_dir / "daemon.log"


def socket_path(state_dir: Path, *, default: bool = False) -> Path:
    """The socket of ``state_dir``'s daemon (``default``: it is the default state
    directory). Creates no file; :func:`runtime_dir` makes the directory."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if default and runtime:
        path = Path(runtime) / "bgtransfer" / "daemon.sock"
    else:
        path = state_dir / "daemon.sock"
    if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(state_dir.absolute())).hexdigest()[:24]
    return _short_dir() / f"{digest}.sock"


def _short_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "bgtransfer"
    return Path(tempfile.gettempdir()) / f"bgtransfer-{os.getuid()}"


def make_socket_dir(path: Path) -> None:
    """Create the socket's directory, private (0700) and this user's; refuse one
    that is not (somebody else could otherwise replace the socket)."""
    directory = path.parent
    try:
        make_private_dir(directory)
        info = os.lstat(directory)
    except OSError as exc:
        raise DaemonError(f"cannot make the daemon's socket directory {directory}: {exc}") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise DaemonError(f"the daemon's socket directory {directory} is not this user's")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise DaemonError(f"the daemon's socket directory {directory} is not private (0700)")
