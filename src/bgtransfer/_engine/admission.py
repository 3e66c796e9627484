"""Admission: requests become validated task records, their destinations checked.

What a new task must pass before the engine queues it: its URL parsed, its
segment count in range, its destination resolved to an absolute path that no
other live task claims, outside the state directory (but for the session's
``downloads/``), and one a file can be written to. The engine asks; this keeps
what the answers need (the live tasks' claims, the directories resolved so far).
"""

from __future__ import annotations

import functools
import inspect
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from .._core.config import Configuration, HeaderPairs, HeadersProvider, normalize_headers
from .._core.digests import Integrity
from .._core.naming import Origin, filename_from_url, parse_url, unique_name
from .._core.secrets import SecretHeaders
from .._core.segments import MAX_SEGMENTS
from .._exceptions import InvalidDestinationError, TransferError
from .._io.files import not_regular_error
from .._io.paths import exists_or_link, is_directory, lstat_mode, names_a_directory, resolve
from .download_job import DownloadJob
from .record import TaskRecord

__all__ = ["Admission", "Request", "check_segments", "merge_headers", "provided_headers"]

_FORCED_HEADERS = {"Accept-Encoding": "identity"}  # offsets on disk = offsets of the representation

Request = tuple[
    object,
    "str | os.PathLike[str] | None",
    "str | None",
    HeaderPairs,
    "int | None",
    "Integrity | None",
]
"""One :meth:`Engine.submit_many` request: url, destination, description, headers,
segments, integrity."""


class Admission:
    """Validates requests into records for one engine; holds the destinations of
    its live tasks (``claims``, by path as text: the engine adds and frees them)."""

    def __init__(
        self,
        *,
        config: Configuration,
        downloads_dir: Path,
        partials_dir: Path,
        state_dir: Path | None,
        secrets: SecretHeaders,
    ) -> None:
        self.config = config
        self._downloads_dir = downloads_dir
        self._partials_dir = partials_dir
        self._secrets = secrets
        # No destination inside the state directory (journals, locks, partial
        # files), except in this session's downloads/: resolved once, then each
        # new destination directory is compared as text.
        self._state_dir = None if state_dir is None else str(resolve(state_dir))
        self._allowed_dir = str(resolve(downloads_dir))
        self.claims: dict[str, int] = {}  # destinations of live tasks (as text)
        self._resolved_dirs: dict[str, tuple[Path, str]] = {}
        self.origins: dict[str, Origin] = {}  # by scheme and authority (parse_url's cache)
        self._merged_headers: dict[HeaderPairs, Mapping[str, str]] = {}

    def prepare(
        self, task_id: int, request: Request, *, checked_dirs: dict[str, tuple[Path, str]]
    ) -> TaskRecord:
        """A record for ``request``, validated; not claimed or queued yet."""
        url, destination, description, headers, segments, integrity = request
        wanted = self.config.segments if segments is None else check_segments(segments)
        url, origin = parse_url(url, self.origins)
        record = self.new_record(
            task_id=task_id,
            url=url,
            origin=origin,
            destination=self.resolve_destination(url, destination, checked_dirs),
            description=description,
            headers=headers,
            integrity=integrity,
        )
        record.segments_wanted = wanted
        return record

    def new_record(
        self,
        *,
        task_id: int,
        url: str,
        origin: Origin,
        destination: Path,
        description: str | None,
        headers: HeaderPairs,
        offset: int = 0,
        validator: str | None = None,
        total: int | None = None,
        encoding: str = "identity",
        partial: Path | None = None,
        integrity: Integrity | None = None,
    ) -> TaskRecord:
        job = functools.partial(
            DownloadJob,
            partial=partial,
            partials_dir=self._partials_dir,
            offset=offset,
            validator=validator,
            total=total,
            encoding=encoding,
            integrity=integrity,
        )
        return TaskRecord(
            task_id=task_id,
            url=url,
            origin=origin,
            destination=destination,
            description=description,
            headers=self.merged_headers(headers),
            request_headers=headers,
            progress_interval=self.config.progress_interval,
            job=job,
            secrets=self._secrets,
            offset=offset,
            total=total,
        )

    def merged_headers(self, headers: HeaderPairs) -> Mapping[str, str]:
        """What a task with ``headers`` sends: the session's merged with its own
        (:func:`merge_headers`), read-only and shared by the tasks that ask the
        same (most ask none)."""
        merged = self._merged_headers.get(headers)
        if merged is None:
            merged = MappingProxyType(merge_headers(self.config.headers, headers))
            if len(self._merged_headers) >= 1024:
                self._merged_headers.clear()
            self._merged_headers[headers] = merged
        return merged

    def resolve_destination(
        self,
        url: str,
        destination: str | os.PathLike[str] | None,
        checked_dirs: dict[str, tuple[Path, str]],
    ) -> Path:
        """The absolute target path; raises at the call when it cannot work.

        No destination, or an existing directory: a name from the URL, made unique
        against existing files and other live tasks (``name (1).ext``). A ``str``
        ending in a path separator (or ``/.``) names a directory that must exist;
        it is never taken for a file. A file path:
        its directory must exist and no other live task may target it; an existing
        regular file there is replaced when the download finishes, anything else
        (a device, a FIFO, a socket, a symbolic link) is refused. Nothing may go
        inside the state directory but into this session's ``downloads/``.
        ``checked_dirs``: the directories this call found (and resolved) already,
        by their text; a batch checks each once.
        """
        if destination is None:
            return self._unique_in(self._downloads_dir, filename_from_url(url))
        if not isinstance(destination, str | os.PathLike):
            raise TypeError(
                f"destination must be a str or os.PathLike, not {type(destination).__name__}"
            )
        path = destination if isinstance(destination, Path) else Path(destination)
        text = str(path)
        self._check_text(url, destination if isinstance(destination, str) else text)
        if text.startswith("~"):
            path = path.expanduser()
            text = str(path)
        if isinstance(destination, str) and names_a_directory(destination):
            if not is_directory(path):
                problem = "is not a directory" if exists_or_link(path) else "does not exist"
                raise InvalidDestinationError(
                    f"{url}: destination directory {str(path)!r} {problem} "
                    f"(a destination ending in {destination[-1]!r} names a directory)"
                )
            return self._unique_in(self._resolved_dir(url, text)[0], filename_from_url(url))
        try:
            # None: nothing there (or nothing reachable): the directory decides
            mode = lstat_mode(path)
        except OSError:  # ENAMETOOLONG
            raise InvalidDestinationError(
                f"{url}: destination {str(path)!r}: the name is too long for a file path"
            ) from None
        if mode is not None and not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode) or (stat.S_ISLNK(mode) and is_directory(path)):
                return self._unique_in(self._resolved_dir(url, text)[0], filename_from_url(url))
            raise InvalidDestinationError(
                f"{url}: destination {str(path)!r}: {_strerror(path, mode)}"
            )
        return self._file_target(url, path, text, checked_dirs)

    def _file_target(
        self, url: str, path: Path, text: str, checked_dirs: dict[str, tuple[Path, str]]
    ) -> Path:
        """The target of a destination naming a file (``text``: ``str(path)``)."""
        # The directory by its text: a Path's parent, hash and comparison each run
        # Python code, and this runs for every new task (a path's str is normal:
        # no empty, "." or trailing separator part, so the last one splits it).
        parent, sep, name = text.rpartition(os.sep)
        if not sep:
            parent = "."
        elif not parent:
            parent = sep  # (just below the root)
        directory = checked_dirs.get(parent)
        if directory is None:
            if not is_directory(parent):
                raise InvalidDestinationError(
                    f"{url}: destination directory {parent!r} does not exist"
                )
            directory = checked_dirs[parent] = self._resolved_dir(url, parent)
        # Usually the directory was absolute and free of links already: then the
        # path is the target as it is (no new path to build and format).
        if directory[1] == parent:
            target, key = path, text
        else:
            target = directory[0] / name
            key = str(target)
        owner = self.claims.get(key)
        if owner is not None:
            raise InvalidDestinationError(
                f"{url}: destination {key!r} is already claimed by task {owner}"
            )
        return target

    def _check_text(self, url: str, text: str) -> None:
        """Refuse a destination no file path can be: empty, a NUL byte, characters
        the file system's encoding cannot hold (a lone surrogate that is not an
        undecodable byte, as ``os.fsdecode`` makes them)."""
        problem = None
        if not text:
            problem = "is empty (use None for the session's downloads/ folder, '.' for here)"
        elif "\0" in text:
            problem = "contains a NUL byte"
        elif not text.isascii():  # (ASCII encodes in every file system encoding)
            try:
                # The journal stores any str losslessly; the file system needs bytes.
                os.fsencode(text)
            except UnicodeEncodeError as exc:
                problem = f"cannot be encoded as a file name ({exc.reason})"
        if problem is not None:
            raise InvalidDestinationError(f"{url}: destination {text!r} {problem}")

    def _resolved_dir(self, url: str, directory: str) -> tuple[Path, str]:
        """The directory named ``directory`` resolved (as a path and as text),
        remembered (many tasks share a few directories), once checked to be
        outside the state directory (but for ``downloads/``)."""
        resolved = self._resolved_dirs.get(directory)
        if resolved is None:
            path = resolve(Path(directory))
            resolved = path, str(path)
            self._check_outside_state_dir(url, directory, resolved[1])
            if len(self._resolved_dirs) >= 1024:
                self._resolved_dirs.clear()
            self._resolved_dirs[directory] = resolved
        return resolved

    def _check_outside_state_dir(self, url: str, given: str, resolved: str) -> None:
        state_dir, allowed = self._state_dir, self._allowed_dir
        if state_dir is None or not _within(resolved, state_dir) or _within(resolved, allowed):
            return
        raise InvalidDestinationError(
            f"{url}: destination {given!r} is inside the session's state directory "
            f"{state_dir!r}, where its journal, lock and partial files live; choose a path "
            f"outside it (or the session's downloads folder, {allowed!r})"
        )

    def _unique_in(self, directory: Path, name: str) -> Path:
        def taken(candidate: str) -> bool:
            path = directory / candidate
            return str(path) in self.claims or exists_or_link(path)

        return directory / unique_name(name, taken)


def _within(path: str, directory: str) -> bool:
    """``path`` is ``directory`` or below it (both resolved, as text)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _strerror(path: Path, mode: int) -> str:
    return not_regular_error(path, mode).strerror or "not a regular file"


def check_segments(segments: object) -> int:
    if isinstance(segments, bool) or not isinstance(segments, int):
        raise TypeError(f"segments must be an int, not {type(segments).__name__}")
    if not 1 <= segments <= MAX_SEGMENTS:
        raise ValueError(f"segments must be between 1 and {MAX_SEGMENTS}, got {segments}")
    return segments


def merge_headers(defaults: HeaderPairs, overrides: HeaderPairs) -> dict[str, str]:
    merged: dict[str, tuple[str, str]] = {}
    for name, value in (*defaults, *overrides, *_FORCED_HEADERS.items()):
        merged[name.lower()] = (name, value)
    return dict(merged.values())


async def provided_headers(
    provider: HeadersProvider | None, url: str, headers: Mapping[str, str]
) -> dict[str, str]:
    """``headers``, with those of ``Configuration.headers_provider`` (if any),
    asked for ``url``, merged over them by name; a provider that fails fails
    the attempt (a :class:`~bgtransfer.TransferError` naming the URL)."""
    if provider is None:
        return dict(headers)
    try:
        result = provider(url)
        if inspect.isawaitable(result):
            result = await result
        extra = normalize_headers(result)
    except Exception as exc:
        raise TransferError(f"headers_provider failed: {exc!r}", url=url) from exc
    return merge_headers(tuple(headers.items()), extra)
