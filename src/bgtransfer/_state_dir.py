"""Where background sessions keep their files unless told otherwise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["STATE_DIR_ENV", "default_state_dir"]

STATE_DIR_ENV = "BGTRANSFER_STATE_DIR"


def default_state_dir() -> Path:
    """Where background sessions keep their files unless told otherwise.

    ``$BGTRANSFER_STATE_DIR`` if set; otherwise the platform's per-user state
    directory: ``$XDG_STATE_HOME/bgtransfer`` (default ``~/.local/state/bgtransfer``)
    on Linux and other Unixes, ``~/Library/Application Support/bgtransfer`` on
    macOS, ``%LOCALAPPDATA%\\bgtransfer`` on Windows.
    """
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override).expanduser().absolute()
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "bgtransfer"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "bgtransfer"
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else home / ".local" / "state") / "bgtransfer"
