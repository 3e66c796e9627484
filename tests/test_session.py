"""Session construction, identifiers and directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgtransfer import (
    Configuration,
    FinishedEvent,
    Session,
    SessionError,
    default_state_dir,
)
from bgtransfer.testing import TestServer


@pytest.mark.parametrize(
    ("identifier", "message"),
    [
        ("", "must not be empty"),
        ("x" * 201, "the limit is 200"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("com..example", "'..'"),
        (".hidden", "must not start with '.'"),
        ("tab\there", "control characters"),
    ],
)
def test_bad_identifiers_raise_value_error(identifier: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Session(identifier)


def test_wrong_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="identifier"):
        Session(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Configuration"):
        Session("ok", config={"max_connections_per_host": 2})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="state_dir"):
        Session("ok", state_dir=3)  # type: ignore[arg-type]


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BGTRANSFER_STATE_DIR", str(tmp_path / "override"))
    assert default_state_dir() == tmp_path / "override"
    monkeypatch.delenv("BGTRANSFER_STATE_DIR")
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "bgtransfer"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "bgtransfer"
    monkeypatch.setattr("sys.platform", "darwin")
    assert (
        default_state_dir() == tmp_path / "home" / "Library" / "Application Support" / "bgtransfer"
    )


@pytest.mark.asyncio
async def test_background_session_lives_under_state_dir_identifier(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BGTRANSFER_STATE_DIR", str(tmp_path / "env-state"))
    async with Session("com.example.bg") as session:
        assert session.directory == tmp_path / "env-state" / "com.example.bg"
        assert session.identifier == "com.example.bg"
        assert (session.directory / "partials").is_dir()
    explicit = tmp_path / "explicit"
    async with Session("com.example.bg", state_dir=explicit) as session:
        assert session.directory == explicit / "com.example.bg"


@pytest.mark.asyncio
async def test_ephemeral_session_cleans_up_but_keeps_finished_files(tmp_path: Path) -> None:
    async with TestServer() as server:
        file = server.add_file("/keep.bin", size=1_000)
        async with Session(state_dir=tmp_path) as session:
            assert session.identifier is None
            directory = session.directory
            assert directory.parent == tmp_path
            result = await (await session.download(server.url(file.path))).wait()
        assert isinstance(result, FinishedEvent)
        assert result.location.read_bytes() == file.data  # the user's file stays
        assert not (directory / "partials").exists()
        async with Session(state_dir=tmp_path) as empty:
            empty_dir = empty.directory
        assert not empty_dir.exists()  # nothing downloaded: nothing left behind


@pytest.mark.asyncio
@pytest.mark.parametrize("identifier", [None, "com.example.relative"])
async def test_a_relative_state_dir_gives_absolute_locations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, identifier: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    async with TestServer() as server:
        file = server.add_file("/rel.bin", size=1_000)
        async with Session(identifier, state_dir="state") as session:
            assert session.directory.is_absolute()
            task = await session.download(server.url(file.path))
            assert task.destination.is_absolute()
            result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert result.location.is_absolute()
    assert result.location.read_bytes() == file.data


@pytest.mark.asyncio
async def test_a_session_is_entered_once(tmp_path: Path) -> None:
    session = Session(state_dir=tmp_path)
    async with session:
        with pytest.raises(SessionError, match="only once"):
            await session.__aenter__()
    with pytest.raises(SessionError, match="only once"):
        await session.__aenter__()


@pytest.mark.asyncio
async def test_tasks_lists_every_task_in_creation_order(tmp_path: Path) -> None:
    async with TestServer() as server:
        files = [server.add_file(f"/{i}.bin", size=100) for i in range(5)]
        async with Session("list", state_dir=tmp_path, config=Configuration()) as session:
            made = [
                await session.download(server.url(f.path), description=f"file {i}")
                for i, f in enumerate(files)
            ]
            listed = session.tasks()
            assert [t.id for t in listed] == [t.id for t in made] == [1, 2, 3, 4, 5]
            assert [t.description for t in listed] == [f"file {i}" for i in range(5)]
            assert [t.url for t in listed] == [server.url(f.path) for f in files]
            for task in made:
                await task.wait()
            assert "completed" in repr(listed[0])
