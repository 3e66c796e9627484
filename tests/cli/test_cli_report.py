"""What ``bgtransfer get`` draws: rich's live bars on a terminal, plain lines without rich."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from bgtransfer import HTTPStatusError
from bgtransfer._cli import report
from bgtransfer._cli.report import Reporter, RichReporter, Wanted, make_reporter


def test_rich_bars_show_bytes_and_the_lines_stay(tmp_path: Path) -> None:
    out = io.StringIO()
    shown = RichReporter(out, force_terminal=True)
    a = Wanted("http://127.0.0.1:9/a.bin", tmp_path / "a.bin")
    b = Wanted("http://127.0.0.1:9/b.bin", tmp_path / "b.bin")
    shown.started(a, None)
    shown.started(b, 500)
    shown.progress(a, 1_000, 4_000)
    shown.progress(b, 2_000, None)
    shown.finished(a, a.destination, 4_000)
    shown.failed(b, HTTPStatusError(404, "Not Found", url=b.url), 8)
    shown.summary(8)
    shown.close()
    text = out.getvalue()
    assert f"done {a.url} -> {a.destination} (4000 bytes)" in text
    assert f"continue {b.url} -> {b.destination} (500 bytes so far)" in text
    assert "1 downloaded, 0 already there, 1 failed" in text
    assert "a.bin" in text  # the bar's label
    after = text.split(f"done {a.url}")[1]
    assert "a.bin \x1b" not in after  # its bar is gone with its line, not drawn once more
    assert "\x1b[" in text  # drawn for a terminal


def test_without_rich_a_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich.console", None)  # not installed: import fails
    monkeypatch.setattr(report.sys.stdout, "isatty", lambda: True)
    chosen = make_reporter(quiet=False, as_json=False)
    assert type(chosen) is Reporter
