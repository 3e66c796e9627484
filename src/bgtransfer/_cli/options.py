"""Options and helpers the commands share: the state directory, exit statuses,
the transfer commands' options (``--limit-rate``, ``--tries``, output)."""

from __future__ import annotations

import argparse
import decimal
import os
import re
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
    "add_transfer_options",
    "int_between",
    "parse_rate",
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


def int_between(low: int, high: int) -> type[int]:
    """An argparse ``type``: a whole number from ``low`` to ``high``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    check.__name__ = "number"
    return check  # type: ignore[return-value]  # argparse takes any callable


_RATE = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>[kmg](?:ib)?|b)?(?:/s)?", re.I)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
RATE_GRAMMAR = (
    "bytes per second: a number, optionally followed by k, M or G (1024, 1024^2, 1024^3, "
    "as wget and curl count; KiB, MiB, GiB alike) and /s: 500k, 2M, 1.5MiB/s, 800000"
)


def parse_rate(text: str) -> int:
    """``--limit-rate``'s value as whole bytes per second (``RATE_GRAMMAR``);
    :class:`argparse.ArgumentTypeError` (a usage error) for anything else.

    ``kB``/``MB`` are refused rather than guessed: 1000 or 1024 is exactly
    the question they leave open."""
    spoken = text.strip()
    found = _RATE.fullmatch(spoken)
    if found is None:
        hint = ""
        if re.fullmatch(r"[\d.]+\s*[kmg]b(/s)?", spoken, re.I):
            hint = " (kB, MB: 1000 or 1024? write k, M, G for 1024's, or the bytes)"
        raise argparse.ArgumentTypeError(f"not a rate: {text!r}{hint}; {RATE_GRAMMAR}")
    unit = (found["unit"] or "").lower()[:1]
    value = int(decimal.Decimal(found["number"]) * _UNITS[unit])
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is less than 1 byte per second")
    return value


parse_rate.__name__ = "rate"  # (argparse names the type in its errors)


def add_transfer_options(parser: argparse.ArgumentParser, *, per_file: bool) -> None:
    """The options ``get`` and ``up`` share: ``--limit-rate``, ``-t/--tries``,
    ``-q/--quiet`` or ``--json``, ``--debug``. ``per_file``: the command
    transfers several files (``get``), each with its attempts and failure."""
    parser.add_argument(
        "--limit-rate",
        type=parse_rate,
        metavar="RATE",
        help="at most RATE bytes per second over the whole run (500k, 2M, 1.5MiB/s; k = 1024)",
    )
    parser.add_argument(
        "-t",
        "--tries",
        type=int_between(1, 1000),
        metavar="N",
        help=f"attempts{' per file' if per_file else ''} before it fails (default 6; 1: no retry)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help=f"print nothing but {'one line per failed file' if per_file else 'a failure'}",
    )
    output.add_argument(
        "--json", action="store_true", help="one JSON object per event and line, for scripts"
    )
    parser.add_argument("--debug", action="store_true", help="show a traceback on an error")


def state_dir(args: argparse.Namespace) -> tuple[Path, bool]:
    """The state dir, and whether it is the default one (its socket may then be
    in $XDG_RUNTIME_DIR)."""
    if args.state_dir:
        return Path(args.state_dir).expanduser().absolute(), False
    return default_state_dir().absolute(), not os.environ.get(STATE_DIR_ENV)
