"""The file side of resume data: the state directory's secret key, and the
partial file a verified resume data names.

The key (``<state_dir>/.resume-data.key``, 32 random bytes, 0600) is what the
sessions of one state directory sign their resume data with (see
:mod:`bgtransfer._core.resume_data`). It is created exclusively and never read
through a link: whoever can plant a file there could otherwise choose the key.
Two processes creating it at once end up with the same key (a private temporary
file, then a hard link that does not replace).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Final

from .._core.resume_data import (
    EPHEMERAL_NOTE,
    KEY_SIZE,
    InvalidResumeDataError,
    ephemeral_partial,
)
from .._exceptions import SessionError
from .files import PRIVATE_FILE_MODE, fsync_dir

__all__ = ["KEY_NAME", "load_key", "locate_partial", "process_key"]

KEY_NAME: Final = ".resume-data.key"  # a dot: no session identifier can take the name
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK: Final = getattr(os, "O_NONBLOCK", 0)
_PARTIAL_NAME: Final = re.compile(r"[0-9]+\.part")

_process_key: bytes | None = None


def process_key() -> bytes:
    """A random key kept in memory for this process only: what an ephemeral
    session without a state directory signs with (its resume data, like its
    partial files, is good only while it lives)."""
    global _process_key  # noqa: PLW0603 - one key per process, made on first use
    if _process_key is None:
        _process_key = secrets.token_bytes(KEY_SIZE)
    return _process_key


def load_key(state_dir: Path) -> bytes:
    """The state directory's key, created on first use; :class:`SessionError` if
    the file there is not one this library made (a link, not a regular file, of
    another size)."""
    path = state_dir / KEY_NAME
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    _create_key(state_dir, path)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        # O_NONBLOCK: a FIFO planted there must not hang the session's opening.
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise
        if exc.errno == errno.ELOOP:
            raise _bad_key(path, "it is a symbolic link") from None
        raise SessionError(f"cannot read the resume data key {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _bad_key(path, "it is not a regular file")
        if info.st_size != KEY_SIZE:
            raise _bad_key(path, f"it holds {info.st_size} bytes, not {KEY_SIZE}")
        key = os.read(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_SIZE:
        raise _bad_key(path, f"it holds {len(key)} bytes, not {KEY_SIZE}")
    return key


def _bad_key(path: Path, problem: str) -> SessionError:
    return SessionError(
        f"the resume data key {path} is not usable: {problem}. Remove it (resume "
        "data handed out before will no longer be accepted) and open the session again"
    )


def _create_key(state_dir: Path, path: Path) -> None:
    """Write a new key under a private temporary name, then link it into place
    unless another process did first (its key wins; ours is dropped)."""
    temporary = state_dir / f"{KEY_NAME}.{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    fd = os.open(temporary, flags, PRIVATE_FILE_MODE)
    try:
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)
            os.write(fd, secrets.token_bytes(KEY_SIZE))  # 32 bytes: one write
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # never replaces what is there, link or file
        except FileExistsError:
            return  # another process made it first: use that one
        except OSError:  # a file system without hard links: an exclusive create
            _create_directly(path)
            return
        fsync_dir(state_dir)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _create_directly(path: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    try:
        fd = os.open(path, flags, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    try:
        os.write(fd, secrets.token_bytes(KEY_SIZE))
        os.fsync(fd)
    finally:
        os.close(fd)


def locate_partial(
    text: str, *, url: str, offset: int, partials_dir: Path, state_dir: Path | None
) -> Path:
    """The partial file verified resume data names, checked once more before it is
    taken over (belt and braces: the MAC already vouches for it).

    It must be a regular file (not a link) named like a partial file, directly in
    a ``partials/`` directory of a session of ``state_dir`` (or in
    ``partials_dir``, an ephemeral session's own), holding at least ``offset``
    bytes. Returns its path with the directories resolved. Raises
    :class:`InvalidResumeDataError` otherwise; nothing is touched."""
    path = Path(text)
    if not path.is_absolute() or _PARTIAL_NAME.fullmatch(path.name) is None:
        raise InvalidResumeDataError(f"{url}: {text!r} is not a partial file of a session")
    parent = Path(os.path.realpath(path.parent))
    inside = parent == Path(os.path.realpath(partials_dir)) or (
        state_dir is not None
        and parent.name == "partials"
        and parent.parent.parent == Path(os.path.realpath(state_dir))
    )
    if not inside and ephemeral_partial(text):
        if not os.path.isdir(parent):
            raise _closed(text, url)
        raise InvalidResumeDataError(
            f"{url}: the partial file {text} belongs to another ephemeral session; "
            f"{EPHEMERAL_NOTE}, and only in the session that made it"
        )
    if not inside:
        raise InvalidResumeDataError(
            f"{url}: the partial file {text} is not in a partials directory of this "
            "session's state directory"
        )
    real = parent / path.name
    try:
        info = os.lstat(real)
    except FileNotFoundError:
        if ephemeral_partial(text) and not os.path.isdir(parent):
            raise _closed(text, url) from None
        raise InvalidResumeDataError(
            f"{url}: the partial file {text} is gone (resumed already by another task, or deleted)"
        ) from None
    except OSError as exc:
        raise InvalidResumeDataError(
            f"{url}: cannot look at the partial file {text}: {exc.strerror}"
        ) from exc
    if not stat.S_ISREG(info.st_mode):
        raise InvalidResumeDataError(f"{url}: the partial file {text} is not a regular file")
    if info.st_size < offset:
        raise InvalidResumeDataError(
            f"{url}: the partial file {text} holds {info.st_size} bytes, "
            f"the resume data says {offset}"
        )
    return real


def _closed(text: str, url: str) -> InvalidResumeDataError:
    """The refusal of an ephemeral session's resume data once that session closed
    (it removed its ``partials/`` directory, and the partial file with it)."""
    return InvalidResumeDataError(
        f"{url}: the partial file {text} is gone: its ephemeral session has closed "
        f"(removing its partial files), and {EPHEMERAL_NOTE}"
    )
