"""``bgtransfer serve DIR``: the loopback test server over a directory, as a tool."""

from __future__ import annotations

import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_helpers import Cli, make_cli

from bgtransfer._cli.serve import parse_faults
from bgtransfer.testing import Faults


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return make_cli(tmp_path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "served"
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(bytes(range(256)) * 400)
    (root / "sub" / "b.txt").write_text("hello\n")
    return root


def start(cli: Cli, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    serving = cli.start("serve", *args)
    assert serving.stdout is not None
    first = serving.stdout.readline()
    assert first.startswith("serving "), first + serving.communicate(timeout=30)[1]
    base = first.split(" at ")[1].split()[0]
    try:
        yield serving, base
    finally:
        if serving.poll() is None:
            serving.send_signal(signal.SIGINT)
            serving.communicate(timeout=30)


def test_serve_answers_requests_for_the_files_of_a_directory(cli: Cli, tree: Path) -> None:
    for serving, base in start(cli, str(tree)):
        assert serving.stdout is not None
        listed = [serving.stdout.readline().strip() for _ in range(2)]
        assert listed == [f"{base}a.bin", f"{base}sub/b.txt"]
        with urllib.request.urlopen(f"{base}a.bin", timeout=30) as response:
            assert response.read() == (tree / "a.bin").read_bytes()
        ranged = urllib.request.Request(f"{base}sub/b.txt", headers={"Range": "bytes=2-"})
        with urllib.request.urlopen(ranged, timeout=30) as response:
            assert response.status == 206
            assert response.read() == b"llo\n"
        serving.send_signal(signal.SIGINT)
        serving.communicate(timeout=30)
        assert serving.returncode == 0


def test_serve_misbehaves_on_demand(cli: Cli, tree: Path) -> None:
    for _, base in start(cli, str(tree), "--faults", "status=503,retry_after=2"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}a.bin", timeout=30)
        assert caught.value.code == 503
        assert caught.value.headers["Retry-After"] == "2"
        caught.value.close()


def test_get_downloads_from_serve(cli: Cli, tree: Path) -> None:
    for _, base in start(cli, str(tree), "--rate", "1000000"):
        result = cli.run("get", "-d", "out", f"{base}a.bin", f"{base}sub/b.txt")
        assert result.returncode == 0, result.stderr
        assert (cli.cwd / "out" / "a.bin").read_bytes() == (tree / "a.bin").read_bytes()
        assert (cli.cwd / "out" / "b.txt").read_text() == "hello\n"


def test_fault_specs_parse_or_say_what_is_wrong() -> None:
    assert parse_faults("reset_after=100,etag=weak", None) == Faults(reset_after=100, etag="weak")
    assert parse_faults("drip=10:0.5", None) == Faults(drip=(10, 0.5))
    assert parse_faults(None, 2000) == Faults(drip=(100, 0.05))
    assert parse_faults("", None) is None
    with pytest.raises(ValueError, match="not KNOB=VALUE"):
        parse_faults("reset_after", None)
    with pytest.raises(ValueError, match=r"no fault knob .no_such_knob. \(knobs: status"):
        parse_faults("no_such_knob=1", None)


def test_serve_refuses_what_is_not_a_directory(cli: Cli, tree: Path) -> None:
    result = cli.run("serve", str(tree / "a.bin"))
    assert result.returncode == 2
    assert "is not a directory" in result.stderr
    result = cli.run("serve", str(tree), "--faults", "status=99")
    assert result.returncode == 2
    assert "Faults.status" in result.stderr
