"""``bgtransfer`` itself: one line for an error nobody expected, the traceback with --debug."""

from __future__ import annotations

import argparse

import pytest

from bgtransfer._cli import get, main


def broken(args: argparse.Namespace) -> int:
    raise RuntimeError("something nobody expected")


def test_an_unexpected_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(get, "run", broken)
    assert main(["get", "http://127.0.0.1:9/a"]) == 1
    assert capsys.readouterr().err == (
        "bgtransfer: unexpected error: RuntimeError('something nobody expected') "
        "(--debug shows the traceback)\n"
    )


def test_debug_lets_it_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get, "run", broken)
    with pytest.raises(RuntimeError, match="nobody expected"):
        main(["get", "--debug", "http://127.0.0.1:9/a"])


def test_help_of_get_lists_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["get", "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for line in ("3    local file", "4    network", "8    HTTP status", "130  interrupted"):
        assert line in shown
    assert "-x N, --connections-per-host N" in shown
