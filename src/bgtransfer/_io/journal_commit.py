"""The journal's writes: one batch of entries and deletions, committed in as few
statements as it allows, and a batch that fails for one row's sake committed
again one entry at a time. Run on the loop (small commits without fsync) or in
a worker thread; see :mod:`.journal` for when.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import attrs

from .._core.journal import COLUMNS, TaskEntry, entry_to_row
from .._core.terminations import TERMINATION_COLUMNS, PendingTermination, termination_to_row
from .files import fsync_file

__all__ = ["MULTI_ROW_MAX", "Batch", "close_all", "commit_sync", "upsert_one"]

MULTI_ROW_MAX = 16
"""Entries up to this many are committed by one ``INSERT`` listing them all."""

DEFERRED_DELAY = 0.005
"""Seconds a ``deferred`` entry may wait for another commit to take it along."""


def _upsert(rows: int, nulls: tuple[bool, ...] = (False,) * len(COLUMNS)) -> str:
    """The upsert of ``rows`` entries; the columns ``nulls`` marks are written as
    ``NULL`` in the statement rather than bound."""
    row = f"({', '.join('NULL' if null else '?' for null in nulls)})"
    return (
        f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES {', '.join([row] * rows)} "
        "ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{name} = excluded.{name}" for name in COLUMNS[1:])
    )


# Binding None costs CPython's sqlite3 (3.11) a failed attribute lookup and its
# AttributeError per value (``__adapt__``, ``__conform__``): about 3,000 instructions
# each, 30,000 for a new task's row with its nine empty columns, more than the
# rest of the statement. Rows of one shape (the usual batch) name their NULLs in
# the statement instead; the statements are few (new downloads, new uploads, a
# task that got its length...) and SQLite's statement cache keeps them parsed.
_upsert_of_shape = functools.lru_cache(maxsize=256)(_upsert)


UPSERTS = tuple(_upsert(rows) for rows in range(1, MULTI_ROW_MAX + 1))
"""``UPSERTS[n - 1]`` writes n entries (SQLite's statement cache keeps them parsed)."""
_UPSERT = UPSERTS[0]
_DELETE = "DELETE FROM tasks WHERE id = ?"
LOG_INSERTS = tuple(
    "INSERT INTO events (seq, task_id, event) VALUES " + ", ".join(["(?, ?, ?)"] * rows)
    for rows in range(1, MULTI_ROW_MAX + 1)
)
"""``LOG_INSERTS[n - 1]`` appends n events to the event log."""
_TRIM = "DELETE FROM events WHERE seq = ?"
_EARLIEST = "UPDATE meta SET value = ? WHERE key = 'log_earliest'"
_NEXT_ID = "UPDATE meta SET value = ? WHERE key = 'next_id'"
SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks ORDER BY id"
_PUT_TERMINATION = (
    f"INSERT OR REPLACE INTO terminations ({', '.join(TERMINATION_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in TERMINATION_COLUMNS)})"
)
_DROP_TERMINATION = "DELETE FROM terminations WHERE task_id = ?"


def close_all(checkpointer: sqlite3.Connection | None, connection: sqlite3.Connection) -> None:
    if checkpointer is not None:
        checkpointer.close()
    connection.close()  # the last one out checkpoints and removes the WAL


@attrs.frozen(kw_only=True)
class Batch:
    entries: list[TaskEntry]
    forgotten: list[int]
    files: list[Path]  # durability="fsync": partial files to sync first
    generation: int
    next_id: int | None  # None: the database has it already
    logged: list[tuple[int, int, str]] = attrs.field(factory=list)
    """Events for the event log: (seq, task id, JSON), in number order."""
    trimmed: list[int] = attrs.field(factory=list)  # event numbers retention dropped
    earliest: int = 0  # the event log's floor, stored when ``trimmed``
    terminations: list[tuple[int, PendingTermination | None]] = attrs.field(factory=list)
    """Terminations to record (or, None, to delete), by task id."""
    rejected: list[tuple[int, Exception]] = attrs.field(factory=list)
    """Filled by the commit: the entries that could not be stored, and why."""


def _journal_failed(exc: Exception) -> bool:
    """Whether a commit's error is the journal's (its file, its disk, its schema)
    rather than one row's (a value that cannot be bound or stored, a bug
    encoding it: ``ValueError``, ``TypeError``, ``OverflowError``, SQLite's
    ``ProgrammingError``, ``DataError`` and ``InterfaceError``)."""
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.DataError):
        return False
    return isinstance(exc, OSError | sqlite3.DatabaseError)


def commit_sync(connection: sqlite3.Connection, batch: Batch) -> None:
    """Commit the batch; when a row is the problem, commit it one entry at a
    time (:func:`_commit_each`). Raises when the journal itself fails."""
    try:
        _commit_all(connection, batch)
    except Exception as exc:
        if _journal_failed(exc):
            raise
        _commit_each(connection, batch)


def upsert_one(connection: sqlite3.Connection, entry: TaskEntry) -> None:
    """One entry and nothing else, its own transaction: the commit a new task
    waits for (``download()``), without a :class:`Batch` and its lists. Raises
    whatever the statement raises; the caller commits it as a batch then, which
    tells a row's problem from the journal's (:func:`commit_sync`)."""
    row = entry_to_row(entry)
    connection.execute(
        _upsert_of_shape(1, tuple([value is None for value in row])),
        [value for value in row if value is not None],
    )


def _commit_each(connection: sqlite3.Connection, batch: Batch) -> None:
    """The batch after it failed for a row's sake (rolled back, nothing of it
    kept): each entry in a transaction of its own, so one that cannot be stored
    is named in ``batch.rejected`` and takes no other with it."""
    for entry in batch.entries:
        try:
            connection.execute(_UPSERT, entry_to_row(entry))
        except Exception as exc:
            if _journal_failed(exc):
                raise
            batch.rejected.append((entry.id, exc))
    if batch.forgotten or batch.logged or batch.trimmed or batch.terminations:
        _commit_all(connection, attrs.evolve(batch, entries=[], files=[]))


def _commit_all(connection: sqlite3.Connection, batch: Batch) -> None:
    """One transaction, in as few statements as the batch allows: each costs the
    loop's time in a busy process (and releases and retakes the GIL, a wait
    when the file thread holds it). A batch of a few entries and no deletions,
    the usual commit that a caller waits for, is one ``INSERT`` and so its own
    transaction. ``next_id`` is stored when rows are deleted and it changed:
    while a task's row exists it bounds the ids by itself (ids never repeat
    either way). Events for the log go in the same transaction as the entries
    put with them (a task's end and its terminal event are durable together):
    a batch holding both is ``BEGIN``, two ``INSERT``s and ``COMMIT``."""
    for path in batch.files:  # durability="fsync": the bytes before the entries that count them
        fsync_file(path)
    rows = [entry_to_row(entry) for entry in batch.entries]
    ids, logged = batch.forgotten, batch.logged
    simple = (
        not ids
        and not batch.trimmed
        and not batch.terminations
        and len(rows) <= MULTI_ROW_MAX >= len(logged)
    )
    if simple and not (rows and logged):  # one statement: its own transaction
        _upsert_rows(connection, rows)
        _insert(connection, LOG_INSERTS, LOG_INSERTS[0], logged)
        return
    connection.execute("BEGIN")
    try:
        _upsert_rows(connection, rows)
        _insert(connection, LOG_INSERTS, LOG_INSERTS[0], logged)
        if batch.trimmed:
            connection.executemany(_TRIM, [(seq,) for seq in batch.trimmed])
            connection.execute(_EARLIEST, (str(batch.earliest),))
        if ids:
            connection.executemany(_DELETE, [(task_id,) for task_id in ids])
            if batch.next_id is not None:
                connection.execute(_NEXT_ID, (str(batch.next_id),))
        for task_id, pending in batch.terminations:
            if pending is None:
                connection.execute(_DROP_TERMINATION, (task_id,))
            else:
                connection.execute(_PUT_TERMINATION, termination_to_row(pending))
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _upsert_rows(connection: sqlite3.Connection, rows: Sequence[Sequence[object]]) -> None:
    """The entries' rows: in one statement when there are at most
    :data:`MULTI_ROW_MAX` (as :func:`_insert`), their NULLs written in the statement
    when they all have the same ones; more rows (only ever in a transaction), in
    one ``executemany`` per shape."""
    if not rows:
        return
    shapes: dict[tuple[bool, ...], list[list[object]]] = {}
    for row in rows:
        nulls = tuple([value is None for value in row])
        shapes.setdefault(nulls, []).append([value for value in row if value is not None])
    if len(rows) > MULTI_ROW_MAX:
        for nulls, values in shapes.items():
            connection.executemany(_upsert_of_shape(1, nulls), values)
    elif len(shapes) == 1:
        ((nulls, values),) = shapes.items()
        bound = values[0] if len(values) == 1 else [value for row in values for value in row]
        connection.execute(_upsert_of_shape(len(rows), nulls), bound)
    else:  # one statement even so (it may be its own transaction): the NULLs bound
        _insert(connection, UPSERTS, _UPSERT, rows)


def _insert(
    connection: sqlite3.Connection,
    statements: tuple[str, ...],
    one: str,
    rows: Sequence[Sequence[object]],
) -> None:
    """``rows`` in one statement listing them all (``statements[n - 1]`` takes n)
    when there are few, else one statement run for each."""
    if not rows:
        return
    if len(rows) <= len(statements):
        connection.execute(statements[len(rows) - 1], [value for row in rows for value in row])
    else:
        connection.executemany(one, rows)
