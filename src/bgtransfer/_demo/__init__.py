"""``bgtransfer demo`` on a terminal: the seed app as a Textual app (``bgtransfer[cli]``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._session import default_state_dir

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """Run the interactive demo until the user quits; the exit status.

    Takes ``state_dir`` (default: the per-user state dir), ``output`` (where
    the files go; default the demo session's ``downloads/``) and ``daemon``
    (the daemon's session, and the server as a detached process) from ``args``.
    """
    try:
        from .app import DemoApp  # noqa: PLC0415 (textual is optional)
        from .controller import DemoController  # noqa: PLC0415
    except ImportError as exc:  # textual is in the cli extra
        print(
            f"bgtransfer demo: the terminal app needs textual ({exc}); "
            "install it with: pip install 'bgtransfer[cli]', or run: bgtransfer demo --headless",
            file=sys.stderr,
        )
        return 2
    state_dir = getattr(args, "state_dir", None)
    output = getattr(args, "output", None)
    controller = DemoController(
        Path(state_dir).expanduser().absolute() if state_dir else default_state_dir().absolute(),
        output=Path(output).expanduser().absolute() if output else None,
        daemon=bool(getattr(args, "daemon", False)),
        default_state_dir=not state_dir,
    )
    app = DemoApp(controller)
    app.run()
    return app.return_code or 0
