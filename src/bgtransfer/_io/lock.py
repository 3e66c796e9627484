"""One owner per identifier: an advisory ``flock`` on a lock file beside the journal.

``flock`` locks belong to an open file description, so a second ``Session`` in the
same process conflicts just like one in another process, and the kernel drops the
lock when its owner dies, even by SIGKILL: no stale lock to clean up, ever. The
owner writes its pid into the file so the loser can say who holds it. The lock
file is never deleted (deleting it would let two processes lock two different
files of the same name).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from .._exceptions import SessionInUseError
from .files import PRIVATE_FILE_MODE

__all__ = ["SessionLock"]


class SessionLock:
    """The exclusive claim on a session directory; :meth:`acquire` at once or raise."""

    def __init__(self, path: Path, identifier: str) -> None:
        self.path = path
        self.identifier = identifier
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting; :class:`SessionInUseError` names the owner."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SessionInUseError(self.identifier, _owner_pid(fd)) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (closing the file releases it); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _owner_pid(fd: int) -> int | None:
    """The pid the owner wrote. A new owner writes it just after locking, so the
    file may still name a dead predecessor for an instant: look again briefly, and
    name nobody rather than a dead process."""
    for _ in range(50):
        pid = _read_pid(fd)
        if pid is not None and _alive(pid):
            return pid
        time.sleep(0.002)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:  # a killed process not yet reaped (a zombie) holds no lock any more
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): take kill()'s word


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdecimal() else None
