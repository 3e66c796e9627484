"""A session's own directory: made private, and an ephemeral one removed at the end."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .files import make_private_dir

__all__ = ["make_session_dir", "remove_ephemeral_dir"]


def make_session_dir(base: Path | None, identifier: str | None) -> Path:
    """``base/identifier`` (made private) for a background session; a fresh
    temporary directory for an ephemeral one (in ``base``, made private, when
    given: a temporary directory on the destinations' file system makes every
    move a rename)."""
    if identifier is None:
        parent = make_private_dir(base) if base is not None else None
        return Path(tempfile.mkdtemp(prefix="bgtransfer-", dir=parent))
    assert base is not None
    return make_private_dir(base / identifier)


def remove_ephemeral_dir(directory: Path) -> None:
    """Its partial files; ``downloads/`` and the directory only when empty
    (finished files there are the user's)."""
    shutil.rmtree(directory / "partials", ignore_errors=True)
    downloads = directory / "downloads"
    try:
        downloads.rmdir()
        directory.rmdir()
    except OSError:
        pass
