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
import errno
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from .._exceptions import SessionError
from .files import PRIVATE_FILE_MODE

__all__ = ["SessionLock", "lock_held", "owner_pid"]


def _flock() -> Callable[[int], None]:
    """``flock(fd, LOCK_EX | LOCK_NB)``; imported when first used, so that
    ``import bgtransfer`` works where ``fcntl`` does not exist (Windows), and a
    background session there fails with a clear error instead."""
    try:
        import fcntl  # noqa: PLC0415 -- POSIX only
    except ImportError:
        raise SessionError(
            "background sessions lock their directory with flock(2), which this "
            "platform does not have (supported: Linux and macOS)"
        ) from None

    def flock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    return flock


class SessionLock:
    """The exclusive claim on a session directory: :meth:`try_acquire`, at once."""

    def __init__(self, path: Path, identifier: str) -> None:
        self.path = path
        self.identifier = identifier
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock without waiting: True, or False when another owner holds it
        (then :func:`owner_pid` says who). A few system calls, fine on the loop."""
        flock = _flock()
        fd = _open_lock_file(self.path)
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
            try:
                flock(fd)
            except BlockingIOError:
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock up (closing the file releases it); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _open_lock_file(path: Path) -> int:
    """The lock file, created if need be; never through a symbolic link, and only
    a regular file (a FIFO or a device planted there raises ``OSError``)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, PRIVATE_FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP, "the lock file is a symbolic link (not followed)", str(path)
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EEXIST, "the lock file is not a regular file", str(path))
    return fd


def lock_held(path: Path) -> bool:
    """Whether some process holds a ``flock`` on the file at ``path`` (never
    followed through a link; no file, no holder). The lock, not a pid written
    somewhere, says an owner runs: it goes with the process however it ends.
    POSIX only, as the daemon and the demo's detached server that ask it."""
    import fcntl  # noqa: PLC0415 -- POSIX only; import bgtransfer must work without it

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def owner_pid(path: Path) -> int | None:
    """The pid the owner of the lock file at ``path`` wrote. A new owner writes it
    just after locking, so the file may still name a dead predecessor for an
    instant: look again briefly (up to 0.1 s, so in a worker thread), and name
    nobody rather than a dead process."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for _ in range(50):
            pid = _read_pid(fd)
            if pid is not None and _alive(pid):
                return pid
            time.sleep(0.002)
    finally:
        os.close(fd)
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
