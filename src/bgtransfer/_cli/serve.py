"""``bgtransfer serve DIR``: the loopback test server over a directory's files.

Every regular file under DIR is served at its relative path (read once, at
start: this is a tool to try transfers on, not a web server), with the test
server's Range/If-Range support, ``--rate`` to throttle each response and
``--faults`` to make it misbehave (any :class:`~bgtransfer.testing.Faults`
knob), until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .options import EXIT_OK, EXIT_USAGE, parse_rate

if TYPE_CHECKING:
    from ..testing import Faults

# The test server (and aiohttp.web under it) is imported by ``serve`` only, not
# when the parser is built: every command builds it (tests/test_startup.py).

__all__ = ["add_parser", "parse_faults"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve a directory's files on loopback (the test server), until Ctrl-C",
        description="Serve every file under DIR from the package's loopback test server.",
        epilog="fault knobs: the fields of bgtransfer.testing.Faults (an unknown knob's "
        "error lists them). Example: --faults reset_after=100000 --faults-times 1",
    )
    serve.add_argument("directory", metavar="DIR", help="the directory whose files to serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument(
        "--rate",
        type=parse_rate,
        metavar="RATE",
        help="send each response at about RATE bytes/s (get --limit-rate's grammar: 500k, 5M)",
    )
    serve.add_argument(
        "--faults",
        metavar="KNOB=VALUE,...",
        help="misbehave on every file: test-server fault knobs, e.g. status=503,retry_after=2",
    )
    serve.add_argument(
        "--faults-times",
        type=int,
        metavar="N",
        help="apply --faults and --rate to the first N requests of each file only",
    )
    serve.set_defaults(run=run)


def _value(name: str, text: str) -> Any:
    """``text`` as the type of the knob ``name`` (its annotation, a string)."""
    from ..testing import Faults  # noqa: PLC0415 (serve only: see the imports)

    fields = attrs.fields_dict(Faults)
    if name not in fields:
        raise ValueError(f"no fault knob {name!r} (knobs: {', '.join(fields)})")
    try:
        return _convert(str(fields[name].type), text)
    except ValueError as exc:
        raise ValueError(f"fault {name}={text!r}: {exc}") from None


def _convert(kind: str, text: str) -> Any:
    if kind.startswith("bool"):
        if text.lower() not in {"true", "false"}:
            raise ValueError("expected true or false")
        return text.lower() == "true"
    if kind.startswith("tuple"):  # drip: BYTES:SECONDS
        count, colon, seconds = text.partition(":")
        if not colon:
            raise ValueError("expected BYTES:SECONDS")
        return (int(count), float(seconds))
    if kind.startswith("int"):
        return int(text)
    if kind.startswith("float"):
        return float(text)
    return text


def parse_faults(spec: str | None, rate: int | None) -> Faults | None:
    """``knob=value,...`` (and a rate) as :class:`Faults`; ValueError names what is wrong."""
    knobs: dict[str, Any] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        name, equals, text = item.partition("=")
        if not equals:
            raise ValueError(f"fault {item!r} is not KNOB=VALUE")
        knobs[name.strip()] = _value(name.strip(), text.strip())
    if rate is not None:
        if rate <= 0:
            raise ValueError(f"--rate must be > 0, got {rate}")
        knobs.setdefault("drip", (max(1, rate // 20), 0.05))
    if not knobs:
        return None
    from ..testing import Faults  # noqa: PLC0415 (serve only: see the imports)

    try:
        return Faults(**knobs)
    except TypeError as exc:
        raise ValueError(f"bad fault knobs {spec!r}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not directory.is_dir():
        print(f"bgtransfer serve: {args.directory!r} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        faults = parse_faults(args.faults, args.rate)
    except ValueError as exc:
        print(f"bgtransfer serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_serve(args, directory, faults))


def _read_tree(directory: Path) -> dict[str, bytes]:
    """Every regular file under ``directory`` (no symbolic link), by its URL path."""
    files = {}
    for file in sorted(directory.rglob("*")):
        if file.is_file() and not file.is_symlink():
            files["/" + file.relative_to(directory).as_posix()] = file.read_bytes()
    return files


async def _serve(args: argparse.Namespace, directory: Path, faults: Faults | None) -> int:
    from ..testing import TestServer  # noqa: PLC0415 (serve only: see the imports)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        files = await asyncio.to_thread(_read_tree, directory)
        async with TestServer(args.host, args.port) as server:
            for path, data in files.items():
                server.add_file(path, data=data)
                if faults is not None:
                    server.set_faults(path, faults, times=args.faults_times)
            paths = list(files)
            print(
                f"serving {len(paths)} files of {directory} at {server.base_url}/ (Ctrl-C stops)",
                flush=True,
            )
            for path in paths:
                print(f"  {server.url(path)}", flush=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return EXIT_OK
