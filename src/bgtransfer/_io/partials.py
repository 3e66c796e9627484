"""File-system work on partial files that the engine asks for in a worker thread.

Making room for a segmented download, looking at what a previous process left
(finishing an adoption it was killed in), adopting resume data's partial file,
and measuring a partial file: blocking calls, each run off the loop by the caller.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from .._core.journal import Phase, TaskEntry
from .._core.resume_data import InvalidResumeDataError
from .files import file_identity, private_opener, reserve_blocks

__all__ = ["adopt_partial", "inspect_partials", "partial_size", "preallocate", "sweep_partials"]

Identity = tuple[int, int, int, int]
"""What ``file_identity`` returns: enough to tell whether a file was replaced."""


def preallocate(path: Path, size: int) -> None:
    """Create the partial file anew (exclusively: an older one, or a link planted
    there, is unlinked first) and give it its final size, so every segment writes
    in place; reserve its blocks where the platform can (a disk
    that cannot hold it raises ``OSError``, the file removed)."""
    try:
        with open(path, "wb", opener=private_opener) as file:
            file.truncate(size)
            reserve_blocks(file.fileno(), 0, size)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def inspect_partials(
    entries: Sequence[TaskEntry], partials: Sequence[str]
) -> list[tuple[int | None, Identity | None]]:
    """(partial size or None, the destination's identity if it matters and exists)
    for each entry, after finishing any adoption a crash interrupted; in a worker
    thread."""
    facts: list[tuple[int | None, Identity | None]] = []
    for entry, partial in zip(entries, partials, strict=True):
        size: int | None = None
        if entry.adopting is not None and not os.path.exists(partial):
            # Killed between journaling a resumed task and its rename: do it now.
            with contextlib.suppress(FileNotFoundError):
                os.replace(entry.adopting, partial)
        # A live task with nothing vouched for starts from zero whatever is there:
        # no need to look (this keeps reopening 10,000 queued tasks quick).
        if entry.offset > 0 or entry.phase not in (Phase.RUNNING, Phase.SUSPENDED):
            try:
                size = os.stat(partial).st_size
            except FileNotFoundError:
                size = None
        destination = None
        if entry.phase is Phase.MOVING and size is None:
            with contextlib.suppress(OSError):  # unreadable: as good as missing
                destination = file_identity(entry.destination)
        facts.append((size, destination))
    return facts


def adopt_partial(source: Path, partial: Path, offset: int, url: str) -> None:
    """Move resume data's partial file (found by ``locate_partial``) to
    ``partial``; in a worker thread."""
    try:
        os.replace(source, partial)
    except FileNotFoundError:
        raise InvalidResumeDataError(
            f"{url}: the partial file {source} is gone "
            "(resumed already by another task, or deleted)"
        ) from None
    except OSError as exc:
        cause = "it is on another file system" if exc.errno == errno.EXDEV else exc.strerror
        raise InvalidResumeDataError(
            f"{url}: cannot take over the partial file {source}: {cause}"
        ) from exc
    size = partial.stat().st_size
    if size < offset:
        os.replace(partial, source)  # give it back untouched: nothing is lost
        raise InvalidResumeDataError(
            f"{url}: the partial file {source} holds {size} bytes, the resume data says {offset}"
        )


def partial_size(path: Path) -> int:
    """The partial file's size; 0 if it cannot be read (one stat, on the loop:
    called for failures only)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def sweep_partials(directory: Path, owned: set[str], older_than: float) -> list[str]:
    """Remove the partial files (``<n>.part``) of ``directory`` that no task owns
    and that were last written before ``older_than`` (a ``time.time()`` value);
    the names removed. Never follows a link and leaves anything that is not a
    regular partial file alone. In a worker thread."""
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if name in owned or not name.endswith(".part") or not name[:-5].isdigit():
            continue
        path = directory / name
        try:
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_mtime < older_than:
                path.unlink()
                removed.append(name)
        except OSError:
            continue  # gone meanwhile, or not ours to remove: the next open tries again
    return removed
