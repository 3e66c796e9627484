"""``bgtransfer get URL...``: download files, continuing where a previous run stopped.

Every run is a background session (``--session ID``, or one named after the
output directory), so a run stopped by Ctrl-C, SIGTERM or a crash leaves its
tasks in the session's journal and the next run with the same arguments
continues them from the bytes on disk. A file is "already complete" when its
destination exists and no task of the session is still writing it: the library
only ever puts a file at its destination whole (a partial file is renamed over
it when complete), so an existing destination is a finished download, and it is
not fetched again (docs/cli.md says so).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import attrs

from .._core.config import Configuration
from .._core.digests import parse_checksum
from .._core.events import (
    CancelledEvent,
    ErrorEvent,
    EventsDeliveredEvent,
    EventsGapEvent,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
)
from .._core.naming import filename_from_url, unique_name
from .._core.request import DownloadRequest
from .._core.states import TaskState
from .._exceptions import (
    HTTPStatusError,
    IntegrityError,
    LocalFileError,
    NetworkError,
    ProtocolError,
    RedirectError,
    SessionInUseError,
    TransferError,
    TransferTimeoutError,
    UploadChecksumError,
)
from .._session import Session
from .._task import DownloadTask
from .options import (
    EXIT_FAILURE,
    EXIT_HTTP_STATUS,
    EXIT_INTEGRITY,
    EXIT_LOCAL_FILE,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USAGE,
    add_state_dir_option,
    add_transfer_options,
    int_between,
)
from .report import Reporter, Wanted, make_reporter

__all__ = [
    "UsageError",
    "add_parser",
    "exit_status_of",
    "follow",
    "int_between",
    "run",
    "run_until_signal",
    "session_for_directory",
]

EXIT_STATUSES = """\
exit statuses:
  0    every file is there (downloaded now or before)
  1    another failure (a task cancelled, the session in use by another run...)
  2    usage: wrong arguments, a URL or destination that cannot be used
  3    local file: a file could not be written (disk full, permission denied...)
  4    network: no connection, connection lost, body cut short, timeout
  5    integrity: the file is not what --checksum or --expected-size says
  7    protocol: the server broke an HTTP rule, or a redirect was refused
  8    HTTP status: the server answered with an error (404, 500...)
  130  interrupted by Ctrl-C; 143 stopped by SIGTERM (run it again to continue)
With several failures, the lowest status wins (as wget does).
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    get = commands.add_parser(
        "get",
        help="download URLs; a second run continues where the first stopped",
        description=(
            "Download URLs in a background session: run the same command again after\n"
            "Ctrl-C, SIGTERM or a crash and it continues where it stopped; a file already\n"
            "at its destination is not fetched again."
        ),
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    get.add_argument("urls", nargs="*", metavar="URL", help="what to download")
    where = get.add_mutually_exclusive_group()
    where.add_argument(
        "-d", "--dir", metavar="DIR", help="save into DIR, made if missing (default: current dir)"
    )
    where.add_argument("-o", "--output", metavar="FILE", help="save the one URL as FILE")
    get.add_argument(
        "-i",
        "--input-file",
        metavar="LIST",
        help=(
            "read URLs from LIST, one per line, each optionally followed by its checksum "
            "('URL sha256:HEX'; '-': stdin; blank and '#' lines skipped)"
        ),
    )
    get.add_argument(
        "--checksum",
        metavar="ALGO:HEX",
        help="the one URL's digest (sha256:HEX, sha512:, blake2b:, sha1:, md5:); "
        "a mismatch exits 5 and leaves the destination untouched",
    )
    get.add_argument(
        "--expected-size",
        type=int_between(0, 2**63 - 1),
        metavar="N",
        help="the one URL's size in bytes; another size exits 5",
    )
    get.add_argument(
        "--session",
        metavar="ID",
        help="the background session (default: one named after the output directory)",
    )
    get.add_argument(
        "-x",
        "--connections-per-host",
        type=int_between(1, 1000),
        default=6,
        metavar="N",
        help="connections per host at most (default 6)",
    )
    get.add_argument(
        "-s",
        "--segments",
        type=int_between(1, 16),
        default=1,
        metavar="N",
        help="fetch each large file as N ranges at once, when the server allows (1-16)",
    )
    add_transfer_options(get, per_file=True)
    add_state_dir_option(get)
    get.set_defaults(run=run)


class UsageError(ValueError):
    """Arguments that cannot be used; exit status 2."""


def session_for_directory(directory: Path) -> str:
    """The session of runs that save into ``directory`` (an absolute path)."""
    digest = hashlib.sha256(str(directory).encode("utf-8", "surrogateescape")).hexdigest()
    return f"bgtransfer-get-{digest[:16]}"


def _checked(checksum: str, where: str) -> str:
    try:
        return str(parse_checksum(checksum))
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _read_list(name: str) -> list[tuple[str, str | None]]:
    """The list's URLs, each with the checksum its line names (``URL ALGO:HEX``)."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the URL list {name!r}: {exc}") from None
    entries: list[tuple[str, str | None]] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2:
            raise UsageError(f"{name}, line {number}: expected 'URL' or 'URL ALGO:HEX'")
        checksum = _checked(fields[1], f"{name}, line {number}") if len(fields) == 2 else None
        entries.append((fields[0], checksum))
    return entries


def plan(args: argparse.Namespace) -> tuple[str, list[Wanted]]:
    """The session's identifier and the files asked for, in order; raises
    :class:`UsageError` for arguments that cannot be used."""
    entries: list[tuple[str, str | None]] = [(url, None) for url in args.urls]
    if args.input_file is not None:
        entries.extend(_read_list(args.input_file))
    if not entries:
        raise UsageError("no URL given (as arguments or with -i LIST)")
    if args.checksum is not None or args.expected_size is not None:
        if len(entries) != 1:
            raise UsageError(
                f"--checksum and --expected-size take exactly one URL; {len(entries)} given "
                "(with -i LIST, put each URL's checksum on its line: 'URL sha256:HEX')"
            )
        if args.checksum is not None:
            if entries[0][1] is not None:
                raise UsageError("--checksum and a checksum on the list's line: give one")
            entries[0] = (entries[0][0], _checked(args.checksum, "--checksum"))
    urls = [url for url, _ in entries]
    checksums = [checksum for _, checksum in entries]
    wanted: list[Wanted] = []
    if args.output is not None:
        if len(urls) != 1:
            raise UsageError(f"-o FILE takes exactly one URL; {len(urls)} given (use -d DIR)")
        destination = Path(args.output).expanduser().absolute()
        directory = destination.parent
        if not directory.is_dir():
            raise UsageError(f"the directory of {args.output!r} does not exist")
        wanted.append(Wanted(urls[0], destination, checksums[0], args.expected_size))
    else:
        directory = Path(args.dir or ".").expanduser().absolute()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot make the directory {str(directory)!r}: {exc}") from None
        # Names from the URLs, made unique within this list only (never against
        # the disk): the same command names the same files on every run.
        taken: set[str] = set()
        for url, checksum in entries:
            name = unique_name(filename_from_url(url), taken.__contains__)
            taken.add(name)
            wanted.append(Wanted(url, directory / name, checksum, args.expected_size))
    identifier = args.session or session_for_directory(directory)
    return identifier, wanted


def exit_status_of(error: TransferError | None) -> int:
    """The exit status a failed file stands for (None: it was cancelled)."""
    if isinstance(error, IntegrityError | UploadChecksumError):
        return EXIT_INTEGRITY
    if isinstance(error, HTTPStatusError):
        return EXIT_HTTP_STATUS
    if isinstance(error, LocalFileError):
        return EXIT_LOCAL_FILE
    if isinstance(error, NetworkError | TransferTimeoutError):
        return EXIT_NETWORK
    if isinstance(error, ProtocolError | RedirectError):
        return EXIT_PROTOCOL
    return EXIT_FAILURE


def run(args: argparse.Namespace) -> int:
    try:
        identifier, wanted = plan(args)
    except UsageError as exc:
        print(f"bgtransfer get: {exc}", file=sys.stderr)
        return EXIT_USAGE
    reporter = make_reporter(quiet=args.quiet, as_json=args.json)
    try:
        return asyncio.run(
            run_until_signal(_download(args, identifier, wanted, reporter), identifier, reporter)
        )
    except SessionInUseError as exc:
        if args.debug:
            raise
        print(
            f"bgtransfer get: {exc}: another run saves into this directory; "
            "wait for it to end, or give this one its own --session",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    finally:
        reporter.close()


async def run_until_signal(
    transfer: Coroutine[Any, Any, int], identifier: str, reporter: Reporter
) -> int:
    """Run ``transfer`` (a download or upload in session ``identifier``); on
    SIGINT or SIGTERM stop cleanly (leaving the session's block journals where
    each task stands) and exit 130 or 143."""
    loop = asyncio.get_running_loop()
    work = asyncio.create_task(transfer)
    stopped: list[signal.Signals] = []

    def stop(signum: signal.Signals) -> None:
        if stopped:  # a second one while the session journals: end now (SQLite keeps
            os._exit(128 + signum)  # the journal whole; the last checkpoint counts)
        stopped.append(signum)
        work.cancel()

    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
        except (NotImplementedError, RuntimeError):  # not POSIX, or not the main thread
            continue
        handled.append(signum)
    try:
        return await work
    except asyncio.CancelledError:
        if not stopped:
            raise  # cancelled from outside: not ours to turn into a status
        hint = f"run the same command again to continue (session {identifier})"
        reporter.interrupted("Ctrl-C" if stopped[0] is signal.SIGINT else "SIGTERM", hint)
        return EXIT_SIGINT if stopped[0] is signal.SIGINT else EXIT_SIGTERM
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _download(
    args: argparse.Namespace, identifier: str, wanted: list[Wanted], reporter: Reporter
) -> int:
    config = Configuration(
        max_connections_per_host=args.connections_per_host,
        segments=args.segments,
        progress_interval=0.2,
        handle_sigterm=False,  # this command handles SIGTERM itself (and says how to continue)
        max_bytes_per_second=args.limit_rate,
    )
    if args.tries is not None:
        config = config.replace(retry=attrs.evolve(config.retry, max_attempts=args.tries))
    async with Session(identifier, state_dir=args.state_dir, config=config) as session:
        ours, statuses = await _reattach_or_submit(session, wanted, reporter)
        statuses += await follow(session, ours, reporter)
        await session.acknowledge(*ours)
    status = min(statuses, default=EXIT_OK)
    reporter.summary(status)
    return status


async def _reattach_or_submit(
    session: Session, wanted: list[Wanted], reporter: Reporter
) -> tuple[dict[int, Wanted], list[int]]:
    """Each file asked for: its task left by an earlier run (continued), nothing
    when it is already complete (and matches its checksum and size, when given),
    else a new task. Returns the tasks to follow, and the exit status of each
    file already there that does not match."""
    statuses: list[int] = []
    left: dict[tuple[str, Path], DownloadTask] = {}
    for found in session.tasks():
        if isinstance(found, DownloadTask):
            left[found.url, found.destination.absolute()] = found
    ours: dict[int, Wanted] = {}
    new: list[Wanted] = []
    for want in wanted:
        task: DownloadTask | None = left.get((want.url, want.destination))
        if task is not None and isinstance(task.result, ErrorEvent | CancelledEvent):
            await task.acknowledge()  # an earlier run's failure: try again afresh
            task = None
        if task is not None:
            if task.state is TaskState.SUSPENDED:
                task.resume()  # paused with `bgtransfer pause`: asking again resumes it
            ours[task.id] = want
            reporter.started(want, task.bytes_received)
        elif want.destination.exists():
            mismatch = await _check_existing(want)
            if mismatch is None:
                reporter.skipped(want)
            else:
                statuses.append(EXIT_INTEGRITY)
                reporter.failed(want, mismatch, EXIT_INTEGRITY)
        else:
            new.append(want)
    requests = [
        DownloadRequest(
            want.url,
            want.destination,
            checksum=want.checksum,
            expected_size=want.expected_size,
        )
        for want in new
    ]
    for task, want in zip(await session.download_many(requests), new, strict=True):
        ours[task.id] = want
        reporter.started(want, None)
    return ours, statuses


async def _check_existing(want: Wanted) -> IntegrityError | None:
    """A file already at its destination against ``--checksum``/``--expected-size``
    (read only when one is given); the error when it does not match. It is left
    as it is either way."""
    if want.checksum is None and want.expected_size is None:
        return None
    return await asyncio.to_thread(_mismatch_of_file, want)


def _mismatch_of_file(want: Wanted) -> IntegrityError | None:
    checksum = None if want.checksum is None else parse_checksum(want.checksum)
    digest = None if checksum is None else hashlib.new(checksum.algorithm)
    size = 0
    try:
        with want.destination.open("rb") as file:
            while chunk := file.read(1 << 20):
                size += len(chunk)
                if digest is not None:
                    digest.update(chunk)
    except OSError as exc:  # unreadable: say so as a mismatch would, naming the cause
        return IntegrityError(
            f"the file already there cannot be read: {exc}",
            url=want.url,
            algorithm="size",
            expected="?" if want.expected_size is None else str(want.expected_size),
            actual="?",
        )
    if want.expected_size is not None and size != want.expected_size:
        return IntegrityError(
            f"the file already there has {size} bytes, --expected-size is {want.expected_size}",
            url=want.url,
            algorithm="size",
            expected=str(want.expected_size),
            actual=str(size),
        )
    if checksum is not None and digest is not None and digest.hexdigest() != checksum.hex:
        return IntegrityError(
            f"{checksum.algorithm} of the file already there is {digest.hexdigest()}, "
            f"the checksum says {checksum.hex}",
            url=want.url,
            algorithm=checksum.algorithm,
            expected=checksum.hex,
            actual=digest.hexdigest(),
        )
    return None


async def follow(session: Session, ours: dict[int, Wanted], reporter: Reporter) -> list[int]:
    """Report the events of our tasks until each has ended; return the exit
    status of each failed one."""
    statuses: list[int] = []
    remaining = set(ours)
    if not remaining:
        return statuses
    async with session.events() as events:
        async for event in events:
            if isinstance(event, EventsDeliveredEvent | EventsGapEvent):
                continue
            want = ours.get(event.task_id)
            if want is None:
                continue  # a task of an earlier run that this one did not ask for
            match event:
                case ProgressEvent(total_bytes_written=done, total_bytes_expected=total):
                    reporter.progress(want, done, total)
                case ResumedEvent(offset=offset):
                    reporter.resumed(want, offset)
                case RetryEvent(attempt=attempt, error=error, delay=delay):
                    reporter.retry(want, attempt, error, delay)
                case FinishedEvent(location=location, total_bytes=size):
                    reporter.finished(want, location, size)
                case ErrorEvent(error=error):
                    statuses.append(exit_status_of(error))
                    reporter.failed(want, error, statuses[-1])
                case CancelledEvent():
                    statuses.append(exit_status_of(None))
                    reporter.failed(want, None, statuses[-1])
            if isinstance(event, FinishedEvent | ErrorEvent | CancelledEvent):
                remaining.discard(event.task_id)
                if not remaining:
                    break
    return statuses
