"""The ``bgtransfer`` command line (the console script ``bgtransfer._cli:main``).

One module per command group, each adding its sub-commands to the parser
(``add_parser``/``add_parsers``) with a ``run(args) -> int`` as their default:
``get`` (download URLs, continuing where a previous run stopped), ``up``
(upload a file, the same way), ``tasks``
(``ls``, ``pause``, ``resume``, ``cancel`` on a session's tasks), ``serve`` (the
loopback test server over a directory), ``daemon`` (``daemon`` and ``status``)
and ``headless`` (``demo``; the interactive one is ``bgtransfer._demo``,
imported lazily). docs/cli.md is the user's page, exit statuses included.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from .._exceptions import BgTransferError
from . import daemon, get, headless, serve, tasks, up
from .headless import DEMO_FILES
from .options import EXIT_FAILURE, EXIT_SIGINT, EXIT_USAGE

__all__ = ["DEMO_FILES", "main"]


def parser() -> argparse.ArgumentParser:
    """The whole command line's parser."""
    top = argparse.ArgumentParser(
        prog="bgtransfer",
        description="Durable background file transfers.",
        epilog="docs/cli.md describes every command and the exit statuses.",
    )
    top.add_argument("--version", action="version", version=f"bgtransfer {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    get.add_parser(commands)
    up.add_parser(commands)
    tasks.add_parsers(commands)
    serve.add_parser(commands)
    headless.add_parser(commands)
    daemon.add_parsers(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bgtransfer`` command; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        return EXIT_SIGINT
    except (BgTransferError, ValueError, OSError) as exc:
        if getattr(args, "debug", False):
            raise
        # Bad input named by the library (URL, destination, identifier...) is a
        # usage error; the rest (session in use, journal, files) a failure.
        usage = isinstance(exc, ValueError) and not isinstance(exc, OSError)
        print(f"bgtransfer: {exc}", file=sys.stderr)
        return EXIT_USAGE if usage else EXIT_FAILURE
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        print(
            f"bgtransfer: unexpected error: {exc!r} (--debug shows the traceback)", file=sys.stderr
        )
        return EXIT_FAILURE
    return status


if __name__ == "__main__":
    sys.exit(main())
