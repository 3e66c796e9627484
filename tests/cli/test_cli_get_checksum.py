"""``bgtransfer get --checksum`` and ``--expected-size``: real processes of the
console script against a loopback server; a mismatch exits 5 with one line
naming the file and both digests, and the destination is left as it was."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_helpers import Cli, json_lines, make_cli

from bgtransfer.testing import Faults, ThreadedTestServer


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return make_cli(tmp_path)


@pytest.fixture
def threaded_server() -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer() as server:
        yield server


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


WRONG = "sha256:" + "0" * 64


def test_the_right_checksum_and_size_download_the_file(
    cli: Cli, threaded_server: ThreadedTestServer
) -> None:
    file = threaded_server.add_file("/k/data.bin", size=300_000)
    url = threaded_server.url(file.path)
    result = cli.run(
        "get", "--checksum", f"SHA256:{file.sha256.upper()}", "--expected-size", "300000", url
    )
    assert result.returncode == 0, result.stderr
    assert sha256(cli.cwd / "data.bin") == file.sha256
    assert result.stderr == ""


def test_a_wrong_checksum_exits_5_naming_the_file_and_both_digests(
    cli: Cli, threaded_server: ThreadedTestServer
) -> None:
    file = threaded_server.add_file("/k/data.bin", size=300_000)
    url = threaded_server.url(file.path)
    result = cli.run("get", "-o", "saved.bin", "--checksum", WRONG, url)
    assert result.returncode == 5, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert str(cli.cwd / "saved.bin") in lines[0]
    assert url in lines[0]
    assert "0" * 64 in lines[0]
    assert file.sha256 in lines[0]
    assert not (cli.cwd / "saved.bin").exists()
    assert "0 downloaded, 0 already there, 1 failed" in result.stdout


def test_a_body_damaged_on_the_way_leaves_the_old_file_untouched(
    cli: Cli, threaded_server: ThreadedTestServer
) -> None:
    file = threaded_server.add_file("/k/data.bin", size=200_000)
    threaded_server.set_faults(file.path, Faults(corrupt=True))
    url = threaded_server.url(file.path)
    # The destination exists: get checks it against --checksum (it does not
    # match), says so, and neither fetches nor touches it.
    victim = cli.cwd / "data.bin"
    victim.write_bytes(b"the old copy")
    result = cli.run("get", "--json", "--checksum", f"sha256:{file.sha256}", url)
    assert result.returncode == 5, result.stderr
    assert victim.read_bytes() == b"the old copy"
    failed = [r for r in json_lines(result.stdout) if r["event"] == "failed"]
    assert failed[0]["exit_status"] == 5
    assert failed[0]["expected"] == file.sha256
    assert failed[0]["actual"] == hashlib.sha256(b"the old copy").hexdigest()
    # Once the old copy is removed, the damaged body is refused as well.
    victim.unlink()
    result = cli.run("get", "--json", "--checksum", f"sha256:{file.sha256}", url)
    assert result.returncode == 5, result.stderr
    failed = [r for r in json_lines(result.stdout) if r["event"] == "failed"]
    assert failed[0]["error"] == "IntegrityError"
    assert failed[0]["algorithm"] == "sha256"
    assert failed[0]["expected"] == file.sha256
    assert failed[0]["actual"] != file.sha256
    assert not victim.exists()
    # The server mends; the same command then downloads the file.
    threaded_server.set_faults(file.path, Faults())
    result = cli.run("get", "--checksum", f"sha256:{file.sha256}", url)
    assert result.returncode == 0, result.stderr
    assert sha256(victim) == file.sha256


def test_a_wrong_expected_size_exits_5(cli: Cli, threaded_server: ThreadedTestServer) -> None:
    file = threaded_server.add_file("/k/data.bin", size=100_000)
    url = threaded_server.url(file.path)
    result = cli.run("get", "--expected-size", "99999", url)
    assert result.returncode == 5, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "100000" in result.stderr
    assert "99999" in result.stderr
    assert not (cli.cwd / "data.bin").exists()


def test_a_list_names_each_urls_checksum_on_its_line(
    cli: Cli, threaded_server: ThreadedTestServer, tmp_path: Path
) -> None:
    good = threaded_server.add_file("/l/good.bin", size=10_000)
    bad = threaded_server.add_file("/l/bad.bin", size=20_000)
    plain = threaded_server.add_file("/l/plain.bin", size=30_000)
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"{threaded_server.url(good.path)} sha256:{good.sha256}\n"
        f"{threaded_server.url(bad.path)}   {WRONG}\n"
        f"{threaded_server.url(plain.path)}\n"
    )
    result = cli.run("get", "-d", "out", "-i", str(listing))
    assert result.returncode == 5, result.stderr
    out = cli.cwd / "out"
    assert sha256(out / "good.bin") == good.sha256
    assert sha256(out / "plain.bin") == plain.sha256
    assert not (out / "bad.bin").exists()
    assert len(result.stderr.splitlines()) == 1
    assert str(out / "bad.bin") in result.stderr


def test_a_file_already_there_is_checked_not_fetched(
    cli: Cli, threaded_server: ThreadedTestServer
) -> None:
    file = threaded_server.add_file("/k/data.bin", size=50_000)
    url = threaded_server.url(file.path)
    assert cli.run("get", url).returncode == 0
    requests = len(threaded_server.requests)
    result = cli.run("get", "--checksum", f"sha256:{file.sha256}", url)
    assert result.returncode == 0, result.stderr
    assert "already there" in result.stdout
    assert len(threaded_server.requests) == requests


@pytest.mark.parametrize(
    "args",
    [
        ["--checksum", "sha256:abc", "http://127.0.0.1:9/a"],
        ["--checksum", "crc32:00000000", "http://127.0.0.1:9/a"],
        ["--checksum", WRONG, "http://127.0.0.1:9/a", "http://127.0.0.1:9/b"],
        ["--expected-size", "-1", "http://127.0.0.1:9/a"],
        ["--expected-size", "10", "http://127.0.0.1:9/a", "http://127.0.0.1:9/b"],
    ],
)
def test_checksum_usage_errors_exit_2(cli: Cli, args: list[str]) -> None:
    result = cli.run("get", *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_list_line_with_a_bad_checksum_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("http://127.0.0.1:9/a sha256:xyz\n")
    result = cli.run("get", "-i", str(listing))
    assert result.returncode == 2, result.stderr
    assert "line 1" in result.stderr
