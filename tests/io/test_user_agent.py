"""The User-Agent (issue 22): bgtransfer's own by default, overridable by the
configuration and by a task's headers; read from what the server received."""

from __future__ import annotations

import platform
from pathlib import Path

import aiohttp
import pytest

import bgtransfer
from bgtransfer import Configuration, Session
from bgtransfer.testing import TestServer


async def _agents(
    server: TestServer, out_dir: Path, config: Configuration, headers: dict[str, str] | None = None
) -> list[str | None]:
    server.add_file("/f.bin", size=1000)
    async with Session(config=config) as session:
        task = await session.download(server.url("/f.bin"), out_dir / "f.bin", headers=headers)
        await task.wait()
    return [request.headers.get("User-Agent") for request in server.requests]


@pytest.mark.asyncio
async def test_the_default_names_bgtransfer_aiohttp_and_python(
    server: TestServer, out_dir: Path
) -> None:
    python = ".".join(platform.python_version_tuple()[:2])
    expected = f"bgtransfer/{bgtransfer.__version__} aiohttp/{aiohttp.__version__} Python/{python}"
    assert await _agents(server, out_dir, Configuration()) == [expected]


@pytest.mark.asyncio
async def test_the_configuration_s_user_agent_is_sent(server: TestServer, out_dir: Path) -> None:
    assert await _agents(server, out_dir, Configuration(user_agent="MyApp/2.1")) == ["MyApp/2.1"]


@pytest.mark.asyncio
async def test_a_task_s_header_wins_over_the_configuration(
    server: TestServer, out_dir: Path
) -> None:
    config = Configuration(user_agent="MyApp/2.1")
    agents = await _agents(server, out_dir, config, headers={"user-agent": "Task/1"})
    assert agents == ["Task/1"]


@pytest.mark.asyncio
async def test_a_configured_header_wins_over_the_default(server: TestServer, out_dir: Path) -> None:
    config = Configuration(headers={"User-Agent": "Headers/3"})
    assert await _agents(server, out_dir, config) == ["Headers/3"]


@pytest.mark.parametrize("value", ["", "  ", "a\r\nX-Evil: 1"])
def test_a_user_agent_that_is_no_header_value_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="user_agent"):
        Configuration(user_agent=value)
