"""The journal's schema 5: uploads' rows (kind and upload fields), their
decoding, and the migration of a schema-4 journal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest

from bgtransfer._core.codec import decode_terminal, encode_terminal
from bgtransfer._core.events import FinishedEvent, UploadReply
from bgtransfer._core.journal import (
    COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    CorruptEntry,
    Phase,
    TaskEntry,
    entry_from_row,
    entry_to_row,
)
from bgtransfer._core.upload import SourceIdentity, UploadFields
from bgtransfer._io.journal import JOURNAL_NAME, Journal

URL = "https://example.com/upload"
FIELDS = UploadFields(
    method="POST",
    source="/home/u/donn\u00e9es/a.bin",
    identity=SourceIdentity(size=1000, mtime_ns=1_700_000_000_123_456_789, device=64, inode=99),
    reply_to="/home/u/reply.json",
)


def _upload_entry(task_id: int, **changes: object) -> TaskEntry:
    fields: dict[str, object] = {
        "id": task_id,
        "url": URL,
        "destination": "/home/u/reply.json",
        "description": "an upload",
        "headers": (("X-Trace", "1"),),
        "phase": Phase.RUNNING,
        "offset": 300,
        "total": 1000,
        "upload": FIELDS,
    }
    fields.update(changes)
    return TaskEntry(**fields)  # type: ignore[arg-type]


def test_an_upload_entry_round_trips_and_names_its_kind() -> None:
    entry = _upload_entry(3)
    row = entry_to_row(entry)
    values = dict(zip(COLUMNS, row, strict=True))
    assert values["kind"] == "upload"
    assert entry.kind == "upload"
    assert entry_from_row(row) == entry
    slot = attrs.evolve(FIELDS, upload_url=URL + "/x", upload_offset=500)
    resumable = _upload_entry(4, upload=slot)
    assert entry_from_row(entry_to_row(resumable)) == resumable


@pytest.mark.parametrize(
    ("kind", "upload", "problem"),
    [
        ("upload", None, "invalid upload"),
        ("upload", "{}", "invalid upload"),
        ("upload", '{"method": "PATCH", "source": "/a", "identity": [1, 2, 3, 4]}', "invalid"),
        ("upload", '{"method": "PUT", "source": "/a", "identity": [1, 2, 3]}', "identity"),
        ("film", None, "unknown kind"),
        ("download", '{"method": "PUT"}', "unknown kind"),
    ],
)
def test_a_wrong_upload_row_is_corrupt(kind: str, upload: str | None, problem: str) -> None:
    row = list(entry_to_row(_upload_entry(5)))
    row[COLUMNS.index("kind")] = kind
    row[COLUMNS.index("upload")] = upload
    with pytest.raises(CorruptEntry, match=problem):
        entry_from_row(row)


def test_a_finished_upload_keeps_its_reply() -> None:
    event = FinishedEvent(
        task_id=7,
        location=Path("/a.bin"),
        total_bytes=10,
        reply=UploadReply(
            status=201,
            headers=(("Content-Type", "application/json"),),
            body=b"\x00\xff{}",
            truncated=True,
        ),
    )
    assert decode_terminal(7, encode_terminal(event)) == event


@pytest.mark.asyncio
async def test_a_schema_4_journal_is_migrated_to_schema_5(tmp_path: Path) -> None:
    """A journal of the version before uploads opens with its downloads, and
    takes uploads afterwards."""
    path = tmp_path / JOURNAL_NAME
    connection = sqlite3.connect(path)
    try:
        for step in MIGRATIONS[:4]:
            for statement in step:
                connection.execute(statement)
        connection.execute(
            "INSERT INTO tasks VALUES (7, 'http://example.com/a.bin', '/tmp/a.bin', 'A', '[]',"
            " 'running', 0, 1000, 5000, '\"v1\"', 'identity', NULL, NULL, NULL, NULL)"
        )
        connection.execute("PRAGMA user_version = 4")
        connection.commit()
    finally:
        connection.close()
    assert SCHEMA_VERSION == 7
    journal = await Journal.open(path)
    async with journal:
        [download] = journal.entries
        assert (download.id, download.offset, download.kind, download.upload) == (
            7,
            1000,
            "download",
            None,
        )
        upload = _upload_entry(8)
        journal.put(upload, urgent=True)
        await journal.flush()
    reopened = await Journal.open(path)
    async with reopened:
        assert reopened.entries == [download, upload]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 7
        assert db.execute("SELECT id, kind FROM tasks ORDER BY id").fetchall() == [
            (7, "download"),
            (8, "upload"),
        ]
