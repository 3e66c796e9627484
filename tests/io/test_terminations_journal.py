"""The journal's schema 7: the terminations of cancelled resumable uploads not
sent yet (their rows, the migration of a schema-6 journal), and what an open of
the session does with them: send each in the background, at most ``MAX_TRIES``
times in all, and forget it after an answer or the last try."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from _logwait import log_seen
from bgtransfer import Configuration, Session
from bgtransfer._core.journal import MIGRATIONS, SCHEMA_VERSION
from bgtransfer._core.terminations import (
    MAX_TRIES,
    PendingTermination,
    termination_from_row,
    termination_request,
    termination_to_row,
)
from bgtransfer._io.journal import JOURNAL_NAME, Journal
from bgtransfer.testing import TestServer

IDENTIFIER = "com.example.terms"
PENDING = PendingTermination(
    task_id=4,
    url="https://example.com/files/",
    upload_url="https://example.com/files/u1",
    protocol="tus",
    headers=(("X-Trace", "1"), ("Authorization", "Bearer s3cret"), ("X-Api-Key", "k")),
    tries=1,
)


def test_a_row_round_trips_without_secret_headers() -> None:
    row = termination_to_row(PENDING)
    assert "s3cret" not in repr(row)
    assert "X-Api-Key" not in repr(row)
    assert termination_from_row(row) == attrs.evolve(PENDING, headers=(("X-Trace", "1"),))


@pytest.mark.parametrize(
    ("index", "value", "words"),
    [
        (0, 0, "task id"),
        (0, "4", "task id"),
        (1, "", "url"),
        (2, None, "url"),
        (2, "https://u:p@example.com/files/u1", "credentials"),
        (3, "ftp", "protocol"),
        (4, "{}", "headers"),
        (4, "[[1, 2]]", "headers"),
        (4, "not json", "headers"),
        (5, -1, "tries"),
        (5, True, "tries"),
    ],
)
def test_a_damaged_row_is_refused(index: int, value: object, words: str) -> None:
    row = list(termination_to_row(PENDING))
    row[index] = value
    with pytest.raises(ValueError, match=words):
        termination_from_row(row)


@pytest.mark.parametrize(
    ("protocol", "header"), [("tus", "Tus-Resumable"), ("ietf", "Upload-Draft-Interop-Version")]
)
def test_the_request_is_the_protocols_delete(protocol: str, header: str) -> None:
    request = termination_request(attrs.evolve(PENDING, protocol=protocol))
    assert (request.method, request.url) == ("DELETE", PENDING.upload_url)
    assert header in dict(request.headers)


@pytest.mark.asyncio
async def test_a_schema_6_journal_is_migrated_to_schema_7(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    connection = sqlite3.connect(path)
    try:
        for step in MIGRATIONS[:6]:
            for statement in step:
                connection.execute(statement)
        connection.execute("PRAGMA user_version = 6")
        connection.commit()
    finally:
        connection.close()
    assert SCHEMA_VERSION == 7
    journal = await Journal.open(path)
    async with journal:
        assert journal.terminations == []
        journal.put_termination(PENDING)
        journal.put_termination(attrs.evolve(PENDING, task_id=5))
        await journal.flush()
        journal.drop_termination(5)
        await journal.flush()
    reopened = await Journal.open(path)
    async with reopened:
        assert reopened.terminations == [attrs.evolve(PENDING, headers=(("X-Trace", "1"),))]
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 7


@pytest.mark.asyncio
async def test_a_damaged_termination_row_is_dropped_not_the_session(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    async with await Journal.open(path) as journal:
        journal.put_termination(PENDING)
        await journal.flush()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE terminations SET protocol = 'gopher'")
        db.commit()
    async with await Journal.open(path) as journal:
        assert journal.terminations == []
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM terminations").fetchone()[0] == 0


# -- what an open does with them ------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nobody listens on (bound, not listening: refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def _journal_with(state_dir: Path, *pending: PendingTermination) -> None:
    (state_dir / IDENTIFIER).mkdir(parents=True)
    async with await Journal.open(state_dir / IDENTIFIER / JOURNAL_NAME) as journal:
        for each in pending:
            journal.put_termination(each)
        await journal.flush()


def _rows(state_dir: Path) -> list[tuple[int, int]]:
    path = state_dir / IDENTIFIER / JOURNAL_NAME
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT task_id, tries FROM terminations ORDER BY task_id").fetchall()


@pytest.mark.asyncio
async def test_an_unanswered_termination_is_tried_again_then_dropped(
    tmp_path: Path, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    state_dir = tmp_path / "state"
    base = f"http://127.0.0.1:{closed_port}/files/"
    first = attrs.evolve(PENDING, task_id=1, url=base, upload_url=base + "a", tries=1)
    last = attrs.evolve(PENDING, task_id=2, url=base, upload_url=base + "b", tries=MAX_TRIES - 1)
    spent = attrs.evolve(PENDING, task_id=3, url=base, upload_url=base + "c", tries=MAX_TRIES)
    await _journal_with(state_dir, first, last, spent)
    with (
        caplog.at_level(logging.DEBUG, logger="bgtransfer"),
        log_seen(f"/files/b (try {MAX_TRIES} of {MAX_TRIES})") as seen,
    ):
        async with Session(IDENTIFIER, state_dir=state_dir, config=Configuration()):
            await asyncio.wait_for(seen.wait(), 60)
    # Refused twice: "a" stays for the next open (one more try counted), "b" had
    # its last try, "c" had had them all (not sent again).
    assert _rows(state_dir) == [(1, 2)]
    messages = [r for r in caplog.records if "could not remove the upload" in r.getMessage()]
    assert {r.levelno for r in messages} == {logging.DEBUG}
    assert not any("/files/c" in r.getMessage() for r in messages)


@pytest.mark.asyncio
async def test_an_answered_termination_is_forgotten_whatever_the_status(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    async with TestServer() as server:
        endpoint = server.add_tus_endpoint("/tus/")
        url = server.url("/tus/")
        gone = attrs.evolve(PENDING, task_id=1, url=url, upload_url=url + "nothing", tries=0)
        await _journal_with(state_dir, gone)
        with log_seen("removed the upload") as seen:
            async with Session(IDENTIFIER, state_dir=state_dir, config=Configuration()):
                await asyncio.wait_for(seen.wait(), 60)
    assert [m for m, _p, _h in endpoint.requests] == ["DELETE"]
    assert _rows(state_dir) == []  # a 404: nothing to remove, nothing to keep
