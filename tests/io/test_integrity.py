"""Integrity: ``checksum=``, ``expected_size=`` and RFC 9530 digest fields, checked
before the move into place; a mismatch is an ``IntegrityError`` and the bad bytes
never reach the destination."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from _helpers import sha256_file, wait_for_bytes
from bgtransfer import (
    Configuration,
    DownloadRequest,
    FinishedEvent,
    IntegrityError,
    RetryPolicy,
    Session,
    TaskState,
)
from bgtransfer._engine import verify as verify_module
from bgtransfer._io.pump import PUMP_MIN_BYTES
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

FAST = RetryPolicy(max_attempts=4, initial_delay=0, jitter=0)
CONFIG = Configuration(retry=FAST, progress_interval=0)
VICTIM = b"the file that was here before; it must survive\n"


def _checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _wrong(algorithm: str, data: bytes) -> str:
    digest = hashlib.new(algorithm, data).hexdigest()
    return f"{algorithm}:{'0' if digest[0] != '0' else '1'}{digest[1:]}"


def _no_partials(state_dir: Path, identifier: str) -> bool:
    partials = state_dir / identifier / "partials"
    return not partials.exists() or not list(partials.iterdir())


@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "blake2b", "md5", "sha1"])
async def test_a_right_checksum_finishes(
    algorithm: str, server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=300_000)
    async with Session("ok", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(
            server.url(file.path), out_dir / "f.bin", checksum=_checksum(algorithm, file.data)
        )
        result = await task.wait()
    assert isinstance(result, FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256


async def test_a_wrong_checksum_fails_and_leaves_the_destination_untouched(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """Also through the daemon: ``checksum=`` crosses the wire."""
    file = server.add_file("/f.bin", size=300_000)
    victim = out_dir / "f.bin"
    victim.write_bytes(VICTIM)
    before = sha256_file(victim)
    wrong = _wrong("sha256", file.data)
    async with background("bad", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(server.url(file.path), victim, checksum=wrong.upper())
        with pytest.raises(IntegrityError) as caught:
            await task.wait()
    error = caught.value
    assert (error.algorithm, error.expected, error.actual) == (
        "sha256",
        wrong.partition(":")[2],
        file.sha256,
    )
    assert file.path in str(error) or server.url(file.path) in str(error)
    assert sha256_file(victim) == before
    assert _no_partials(state_dir, "bad")
    assert server.statistics().requests == 1  # never retried


async def test_a_corrupted_body_is_caught_by_the_checksum(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=200_000)
    server.set_faults(file.path, Faults(corrupt=True))
    async with background("corrupt", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(
            server.url(file.path), out_dir / "f.bin", checksum=_checksum("sha512", file.data)
        )
        with pytest.raises(IntegrityError) as caught:
            await task.wait()
    assert caught.value.algorithm == "sha512"
    assert not (out_dir / "f.bin").exists()
    assert _no_partials(state_dir, "corrupt")


async def test_a_small_body_is_checked_too(server: TestServer, out_dir: Path) -> None:
    """A body small enough to be written and moved in one step is checked first."""
    file = server.add_file("/s.bin", size=1000)
    server.set_faults(file.path, Faults(corrupt=True))
    async with Session(config=CONFIG) as session:
        task = await session.download(
            server.url(file.path), out_dir / "s.bin", checksum=_checksum("sha256", file.data)
        )
        with pytest.raises(IntegrityError):
            await task.wait()
    assert not (out_dir / "s.bin").exists()


async def test_expected_size_mismatched_by_content_length_fails_before_the_body(
    server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=500_000)
    server.set_faults(file.path, Faults(hold_after=0))  # the body never comes
    async with Session(config=CONFIG) as session:
        task = await session.download(
            server.url(file.path), out_dir / "f.bin", expected_size=file.size - 1
        )
        with pytest.raises(IntegrityError) as caught:
            await task.wait()
        server.release(file.path)
    error = caught.value
    assert (error.algorithm, error.expected, error.actual) == (
        "size",
        str(file.size - 1),
        str(file.size),
    )
    assert not (out_dir / "f.bin").exists()
    assert server.statistics().requests == 1


async def test_expected_size_without_content_length_is_checked_at_the_end(
    server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=100_000)
    server.set_faults(file.path, Faults(chunked=True))
    async with Session(config=CONFIG) as session:
        bad = await session.download(server.url(file.path), out_dir / "bad", expected_size=99)
        good = await session.download(
            server.url(file.path), out_dir / "good", expected_size=file.size
        )
        with pytest.raises(IntegrityError) as caught:
            await bad.wait()
        assert isinstance(await good.wait(), FinishedEvent)
    assert caught.value.actual == str(file.size)
    assert not (out_dir / "bad").exists()
    assert sha256_file(out_dir / "good") == file.sha256


@pytest.mark.parametrize("field", ["repr_digest", "content_digest"])
async def test_a_right_digest_field_finishes(field: str, server: TestServer, out_dir: Path) -> None:
    file = server.add_file("/f.bin", size=200_000)
    server.set_faults(file.path, Faults(**{field: "right"}))  # type: ignore[arg-type]
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256


@pytest.mark.parametrize(
    ("faults", "source"),
    [
        (Faults(repr_digest="wrong"), "Repr-Digest"),
        (Faults(content_digest="wrong"), "Content-Digest"),
        (Faults(repr_digest="right", corrupt=True), "Repr-Digest"),
        (Faults(content_digest="right", corrupt=True), "Content-Digest"),
    ],
)
async def test_a_digest_field_that_disagrees_fails(
    faults: Faults, source: str, server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=200_000)
    server.set_faults(file.path, faults)
    victim = out_dir / "f.bin"
    victim.write_bytes(VICTIM)
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), victim)
        with pytest.raises(IntegrityError) as caught:
            await task.wait()
    assert caught.value.algorithm == "sha256"
    assert source in str(caught.value)
    assert victim.read_bytes() == VICTIM
    assert server.statistics().requests == 1


async def test_a_malformed_digest_field_is_ignored(
    server: TestServer, out_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = server.add_file("/f.bin", size=10_000)
    server.set_faults(file.path, Faults(repr_digest="malformed"))
    caplog.set_level("DEBUG", logger="bgtransfer")
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "f.bin")
        assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(out_dir / "f.bin") == file.sha256
    assert "malformed repr-digest" in caplog.text


async def test_arguments_are_checked_at_the_call(server: TestServer, out_dir: Path) -> None:
    url = server.url("/never")
    async with Session() as session:
        for checksum, words in [
            ("sha3:" + "0" * 64, "unknown checksum algorithm"),
            ("sha256:" + "0" * 63, "64 hexadecimal digits"),
            ("sha256:" + "z" * 64, "64 hexadecimal digits"),
            ("0" * 64, "algorithm:hex"),
        ]:
            with pytest.raises(ValueError, match=words):
                await session.download(url, out_dir / "x", checksum=checksum)
        with pytest.raises(ValueError, match="expected_size"):
            await session.download(url, out_dir / "x", expected_size=-1)
        with pytest.raises(TypeError, match="expected_size"):
            await session.download(url, out_dir / "x", expected_size="10")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown checksum"):
            DownloadRequest(url, checksum="crc32:00000000")
    assert server.statistics().requests == 0


async def test_a_suspended_and_resumed_download_is_verified_whole(
    server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    """The bytes of both attempts are checked: a byte damaged in the second
    (ranged) answer fails the task; the right checksum over both finishes it."""
    file = server.add_file("/f.bin", size=600_000)
    for corrupt, name in [(True, "bad"), (False, "good")]:
        server.set_faults(file.path, Faults(hold_after=200_000), times=1)
        server.set_faults(file.path, Faults(corrupt=corrupt))
        server.set_faults(file.path, Faults(hold_after=200_000), times=1)
        async with Session("pause", state_dir=state_dir, config=CONFIG) as session:
            task = await session.download(
                server.url(file.path), out_dir / name, checksum=_checksum("sha256", file.data)
            )
            await wait_for_bytes(task, 200_000)
            task.suspend()
            assert task.state is TaskState.SUSPENDED
            server.release(file.path)
            task.resume()
            if corrupt:
                with pytest.raises(IntegrityError):
                    await task.wait()
            else:
                assert isinstance(await task.wait(), FinishedEvent)
        assert server.requests[-1].headers["Range"] == "bytes=200000-"
    assert not (out_dir / "bad").exists()
    assert sha256_file(out_dir / "good") == file.sha256


async def test_resume_data_carries_the_checksum(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=600_000)
    async with background("rd", state_dir=state_dir, config=CONFIG) as session:
        outcomes = []
        for checksum, name in [(_wrong("sha256", file.data), "bad"), (None, "good")]:
            server.set_faults(file.path, Faults(hold_after=200_000), times=1)
            task = await session.download(
                server.url(file.path),
                out_dir / name,
                checksum=checksum or _checksum("blake2b", file.data),
                expected_size=file.size,
            )
            await wait_for_bytes(task, 200_000)
            data = await task.cancel_with_resume_data()
            assert data is not None
            assert data.integrity is not None
            server.release(file.path)
            resumed = await session.download_with_resume_data(data)
            try:
                outcomes.append(await resumed.wait())
            except IntegrityError as exc:
                outcomes.append(exc)
    assert isinstance(outcomes[0], IntegrityError)
    assert isinstance(outcomes[1], FinishedEvent)
    assert not (out_dir / "bad").exists()
    assert sha256_file(out_dir / "good") == file.sha256


@pytest.mark.parametrize("corrupt", [False, True])
async def test_a_segmented_download_is_verified(
    corrupt: bool, server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/big.bin", size=4_000_000)
    server.set_faults(file.path, Faults(corrupt=corrupt))
    async with Session(config=CONFIG) as session:
        task = await session.download(
            server.url(file.path),
            out_dir / "big.bin",
            segments=4,
            checksum=_checksum("sha256", file.data),
        )
        if corrupt:
            with pytest.raises(IntegrityError):
                await task.wait()
        else:
            assert isinstance(await task.wait(), FinishedEvent)
    ranged = [r for r in server.requests if "Range" in r.headers]
    assert ranged  # it was split
    if corrupt:
        assert not (out_dir / "big.bin").exists()
    else:
        assert sha256_file(out_dir / "big.bin") == file.sha256


@pytest.fixture
def rereads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The partial files read again before their move (in this process)."""
    read: list[Path] = []
    original = verify_module.hash_file

    def counting(path: Path, algorithms: Iterable[str]) -> tuple[int, dict[str, bytes]]:
        read.append(path)
        return original(path, algorithms)

    monkeypatch.setattr(verify_module, "hash_file", counting)
    return read


@pytest.mark.parametrize(
    ("size", "corrupt"),
    [(300_000, False), (300_000, True), (PUMP_MIN_BYTES + 100_000, False),
     (PUMP_MIN_BYTES + 100_000, True)],
)  # fmt: skip
async def test_one_body_is_hashed_as_it_arrives_not_read_again(
    size: int, corrupt: bool, rereads: list[Path], server: TestServer, out_dir: Path
) -> None:
    """Through the body writer and (large bodies) the pump thread."""
    file = server.add_file("/f.bin", size=size)
    server.set_faults(file.path, Faults(corrupt=corrupt, repr_digest="right"))
    async with Session(config=CONFIG) as session:
        task = await session.download(
            server.url(file.path), out_dir / "f.bin", checksum=_checksum("blake2b", file.data)
        )
        if corrupt:
            with pytest.raises(IntegrityError):
                await task.wait()
        else:
            assert isinstance(await task.wait(), FinishedEvent)
    assert rereads == []
    if corrupt:
        assert not (out_dir / "f.bin").exists()
    else:
        assert sha256_file(out_dir / "f.bin") == file.sha256


async def test_a_body_continued_in_this_process_is_not_read_again(
    rereads: list[Path], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    file = server.add_file("/f.bin", size=600_000)
    server.set_faults(file.path, Faults(hold_after=200_000), times=1)
    async with Session("cont", state_dir=state_dir, config=CONFIG) as session:
        task = await session.download(
            server.url(file.path), out_dir / "f.bin", checksum=_checksum("sha256", file.data)
        )
        await wait_for_bytes(task, 200_000)
        task.suspend()
        server.release(file.path)
        task.resume()
        assert isinstance(await task.wait(), FinishedEvent)
    assert server.requests[-1].headers["Range"] == "bytes=200000-"
    assert rereads == []
    assert sha256_file(out_dir / "f.bin") == file.sha256


async def test_a_segmented_file_is_read_once(
    rereads: list[Path], server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/big.bin", size=4_000_000)
    async with Session(config=CONFIG) as session:
        task = await session.download(
            server.url(file.path), out_dir / "big.bin", segments=4, expected_size=file.size
        )
        assert isinstance(await task.wait(), FinishedEvent)
    assert len(rereads) == 1
    assert sha256_file(out_dir / "big.bin") == file.sha256


async def test_nothing_to_check_takes_the_one_step_move(
    rereads: list[Path], server: TestServer, out_dir: Path
) -> None:
    file = server.add_file("/s.bin", size=1000)
    async with Session(config=CONFIG) as session:
        task = await session.download(server.url(file.path), out_dir / "s.bin")
        assert isinstance(await task.wait(), FinishedEvent)
    assert rereads == []
    assert sha256_file(out_dir / "s.bin") == file.sha256


async def test_download_many_carries_each_requests_checks(
    background: Callable[..., Session], server: TestServer, state_dir: Path, out_dir: Path
) -> None:
    good = server.add_file("/good.bin", size=50_000)
    bad = server.add_file("/bad.bin", size=50_000)
    async with background("many", state_dir=state_dir, config=CONFIG) as session:
        tasks = await session.download_many(
            [
                DownloadRequest(
                    server.url(good.path),
                    out_dir / "good.bin",
                    checksum=_checksum("sha512", good.data),
                    expected_size=good.size,
                ),
                DownloadRequest(
                    server.url(bad.path), out_dir / "bad.bin", checksum=_checksum("md5", good.data)
                ),
            ]
        )
        assert isinstance(await tasks[0].wait(), FinishedEvent)
        with pytest.raises(IntegrityError) as caught:
            await tasks[1].wait()
    assert caught.value.algorithm == "md5"
    assert sha256_file(out_dir / "good.bin") == good.sha256
    assert not (out_dir / "bad.bin").exists()
