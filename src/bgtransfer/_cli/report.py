"""How ``bgtransfer get`` tells what happens: live bars, plain lines, JSON lines, or nothing.

:func:`make_reporter` picks one: ``--json`` gives one JSON object per line on
stdout (NDJSON); ``-q`` nothing on stdout; a terminal gets rich's live bars (one
per running file plus a total: bytes, rate, ETA) when rich is installed (the
``cli`` extra); anything else (a pipe, a file, no rich) plain lines. Every
reporter writes one line per failed file on stderr, whatever the mode.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

import attrs

from .._exceptions import IntegrityError, TransferError

__all__ = ["Reporter", "Wanted", "make_reporter"]


@attrs.frozen
class Wanted:
    """One file the command was asked for: its URL and where it goes, and what
    its bytes must be (``--checksum``, ``--expected-size``; None: not checked)."""

    url: str
    destination: Path
    checksum: str | None = None
    expected_size: int | None = None


class Reporter:
    """Plain lines on stdout (the fallback); the others override what they show.

    ``upload``: the lines of ``bgtransfer up`` (a :class:`Wanted`'s
    ``destination`` is then the file sent, and ``url`` where it goes)."""

    upload = False

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.counts = {"downloaded": 0, "already_there": 0, "failed": 0}

    def _finished_count(self) -> None:
        self.counts["downloaded"] += 1

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def failure_line(self, text: str) -> None:
        print(f"bgtransfer: {text}", file=self.err, flush=True)

    # -- what happens --------------------------------------------------------------

    def skipped(self, want: Wanted) -> None:
        self.counts["already_there"] += 1
        self.line(f"already there, not fetched again: {want.destination}")

    def started(self, want: Wanted, continued_from: int | None) -> None:
        if self.upload:
            verb = "up" if continued_from is None else "continue"
            self.line(f"{verb} {want.destination} -> {want.url}")
        elif continued_from is None:
            self.line(f"get {want.url} -> {want.destination}")
        else:
            self.line(f"continue {want.url} -> {want.destination} ({continued_from} bytes so far)")

    def progress(self, want: Wanted, done: int, total: int | None) -> None:
        pass  # plain lines tell starts and ends only: logs stay short

    def resumed(self, want: Wanted, offset: int) -> None:
        self.line(f"resumed {want.url} at {offset} bytes")

    def retry(self, want: Wanted, attempt: int, error: TransferError, delay: float) -> None:
        self.line(f"retry {attempt} in {delay:.1f} s: {error}")

    def finished(self, want: Wanted, location: Path, size: int) -> None:
        self._finished_count()
        if self.upload:
            self.line(f"done {want.destination} -> {want.url} ({size} bytes)")
        else:
            self.line(f"done {want.url} -> {location} ({size} bytes)")

    def failed(self, want: Wanted, error: TransferError | None, status: int) -> None:
        self.counts["failed"] += 1
        self.failure_line(failure_text(want, error))

    def interrupted(self, signal_name: str, command_hint: str) -> None:
        self.failure_line(f"stopped by {signal_name}; {command_hint}")

    def summary(self, status: int) -> None:
        counts = self.counts
        if self.upload:
            self.line(f"{counts['downloaded']} uploaded, {counts['failed']} failed")
            return
        self.line(
            f"{counts['downloaded']} downloaded, {counts['already_there']} already there, "
            f"{counts['failed']} failed"
        )

    def close(self) -> None:
        pass


def failure_text(want: Wanted, error: TransferError | None) -> str:
    """The one line of a failed file (without the ``bgtransfer:`` prefix)."""
    if error is None:
        return f"{want.url}: cancelled"
    if isinstance(error, IntegrityError):  # names the file and both digests (or sizes)
        return f"{want.destination}: {error} (the destination is left as it was)"
    return str(error)


class QuietReporter(Reporter):
    """``-q``: nothing on stdout; failures still get their line on stderr."""

    def line(self, text: str) -> None:
        pass


class JsonReporter(Reporter):
    """``--json``: one JSON object per line on stdout, each with an ``"event"`` key."""

    def emit(self, event: str, want: Wanted | None, **fields: Any) -> None:
        record: dict[str, Any] = {"event": event}
        if want is not None and self.upload:
            record.update(url=want.url, file=str(want.destination))
        elif want is not None:
            record.update(url=want.url, destination=str(want.destination))
        record.update(fields)
        print(json.dumps(record), file=self.out, flush=True)

    def skipped(self, want: Wanted) -> None:
        self.counts["already_there"] += 1
        self.emit("skipped", want, reason="already there")

    def started(self, want: Wanted, continued_from: int | None) -> None:
        if continued_from is None:
            self.emit("started", want)
        else:
            self.emit("continued", want, bytes=continued_from)

    def progress(self, want: Wanted, done: int, total: int | None) -> None:
        self.emit("progress", want, bytes=done, total=total)

    def resumed(self, want: Wanted, offset: int) -> None:
        self.emit("resumed", want, offset=offset)

    def retry(self, want: Wanted, attempt: int, error: TransferError, delay: float) -> None:
        self.emit("retry", want, attempt=attempt, delay=delay, error=str(error))

    def finished(self, want: Wanted, location: Path, size: int) -> None:
        self._finished_count()
        if self.upload:
            self.emit("finished", want, bytes=size)
        else:
            self.emit("finished", want, location=str(location), bytes=size)

    def failed(self, want: Wanted, error: TransferError | None, status: int) -> None:
        super().failed(want, error, status)
        kind = type(error).__name__ if error is not None else "Cancelled"
        message = str(error) if error is not None else "cancelled"
        extra: dict[str, Any] = {}
        if isinstance(error, IntegrityError):
            extra.update(algorithm=error.algorithm, expected=error.expected, actual=error.actual)
        self.emit("failed", want, error=kind, message=message, exit_status=status, **extra)

    def interrupted(self, signal_name: str, command_hint: str) -> None:
        super().interrupted(signal_name, command_hint)
        self.emit("interrupted", None, signal=signal_name)

    def summary(self, status: int) -> None:
        if self.upload:
            uploaded, failed = self.counts["downloaded"], self.counts["failed"]
            self.emit("summary", None, exit_status=status, uploaded=uploaded, failed=failed)
        else:
            self.emit("summary", None, exit_status=status, **self.counts)


class RichReporter(Reporter):
    """A terminal: rich's live bars, one per running file and a total; the
    start/end lines printed above them."""

    def __init__(self, out: IO[str] | None = None, *, force_terminal: bool | None = None) -> None:
        super().__init__(out)
        from rich.console import Console  # noqa: PLC0415 (rich is optional: the cli extra)
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            DownloadColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(file=self.out, force_terminal=force_terminal)
        self.bars = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.rows: dict[Wanted, TaskID] = {}
        self.sizes: dict[Wanted, tuple[int, int | None]] = {}
        self.total = self.bars.add_task("total", total=None)
        self.bars.start()

    def line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def progress(self, want: Wanted, done: int, total: int | None) -> None:
        row = self.rows.get(want)
        if row is None:
            row = self.rows[want] = self.bars.add_task(want.destination.name, total=total)
        self.bars.update(row, completed=done, total=total)
        self.sizes[want] = (done, total)
        self._update_total()

    def _update_total(self) -> None:
        done = sum(size for size, _ in self.sizes.values())
        totals = [total for _, total in self.sizes.values()]
        total = None if None in totals else sum(t for t in totals if t is not None)
        self.bars.update(self.total, completed=done, total=total)

    def _drop(self, want: Wanted) -> None:
        row = self.rows.pop(want, None)
        if row is not None:
            self.bars.remove_task(row)
            self.bars.refresh()  # (else the line printed next redraws the bar it had)

    def finished(self, want: Wanted, location: Path, size: int) -> None:
        self._drop(want)
        self.sizes[want] = (size, size)
        self._update_total()
        super().finished(want, location, size)

    def failed(self, want: Wanted, error: TransferError | None, status: int) -> None:
        self._drop(want)
        self.sizes.pop(want, None)
        self._update_total()
        super().failed(want, error, status)

    def close(self) -> None:
        self.bars.stop()


def make_reporter(*, quiet: bool, as_json: bool, upload: bool = False) -> Reporter:
    """The reporter for these options and this stdout (see the module's docstring)."""
    reporter = _pick_reporter(quiet=quiet, as_json=as_json)
    reporter.upload = upload
    return reporter


def _pick_reporter(*, quiet: bool, as_json: bool) -> Reporter:
    if as_json:
        return JsonReporter()
    if quiet:
        return QuietReporter()
    if sys.stdout.isatty():
        try:
            return RichReporter()
        except ImportError:  # no cli extra: plain lines, never a failure
            pass
    return Reporter()
