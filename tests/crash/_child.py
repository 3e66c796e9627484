"""The crash harness's child: one process of an application using a background session.

Run as ``python tests/crash/_child.py '<json>'`` (the test modules also import
:func:`run` to play the same application in their own process). It opens
``Session(identifier, state_dir=...)``, reports the tasks it reattached, creates a
task for each URL in ``create`` that has none yet, then reads ``session.events()``
until every task has ended, and closes the session normally. Every fact goes to
stdout as one JSON line, flushed at once, so the parent can synchronise on it and
kill the process at a precise point:

``{"reattached": id, "url", "description", "destination", "state", "result"}``
    a task found in ``session.tasks()`` at open (``result``: the kind of
    ``task.result``, or None)
``{"opened": pid}``
    the session is open and subscribed; creation starts
``{"created": id, "url", "description", "destination"}``
    ``await session.download(...)`` returned (the task is in the journal)
``{"progress": id, "bytes": n}``, ``{"resumed": id, "offset": n}``, ``{"retry": id, ...}``
``{"terminal": id, "kind": "finished"|"error"|"cancelled", ...}``
    a terminal event read from ``session.events()``; handing it out acknowledged it
``{"delivered": replayed}``
    the ``EventsDeliveredEvent``
``{"cancel_issued": id}``, ``{"cancel_returned": id, "resume_data": ...}``
    ``cancel_with_resume_data()`` was called; it returned (and so acknowledged
    the task's terminal event: the application holds the resume data now)
``{"self_kill": point}``
    printed just before the process SIGKILLs itself
``{"done": true}``
    every task ended, every terminal event was read, the session closed

Arguments (a JSON object): ``identifier``, ``state_dir``, ``files`` (a list of
``{"url", "destination", "target", "description", "segments", "checksum"}``:
``destination``, ``segments`` and ``checksum`` (optional) as given to
``download()`` (a file, a directory or null; a count or null; a checksum or
null), ``target`` the file it ends up as),
``create`` (URLs to start when they have no task and no file yet), ``config``
(keyword arguments of :class:`~bgtransfer.Configuration`), and optionally:

``kill_at``: ``{"point", "nth": k}``, the point one of ``before_rename``,
``after_rename``, ``before_replace``, ``after_replace``, ``during_copy``,
``after_commit``:
    SIGKILL itself just before or just after the k-th move of a finished file into
    its destination (the journal says "moving" there, never "finished");
    ``after_replace``: just after the k-th successful ``os.replace`` (for a move to
    another file system, the rename of the copy into place, before the partial
    file is removed; for ``download_with_resume_data()``, the adoption of the
    partial file); ``before_replace``: just before the k-th ``os.replace``;
    ``during_copy``: once a move to another file system has copied the whole
    file beside the destination, before renaming it into place; ``after_commit``:
    right after the journal committed a checkpoint of a running task vouching for
    at least ``nth`` bytes (preferably one vouching for segment bytes not written
    yet; see :func:`install_commit_kill`)
``cancel``: ``{"url", "after_bytes", "kill": "issued"|"returned"|null, "yields": k, "plain"}``
    once that task has written ``after_bytes``, call ``cancel_with_resume_data()``
    (``cancel()`` when ``plain`` is true);
    with ``"issued"`` SIGKILL itself after ``k`` event-loop steps (the call has
    begun, and may or may not have been recorded); with ``"returned"`` SIGKILL
    itself as soon as the call returned; with null carry on.
``suspend``: ``{"url", "after_bytes"}``
    once that task has written ``after_bytes``, ``suspend()`` it, print
    ``{"suspended": id}``, wait until the journal holds the suspension (read from
    the database file by a separate connection) and print ``{"suspend_durable": id,
    "offset": n}``
``resume``: base64 of resume data
    start a task with ``download_with_resume_data()`` before the others
``overwrite``: true
    create the tasks in ``create`` even when their file exists (they replace it)
``pause_after_terminal``: true
    after the first terminal event, wait until the journal holds it as ended, print
    ``{"durable": id, "phase": "ended"}`` and stop reading (wait to be killed)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bgtransfer import (
    CancelledEvent,
    Configuration,
    DownloadTask,
    ErrorEvent,
    EventsDeliveredEvent,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
    RetryPolicy,
    Session,
    TerminalEvent,
)

Emit = Callable[[dict[str, Any]], None]

_print_lock = threading.Lock()


def emit_stdout(fact: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed; safe from worker threads."""
    line = json.dumps(fact, sort_keys=True) + "\n"
    with _print_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def die(emit: Emit, point: str) -> None:
    """SIGKILL this process, after saying so."""
    emit({"self_kill": point})
    os.kill(os.getpid(), signal.SIGKILL)


def make_config(options: dict[str, Any]) -> Configuration:
    """The configuration every run of the application uses."""
    # Retries are not expected (the server never fails); keep them quick anyway.
    retry = RetryPolicy(initial_delay=0.05, max_delay=0.2)
    return Configuration(retry=retry, **options)


def terminal_fact(event: TerminalEvent) -> dict[str, Any]:
    fact: dict[str, Any] = {"terminal": event.task_id}
    match event:
        case FinishedEvent(location=location, total_bytes=size):
            fact.update(kind="finished", location=str(location), total_bytes=size)
        case ErrorEvent(error=error):
            fact.update(kind="error", error=repr(error))
        case CancelledEvent(resume_data=data):
            fact.update(kind="cancelled", **resume_data_fact(data))
    return fact


def resume_data_fact(data: Any) -> dict[str, Any]:
    if data is None:
        return {"resume_data": None}
    return {
        "resume_data": base64.b64encode(data.to_bytes()).decode("ascii"),
        "offset": data.offset,
        "partial": data.partial,
        "validator": data.validator,
    }


def result_kind(task: DownloadTask) -> str | None:
    match task.result:
        case None:
            return None
        case FinishedEvent():
            return "finished"
        case ErrorEvent():
            return "error"
        case _:
            return "cancelled"


def install_rename_kill(emit: Emit, point: str, nth: int, partials: Path) -> None:
    """SIGKILL the process around the ``nth`` move of a finished file into place.

    A move is either the engine's own (``files._move_sync``, after the body is
    whole) or the one step that writes a body's last bytes, closes the file and
    renames it (``body_writer.write_chunks`` with a ``move_to``): there
    ``before_rename`` kills before the last bytes are written (the journal says
    moving, in one step) and ``after_rename`` once the file is in place.
    """
    from bgtransfer._io import body_writer, files  # noqa: PLC0415 - the hooks are the point

    if point in ("before_replace", "after_replace"):
        install_replace_kill(emit, nth, before=point == "before_replace")
        return
    if point == "during_copy":
        install_copy_kill(emit)
        return
    if point == "after_commit":
        install_commit_kill(emit, nth, partials)
        return

    original = files._move_sync
    lock = threading.Lock()
    moves = 0

    def move(partial: Path, destination: Path, *flags: bool) -> None:
        nonlocal moves
        with lock:
            moves += 1
            count = moves
        if point == "before_rename" and count == nth:
            die(emit, point)
        original(partial, destination, *flags)
        if point == "after_rename" and count == nth:
            die(emit, point)

    original_step = body_writer.write_chunks

    def step(*args: Any) -> Any:
        nonlocal moves
        if args[-1] is None:  # no move_to: an ordinary write
            return original_step(*args)
        with lock:
            moves += 1
            count = moves
        if point == "before_rename" and count == nth:
            die(emit, point)
        outcome = original_step(*args)
        if point == "after_rename" and count == nth and outcome.moved:
            die(emit, point)
        return outcome

    files._move_sync = move
    body_writer.write_chunks = step


def install_replace_kill(emit: Emit, nth: int, *, before: bool = False) -> None:
    """SIGKILL the process right after the ``nth`` successful ``os.replace`` (right
    before the ``nth`` call with ``before``)."""
    original = os.replace
    lock = threading.Lock()
    replaces = 0

    def replace(source: Any, destination: Any, **kwargs: Any) -> None:
        nonlocal replaces
        if before:
            with lock:
                replaces += 1
                count = replaces
            if count == nth:
                die(emit, "before_replace")
        original(source, destination, **kwargs)
        if not before:
            with lock:
                replaces += 1
                count = replaces
            if count == nth:
                die(emit, "after_replace")

    os.replace = replace


def install_copy_kill(emit: Emit) -> None:
    """SIGKILL the process once a move to another file system has copied the file
    beside its destination, before renaming the copy into place."""
    original = shutil.copyfileobj

    def copy(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        original(source, target, *args, **kwargs)
        target.flush()
        die(emit, "during_copy")

    shutil.copyfileobj = copy


def install_commit_kill(emit: Emit, min_offset: int, partials: Path) -> None:
    """SIGKILL the process right after the journal committed a checkpoint of a
    running task vouching for at least ``min_offset`` bytes: the first such commit
    after which a segment's last vouched-for bytes are still zeros in the partial
    file (not written yet), or else the first one past ``2 * min_offset``."""
    from bgtransfer._core.journal import Phase  # noqa: PLC0415 - only this hook needs it
    from bgtransfer._io import journal_writer  # noqa: PLC0415

    original = journal_writer.commit_sync

    def unwritten(entry: Any) -> bool:
        try:
            with (partials / f"{entry.id}.part").open("rb") as file:
                for start, _, done in entry.segments or ():
                    tail = min(done, 256)
                    file.seek(start + done - tail)
                    if tail and file.read(tail) == bytes(tail):
                        return True
        except OSError:
            return False
        return False

    def commit(connection: Any, batch: Any) -> None:
        original(connection, batch)
        for entry in batch.entries:
            if entry.phase is not Phase.RUNNING or entry.offset < min_offset:
                continue
            if entry.offset >= 2 * min_offset or unwritten(entry):
                die(emit, "after_commit")

    journal_writer.commit_sync = commit


def journal_row(args: dict[str, Any], task_id: int) -> tuple[str, int] | None:
    """The task's (phase, offset) as committed in the journal, read by a separate
    read-only connection (what a process starting now would find)."""
    path = Path(args["state_dir"]) / args["identifier"] / "journal.sqlite3"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = connection.execute(
            "SELECT phase, offset FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
    finally:
        connection.close()
    return None if row is None else (row[0], row[1])


async def wait_durable(args: dict[str, Any], task_id: int, phase: str) -> int:
    """Wait until the journal holds the task in ``phase``; return its offset there."""
    for _ in range(6000):  # 30 s at most
        row = journal_row(args, task_id)
        if row is not None and row[0] == phase:
            return row[1]
        await asyncio.sleep(0.005)
    raise RuntimeError(f"task {task_id} never reached {phase!r} in the journal")


async def run(args: dict[str, Any], emit: Emit) -> None:
    """Play the application once (see the module docstring)."""
    kill_at = args.get("kill_at")
    if kill_at is not None:
        partials = Path(args["state_dir"]) / args["identifier"] / "partials"
        install_rename_kill(emit, kill_at["point"], kill_at["nth"], partials)
    config = make_config(args["config"])
    async with Session(args["identifier"], state_dir=args["state_dir"], config=config) as session:
        await App(args, emit, session).run()
    emit({"done": True})


class App:
    """One process's life with the session (opened by :func:`run`)."""

    def __init__(self, args: dict[str, Any], emit: Emit, session: Session) -> None:
        self.args = args
        self.emit = emit
        self.session = session
        self.cancel = args.get("cancel")
        self.suspend = args.get("suspend")
        self.tasks: dict[int, DownloadTask] = {}
        self.live: set[int] = set()

    async def run(self) -> None:
        stream = self.session.events()  # before anything can happen: nothing is missed
        self.reattach()
        self.emit({"opened": os.getpid()})
        await self.create()
        self.live = set(self.tasks)
        delivered = False
        async for event in stream:
            match event:
                case EventsDeliveredEvent(replayed=replayed):
                    self.emit({"delivered": replayed})
                    delivered = True
                case ProgressEvent(task_id=task_id, total_bytes_written=total):
                    self.emit({"progress": task_id, "bytes": total})
                    await self.on_progress(self.tasks[task_id], total)
                case ResumedEvent(task_id=task_id, offset=offset):
                    self.emit({"resumed": task_id, "offset": offset})
                case RetryEvent(task_id=task_id, attempt=attempt, error=error):
                    self.emit({"retry": task_id, "attempt": attempt, "error": repr(error)})
                case FinishedEvent() | ErrorEvent() | CancelledEvent():
                    self.emit(terminal_fact(event))
                    self.live.discard(event.task_id)
                    if self.args.get("pause_after_terminal"):
                        await wait_durable(self.args, event.task_id, "ended")
                        self.emit({"durable": event.task_id, "phase": "ended"})
                        await asyncio.Event().wait()  # until killed
            if delivered and not self.live:
                break
        await stream.aclose()

    def reattach(self) -> None:
        for task in self.session.tasks():
            self.tasks[task.id] = task
            self.emit(
                {
                    "reattached": task.id,
                    "url": task.url,
                    "description": task.description,
                    "destination": str(task.destination),
                    "state": task.state.value,
                    "result": result_kind(task),
                }
            )

    async def create(self) -> None:
        """A task for each URL asked for that has neither a task nor its file yet;
        and one from the resume data given, if any."""
        resume = self.args.get("resume")
        if resume is not None:
            task = await self.session.download_with_resume_data(base64.b64decode(resume))
            self.tasks[task.id] = task
            self.emit({"created": task.id, "url": task.url, "resumed_from": resume})
        files = {spec["url"]: spec for spec in self.args["files"]}
        for url in self.args["create"]:
            spec = files[url]
            if any(task.url == url for task in self.tasks.values()):
                continue
            if Path(spec["target"]).exists() and not self.args.get("overwrite"):
                continue
            task = await self.session.download(
                url,
                spec["destination"],
                description=spec["description"],
                segments=spec.get("segments"),
                checksum=spec.get("checksum"),
            )
            self.tasks[task.id] = task
            self.emit(
                {
                    "created": task.id,
                    "url": url,
                    "description": task.description,
                    "destination": str(task.destination),
                }
            )

    async def on_progress(self, task: DownloadTask, total: int) -> None:
        cancel, suspend = self.cancel, self.suspend
        if cancel is not None and task.url == cancel["url"] and total >= cancel["after_bytes"]:
            self.cancel = None
            await cancel_with_resume_data(task, cancel, self.emit)
        if suspend is not None and task.url == suspend["url"] and total >= suspend["after_bytes"]:
            self.suspend = None
            task.suspend()
            self.live.discard(task.id)  # it does not end in this process
            self.emit({"suspended": task.id})
            offset = await wait_durable(self.args, task.id, "suspended")
            self.emit({"suspend_durable": task.id, "offset": offset})


async def cancel_with_resume_data(task: DownloadTask, cancel: dict[str, Any], emit: Emit) -> None:
    """Call ``task.cancel_with_resume_data()`` (``task.cancel()`` if ``plain``) and
    maybe die around it.

    ``cancel_with_resume_data()`` acknowledges the task's ``CancelledEvent`` when it
    returns: from then on the resume data exists only where the application keeps
    it, so whenever it returned before the process dies, ``{"cancel_returned":
    ...}`` says what it returned (this is the application keeping it).
    """
    plain = cancel.get("plain", False)
    call = task.cancel() if plain else task.cancel_with_resume_data()
    pending: asyncio.Future[Any] = asyncio.ensure_future(call)
    await asyncio.sleep(0)  # the call has begun: the engine was told synchronously
    emit({"cancel_issued": task.id, "plain": plain})
    if cancel["kill"] == "issued":
        for _ in range(cancel["yields"]):
            await asyncio.sleep(0)
        if pending.done():  # nothing else ran since: this is the moment it died
            emit_returned(task, pending.result(), emit, plain=plain)
        die(emit, "during_cancel")
    emit_returned(task, await pending, emit, plain=plain)
    if cancel["kill"] == "returned":
        die(emit, "after_cancel")


def emit_returned(task: DownloadTask, data: Any, emit: Emit, *, plain: bool) -> None:
    if plain:
        emit({"cancel_plain_returned": task.id, "state": task.state.value})
    else:
        emit({"cancel_returned": task.id, "state": task.state.value, **resume_data_fact(data)})


def main() -> None:
    args = json.loads(sys.argv[1])
    asyncio.run(run(args, emit_stdout))


if __name__ == "__main__":
    main()
