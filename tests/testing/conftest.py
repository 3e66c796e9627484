"""Fixtures for the tests of bgtransfer.testing itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio

from bgtransfer.testing import ServedFile, TestServer

FILE_PATH = "/files/a.bin"
FILE_SIZE = 700_000


@pytest_asyncio.fixture
async def server() -> AsyncIterator[TestServer]:
    async with TestServer() as test_server:
        yield test_server


@pytest_asyncio.fixture
async def served(server: TestServer) -> ServedFile:
    return server.add_file(FILE_PATH, size=FILE_SIZE)


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client
