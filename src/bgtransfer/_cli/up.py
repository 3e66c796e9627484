"""``bgtransfer up FILE URL``: upload a file, continuing where a previous run stopped.

Like ``get``, every run is a background session (``--session ID``, or one named
after the file and the URL), so a run stopped by Ctrl-C, SIGTERM or a crash
leaves its task in the session's journal. The next run with the same arguments
reattaches it: a resumable upload (``--protocol tus``, ``ietf``, or ``auto`` when
the server offers one) continues from the offset the server holds, without
sending again what it has; a plain one starts again from the first byte (HTTP
has no way to continue a plain ``PUT``). A run after a finished upload uploads
again (an upload, unlike a download, leaves nothing to tell it is done).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from pathlib import Path

import attrs

from .._core.config import Configuration
from .._core.events import CancelledEvent, ErrorEvent
from .._core.states import TaskState
from .._exceptions import SessionInUseError
from .._session import Session
from .._task import UploadTask
from .get import follow, run_until_signal
from .options import EXIT_FAILURE, EXIT_OK, add_state_dir_option, add_transfer_options
from .report import Reporter, Wanted, make_reporter

__all__ = ["add_parser", "run", "session_for_upload"]

PROTOCOLS = ("plain", "tus", "ietf", "auto")

UP_EXIT_STATUSES = """\
exit statuses (those of get):
  0    the file was sent and the server accepted it
  1    another failure (the task cancelled, the session in use by another run...)
  2    usage: wrong arguments, a file or URL that cannot be used
  3    local file: the file could not be read, or changed while it was sent
  4    network: no connection, connection lost, timeout
  5    integrity: the server refused the upload's checksum
  7    protocol: the server broke an HTTP or resumable-upload rule
  8    HTTP status: the server answered with an error (404, 413, 500...)
  130  interrupted by Ctrl-C; 143 stopped by SIGTERM (run it again to continue)
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser(
        "up",
        help="upload a file; a second run continues a resumable upload where it stopped",
        description=(
            "Upload FILE to URL in a background session: run the same command again after\n"
            "Ctrl-C, SIGTERM or a crash and a resumable upload (tus, IETF) continues from\n"
            "the bytes the server holds; a plain one starts again."
        ),
        epilog=UP_EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument("file", metavar="FILE", help="what to send")
    up.add_argument("url", metavar="URL", help="where to send it (a tus/IETF endpoint for those)")
    up.add_argument(
        "--method",
        choices=("PUT", "POST"),
        type=str.upper,
        default="PUT",
        help="the plain upload's method, or the IETF draft's creation (default PUT)",
    )
    up.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="plain",
        help="plain: one request; tus, ietf: resumable; auto: ask the server (default plain)",
    )
    up.add_argument(
        "--session",
        metavar="ID",
        help="the background session (default: one named after FILE and URL)",
    )
    add_transfer_options(up, per_file=False)
    add_state_dir_option(up)
    up.set_defaults(run=run)


def session_for_upload(file: Path, url: str) -> str:
    """The session of runs that send ``file`` (an absolute path) to ``url``."""
    key = f"{file}\0{url}".encode("utf-8", "surrogateescape")
    return f"bgtransfer-up-{hashlib.sha256(key).hexdigest()[:16]}"


def run(args: argparse.Namespace) -> int:
    file = Path(args.file).expanduser().absolute()
    identifier = args.session or session_for_upload(file, args.url)
    want = Wanted(args.url, file)
    reporter = make_reporter(quiet=args.quiet, as_json=args.json, upload=True)
    try:
        return asyncio.run(
            run_until_signal(_upload(args, identifier, want, reporter), identifier, reporter)
        )
    except SessionInUseError as exc:
        if args.debug:
            raise
        print(
            f"bgtransfer up: {exc}: another run sends this file there; "
            "wait for it to end, or give this one its own --session",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    finally:
        reporter.close()


async def _upload(
    args: argparse.Namespace, identifier: str, want: Wanted, reporter: Reporter
) -> int:
    config = Configuration(
        progress_interval=0.2, handle_sigterm=False, max_bytes_per_second=args.limit_rate
    )
    if args.tries is not None:
        config = config.replace(retry=attrs.evolve(config.retry, max_attempts=args.tries))
    async with Session(identifier, state_dir=args.state_dir, config=config) as session:
        task = await _reattach_or_submit(session, args, want, reporter)
        statuses = await follow(session, {task.id: want}, reporter)
        await session.acknowledge(task.id)
    status = min(statuses, default=EXIT_OK)
    reporter.summary(status)
    return status


async def _reattach_or_submit(
    session: Session, args: argparse.Namespace, want: Wanted, reporter: Reporter
) -> UploadTask:
    """The upload an earlier run left (continued), else a new one."""
    for found in session.tasks():
        if not isinstance(found, UploadTask) or found.url != want.url:
            continue
        if found.source != want.destination.resolve():
            continue
        if isinstance(found.result, ErrorEvent | CancelledEvent):
            await found.acknowledge()  # an earlier run's failure: try again afresh
            continue
        if found.result is not None:
            await found.acknowledge()  # finished, never acknowledged: send it again
            continue
        if found.state is TaskState.SUSPENDED:
            found.resume()
        reporter.started(want, found.bytes_sent)
        return found
    task = await session.upload(
        want.url, want.destination, method=args.method, protocol=args.protocol
    )
    reporter.started(want, None)
    return task
