"""The write pipeline with unbuffered files: short writes are finished, in order."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from bgtransfer._io.transfer import BodyPlan, _OverlappedWriter

pytestmark = pytest.mark.asyncio


class _ShortWriter:
    """An async file whose every write takes at most ``step`` bytes (as write(2) may)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.data = bytearray()
        self.calls = 0
        self.closed = False

    async def write(self, data: bytes) -> int:
        self.calls += 1
        taken = bytes(data[: self.step])
        self.data += taken
        return len(taken)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


class _Counter:
    def __init__(self) -> None:
        self.reported: list[int] = []

    def judge(self, status: int, reason: str, headers: Mapping[str, str]) -> BodyPlan | None:
        raise AssertionError("not called")

    async def prepare(self, plan: BodyPlan) -> None:
        raise AssertionError("not called")

    def chunk_received(self, nbytes: int) -> None:
        pass

    def bytes_written(self, nbytes: int) -> None:
        self.reported.append(nbytes)


async def test_short_writes_are_completed_in_order(tmp_path: Path) -> None:
    file = _ShortWriter(step=7)
    sink = _Counter()
    writer = _OverlappedWriter(cast(Any, file), sink, url="http://x/", path=tmp_path / "p")
    chunks = [bytes([i]) * (5 + i * 3) for i in range(20)]
    for chunk in chunks:
        await writer.add(chunk)
    await writer.flush()
    await writer.aclose()
    expected = b"".join(chunks)
    assert bytes(file.data) == expected
    assert writer.written == sum(sink.reported) == len(expected)
    assert file.calls >= len(expected) // 7
    assert file.closed
