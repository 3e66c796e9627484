"""``bgtransfer get``: real processes of the console script against a loopback server."""

from __future__ import annotations

import hashlib
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_helpers import Cli, json_lines, make_cli, read_until

from bgtransfer.testing import Faults, ThreadedTestServer

BIG = 3_000_000


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return make_cli(tmp_path)


@pytest.fixture
def threaded_server() -> Iterator[ThreadedTestServer]:
    with ThreadedTestServer() as server:
        yield server


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_get_downloads_several_files_byte_exact(
    cli: Cli, threaded_server: ThreadedTestServer, tmp_path: Path
) -> None:
    files = [
        threaded_server.add_file(f"/f/{name}", size=size)
        for name, size in [("a.bin", 1), ("b.bin", 70_000), ("c.bin", BIG)]
    ]
    out = tmp_path / "out"
    result = cli.run("get", "-d", str(out), *(threaded_server.url(f.path) for f in files))
    assert result.returncode == 0, result.stderr
    for file in files:
        assert sha256(out / Path(file.path).name) == file.sha256
    assert result.stdout.count("done ") == 3
    assert "3 downloaded, 0 already there, 0 failed" in result.stdout
    assert result.stderr == ""


def test_get_o_saves_the_one_url_as_that_file(
    cli: Cli, threaded_server: ThreadedTestServer
) -> None:
    file = threaded_server.add_file("/f/data.bin", size=5_000)
    result = cli.run("get", "-o", "saved.dat", threaded_server.url(file.path))
    assert result.returncode == 0, result.stderr
    assert sha256(cli.cwd / "saved.dat") == file.sha256
    assert sorted(p.name for p in cli.cwd.iterdir()) == ["saved.dat"]


def test_get_reads_urls_from_a_list_and_from_stdin(
    cli: Cli, threaded_server: ThreadedTestServer, tmp_path: Path
) -> None:
    one = threaded_server.add_file("/l/one.bin", size=1_000)
    two = threaded_server.add_file("/l/two.bin", size=2_000)
    listing = tmp_path / "urls.txt"
    one_url, two_url = threaded_server.url(one.path), threaded_server.url(two.path)
    listing.write_text(f"# files to fetch\n\n  {one_url}  \n#{two_url}\n")
    result = cli.run("get", "-d", "from-file", "-i", str(listing))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (cli.cwd / "from-file").iterdir()) == ["one.bin"]
    result = cli.run("get", "-d", "from-stdin", "-i", "-", stdin=threaded_server.url(two.path))
    assert result.returncode == 0, result.stderr
    assert sha256(cli.cwd / "from-stdin" / "two.bin") == two.sha256


def test_a_complete_file_is_not_fetched_again(
    cli: Cli, threaded_server: ThreadedTestServer
) -> None:
    file = threaded_server.add_file("/c/data.bin", size=50_000)
    url = threaded_server.url(file.path)
    assert cli.run("get", url).returncode == 0
    again = cli.run("get", url)
    assert again.returncode == 0, again.stderr
    assert f"already there, not fetched again: {cli.cwd / 'data.bin'}" in again.stdout
    assert threaded_server.statistics().requests_by_path[file.path] == 1
    assert sorted(p.name for p in cli.cwd.iterdir()) == ["data.bin"]  # no "data (1).bin"
    assert sha256(cli.cwd / "data.bin") == file.sha256


@pytest.mark.parametrize(
    ("signum", "status", "said"),
    [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM"), (signal.SIGKILL, -9, "")],
)
def test_a_rerun_after_a_stop_continues_without_refetching_finished_files(
    cli: Cli, threaded_server: ThreadedTestServer, signum: signal.Signals, status: int, said: str
) -> None:
    small = threaded_server.add_file("/s/small.bin", size=10_000)
    big = threaded_server.add_file("/s/big.bin", size=BIG)
    threaded_server.set_faults(big.path, Faults(hold_after=1_000_000), times=1)
    urls = [threaded_server.url(small.path), threaded_server.url(big.path)]
    first = cli.start("get", "--json", *urls)
    # The small file is done and the big one has its first megabyte: the server holds it.
    done = {"finished": False, "held": False}

    def both(record: dict[str, object]) -> bool:
        if record["event"] == "finished" and record["url"] == urls[0]:
            done["finished"] = True
        if record["event"] == "progress" and record["url"] == urls[1]:
            done["held"] = record["bytes"] == 1_000_000
        return done["finished"] and done["held"]

    read_until(first, both)
    first.send_signal(signum)
    _, err = first.communicate(timeout=60)
    assert first.returncode == status, err
    if said:
        assert f"stopped by {said}; run the same command again to continue" in err
        assert "Traceback" not in err
    assert not (cli.cwd / "big.bin").exists()

    again = cli.run("get", "--json", *urls)
    assert again.returncode == 0, again.stderr
    records = json_lines(again.stdout)
    assert sha256(cli.cwd / "small.bin") == small.sha256
    assert sha256(cli.cwd / "big.bin") == big.sha256
    statistics = threaded_server.statistics()
    assert statistics.requests_by_path[small.path] == 1  # never fetched again
    assert statistics.requests_by_path[big.path] == 2
    summary = records[-1]
    assert (summary["event"], summary["exit_status"], summary["failed"]) == ("summary", 0, 0)
    assert summary["downloaded"] + summary["already_there"] == 2
    if signum is not signal.SIGKILL:  # a clean stop journaled the bytes on disk
        second = threaded_server.requests[-1]
        assert second.headers["Range"] == "bytes=1000000-"
        assert {"event": "continued", "bytes": 1_000_000}.items() <= next(
            r for r in records if r["url"] == urls[1]
        ).items()


@pytest.mark.parametrize(
    ("faults", "status", "message"),
    [
        (Faults(status=404), 8, "HTTP 404"),
        (Faults(status=503), 8, "HTTP 503"),
        (Faults(reset_after=1_000), 4, ""),
        (Faults(status=206), 7, "206 Partial Content"),
    ],
)
def test_exit_statuses_tell_failures_apart(
    cli: Cli, threaded_server: ThreadedTestServer, faults: Faults, status: int, message: str
) -> None:
    good = threaded_server.add_file("/e/good.bin", size=1_000)
    bad = threaded_server.add_file("/e/bad.bin", size=100_000)
    threaded_server.set_faults(bad.path, faults)
    urls = [threaded_server.url(good.path), threaded_server.url(bad.path)]
    result = cli.run("get", "--tries", "1", *urls)
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1  # one line per failed file, no traceback
    assert lines[0].startswith(f"bgtransfer: {urls[1]}: ")
    assert message in lines[0]
    assert sha256(cli.cwd / "good.bin") == good.sha256
    assert not (cli.cwd / "bad.bin").exists()


def test_a_local_file_failure_exits_3(cli: Cli, threaded_server: ThreadedTestServer) -> None:
    file = threaded_server.add_file("/l/data.bin", size=100_000)
    threaded_server.set_faults(file.path, Faults(hold_after=10_000), times=1)
    url = threaded_server.url(file.path)
    running = cli.start("get", "--json", "--tries", "1", "-d", "gone", url)
    read_until(running, lambda r: r["event"] == "progress" and r["bytes"] == 10_000)
    shutil.rmtree(cli.cwd / "gone")  # the destination's directory vanishes
    threaded_server.release(file.path)
    _, err = running.communicate(timeout=60)
    assert running.returncode == 3, err
    assert err.count("\n") == 1
    assert err.startswith(f"bgtransfer: {url}: ")


@pytest.mark.parametrize(
    "args",
    [
        ["get"],
        ["get", "ftp://example.com/f"],
        ["get", "-o", "x", "http://127.0.0.1:9/a", "http://127.0.0.1:9/b"],
        ["get", "-i", "no-such-list.txt"],
        ["get", "-x", "0", "http://127.0.0.1:9/a"],
        ["get", "--session", "a/b", "http://127.0.0.1:9/a"],
    ],
)
def test_usage_errors_exit_2_with_one_line_and_no_traceback(cli: Cli, args: list[str]) -> None:
    result = cli.run(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_debug_shows_the_traceback(cli: Cli) -> None:
    result = cli.run("get", "--debug", "--session", "a/b", "http://127.0.0.1:9/a")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_json_lines_parse_and_end_with_a_summary(
    cli: Cli, threaded_server: ThreadedTestServer
) -> None:
    file = threaded_server.add_file("/j/data.bin", size=BIG)
    missing = threaded_server.url("/j/missing.bin")
    result = cli.run("get", "--json", threaded_server.url(file.path), missing)
    assert result.returncode == 8
    records = json_lines(result.stdout)
    events = [r["event"] for r in records]
    assert events[:2] == ["started", "started"]
    assert "progress" in events
    assert events[-1] == "summary"
    failed = next(r for r in records if r["event"] == "failed")
    assert failed["url"] == missing
    assert failed["error"] == "HTTPStatusError"
    assert failed["exit_status"] == 8
    finished = next(r for r in records if r["event"] == "finished")
    assert finished["bytes"] == BIG
    assert records[-1] == {
        "event": "summary",
        "exit_status": 8,
        "downloaded": 1,
        "already_there": 0,
        "failed": 1,
    }


def test_quiet_prints_nothing(cli: Cli, threaded_server: ThreadedTestServer) -> None:
    file = threaded_server.add_file("/q/data.bin", size=70_000)
    result = cli.run("get", "-q", threaded_server.url(file.path))
    assert result.returncode == 0
    assert (result.stdout, result.stderr) == ("", "")
    assert sha256(cli.cwd / "data.bin") == file.sha256


def test_a_second_run_into_the_same_directory_meanwhile_says_it_is_in_use(
    cli: Cli, threaded_server: ThreadedTestServer
) -> None:
    file = threaded_server.add_file("/u/data.bin", size=100_000)
    threaded_server.set_faults(file.path, Faults(hold_after=10_000), times=1)
    url = threaded_server.url(file.path)
    first = cli.start("get", "--json", url)
    read_until(first, lambda r: r["event"] == "progress" and r["bytes"] == 10_000)
    second = cli.run("get", url)
    threaded_server.release(file.path)
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    assert f"in use by process {first.pid}" in second.stderr
    assert "another run saves into this directory" in second.stderr
    assert sha256(cli.cwd / "data.bin") == file.sha256
