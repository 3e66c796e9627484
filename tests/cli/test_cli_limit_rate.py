"""``bgtransfer get --limit-rate`` and ``up --limit-rate``: the grammar of a
rate, a bad one a usage error (exit 2), and the limit reaching the session
(the command run in this process, against a server in a thread: a limited run
takes at least ``(size - burst) / rate``)."""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtransfer._cli import main, parser
from bgtransfer._cli.options import parse_rate
from bgtransfer._core.pacing import burst_for
from bgtransfer.testing import ThreadedTestServer

KiB = 1024
MiB = 1024 * 1024


@pytest.fixture
def threaded_server() -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer() as server:
        yield server


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("800000", 800_000),
        ("500k", 500 * KiB),
        ("500K", 500 * KiB),
        ("64KiB", 64 * KiB),
        ("2M", 2 * MiB),
        ("2m/s", 2 * MiB),
        ("1.5MiB/s", 3 * MiB // 2),
        (".5k", 512),
        ("1G", 1024 * MiB),
        ("100b", 100),
        ("3/s", 3),
        (" 10k ", 10 * KiB),
    ],
)
def test_a_rate_is_bytes_per_second_with_binary_suffixes(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not a rate"),
        ("fast", "not a rate"),
        ("-5k", "not a rate"),
        ("1e6", "not a rate"),
        ("inf", "not a rate"),
        ("5kk", "not a rate"),
        ("2 M", "not a rate"),
        ("2MB", r"1000 or 1024\?"),
        ("500kB/s", r"1000 or 1024\?"),
        ("0", "less than 1 byte per second"),
        ("0.5", "less than 1 byte per second"),
    ],
)
def test_a_bad_rate_is_refused_naming_the_grammar(text: str, why: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        parse_rate(text)


@pytest.mark.parametrize("command", ["get", "up"])
def test_a_bad_rate_is_a_usage_error(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    place = [str(tmp_path / "f.bin")] if command == "up" else []
    with pytest.raises(SystemExit) as exited:
        main([command, "--limit-rate", "2MB", *place, "http://127.0.0.1:9/f.bin"])
    assert exited.value.code == 2  # EXIT_USAGE, as docs/cli.md says
    error = capsys.readouterr().err
    assert "argument --limit-rate: not a rate: '2MB'" in error
    assert "500k, 2M, 1.5MiB/s" in error


def test_get_and_up_share_their_transfer_options() -> None:
    args = parser().parse_args(["get", "--limit-rate", "1.5M", "-t", "3", "-q", "http://h/f"])
    assert (args.limit_rate, args.tries, args.quiet, args.json) == (3 * MiB // 2, 3, True, False)
    args = parser().parse_args(["up", "--json", "--debug", "f", "http://h/f"])
    assert (args.limit_rate, args.tries, args.json, args.debug) == (None, None, True, True)
    with pytest.raises(SystemExit):
        parser().parse_args(["up", "-q", "--json", "f", "http://h/f"])


def test_serve_rate_takes_the_same_grammar(capsys: pytest.CaptureFixture[str]) -> None:
    assert parser().parse_args(["serve", "d", "--rate", "5M"]).rate == 5 * MiB
    assert parser().parse_args(["serve", "d", "--rate", "5000000"]).rate == 5_000_000
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["serve", "d", "--rate", "0"])
    assert exited.value.code == 2
    assert "less than 1 byte per second" in capsys.readouterr().err


def test_get_limit_rate_paces_the_whole_run(
    threaded_server: ThreadedTestServer, tmp_path: Path
) -> None:
    rate = 2 * MiB
    files = [threaded_server.add_file(f"/{n}.bin", size=1_500_000) for n in range(2)]
    urls = [threaded_server.url(file.path) for file in files]
    state = str(tmp_path / "state")
    started = time.monotonic()
    status = main(
        ["get", "-q", "--limit-rate", "2M", "-d", str(tmp_path), "--state-dir", state, *urls]
    )
    elapsed = time.monotonic() - started
    assert status == 0
    for n, file in enumerate(files):
        assert hashlib.sha256((tmp_path / f"{n}.bin").read_bytes()).hexdigest() == file.sha256
    assert elapsed >= (3_000_000 - burst_for(rate)) / rate - 0.01, elapsed


def test_up_limit_rate_paces_the_upload(
    threaded_server: ThreadedTestServer, tmp_path: Path
) -> None:
    rate = 1 * MiB
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(1_500_000))
    url = threaded_server.url("/in/data.bin")
    state = str(tmp_path / "state")
    started = time.monotonic()
    status = main(["up", "-q", "--limit-rate", "1MiB/s", "--state-dir", state, str(source), url])
    elapsed = time.monotonic() - started
    assert status == 0
    [received] = threaded_server.server.uploads
    assert received.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert elapsed >= (1_500_000 - burst_for(rate)) / rate - 0.01, elapsed
