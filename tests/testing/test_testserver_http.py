"""TestServer as a correct HTTP/1.1 file server: GET, HEAD, Range, If-Range, validators."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from bgtransfer.testing import Faults, ServedFile, TestServer
from bgtransfer.testing._http import format_http_date


@pytest.mark.asyncio
async def test_full_get_serves_the_exact_bytes_with_validators(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    async with session.get(server.url(served.path)) as response:
        body = await response.read()
        assert response.status == 200
        assert response.headers["Content-Length"] == str(served.size)
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["ETag"] == served.etag
        assert response.headers["Last-Modified"] == format_http_date(served.last_modified)
        assert "Content-Range" not in response.headers
    assert hashlib.sha256(body).hexdigest() == served.sha256
    assert body == served.data
    assert server.statistics().bytes_sent == served.size


@pytest.mark.asyncio
async def test_served_file_metadata(server: TestServer) -> None:
    file = server.add_file("/x.bin", size=1234)
    assert file.path == "/x.bin"
    assert file.size == len(file.data) == 1234
    assert file.sha256 == hashlib.sha256(file.data).hexdigest()
    assert file.etag.startswith('"')
    assert file.etag.endswith('"')
    assert file.weak_etag == "W/" + file.etag
    assert file.last_modified.tzinfo is not None
    assert file.last_modified.utcoffset() == timedelta(0)
    assert file.last_modified.microsecond == 0
    # A strong date validator for clients too: clearly before the Date header.
    assert file.last_modified <= datetime.now(UTC) - timedelta(seconds=1)
    assert server.file("/x.bin") is file


@pytest.mark.asyncio
async def test_content_is_deterministic_per_path_and_seed() -> None:
    async with TestServer() as first, TestServer() as second:
        a = first.add_file("/same.bin", size=5000)
        b = second.add_file("/same.bin", size=5000)
        other_path = second.add_file("/other.bin", size=5000)
        seeded = second.add_file("/seeded.bin", size=5000, seed=7)
    assert a.data == b.data
    assert other_path.data != a.data
    assert seeded.data != a.data
    assert seeded.data[:100] == TestServer().add_file("/s", size=100, seed=7).data


@pytest.mark.asyncio
async def test_explicit_data_and_empty_file(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    hello = server.add_file("/b.txt", data=b"hello")
    empty = server.add_file("/empty", data=b"")
    async with session.get(server.url(hello.path)) as response:
        assert await response.read() == b"hello"
    async with session.get(server.url(empty.path)) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "0"
        assert await response.read() == b""


@pytest.mark.asyncio
async def test_head_sends_headers_only(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    async with session.head(server.url(served.path)) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(served.size)
        assert response.headers["ETag"] == served.etag
        assert response.headers["Accept-Ranges"] == "bytes"
        assert await response.read() == b""
    # Range is only defined for GET (RFC 9110 §14.2): HEAD ignores it.
    async with session.head(server.url(served.path), headers={"Range": "bytes=0-9"}) as response:
        assert response.status == 200
        assert "Content-Range" not in response.headers
    assert server.statistics().bytes_sent == 0


@pytest.mark.asyncio
async def test_unknown_path_is_404_and_other_methods_405(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    async with session.get(server.url("/nope")) as response:
        assert response.status == 404
    async with session.post(server.url(served.path), data=b"x") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"


@pytest.mark.asyncio
async def test_url_percent_encodes_paths(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    file = server.add_file("/dir/with space ü.bin", size=10)
    url = server.url(file.path)
    assert url == f"{server.base_url}/dir/with%20space%20%C3%BC.bin"
    assert url.startswith("http://127.0.0.1:")
    assert server.port > 0
    async with session.get(url) as response:
        assert await response.read() == file.data


SIZE = 700_000


@pytest.mark.parametrize(
    ("range_header", "span"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=100-199", (100, 199)),
        ("bytes=699999-699999", (699_999, 699_999)),
        ("bytes=650000-", (650_000, SIZE - 1)),
        ("bytes=0-", (0, SIZE - 1)),
        ("bytes=699990-900000", (699_990, SIZE - 1)),  # last-pos clamped
        ("bytes=-1", (SIZE - 1, SIZE - 1)),
        ("bytes=-70000", (SIZE - 70_000, SIZE - 1)),
        ("bytes=-800000", (0, SIZE - 1)),  # suffix longer than the file
        ("BYTES=10-19", (10, 19)),  # the range unit is case-insensitive
        ("bytes=10-19,", (10, 19)),  # empty list elements are allowed
    ],
)
@pytest.mark.asyncio
async def test_single_range_forms_get_206_with_exact_content_range(
    server: TestServer,
    served: ServedFile,
    session: aiohttp.ClientSession,
    range_header: str,
    span: tuple[int, int],
) -> None:
    first, last = span
    async with session.get(server.url(served.path), headers={"Range": range_header}) as response:
        body = await response.read()
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
        assert response.headers["Content-Length"] == str(last - first + 1)
        assert response.headers["ETag"] == served.etag
    assert body == served.data[first : last + 1]
    assert server.statistics().bytes_sent == last - first + 1


@pytest.mark.parametrize(
    "range_header",
    ["bytes=700000-", "bytes=800000-900000", "bytes=-0", "bytes=700000-700000"],
)
@pytest.mark.asyncio
async def test_unsatisfiable_range_is_416_with_star_length(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession, range_header: str
) -> None:
    async with session.get(server.url(served.path), headers={"Range": range_header}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=0-1,5-9",  # multi-range: may be answered with the full body
        "bytes=9-5",  # last-pos < first-pos: invalid
        "bytes=abc",
        "bytes=1-2-3",
        "bytes=-",
        "bytes=",
        "items=0-9",  # unknown range unit
        "bytes 0-9",
        "bytes=+1-5",
    ],
)
@pytest.mark.asyncio
async def test_invalid_or_multi_range_is_ignored(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession, range_header: str
) -> None:
    async with session.get(server.url(served.path), headers={"Range": range_header}) as response:
        body = await response.read()
        assert response.status == 200
        assert "Content-Range" not in response.headers
    assert body == served.data


@pytest.mark.asyncio
async def test_ranges_of_an_empty_file(server: TestServer, session: aiohttp.ClientSession) -> None:
    empty = server.add_file("/empty", data=b"")
    async with session.get(server.url(empty.path), headers={"Range": "bytes=0-"}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == "bytes */0"
    async with session.get(server.url(empty.path), headers={"Range": "bytes=-5"}) as response:
        assert response.status == 200
        assert await response.read() == b""


def _if_range_cases(file: ServedFile) -> list[tuple[str, int]]:
    date = file.last_modified
    return [
        (file.etag, 206),
        ('"something-else"', 200),
        (file.weak_etag, 200),  # weak tags never match (strong comparison)
        (format_http_date(date), 206),
        (format_http_date(date + timedelta(seconds=1)), 200),
        (format_http_date(date - timedelta(seconds=1)), 200),
        (date.strftime("%A, %d-%b-%y %H:%M:%S GMT"), 206),  # obsolete RFC 850 form
        (date.strftime("%a %b ") + f"{date.day:2d}" + date.strftime(" %H:%M:%S %Y"), 206),
        ("not a date", 200),
    ]


@pytest.mark.asyncio
async def test_if_range_with_strong_validators(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    for if_range, expected in _if_range_cases(served):
        headers = {"Range": "bytes=100-", "If-Range": if_range}
        async with session.get(server.url(served.path), headers=headers) as response:
            body = await response.read()
            assert response.status == expected, if_range
            assert body == (served.data[100:] if expected == 206 else served.data)


@pytest.mark.asyncio
async def test_if_range_never_matches_when_the_server_etag_is_weak_or_missing(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    headers = {"Range": "bytes=100-", "If-Range": served.etag}
    server.set_faults(served.path, Faults(etag="weak"))
    async with session.get(server.url(served.path), headers=headers) as response:
        assert response.headers["ETag"] == served.weak_etag
        assert response.status == 200
    server.set_faults(served.path, Faults(etag="none"))
    async with session.get(server.url(served.path), headers=headers) as response:
        assert "ETag" not in response.headers
        assert response.status == 200
    headers["If-Range"] = served.weak_etag
    async with session.get(server.url(served.path), headers=headers) as response:
        assert response.status == 200


@pytest.mark.asyncio
async def test_if_range_date_needs_last_modified(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    server.set_faults(served.path, Faults(last_modified=False))
    headers = {"Range": "bytes=100-", "If-Range": format_http_date(served.last_modified)}
    async with session.get(server.url(served.path), headers=headers) as response:
        assert "Last-Modified" not in response.headers
        assert response.status == 200


@pytest.mark.asyncio
async def test_if_range_without_range_is_ignored(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    async with session.get(server.url(served.path), headers={"If-Range": served.etag}) as r:
        assert r.status == 200
        assert await r.read() == served.data


@pytest.mark.asyncio
async def test_replace_file_changes_content_and_validators(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    replaced = server.replace_file(served.path)
    assert replaced.generation == served.generation + 1 == 1
    assert replaced.size == served.size
    assert replaced.data != served.data
    assert replaced.etag != served.etag
    assert replaced.last_modified > served.last_modified
    assert server.file(served.path) is replaced

    # The client's old validator no longer matches: full new body, not a range.
    headers = {"Range": "bytes=100-", "If-Range": served.etag}
    async with session.get(server.url(served.path), headers=headers) as response:
        assert response.status == 200
        assert response.headers["ETag"] == replaced.etag
        assert await response.read() == replaced.data
    headers["If-Range"] = format_http_date(served.last_modified)
    async with session.get(server.url(served.path), headers=headers) as response:
        assert response.status == 200

    same_bytes = server.replace_file(served.path, data=replaced.data)
    assert same_bytes.etag != replaced.etag  # new generation, new tag
    smaller = server.replace_file(served.path, size=10, seed=1)
    assert smaller.size == 10


@pytest.mark.asyncio
async def test_replace_keeping_the_date_makes_the_date_weak(
    server: TestServer, served: ServedFile, session: aiohttp.ClientSession
) -> None:
    replaced = server.replace_file(served.path, last_modified=served.last_modified)
    assert replaced.last_modified == served.last_modified
    headers = {"Range": "bytes=100-", "If-Range": format_http_date(served.last_modified)}
    async with session.get(server.url(served.path), headers=headers) as response:
        assert response.status == 200  # the date may stand for two different contents
        assert await response.read() == replaced.data
    # The entity tag still distinguishes them.
    headers["If-Range"] = replaced.etag
    async with session.get(server.url(served.path), headers=headers) as response:
        assert response.status == 206


@pytest.mark.asyncio
async def test_explicit_last_modified_and_remove_file(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    when = datetime(2020, 5, 17, 10, 30, 15, 999, tzinfo=UTC)
    file = server.add_file("/dated", size=10, last_modified=when)
    assert file.last_modified == when.replace(microsecond=0)
    async with session.get(server.url(file.path)) as response:
        assert response.headers["Last-Modified"] == "Sun, 17 May 2020 10:30:15 GMT"
    server.remove_file(file.path)
    async with session.get(server.url(file.path)) as response:
        assert response.status == 404
    with pytest.raises(KeyError):
        server.file(file.path)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, ValueError),
        ({"size": 1, "data": b"x"}, ValueError),
        ({"size": -1}, ValueError),
        ({"size": 1.5}, ValueError),
        ({"data": "text"}, TypeError),
        ({"size": 1, "last_modified": datetime(2020, 1, 1)}, ValueError),  # naive
    ],
)
@pytest.mark.asyncio
async def test_add_file_validates_arguments(
    server: TestServer, kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        server.add_file("/f", **kwargs)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_paths_are_validated(server: TestServer, served: ServedFile) -> None:
    with pytest.raises(ValueError, match="already served"):
        server.add_file(served.path, size=1)
    with pytest.raises(KeyError):
        server.replace_file("/missing", size=1)
    for bad in ("relative", "/q?x=1", "/frag#x"):
        with pytest.raises(ValueError, match="path"):
            server.add_file(bad, size=1)
        with pytest.raises(ValueError, match="path"):
            server.url(bad)


@pytest.mark.asyncio
async def test_base_url_requires_a_started_server() -> None:
    server = TestServer()
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.base_url
    async with server:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        await server.start()
