"""The journal's records and rules, without the database.

A background session persists one :class:`TaskEntry` per task that has not been
acknowledged yet. This module holds everything about those records that can be
decided without I/O: the schema and its migrations (as SQL text the SQLite shell
runs), and how an entry maps to a row and back (checking every field). What a
fresh process does with each entry, given what it finds on disk, is
:mod:`.reattach`'s.

The one invariant the engine keeps for this module: **a journal entry never claims
more than the partial file holds of the representation it names.** The engine
writes bytes before it records them, and records a lower offset durably before it
overwrites bytes an entry vouches for (a restart from zero). So after any
crash the first ``offset`` bytes of the partial file are good for ``validator``.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Sequence
from typing import Any, Final, TypeAlias

import attrs

from .._exceptions import InvalidRequestError
from .codec import decode_terminal, encode_terminal
from .digests import Integrity
from .events import TerminalEvent
from .naming import parse_url
from .secrets import DEFAULT_SECRETS, SECRET_HEADERS, SecretHeaders, strip_userinfo
from .segments import segments_from_json
from .upload import UploadFields

__all__ = [
    "COLUMNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SECRET_HEADERS",
    "CorruptEntry",
    "FileIdentity",
    "FinalWrite",
    "Phase",
    "TaskEntry",
    "entry_from_row",
    "entry_to_row",
    "public_headers",
    "scrubbed_fields",
]

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 0 -> 1: the first schema.
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('next_id', '1')",
        """CREATE TABLE tasks (
            id INTEGER PRIMARY KEY,
            url TEXT NOT NULL,
            destination TEXT NOT NULL,
            description TEXT,
            headers TEXT NOT NULL,
            phase TEXT NOT NULL,
            keep_partial INTEGER NOT NULL,
            offset INTEGER NOT NULL,
            total INTEGER,
            validator TEXT,
            encoding TEXT NOT NULL,
            outcome TEXT
        )""",
    ),
    # 1 -> 2: segmented downloads keep each segment's progress; a task resumed from
    # resume data names the partial file it is adopting until it has moved it.
    (
        "ALTER TABLE tasks ADD COLUMN segments TEXT",
        "ALTER TABLE tasks ADD COLUMN takeover TEXT",
    ),
    # 2 -> 3: a body's last write may move it into place in the same step; the
    # entry written before it says what the destination was (see FinalWrite).
    ("ALTER TABLE tasks ADD COLUMN one_step TEXT",),
    # 3 -> 4: the event log (every task event but progress, numbered; see
    # _core/eventlog.py). Numbers continue above the newest row and above
    # ``log_earliest`` (the highest number trimmed), so none is given twice.
    # The terminal events a previous version had not delivered yet start it.
    (
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            task_id INTEGER NOT NULL,
            event TEXT NOT NULL
        )""",
        "INSERT INTO meta (key, value) VALUES ('log_earliest', '0')",
        "INSERT INTO events (task_id, event) "
        "SELECT id, outcome FROM tasks WHERE outcome IS NOT NULL ORDER BY id",
    ),
    # 4 -> 5: uploads. A task's kind picks what reattaches it; an upload keeps
    # its own fields (method, source file and its identity, reply_to, and the
    # upload URL and offset of a resumable one) as JSON (see UploadFields).
    # Every task of an earlier journal is a download.
    (
        "ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'download'",
        "ALTER TABLE tasks ADD COLUMN upload TEXT",
    ),
    # 5 -> 6: a download's checksum= and expected_size= (see digests.Integrity),
    # as JSON; NULL when none was asked (every task of an earlier journal).
    ("ALTER TABLE tasks ADD COLUMN integrity TEXT",),
    # 6 -> 7: the DELETEs of cancelled resumable uploads not sent yet, one per
    # task, kept apart from the tasks (an acknowledged task is forgotten, its
    # termination may still be due; see _core/terminations.py).
    (
        """CREATE TABLE terminations (
            task_id INTEGER PRIMARY KEY,
            url TEXT NOT NULL,
            upload_url TEXT NOT NULL,
            protocol TEXT NOT NULL,
            headers TEXT NOT NULL,
            tries INTEGER NOT NULL
        )""",
    ),
)
"""``MIGRATIONS[n]`` takes a journal from schema version ``n`` to ``n + 1``."""

SCHEMA_VERSION: Final = len(MIGRATIONS)

COLUMNS: Final = (
    "id",
    "url",
    "destination",
    "description",
    "headers",
    "phase",
    "keep_partial",
    "offset",
    "total",
    "validator",
    "encoding",
    "outcome",
    "segments",
    "takeover",
    "one_step",
    "kind",
    "upload",
    "integrity",
)


class Phase(enum.Enum):
    """Where a task's life stands, as far as a reattaching process must know."""

    RUNNING = "running"  # transferring or queued: continue it
    SUSPENDED = "suspended"  # paused by the application: keep it paused
    CANCELING = "canceling"  # cancel() was asked: finish cancelling it
    MOVING = "moving"  # the body is whole; the move into place may have happened
    ENDED = "ended"  # its terminal event is stored, not yet acknowledged


class CorruptEntry(ValueError):
    """A row that does not decode; the message names the task and the field."""


FileIdentity: TypeAlias = tuple[int, int, int, int]
"""A file as ``stat`` saw it: (device, inode, size, modification time in ns)."""


@attrs.frozen
class FinalWrite:
    """Marks a ``MOVING`` entry written *before* the body's final write: that
    write, the close and the rename into place follow it together, so the
    partial file may not be whole yet (or not exist any more). Stored in the
    ``one_step`` column.

    Its ``offset`` is what was written before that step (vouched for as
    always). ``size`` is the finished file's length, and ``replaces`` the
    destination file as it was then (None: there was none). A reattaching
    process that finds no partial file compares it with what is at the
    destination now: another file there means the rename happened.
    """

    size: int
    replaces: FileIdentity | None


@attrs.frozen(kw_only=True)
class TaskEntry:
    """One task as the journal stores it."""

    id: int
    url: str
    destination: str
    description: str | None
    headers: tuple[tuple[str, str], ...]
    """Without secret headers (see ``_core.secrets``)."""
    phase: Phase
    keep_partial: bool = False
    """For ``CANCELING``: the cancel asked for resume data."""
    offset: int = 0
    """Bytes of the partial file vouched for (see the module's invariant)."""
    total: int | None = None
    validator: str | None = None
    encoding: str = "identity"
    outcome: TerminalEvent | None = None
    """Set exactly when ``phase`` is ``ENDED``."""
    segments: tuple[tuple[int, int, int], ...] | None = None
    """A segmented download's ``(start, end, done)`` per segment; ``offset`` is then
    the sum of ``done`` (the invariant holds per segment)."""
    adopting: str | None = None
    """The resume data's partial file this task is adopting (until it has moved it
    into its own); stored in the ``takeover`` column."""
    final_write: FinalWrite | None = None
    """For ``MOVING``: the entry came before the last write (see :class:`FinalWrite`)."""
    upload: UploadFields | None = None
    """An upload's own fields; None for a download. Stored as the ``kind`` column
    (``"upload"``/``"download"``) and the ``upload`` column's JSON; an upload's
    ``destination`` is where its answer goes (``reply_to``), else its source."""

    integrity: Integrity | None = None
    """A download's ``checksum=``/``expected_size=``; the ``integrity`` column's JSON."""

    @property
    def kind(self) -> str:
        """``"upload"`` or ``"download"``: which kind of job reattaches it."""
        return "download" if self.upload is None else "upload"


def public_headers(
    headers: Sequence[tuple[str, str]], secrets: SecretHeaders = DEFAULT_SECRETS
) -> tuple[tuple[str, str], ...]:
    """``headers`` without the secret ones, which are never stored (the default
    rule here: the journal's backstop; the engine applies the session's)."""
    return secrets.public(headers)


@functools.lru_cache(maxsize=256)
def _headers_json(headers: tuple[tuple[str, str], ...]) -> str:
    # Cached: most tasks share a few header sets, and every entry put encodes them.
    return json.dumps([list(pair) for pair in public_headers(headers)])


def entry_to_row(entry: TaskEntry) -> tuple[Any, ...]:
    """The entry as a row in :data:`COLUMNS` order (text as :func:`_stored` keeps it)."""
    outcome = None if entry.outcome is None else json.dumps(encode_terminal(entry.outcome))
    return (
        entry.id,
        _stored(entry.url),
        _stored(entry.destination),
        _stored(entry.description),
        _headers_json(entry.headers),
        entry.phase.value,
        int(entry.keep_partial),
        entry.offset,
        entry.total,
        _stored(entry.validator),
        _stored(entry.encoding),
        outcome,
        None if entry.segments is None else json.dumps([list(s) for s in entry.segments]),
        _stored(entry.adopting),
        None if entry.final_write is None else _final_write_json(entry.final_write),
        entry.kind,
        None if entry.upload is None else entry.upload.to_json(),
        None if entry.integrity is None else entry.integrity.to_json(),
    )


def scrubbed_fields(row: Sequence[Any], entry: TaskEntry) -> tuple[str | bytes, str] | None:
    """``(url, headers)`` to store in place of ``row``'s when :func:`entry_from_row`
    dropped a secret from them (a row written by an earlier version); else None.
    The url as :func:`_stored` stores it."""
    url = _stored(entry.url)
    headers = _headers_json(entry.headers)
    if row[1] == url and row[4] == headers:
        return None
    assert url is not None  # a journal's url is never NULL
    return url, headers


_TEXT_COLUMNS: Final = ("url", "destination", "description", "validator", "encoding", "takeover")
"""The columns :func:`_stored` writes (the others hold JSON, ASCII by construction)."""


def _stored(text: str | None) -> str | bytes | None:
    """A text column's value, stored losslessly whatever the str holds.

    UTF-8 text (nearly always: one ``isascii`` on the hot path) is stored as
    TEXT. A str that UTF-8 cannot encode holds lone surrogates: a path that
    ``os.fsdecode`` made from bytes that are not UTF-8, a header value with
    obs-text bytes as aiohttp decodes it (``surrogateescape``), or any str an
    application passed. It is stored as a BLOB of its ``surrogatepass`` UTF-8,
    which encodes every str and decodes back to the same one
    (``surrogateescape`` would refuse a surrogate outside U+DC80-U+DCFF); a
    BLOB in a TEXT column stays a BLOB. :func:`_decode_texts` reads it back.
    """
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def _decode_texts(task_id: int, values: dict[str, Any]) -> None:
    """The text columns as :func:`_stored` stored them, back to the str they were
    (in place; values of other types are left for the checks that follow)."""
    for name in _TEXT_COLUMNS:
        value = values[name]
        if isinstance(value, bytes):
            try:
                values[name] = value.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                raise CorruptEntry(f"task {task_id}: invalid {name} {value!r}") from None


def _final_write_json(final_write: FinalWrite) -> str:
    replaces = None if final_write.replaces is None else list(final_write.replaces)
    return json.dumps({"size": final_write.size, "replaces": replaces})


def entry_from_row(row: Sequence[Any], secrets: SecretHeaders = DEFAULT_SECRETS) -> TaskEntry:
    """Decode a row in :data:`COLUMNS` order; :class:`CorruptEntry` says what is wrong.

    A URL's userinfo and the headers ``secrets`` deems secret are dropped (rows
    written by earlier versions hold them; see :func:`scrubbed_fields`)."""
    if len(row) != len(COLUMNS):
        raise CorruptEntry(f"a task row has {len(row)} columns, expected {len(COLUMNS)}")
    values = dict(zip(COLUMNS, row, strict=True))
    task_id = values["id"]
    if not _is_int(task_id) or task_id < 1:
        raise CorruptEntry(f"a task row has an invalid id {task_id!r}")
    _decode_texts(task_id, values)
    try:
        phase = Phase(values["phase"])
    except ValueError:
        raise CorruptEntry(f"task {task_id}: unknown phase {values['phase']!r}") from None
    offset, total = values["offset"], values["total"]
    if not _is_int(offset) or offset < 0:
        raise CorruptEntry(f"task {task_id}: invalid offset {offset!r}")
    if total is not None and (not _is_int(total) or total < offset):
        raise CorruptEntry(f"task {task_id}: invalid total {total!r} (offset {offset})")
    for name in ("url", "destination", "encoding"):
        if not isinstance(values[name], str) or not values[name]:
            raise CorruptEntry(f"task {task_id}: invalid {name} {values[name]!r}")
    # Earlier versions stored a URL's userinfo (a password) and any header not
    # named Authorization, Proxy-Authorization or Cookie: both are dropped here,
    # and the engine rewrites such a row (see ``TaskEntry.headers``).
    url = strip_userinfo(values["url"])
    try:
        parse_url(url)
    except InvalidRequestError as exc:
        raise CorruptEntry(f"task {task_id}: invalid url ({exc})") from None
    for name in ("description", "validator"):
        if values[name] is not None and not isinstance(values[name], str):
            raise CorruptEntry(f"task {task_id}: invalid {name} {values[name]!r}")
    outcome = _decode_outcome(task_id, values["outcome"])
    segments = _decode_segments(task_id, values["segments"], total, offset)
    if values["takeover"] is not None and not isinstance(values["takeover"], str):
        raise CorruptEntry(f"task {task_id}: invalid takeover {values['takeover']!r}")
    if (outcome is None) != (phase is not Phase.ENDED):
        raise CorruptEntry(f"task {task_id}: phase {phase.value!r} does not match its outcome")
    upload = _decode_upload(task_id, values["kind"], values["upload"])
    return TaskEntry(
        id=task_id,
        url=url,
        destination=values["destination"],
        description=values["description"],
        headers=secrets.public(_decode_headers(task_id, values["headers"])),
        phase=phase,
        keep_partial=bool(values["keep_partial"]),
        offset=offset,
        total=total,
        validator=values["validator"],
        encoding=values["encoding"],
        outcome=outcome,
        segments=segments,
        adopting=values["takeover"],
        final_write=_decode_final_write(task_id, values["one_step"], phase, offset),
        upload=upload,
        integrity=_decode_integrity(task_id, values["integrity"]),
    )


def _decode_integrity(task_id: int, text: object) -> Integrity | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise CorruptEntry(f"task {task_id}: invalid integrity {text!r}")
    try:
        return Integrity.from_json(text)
    except ValueError as exc:
        raise CorruptEntry(f"task {task_id}: invalid integrity ({exc})") from None


def _decode_upload(task_id: int, kind: object, text: object) -> UploadFields | None:
    if kind == "download" and text is None:
        return None
    if kind != "upload":
        raise CorruptEntry(f"task {task_id}: unknown kind {kind!r}")
    try:
        return UploadFields.from_json(text)
    except ValueError as exc:
        raise CorruptEntry(f"task {task_id}: invalid upload ({exc})") from None


def _decode_final_write(task_id: int, text: object, phase: Phase, offset: int) -> FinalWrite | None:
    if text is None:
        return None
    if phase is not Phase.MOVING:
        raise CorruptEntry(f"task {task_id}: a one-step move in phase {phase.value!r}")
    try:
        document = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict) or set(document) != {"size", "replaces"}:
        raise CorruptEntry(f"task {task_id}: invalid one_step {text!r}")
    size, replaces = document["size"], document["replaces"]
    if not _is_int(size) or size < offset:
        raise CorruptEntry(f"task {task_id}: invalid one_step size {size!r} (offset {offset})")
    if replaces is None:
        return FinalWrite(size=size, replaces=None)
    if (
        isinstance(replaces, list)
        and len(replaces) == 4
        and all(_is_int(value) and value >= 0 for value in replaces)
    ):
        return FinalWrite(size=size, replaces=(replaces[0], replaces[1], replaces[2], replaces[3]))
    raise CorruptEntry(f"task {task_id}: invalid one_step replaces {replaces!r}")


def _decode_segments(
    task_id: int, text: object, total: int | None, offset: int
) -> tuple[tuple[int, int, int], ...] | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise CorruptEntry(f"task {task_id}: invalid segments (not text)")
    try:
        segments = segments_from_json(json.loads(text), total)
    except (ValueError, RecursionError) as exc:
        raise CorruptEntry(f"task {task_id}: invalid segments ({exc})") from None
    if sum(segment.done for segment in segments) != offset:
        raise CorruptEntry(f"task {task_id}: segments do not add up to offset {offset}")
    return tuple((segment.start, segment.end, segment.done) for segment in segments)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_headers(task_id: int, text: object) -> tuple[tuple[str, str], ...]:
    try:
        pairs = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):  # bad JSON, absurd nesting
        pairs = None
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        for pair in pairs
    ):
        raise CorruptEntry(f"task {task_id}: invalid headers")
    return tuple((name, value) for name, value in pairs)


def _decode_outcome(task_id: int, text: object) -> TerminalEvent | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise CorruptEntry(f"task {task_id}: invalid outcome (not text)")
    try:
        return decode_terminal(task_id, json.loads(text))
    except ValueError as exc:  # CodecError is a ValueError, as is bad JSON
        raise CorruptEntry(f"task {task_id}: invalid outcome ({exc})") from None
    except RecursionError:
        raise CorruptEntry(f"task {task_id}: invalid outcome (absurdly nested)") from None
