"""Options and helpers the commands share: the state directory, exit statuses."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .._session import STATE_DIR_ENV, default_state_dir

__all__ = [
    "EXIT_FAILURE",
    "EXIT_HTTP_STATUS",
    "EXIT_INTEGRITY",
    "EXIT_LOCAL_FILE",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_PROTOCOL",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_USAGE",
    "add_state_dir_option",
    "state_dir",
]

# Exit statuses (docs/cli.md lists them; wget's numbering where it has one).
EXIT_OK = 0
EXIT_FAILURE = 1  # anything else: the session is in use, a journal cannot be read...
EXIT_USAGE = 2  # wrong arguments, a URL or destination the library refuses (argparse's 2)
EXIT_LOCAL_FILE = 3  # a local file could not be written (disk full, permission...)
EXIT_NETWORK = 4  # no connection, connection lost, truncated body, timeout
EXIT_INTEGRITY = 5  # the file is not what was expected (checksums: issue 22)
EXIT_PROTOCOL = 7  # the server broke an HTTP rule, or a redirect was refused
EXIT_HTTP_STATUS = 8  # the server answered with an error status (404, 500...)
EXIT_SIGINT = 130  # interrupted by Ctrl-C (SIGINT); run the command again to continue
EXIT_SIGTERM = 143  # stopped by SIGTERM; run the command again to continue


def add_state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"the state directory (default: ${STATE_DIR_ENV} or the per-user one)",
    )


def state_dir(args: argparse.Namespace) -> tuple[Path, bool]:
    """The state dir, and whether it is the default one (its socket may then be
    in $XDG_RUNTIME_DIR)."""
    if args.state_dir:
        return Path(args.state_dir).expanduser().absolute(), False
    return default_state_dir().absolute(), not os.environ.get(STATE_DIR_ENV)
