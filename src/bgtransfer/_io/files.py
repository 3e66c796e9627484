"""Local files: private directories, partial files, the atomic move into place.

Blocking calls run in a worker thread (``run_blocking``, or the file thread for
the write pipeline), never on the event loop, except cheap ``stat``-sized checks:
the destination's at submit, and its identity before a body's last step.

Nothing here follows a symbolic link where the library writes: every temporary
file is created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``), an existing
partial file is opened with ``O_NOFOLLOW``, a directory the library makes is
checked through a descriptor opened without following links, and a move into
place replaces only a regular file (:func:`check_replaceable`).

A partial file is private (0600) while it is in ``partials/``; the move into
place gives it the mode any new file gets under the process umask
(:func:`finished_file_mode`, 0644 under umask 022), set on the partial file
(through its descriptor) just before the rename, or on the copy before its
rename: the destination never shows another mode.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import secrets
import shutil
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .threads import run_blocking

__all__ = [
    "OUT_OF_SPACE",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "check_replaceable",
    "create_private",
    "file_identity",
    "finished_file_mode",
    "fsync_dir",
    "fsync_file",
    "make_private_dir",
    "move_into_place",
    "open_partial",
    "private_opener",
    "pwrite_all",
    "read_json",
    "remove_quietly",
    "reserve_blocks",
    "set_mode",
    "write_json",
]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
MAX_IOV = 1024  # IOV_MAX on Linux and the BSDs: buffers per pwritev call
RESERVE_MIN_BYTES = 1024 * 1024
"""Bodies at least this long get their disk blocks reserved before the first write."""

_FALLOC_FL_KEEP_SIZE = 1  # linux/falloc.h
OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""The errnos that mean the disk (or a quota, or a size limit) is full."""
_CREATE = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_SUFFIX = ".bgtransfer-tmp"
_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


_PROC_STATUS = "/proc/self/status"
_finished_mode: int | None = None  # read on first use (see finished_file_mode)
_finished_mode_lock = threading.Lock()


def finished_file_mode() -> int:
    """The mode of a finished file: what ``open(..., O_CREAT, 0o666)`` would give
    under the process umask (0644 under umask 022), as curl, wget and aria2c do.

    The umask is read once, on first use (the first finished file), and kept: a
    umask the application sets at start-up counts; one it changes later does not.
    Linux tells it in ``/proc/self/status``; elsewhere it can be read only by
    setting it, so it is swapped for 077 and back under a lock: a file another
    thread creates meanwhile is at worst more private than asked, never less.
    """
    mode = _finished_mode
    if mode is None:
        mode = _read_finished_mode()
    return mode


def _read_finished_mode() -> int:
    global _finished_mode  # noqa: PLW0603 - one reading per process, on first use
    with _finished_mode_lock:
        if _finished_mode is None:
            _finished_mode = 0o666 & ~_read_umask()
        return _finished_mode


def _read_umask() -> int:
    try:
        with open(_PROC_STATUS, "rb") as status:  # Linux 4.7 and later
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)  # the only portable way to read it (under the lock)
    os.umask(old)
    return old


def set_mode(path: Path | str, mode: int) -> None:
    """Give the regular file at ``path`` (never through a link: ``ELOOP``) ``mode``.

    ``OSError`` if it cannot be opened (``FileNotFoundError``: nothing there); a
    file system that refuses the change (some FAT or network mounts) is not an
    error, and the file keeps its mode."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _make_private_quietly(path: Path | str) -> None:
    """After a failed move: the partial file is private again (best effort)."""
    with contextlib.suppress(OSError):
        set_mode(path, PRIVATE_FILE_MODE)


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700 whatever the umask.

    ``path`` itself must be a directory of this process's user, not a symbolic
    link (``OSError`` otherwise): its mode is set through a descriptor opened
    without following links, never on whatever a link points to.
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise OSError(
                errno.ELOOP,
                "is a symbolic link; bgtransfer keeps its files only in a real directory",
                str(path),
            ) from None
        raise
    try:
        owner = os.fstat(fd).st_uid
        if owner != os.getuid():
            raise PermissionError(
                errno.EPERM,
                f"is owned by user {owner}, not by this process's user {os.getuid()}",
                str(path),
            )
        os.fchmod(fd, PRIVATE_DIR_MODE)
    finally:
        os.close(fd)
    return path


def create_private(path: Path | str, flags: int = os.O_WRONLY) -> int:
    """A new file at ``path``, 0600 whatever the umask, opened with ``flags``.

    Created exclusively and never through a symbolic link: whatever is at
    ``path`` already (an older file, a link planted there) is unlinked first,
    which removes a link, never its target. The usual case, nothing there
    under a umask that leaves the owner's bits alone (as read once, see
    :func:`finished_file_mode`), is one ``open`` and no ``fchmod``.
    """
    try:
        fd = os.open(path, flags | _CREATE, PRIVATE_FILE_MODE)
    except FileExistsError:
        os.unlink(path)
        fd = os.open(path, flags | _CREATE, PRIVATE_FILE_MODE)  # EEXIST again: a race; fail
    if finished_file_mode() & PRIVATE_FILE_MODE != PRIVATE_FILE_MODE:
        # The umask took some of the owner's bits (the usual ones, 022, 027 and
        # 077, leave them: then the file is 0600 already, with no fchmod).
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        except BaseException:
            os.close(fd)
            raise
    return fd


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` ("wb") that makes a new file the way
    :func:`create_private` does (``O_TRUNC`` is moot for a new file)."""
    return create_private(path, flags & ~(os.O_TRUNC | os.O_CREAT))


def check_replaceable(path: Path | str) -> os.stat_result | None:
    """What is at ``path`` (``lstat``), None if nothing; raises ``OSError``
    (``EEXIST``) when it is neither a regular file nor a directory (a device, a
    FIFO, a socket, a symbolic link): a move into place never replaces such a
    thing. (A rename over a directory fails by itself, ``EISDIR``.)"""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    mode = info.st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise not_regular_error(path, mode)
    return info


def not_regular_error(path: Path | str, mode: int) -> OSError:
    """The ``OSError`` for a destination that is there and not a regular file."""
    kind = next((name for test, name in _KINDS if test(mode)), "something")
    return OSError(
        errno.EEXIST,
        f"it is {kind}, not a regular file (bgtransfer replaces only regular files)",
        str(path),
    )


def file_identity(path: Path | str) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime in ns) of the file at ``path``; None if there
    is none; ``OSError`` if it is a device, a FIFO, a socket or a link
    (:func:`check_replaceable`).

    An ``lstat``, cheap enough for the event loop on a local disk. Two files
    that exist at the same time never share the first two, so a rename over a
    file changes them; the last two tell a later file in a reused inode apart.
    """
    info = check_replaceable(path)
    if info is None:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def open_partial(path: Path, *, offset: int, truncate: bool) -> int:
    """A partial file opened for writing at ``offset``, 0600; never through a link.

    Only a fresh body (``truncate`` at offset 0) creates the file, exclusively
    (:func:`create_private`: an older one is unlinked first): a resumed body or
    a segment needs the bytes already there. A resumed body (``truncate`` past
    0) cuts the file at ``offset``, since bytes past it were never confirmed; a
    segment (no ``truncate``) leaves it alone. A symbolic link where an existing
    partial file should be fails with ``ELOOP``.
    """
    if truncate and offset == 0:
        return create_private(path)
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if truncate:
            os.ftruncate(fd, offset)
    except BaseException:
        os.close(fd)
        raise
    return fd


def pwrite_all(fd: int, chunks: Sequence[bytes | bytearray | memoryview], offset: int) -> None:
    """Write every chunk, in order, at ``offset``; short writes are finished."""
    views: list[bytes | bytearray | memoryview] = [chunk for chunk in chunks if chunk]
    first = 0
    while first < len(views):
        done = os.pwritev(fd, views[first : first + MAX_IOV], offset)
        if done == 0:
            raise OSError(errno.EIO, "the file accepted no bytes")
        offset += done
        while first < len(views) and done >= len(views[first]):
            done -= len(views[first])
            first += 1
        if done:
            views[first] = memoryview(views[first])[done:]


def reserve_blocks(fd: int, offset: int, length: int) -> None:
    """Reserve the disk blocks for ``length`` bytes at ``offset``, keeping the file's size.

    Writes into reserved blocks skip the file system's allocation work, the file
    is less fragmented, and
    a disk that cannot hold the body says so before the first byte is fetched:
    ``OSError`` (``ENOSPC``, ``EDQUOT``, ``EFBIG``). The size stays that of the
    bytes written (``FALLOC_FL_KEEP_SIZE``), which reattaching relies on. Linux
    only (``fallocate(2)``; ``os.posix_fallocate`` would set the size); elsewhere,
    for short bodies, and on file systems that cannot, it does nothing.
    """
    if length < RESERVE_MIN_BYTES:
        return
    fallocate = _fallocate()
    if fallocate is None or fallocate(fd, _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return
    import ctypes  # noqa: PLC0415 - loaded by _fallocate already

    code = ctypes.get_errno()
    if code in OUT_OF_SPACE:
        raise OSError(code, os.strerror(code))
    # EOPNOTSUPP, EINVAL, ENOSYS...: the writes allocate as they go, as without.


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    if sys.platform != "linux":
        return None
    import ctypes  # noqa: PLC0415 - only large bodies on Linux need it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


def _move_sync(partial: Path, destination: Path, durable: bool, recovering: bool) -> None:
    check_replaceable(destination)
    mode = finished_file_mode()
    try:
        set_mode(partial, mode)  # the partial's directory is private: nobody sees it yet
        os.replace(partial, destination)
    except OSError as exc:
        _make_private_quietly(partial)
        if exc.errno != errno.EXDEV:
            raise
    else:
        if durable:
            fsync_dir(destination.parent)
        return
    # Another file system: copy next to the destination under a temporary name,
    # then rename there, so the destination is never seen half-written. The name
    # starts with a prefix fixed per (partial, destination) and ends with a
    # random token: nobody can plant a link where the copy will be (and it is
    # created exclusively anyway). A copy cut short by a crash (the task is
    # "moving" in the journal) is removed by the next process's move, by prefix.
    # (At most 40 characters of the name, so that the temporary name is a
    # possible one, at most 210 bytes, whenever the destination's is.)
    tag = hashlib.sha256(str(partial).encode()).hexdigest()[:16]
    prefix = f".{destination.name[:40]}.{tag}."
    if recovering:
        _remove_copies(destination.parent, prefix)
        if _same_content(partial, destination):
            # A crash came after the copy was renamed into place, before the
            # partial was removed: the file is there already; do not write it again.
            partial.unlink(missing_ok=True)
            return
    tmp = destination.parent / f"{prefix}{secrets.token_hex(8)}{_COPY_SUFFIX}"
    try:
        with (
            open(tmp, "wb", opener=private_opener) as out,
            open(partial, "rb", opener=_nofollow_opener) as src,
        ):
            shutil.copyfileobj(src, out, 1024 * 1024)
            with contextlib.suppress(OSError):  # (a file system that cannot: as is)
                os.fchmod(out.fileno(), mode)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        check_replaceable(destination)  # again: the copy took a while
        os.replace(tmp, destination)
        if durable:
            fsync_dir(destination.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    partial.unlink(missing_ok=True)


def _nofollow_opener(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _remove_copies(directory: Path, prefix: str) -> None:
    """Unlink the regular files in ``directory`` named ``prefix...bgtransfer-tmp``:
    copies of this partial file that a crash cut short. Anything else by that
    name (a link, a directory) is left alone, and no link is ever followed."""
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            name = entry.name
            if (
                name.startswith(prefix)
                and name.endswith(_COPY_SUFFIX)
                and entry.is_file(follow_symlinks=False)
            ):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _same_content(a: Path, b: Path) -> bool:
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as first, b.open("rb") as second:
            while True:
                chunk = first.read(1024 * 1024)
                if chunk != second.read(1024 * 1024):
                    return False
                if not chunk:
                    return True
    except FileNotFoundError:
        return False


async def move_into_place(
    partial: Path, destination: Path, *, durable: bool = False, recovering: bool = False
) -> None:
    """Move a finished partial file to ``destination`` atomically.

    Same file system: one ``os.replace``. Another file system: a copy to a
    temporary file beside the destination and a rename there. Either way the
    destination holds the old file or the whole new one, never a partial one.
    ``durable`` also fsyncs the copy (if any) and the destination's directory, so
    the rename survives a power loss (the partial's data is synced by the caller).
    ``recovering`` (a move a crash interrupted): on another file system, a
    destination already identical to the partial is left as it is. The file
    gets :func:`finished_file_mode` on the way (a failed move leaves the partial
    file private).
    """
    await run_blocking(_move_sync, partial, destination, durable, recovering)


def fsync_file(path: Path) -> None:
    """Flush a file's data to stable storage (no-op if it is gone, or a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return  # not a file the library wrote: nothing of ours to sync
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable; best effort."""
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


async def remove_quietly(*paths: Path) -> None:
    """Delete each of ``paths`` that exists, in one thread hop (none for none);
    errors are ignored (best-effort cleanup)."""
    # run_blocking waits shielded: once asked, it happens, even when the session
    # is going down.
    if paths:
        await run_blocking(_unlink_all, paths)


def _unlink_all(paths: Sequence[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def write_json(path: Path, value: object) -> None:
    """Replace the JSON file at ``path`` with ``value``, atomically (a private
    temporary file renamed over it). Blocking: call it in a worker thread."""
    temporary = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(value, file, separators=(",", ":"))
    os.replace(temporary, path)


def read_json(path: Path) -> object | None:
    """The JSON value :func:`write_json` left at ``path``; None when there is
    none; :class:`ValueError` when it is not JSON. Blocking."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        value: object = json.loads(data.decode("utf-8"))
    except ValueError as exc:  # (UnicodeDecodeError and JSONDecodeError both)
        raise ValueError(f"{str(path)!r} is not JSON: {exc}") from None
    return value
