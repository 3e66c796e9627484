"""A body that ends when the connection closes: never a short file reported as whole.

Issue 18, item 4. With no ``Content-Length`` and no chunked framing, nothing in the
response says where the body ends; a connection closed halfway used to finish the
task with half the file. Now, with a strong validator, the task asks the server
once more from the end (``Range: bytes=N-`` with ``If-Range``): a 416 confirming
``*/N`` or a 206 with the rest verifies it. Without a validator it finishes with
``length_verified=False``. A length announced earlier for the same file that
disagrees with what arrived is a truncation, retried, never success.

The test server always frames its bodies, so these tests use a tiny raw asyncio
server that answers HTTP/1.1 with close-delimited bodies.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import anyio
import pytest

from _helpers import check_resumable_stream, collect, seeded_bytes, sha256_file
from bgtransfer import (
    Configuration,
    FinishedEvent,
    IncompleteBodyError,
    RetryEvent,
    RetryPolicy,
    Session,
)

pytestmark = pytest.mark.asyncio

SIZE = 200_000
HALF = SIZE // 2
ETAG = '"v1"'
CONFIG = Configuration(retry=RetryPolicy(initial_delay=0, jitter=0), progress_interval=0)

# How the server answers, request by request (then "range" for every later one):
#   ("close", n)  200, no length, the first n bytes (None: all), then close
#   ("length", n) 200 with the full Content-Length, the first n bytes, then close
#   ("range", _)  206/416 for "Range: bytes=N-" with a matching If-Range, else a
#                 whole close-delimited 200
Plan = tuple[str, int | None]


class RawServer:
    """HTTP/1.1 over a raw asyncio socket, one request per connection."""

    def __init__(self, data: bytes, *, etag: str | None, plans: list[Plan]) -> None:
        self.data = data
        self.etag = etag
        self.plans = list(plans)
        self.requests: list[dict[str, str]] = []  # lower-case header names
        self.statuses: list[int] = []
        self.url = ""

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/file.bin"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            self.requests.append(headers)
            kind, count = self.plans.pop(0) if self.plans else ("range", None)
            writer.write(self._answer(kind, count, headers))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _answer(self, kind: str, count: int | None, headers: dict[str, str]) -> bytes:
        data, total = self.data, len(self.data)
        validator = "" if self.etag is None else f"ETag: {self.etag}\r\n"
        wanted = headers.get("range", "")
        if kind == "range" and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes=") : -1])
            if self.etag is not None and headers.get("if-range") == self.etag:
                if start >= total:
                    self.statuses.append(416)
                    return (
                        f"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\n"
                        f"{validator}Content-Length: 0\r\nConnection: close\r\n\r\n"
                    ).encode()
                self.statuses.append(206)
                return (
                    f"HTTP/1.1 206 Partial Content\r\n"
                    f"Content-Range: bytes {start}-{total - 1}/{total}\r\n{validator}"
                    f"Content-Length: {total - start}\r\nConnection: close\r\n\r\n"
                ).encode() + data[start:]
        self.statuses.append(200)
        length = f"Content-Length: {total}\r\n" if kind == "length" else ""
        body = data if count is None else data[:count]
        return (
            f"HTTP/1.1 200 OK\r\n{validator}{length}Accept-Ranges: bytes\r\n"
            f"Connection: close\r\n\r\n"
        ).encode() + body


DATA = seeded_bytes(SIZE, "close-delimited")
DIGEST = hashlib.sha256(DATA).hexdigest()


async def download(url: str, destination: Path, state_dir: Path) -> tuple[list[object], object]:
    async with Session("trunc", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(url, destination)
        with anyio.fail_after(20):
            events = await collect(task.events())
        check_resumable_stream(events, task.id)  # type: ignore[arg-type]
        return events, task.length_verified


async def test_cut_body_with_validator_is_completed_by_a_range(
    state_dir: Path, out_dir: Path
) -> None:
    async with RawServer(DATA, etag=ETAG, plans=[("close", HALF)]) as server:
        events, task_verified = await download(server.url, out_dir / "f.bin", state_dir)
    terminal = events[-1]
    assert isinstance(terminal, FinishedEvent)
    assert terminal.total_bytes == SIZE
    assert sha256_file(out_dir / "f.bin") == DIGEST  # never the half
    assert terminal.length_verified is True
    assert task_verified is True
    assert server.requests[1]["range"] == f"bytes={HALF}-"
    assert server.requests[1]["if-range"] == ETAG
    assert server.statuses == [200, 206]


async def test_whole_body_with_validator_is_confirmed_by_416(
    state_dir: Path, out_dir: Path
) -> None:
    async with RawServer(DATA, etag=ETAG, plans=[("close", None)]) as server:
        events, task_verified = await download(server.url, out_dir / "f.bin", state_dir)
    terminal = events[-1]
    assert isinstance(terminal, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == DIGEST
    assert terminal.length_verified is True
    assert task_verified is True
    assert server.requests[1]["range"] == f"bytes={SIZE}-"
    assert server.statuses == [200, 416]


async def test_without_validator_the_finish_says_the_length_is_unverified(
    state_dir: Path, out_dir: Path
) -> None:
    async with RawServer(DATA, etag=None, plans=[("close", HALF)]) as server:
        events, task_verified = await download(server.url, out_dir / "f.bin", state_dir)
    terminal = events[-1]
    assert isinstance(terminal, FinishedEvent)
    # Nothing can tell this half from a whole file: it is reported as such.
    assert terminal.total_bytes == HALF
    assert terminal.length_verified is False
    assert task_verified is False
    assert len(server.requests) == 1


async def test_a_length_announced_earlier_catches_the_truncation(
    state_dir: Path, out_dir: Path
) -> None:
    # 1: Content-Length 200,000, cut at 50,000 (a retried IncompleteBodyError).
    # 2: the range is ignored: a close-delimited 200 of the same file, cut at
    #    120,000: shorter than announced for this ETag, so not success.
    # 3: the rest, as a 206.
    plans: list[Plan] = [("length", 50_000), ("close", 120_000)]
    async with RawServer(DATA, etag=ETAG, plans=plans) as server:
        events, task_verified = await download(server.url, out_dir / "f.bin", state_dir)
    terminal = events[-1]
    assert isinstance(terminal, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == DIGEST
    assert terminal.length_verified is True
    assert task_verified is True
    retries = [event for event in events if isinstance(event, RetryEvent)]
    assert len(retries) == 2
    assert isinstance(retries[1].error, IncompleteBodyError)
    assert "120000" in str(retries[1].error)
    assert "200000" in str(retries[1].error)
    assert server.statuses == [200, 200, 206]


async def test_two_whole_answers_that_disagree_are_not_success(
    state_dir: Path, out_dir: Path
) -> None:
    # The server ignores the probe's range: a second whole answer, shorter. One
    # of the two is cut; the task asks for the rest of the shorter one.
    plans: list[Plan] = [("close", None), ("close", HALF)]
    async with RawServer(DATA, etag=ETAG, plans=plans) as server:
        events, task_verified = await download(server.url, out_dir / "f.bin", state_dir)
    terminal = events[-1]
    assert isinstance(terminal, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == DIGEST
    assert terminal.length_verified is True
    assert task_verified is True
    assert server.statuses == [200, 200, 206]


async def test_two_whole_answers_that_agree_finish_unverified(
    state_dir: Path, out_dir: Path
) -> None:
    # Ranges ignored, and nothing ever states the length: the body is reported,
    # and flagged.
    plans: list[Plan] = [("close", None), ("close", None)]
    async with RawServer(DATA, etag=ETAG, plans=plans) as server:
        events, task_verified = await download(server.url, out_dir / "f.bin", state_dir)
    terminal = events[-1]
    assert isinstance(terminal, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == DIGEST
    assert terminal.length_verified is False
    assert task_verified is False
    assert server.statuses == [200, 200]


async def test_an_unverified_finish_is_replayed_as_unverified(
    state_dir: Path, out_dir: Path
) -> None:
    """The journal keeps the flag: a terminal event a later process delivers says it too."""
    explicit = Configuration(
        retry=RetryPolicy(initial_delay=0, jitter=0), progress_interval=0, acknowledge="explicit"
    )
    async with (
        RawServer(DATA, etag=None, plans=[("close", HALF)]) as server,
        Session("trunc", state_dir=state_dir, config=explicit) as session,
    ):
        task = await session.download(server.url, out_dir / "f.bin")
        stream = task.events()
        with anyio.fail_after(20):
            async for event in stream:
                if isinstance(event, FinishedEvent):
                    break  # explicit acknowledgement: not acknowledged
    async with Session("trunc", state_dir=state_dir, config=CONFIG) as session:
        (replayed,) = session.tasks()
        assert isinstance(replayed.result, FinishedEvent)
        assert replayed.result.length_verified is False
        assert replayed.length_verified is False
        assert replayed.result.total_bytes == HALF
