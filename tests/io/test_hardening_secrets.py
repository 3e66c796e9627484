"""Secrets stay out of everything stored or shown (issue 18, item 9).

A password in a URL is refused at the call (the message shows no password and
says how to pass credentials instead); a header that carries credentials
(``X-Api-Key`` by default, or one named in ``Configuration.secret_headers``)
is sent but never reaches the journal's files, resume data, reprs or logs, and
a reattached task gets it again from ``headers_provider``. Rows written by an
earlier version with such secrets lose them when the session opens.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from _helpers import sha256_file, signed, wait_for_bytes
from bgtransfer import (
    Configuration,
    DownloadRequest,
    FinishedEvent,
    InvalidResumeDataError,
    InvalidURLError,
    ResumeData,
    Session,
)
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

ID = "com.example.secrets"
SECRET_VALUES = ("k-s3cret-1", "p-s3cret-2", "a-s3cret-3")
HEADERS = {
    "X-Api-Key": SECRET_VALUES[0],  # secret by default (its name holds "key")
    "X-Partner": SECRET_VALUES[1],  # secret because the configuration names it
    "Authorization": SECRET_VALUES[2],
    "X-Trace": "kept",
}
CONFIG = Configuration(progress_interval=0, secret_headers=("x-PARTNER",))


def _files(state_dir: Path) -> list[Path]:
    return [path for path in (state_dir / ID).glob("journal.sqlite3*") if path.is_file()]


def _assert_no_secret_in(data: bytes, where: object) -> None:
    for value in SECRET_VALUES:
        assert value.encode() not in data, f"{value} in {where}"


# -- a password in the URL ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pa55-s3cret@127.0.0.1:1/f.bin", "http://user:***@127.0.0.1:1/f.bin"),
        ("http://user:p@ss-s3cret@127.0.0.1:1/f.bin", "http://user:***@127.0.0.1:1/f.bin"),
        ("https://token-only@127.0.0.1:1/f.bin", "https://token-only@127.0.0.1:1/f.bin"),
        ("http://user:pa55-s3cret@127.0.0.1:99999/f.bin", "http://user:***@127.0.0.1:99999"),
        ("http://user:pa55-s3cret@127.0.0.1/a b", "http://user:***@127.0.0.1/a b"),
    ],
)
async def test_a_url_with_credentials_is_refused_at_every_door(
    url: str, shown: str, state_dir: Path, out_dir: Path
) -> None:
    partial = out_dir / "old.part"
    partial.write_bytes(b"x" * 10)
    # Signed as a session of this state dir would (only signed data reaches the URL
    # check; unsigned data is refused first, its message redacted too).
    data = signed(
        state_dir, ResumeData(url=url, partial=str(partial), offset=10, validator='"v"', total=20)
    )
    forged = ResumeData(url=url, partial=str(partial), offset=10, validator='"v"', total=20)
    async with Session(ID, state_dir=state_dir) as session:
        calls = [
            lambda: session.download(url, out_dir / "a.bin"),
            lambda: session.download_many([url]),
            lambda: session.download_many([DownloadRequest(url, out_dir / "b.bin")]),
            lambda: session.download_with_resume_data(data.to_bytes(), out_dir / "c.bin"),
        ]
        for call in calls:
            with pytest.raises(InvalidURLError) as info:
                await call()
            message = str(info.value)
            assert "s3cret" not in message
            assert "pa55" not in message
            assert shown in message
            assert "'Authorization' header" in message
            assert "headers_provider" in message
        for blob in (forged, forged.to_bytes()):
            with pytest.raises(InvalidResumeDataError) as refused:
                await session.download_with_resume_data(blob, out_dir / "d.bin")
            assert "s3cret" not in str(refused.value)
            assert "pa55" not in str(refused.value)
        assert session.tasks() == []
    assert partial.read_bytes() == b"x" * 10  # the resume data's file is untouched
    for path in _files(state_dir):
        assert b"s3cret" not in path.read_bytes()


async def test_reprs_of_requests_and_configurations_hide_secret_values() -> None:
    request = DownloadRequest("http://example.com/f", headers=HEADERS)
    config = Configuration(headers=HEADERS)
    for text in (repr(request), repr(config)):
        assert SECRET_VALUES[0] not in text
        assert SECRET_VALUES[2] not in text
        assert "('X-Api-Key', '***')" in text
        assert "('X-Trace', 'kept')" in text


# -- secret headers ----------------------------------------------------------------------


async def test_secret_headers_are_sent_but_never_stored_or_shown(
    server: TestServer, state_dir: Path, out_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bgtransfer")
    file = server.add_file("/data.bin", size=400_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "d.bin", headers=HEADERS)
        await wait_for_bytes(task, 100_000)
        for path in _files(state_dir):  # the open journal and its WAL
            _assert_no_secret_in(path.read_bytes(), path)
        _assert_no_secret_in(repr(task).encode(), "repr")
        data = await task.cancel_with_resume_data()
    assert data is not None
    _assert_no_secret_in(data.to_bytes(), "resume data")
    _assert_no_secret_in(repr(data).encode(), "repr(resume data)")
    assert ("X-Trace", "kept") in data.headers
    for path in _files(state_dir):
        _assert_no_secret_in(path.read_bytes(), path)
    _assert_no_secret_in("\n".join(r.getMessage() for r in caplog.records).encode(), "logs")
    [request] = server.requests  # ...and every one of them was sent
    assert all(request.headers[name] == value for name, value in HEADERS.items())

    # Resumed from the data, the secrets come again from the caller.
    server.set_faults(file.path, Faults())
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        again = await session.download_with_resume_data(
            data, headers={"X-Api-Key": SECRET_VALUES[0]}
        )
        assert isinstance(await again.wait(), FinishedEvent)
    assert server.requests[-1].headers["X-Api-Key"] == SECRET_VALUES[0]
    assert "X-Partner" not in server.requests[-1].headers
    assert sha256_file(out_dir / "d.bin") == file.sha256


async def test_a_reattached_task_gets_its_secret_headers_from_the_provider(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/data.bin", size=400_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with Session(ID, state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "d.bin", headers=HEADERS)
        await wait_for_bytes(task, 100_000)
    for path in _files(state_dir):
        _assert_no_secret_in(path.read_bytes(), path)
    with sqlite3.connect(state_dir / ID / "journal.sqlite3") as db:
        [(headers,)] = db.execute("SELECT headers FROM tasks").fetchall()
    assert headers == '[["X-Trace", "kept"]]'

    def provide(url: str) -> dict[str, str]:
        return {"x-api-key": SECRET_VALUES[0], "X-Partner": SECRET_VALUES[1]}

    server.set_faults(file.path, Faults())
    config = Configuration(
        progress_interval=0, secret_headers=("X-Partner",), headers_provider=provide
    )
    async with Session(ID, state_dir=state_dir, config=config) as session:
        [again] = session.tasks()
        _assert_no_secret_in(repr(again).encode(), "repr")
        assert isinstance(await again.wait(), FinishedEvent)
    _, second = [r for r in server.requests if r.path == file.path]
    assert second.headers["Range"] == "bytes=100000-"
    assert second.headers.getall("X-Api-Key") == [SECRET_VALUES[0]]
    assert second.headers["X-Partner"] == SECRET_VALUES[1]
    assert "Authorization" not in second.headers  # the provider did not give it again
    assert second.headers["X-Trace"] == "kept"
    assert sha256_file(out_dir / "d.bin") == file.sha256


async def test_secrets_in_rows_of_an_earlier_version_are_dropped_and_erased(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/data.bin", size=400_000)
    server.set_faults(file.path, Faults(hold_after=100_000))
    async with Session(ID, state_dir=state_dir) as session:
        task = await session.download(server.url(file.path), out_dir / "d.bin")
        await wait_for_bytes(task, 100_000)
    # What an earlier version stored: the URL's password, and headers it kept.
    old_url = server.url(file.path).replace("://", "://olduser:old-s3cret-pw@")
    old_headers = '[["X-Api-Key", "old-s3cret-key"], ["X-Partner", "old-s3cret-p"]]'
    with sqlite3.connect(state_dir / ID / "journal.sqlite3") as db:
        db.execute("UPDATE tasks SET url = ?, headers = ?", (old_url, old_headers))
    assert any(b"old-s3cret" in path.read_bytes() for path in _files(state_dir))

    server.set_faults(file.path, Faults())
    config = Configuration(secret_headers=("X-Partner",))
    async with Session(ID, state_dir=state_dir, config=config) as session:
        [again] = session.tasks()
        assert again.url == server.url(file.path)
        assert "old-s3cret" not in repr(again)
        for path in _files(state_dir):  # erased from the files once the session is open
            assert b"old-s3cret" not in path.read_bytes(), path
        assert isinstance(await again.wait(), FinishedEvent)
    resumed = server.requests[-1]
    assert resumed.headers["Range"] == "bytes=100000-"
    assert "Authorization" not in resumed.headers
    assert "X-Api-Key" not in resumed.headers
    assert "X-Partner" not in resumed.headers
    assert sha256_file(out_dir / "d.bin") == file.sha256
