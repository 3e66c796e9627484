"""What every Python client script shares: its arguments and its one-line JSON report.

A client reads its URLs from a file (one per line), saves each URL's body as
``<out>/<last path segment>``, and prints one JSON object on its last stdout line;
``benchmarks/run.py`` reads it. Exit status 0 means "all done" (the runner still
checks every byte); :data:`EXIT_UNSUPPORTED` means "this engine cannot do that yet".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "EXIT_UNSUPPORTED",
    "add_transfer_arguments",
    "host_of",
    "output_name",
    "read_urls",
    "report",
]

EXIT_UNSUPPORTED = 3


def add_transfer_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every downloading client takes."""
    parser.add_argument("--urls", type=Path, required=True, help="file with one URL per line")
    parser.add_argument("--out", type=Path, required=True, help="existing output directory")
    parser.add_argument("--per-host", type=int, required=True, help="connections per host")
    parser.add_argument("--total", type=int, required=True, help="connections overall")
    parser.add_argument("--segments", type=int, default=1, help="ranges per file (1: off)")


def read_urls(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def output_name(url: str) -> str:
    """The file name a URL is saved under: its last path segment."""
    return urlsplit(url).path.rsplit("/", 1)[-1]


def host_of(url: str) -> str:
    """The origin's ``host:port``, the unit of the per-host limit."""
    return urlsplit(url).netloc


def report(**values: object) -> None:
    """Print the client's result as the last line of stdout."""
    sys.stdout.write(json.dumps(values) + "\n")
    sys.stdout.flush()
