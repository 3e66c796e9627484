"""``bgtransfer._demo.run``, the hook ``bgtransfer demo`` calls on a terminal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from bgtransfer import _demo


def test_without_textual_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "textual"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "textual", None)
    for name in ("bgtransfer._demo.app", "bgtransfer._demo.controller"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    state = tmp_path / "state"
    assert _demo.run(argparse.Namespace(state_dir=str(state), output=None)) == 2
    err = capsys.readouterr().err
    assert "pip install 'bgtransfer[cli]'" in err
    assert "bgtransfer demo --headless" in err
    assert not state.exists()  # nothing was started
