"""Opening a journal, in a worker thread: create it whole or not at all, check
it (size, schema version, integrity), migrate it, load its entries and scrub
the secrets an earlier version stored. A file that is refused is left exactly
as it was.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import attrs

from .._core.codec import CodecError, decode_logged
from .._core.eventlog import EventLog
from .._core.events import LoggedEvent, is_terminal
from .._core.journal import (
    CorruptEntry,
    TaskEntry,
    entry_from_row,
    scrubbed_fields,
)
from .._core.secrets import DEFAULT_SECRETS, SecretHeaders
from .._core.terminations import (
    TERMINATION_COLUMNS,
    PendingTermination,
    termination_from_row,
)
from .._exceptions import JournalError
from .files import PRIVATE_FILE_MODE, fsync_dir, fsync_file
from .journal_commit import SELECT

__all__ = ["Opened", "open_sync"]

logger = logging.getLogger("bgtransfer")


@attrs.frozen(kw_only=True)
class Opened:
    """What opening a journal found."""

    connection: sqlite3.Connection
    entries: list[TaskEntry]
    next_id: int
    event_log: EventLog
    terminations: list[PendingTermination]


def open_sync(
    path: Path,
    fsync: bool,
    migrations: Sequence[Sequence[str]],
    secrets: SecretHeaders = DEFAULT_SECRETS,
    keep: int = 4096,
) -> Opened:
    """Open, check, migrate and load the journal; ``keep``: the event log's size
    (``Configuration.event_log_size``)."""
    where = str(path)
    try:
        _check_not_linked(path, where)
        if not path.exists():
            _create(path, migrations)
        else:
            _check_size(path, where)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise JournalError(where, f"cannot open it: {exc}") from exc
    except OSError as exc:
        raise JournalError(where, f"cannot open it: {exc.strerror or exc}") from exc
    try:
        entries, next_id, log = _load(connection, where, fsync, migrations, secrets, keep)
        terminations = _load_terminations(connection, where, secrets)
    except BaseException:
        connection.close()
        raise
    return Opened(
        connection=connection,
        entries=entries,
        next_id=next_id,
        event_log=log,
        terminations=terminations,
    )


def _load_terminations(
    connection: sqlite3.Connection, where: str, secrets: SecretHeaders
) -> list[PendingTermination]:
    """The terminations not sent yet (none in a journal opened with fewer
    migrations). A damaged row is dropped with a warning: it is a best-effort
    cleanup on a server, no reason to refuse the session."""
    try:
        if not connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'terminations'"
        ).fetchone():
            return []
        rows = connection.execute(
            f"SELECT rowid, {', '.join(TERMINATION_COLUMNS)} FROM terminations ORDER BY task_id"
        ).fetchall()
        found, damaged = [], []
        for rowid, *row in rows:
            try:
                found.append(termination_from_row(row, secrets))
            except ValueError as exc:
                logger.warning("journal %s: a damaged termination is dropped: %s", where, exc)
                damaged.append((rowid,))
        if damaged:
            connection.executemany("DELETE FROM terminations WHERE rowid = ?", damaged)
    except sqlite3.DatabaseError as exc:
        raise JournalError(where, f"not a readable journal database: {exc}") from exc
    return found


def _check_not_linked(path: Path, where: str) -> None:
    """The journal and SQLite's files beside it are regular files of their own.

    SQLite follows a symbolic link at any of them: a link planted there would make
    the session write its journal into the file it points to. The session's
    directory is private, so this is defence in depth, at the cost of three lstats
    per open."""
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", f"{path.name}-journal"):
        try:
            mode = os.lstat(path.parent / name).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise JournalError(
                where, f"{name} is {kind}; refusing to open it (nothing was changed or deleted)"
            )


def _check_size(path: Path, where: str) -> None:
    """An SQLite file is a whole number of pages; anything else was cut short.

    (SQLite itself reads a short last page as zeros and may not notice.)
    """
    size = path.stat().st_size
    if size == 0:
        raise JournalError(where, "the file is empty (truncated?); nothing was changed or deleted")
    with path.open("rb") as file:
        header = file.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return  # not SQLite at all: the open reports it
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size and size % page_size:
        raise JournalError(
            where,
            f"truncated: {size} bytes is not a whole number of {page_size}-byte pages; "
            "nothing was changed or deleted",
        )


def _load(  # noqa: PLR0917 - the open's settings, passed through from the loop
    connection: sqlite3.Connection,
    where: str,
    fsync: bool,
    migrations: Sequence[Sequence[str]],
    secrets: SecretHeaders = DEFAULT_SECRETS,
    keep: int = 4096,
) -> tuple[list[TaskEntry], int, EventLog]:
    newest = len(migrations)
    try:
        # Read-only checks first: a file that is refused is left exactly as it was
        # (switching to WAL would rewrite its header).
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > newest:
            raise JournalError(
                where,
                f"written by a newer bgtransfer (schema version {version}; this version "
                f"reads up to {newest}); upgrade bgtransfer to open it",
            )
        if version == 0:
            raise JournalError(where, "not a bgtransfer journal (no schema version)")
        problems = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise JournalError(where, f"the database is damaged: {'; '.join(problems[:3])}")
        connection.execute("PRAGMA journal_mode = WAL")
        _migrate(connection, where, version, migrations)
        connection.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
        # Checkpoints fsync: the writer runs them in its thread, never a commit on the loop.
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        rows = connection.execute(SELECT).fetchall()
        meta = connection.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
        logged = _load_log(connection)
    except sqlite3.DatabaseError as exc:
        raise JournalError(where, f"not a readable journal database: {exc}") from exc
    try:
        entries = [entry_from_row(row, secrets) for row in rows]
    except CorruptEntry as exc:
        raise JournalError(where, f"damaged task record: {exc}") from None
    _scrub(connection, where, rows, entries)
    if meta is None or not str(meta[0]).isdecimal():
        raise JournalError(where, "damaged: the next task id is missing")
    next_id = max(int(meta[0]), *(entry.id + 1 for entry in entries), 1)
    events, earliest = _decode_log(where, logged)
    entries = _numbered(entries, events)
    log = EventLog(events, earliest=earliest, keep=keep, held=(e.id for e in entries))
    return entries, next_id, log


_RawLog: TypeAlias = tuple[list[tuple[object, ...]], object]


def _load_log(connection: sqlite3.Connection) -> _RawLog:
    """The event log's rows and its floor (a journal opened with fewer
    migrations than today's has no log: empty)."""
    if not connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    ).fetchone():
        return [], None
    rows = connection.execute("SELECT seq, task_id, event FROM events ORDER BY seq").fetchall()
    floor = connection.execute("SELECT value FROM meta WHERE key = 'log_earliest'").fetchone()
    return rows, None if floor is None else floor[0]


def _decode_log(where: str, raw: _RawLog) -> tuple[list[LoggedEvent], int]:
    """The events, and the highest number trimmed: every number ever given is
    in the rows or at most that (it is stored with the deletions), so the next
    one is above both."""
    rows, floor = raw
    events: list[LoggedEvent] = []
    for seq, task_id, text in rows:
        try:
            events.append(_decode_logged_row(seq, task_id, text))
        except (CodecError, ValueError, RecursionError) as exc:
            raise JournalError(where, f"damaged event log entry {seq!r}: {exc}") from None
    if floor is not None and not str(floor).isdecimal():
        raise JournalError(where, "damaged: the event log's floor is not a number")
    return events, int(str(floor or 0))


def _decode_logged_row(seq: object, task_id: object, text: object) -> LoggedEvent:
    if not isinstance(seq, int) or not isinstance(task_id, int):
        raise CodecError("its number or task id is not an integer")
    if not isinstance(text, str):
        raise CodecError("not text")
    return decode_logged(task_id, seq, json.loads(text))


def _numbered(entries: list[TaskEntry], events: Sequence[LoggedEvent]) -> list[TaskEntry]:
    """The entries, each ended one's outcome carrying its number in the log (the
    row stores the event without it)."""
    ends = {event.task_id: event.seq for event in events if is_terminal(event)}
    numbered = []
    for entry in entries:
        outcome = entry.outcome
        seq = ends.get(entry.id)
        if outcome is not None and outcome.seq is None and seq is not None:
            numbered.append(attrs.evolve(entry, outcome=attrs.evolve(outcome, seq=seq)))
        else:
            numbered.append(entry)
    return numbered


def _scrub(
    connection: sqlite3.Connection,
    where: str,
    rows: Sequence[Sequence[object]],
    entries: Sequence[TaskEntry],
) -> None:
    """Rewrite the rows an earlier version wrote with a secret in them (a URL's
    password, a header now deemed secret), which reading dropped; with
    ``secure_delete`` and the WAL truncated, so the old bytes leave the files."""
    stale = []
    for row, entry in zip(rows, entries, strict=True):
        fields = scrubbed_fields(row, entry)
        if fields is not None:
            stale.append((*fields, entry.id))
    if not stale:
        return
    try:
        connection.execute("PRAGMA secure_delete = ON")
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("UPDATE tasks SET url = ?, headers = ? WHERE id = ?", stale)
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        connection.execute("PRAGMA secure_delete = OFF")
    except sqlite3.Error as exc:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise JournalError(
            where, f"cannot remove secrets an earlier version stored: {exc}"
        ) from exc


def _migrate(
    connection: sqlite3.Connection, where: str, version: int, migrations: Sequence[Sequence[str]]
) -> None:
    newest = len(migrations)
    if version >= newest:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version, newest):
            for statement in migrations[step]:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {newest}")
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        connection.execute("ROLLBACK")
        raise JournalError(
            where, f"migrating from schema {version} to {newest} failed: {exc}"
        ) from exc


def _create(path: Path, migrations: Sequence[Sequence[str]]) -> None:
    """A new journal appears whole or not at all: built beside, then renamed in."""
    building = path.with_name(path.name + ".new")
    for leftover in (building, building.with_name(building.name + "-journal")):
        leftover.unlink(missing_ok=True)
    fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    os.close(fd)
    connection = sqlite3.connect(building, isolation_level=None)
    try:
        _migrate(connection, str(path), 0, migrations)
    finally:
        connection.close()
    fsync_file(building)
    os.rename(building, path)
    fsync_dir(path.parent)
