"""The crash harness (issue #4): real processes, killed with SIGKILL, then reattached.

Each seeded case runs the application in ``_child.py`` against the loopback server
(files dripped out so that a transfer lasts a few tenths of a second), kills it
with SIGKILL at a moment the seed picks, maybe starts a second child and kills that
too, then plays the same application in this process until every task has ended,
and checks the whole history:

* **Nothing lost.** A task is *known* once a process printed it (``created``:
  ``download()`` returned; ``reattached``: ``tasks()`` listed it). A known task
  whose terminal event no process has delivered must be in the next process's
  ``tasks()``, with the same URL, description and destination. A task killed
  before ``download()`` returned may or may not exist in the next process; the
  application creates a task for each URL that has none and no file yet, so
  either way there is exactly one.
* **Nothing duplicated.** One task id per URL over the whole history; new ids
  never reuse a known one; each file exists once (no ``name (1)``), byte-exact.
* **Terminal events at least once, and not after acknowledgement.** Every known
  task's terminal event is delivered by some process (in ``session.events()``,
  before ``EventsDeliveredEvent(replayed=N)``, N counting the replays exactly). A
  process that was handed a terminal event and closed its session normally has
  acknowledged it durably: the next ``tasks()`` does not have it. A process
  killed after delivering one may or may not have acknowledged it; if the task
  is listed again it is ``COMPLETED`` with the same outcome. Once everything is
  acknowledged a new session is empty.
* **A finished file is never fetched again or overwritten.** Once the file is at
  its destination (checked between two processes), the server sees no request
  for it and the file keeps its inode and mtime.
* **Partial files.** None is left in ``partials/``, except the one behind the
  resume data of a task cancelled with ``cancel_with_resume_data()``: it stays
  (the resume data points at it) until ``download_with_resume_data()`` takes it
  over, which the test then does, ending with an empty ``partials/``.
* **cancel_with_resume_data and a kill.** The task ends cancelled *with* resume
  data (the cancel reached the journal) or finished (the kill came before the
  cancel was recorded, or the body completed first). Never cancelled without
  resume data (there was a strong ETag and bytes), never failed. The call
  returning acknowledges the ``CancelledEvent`` (the application holds the resume
  data), so it counts as a delivery: the task may then be gone from the next
  ``tasks()``; if it is replayed, it carries the same resume data. A plain
  ``cancel()`` killed the same way ends cancelled without resume data (its
  partial file removed) or finished.

The seeds are fixed (two per kill mode), so a failure names its seed and mode
and prints every line of every process; ``BGTRANSFER_CRASH_SEEDS=500`` searches
further.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _child
import attrs
import pytest

from _helpers import Child, check_resumable_stream, check_task_stream, collect, sha256_file
from bgtransfer import (
    DownloadTask,
    EventsDeliveredEvent,
    FinishedEvent,
    InvalidResumeDataError,
    ResumeData,
    Session,
    TaskState,
)
from bgtransfer._io import files
from bgtransfer.testing import Faults, TestServer

pytestmark = pytest.mark.asyncio

CHILD = Path(__file__).with_name("_child.py")
IDENTIFIER = "com.example.crash"
LINE_TIMEOUT = 60.0  # seconds without a line from a child before the test fails
RUN_TIMEOUT = 120.0  # seconds a whole in-process run may take
DRIP = (16_384, 0.01)  # about 1.6 MB/s per connection: a file lasts a few tenths of a second


@dataclass(frozen=True)
class FileSpec:
    name: str
    size: int
    etag: str  # "strong": resumable; "none" (and no Last-Modified): restarts from zero
    destination: str  # "file": that path; "dir": the out directory; "none": downloads/
    drip: tuple[int, float] = DRIP
    segments: int | None = None  # download(..., segments=N)


FILES = (
    FileSpec("a.bin", 360_000, "strong", "file"),
    FileSpec("b.bin", 280_000, "none", "dir"),
    FileSpec("c.bin", 240_000, "strong", "none"),
    FileSpec("d.bin", 420_000, "strong", "file"),  # the cancel_with_resume_data target
)
CANCEL_TARGET = "d.bin"


# --------------------------------------------------------------------------------------
# running the application: in a child process, or here
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one process of the application printed, and how it ended."""

    label: str
    lines: list[dict[str, Any]]
    returncode: int | None = None  # None: played in the test process
    stderr: str = ""

    @property
    def done(self) -> bool:
        return any("done" in line for line in self.lines)

    @property
    def self_killed(self) -> bool:
        return any("self_kill" in line for line in self.lines)

    def describe(self) -> str:
        text = "\n".join(json.dumps(line, sort_keys=True) for line in self.lines)
        return f"--- {self.label} (rc {self.returncode}) ---\n{text}\n{self.stderr}"


async def run_child(
    args: dict[str, Any],
    *,
    label: str,
    stderr_path: Path,
    kill_after: Callable[[dict[str, Any]], bool] | None = None,
    delay: float = 0.0,
    delay_from_spawn: float | None = None,
) -> Run:
    """Run ``_child.py``; SIGKILL it ``delay`` seconds after the first line for which
    ``kill_after`` is true, or ``delay_from_spawn`` seconds after it was started
    (a delay is the kill moment, never a synchronisation).

    The lines printed before it died are all collected. A child that prints
    nothing for ``LINE_TIMEOUT`` seconds fails the test; it is always reaped.
    """
    loop = asyncio.get_running_loop()
    running = await Child.start(CHILD, args, stderr_path)
    process = running.process
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []
    kill_at = None if delay_from_spawn is None else loop.time() + delay_from_spawn
    try:
        while True:
            timeout = LINE_TIMEOUT if kill_at is None else max(0.0, kill_at - loop.time())
            try:
                raw = await asyncio.wait_for(process.stdout.readline(), timeout)
            except TimeoutError:
                if kill_at is None:
                    raise AssertionError(f"{label}: no output for {LINE_TIMEOUT} s") from None
                running.kill()
                break
            if not raw:
                break
            line = json.loads(raw)
            lines.append(line)
            if kill_after is not None and kill_at is None and kill_after(line):
                kill_at = loop.time() + delay
                if delay <= 0:
                    running.kill()
                    break
    finally:
        running.kill()
        rest = await asyncio.wait_for(process.stdout.read(), LINE_TIMEOUT)
        returncode = await asyncio.wait_for(process.wait(), LINE_TIMEOUT)
    lines.extend(json.loads(raw) for raw in rest.splitlines() if raw.strip())
    run = Run(label, lines, returncode, stderr_path.read_text(errors="replace"))
    assert returncode in (0, -9), run.describe()
    if returncode == 0:  # else killed, maybe after it printed "done" and closed
        assert run.done, run.describe()
    return run


async def run_here(args: dict[str, Any], *, label: str) -> Run:
    """Play the application in this process (a new owner of the session, like a new
    process: the children before it are dead)."""
    lines: list[dict[str, Any]] = []
    async with asyncio.timeout(RUN_TIMEOUT):
        await _child.run(args, lines.append)
    return Run(label, lines)


# --------------------------------------------------------------------------------------
# one scenario: the files, the runs, and what is checked between and after them
# --------------------------------------------------------------------------------------


@dataclass
class Scene:
    server: TestServer
    tmp: Path
    config: dict[str, Any]
    files: tuple[FileSpec, ...] = FILES
    out_dir: Path | None = None  # default: tmp / "out"
    runs: list[Run] = field(default_factory=list)
    # url -> (request index, inode, mtime) from the first time the file was complete
    complete_since: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir = self.tmp / "state"
        if self.out_dir is None:
            self.out_dir = self.tmp / "out"
            self.out_dir.mkdir()
        self.session_dir = self.state_dir / IDENTIFIER
        self.specs: dict[str, dict[str, Any]] = {}
        self.sha256: dict[str, str] = {}
        self.etags: dict[str, str | None] = {}
        self.url_of: dict[str, str] = {}
        for spec in self.files:
            served = self.server.add_file(f"/{spec.name}", size=spec.size)
            faults = Faults(drip=spec.drip)
            if spec.etag == "none":
                faults = Faults(drip=spec.drip, etag="none", last_modified=False)
            self.server.set_faults(served.path, faults)
            url = self.server.url(served.path)
            destination: str | None
            if spec.destination == "file":
                destination = target = str(self.out_dir / spec.name)
            elif spec.destination == "dir":
                destination, target = str(self.out_dir), str(self.out_dir / spec.name)
            else:
                destination, target = None, str(self.session_dir / "downloads" / spec.name)
            self.specs[url] = {
                "segments": spec.segments,
                "url": url,
                "destination": destination,
                "target": target,
                "description": f"file {spec.name}",
                "size": spec.size,
                "path": served.path,
            }
            self.sha256[url] = served.sha256
            self.etags[url] = served.etag if spec.etag == "strong" else None
            self.url_of[spec.name] = url

    @property
    def cancel_url(self) -> str:
        return self.url_of[CANCEL_TARGET]

    def args(self, **extra: Any) -> dict[str, Any]:
        known = {
            line["url"]
            for run in self.runs
            for line in run.lines
            if "created" in line or "reattached" in line
        }
        return {
            "identifier": IDENTIFIER,
            "state_dir": str(self.state_dir),
            "files": [
                {
                    key: spec.get(key)
                    for key in (
                        "url",
                        "destination",
                        "target",
                        "description",
                        "segments",
                        "checksum",
                    )
                }
                for spec in self.specs.values()
            ],
            "create": [url for url in self.specs if url not in known],
            "config": self.config,
            **extra,
        }

    async def child(self, label: str, **options: Any) -> Run:
        args = self.args(
            **{
                key: options.pop(key, None)
                for key in (
                    "kill_at",
                    "cancel",
                    "suspend",
                    "pause_after_terminal",
                    "resume",
                    "overwrite",
                )
            }
        )
        stderr_path = self.tmp / f"{label}.stderr"
        run = await run_child(args, label=label, stderr_path=stderr_path, **options)
        self.runs.append(run)
        self.boundary()
        return run

    async def here(self, label: str) -> Run:
        run = await run_here(self.args(), label=label)
        self.runs.append(run)
        self.boundary()
        return run

    def boundary(self) -> None:
        """Between two processes: note which destinations are complete (and check
        that none holds anything but the whole file)."""
        requests = len(self.server.requests)
        for url, spec in self.specs.items():
            target = Path(spec["target"])
            if not target.exists():
                assert url not in self.complete_since, f"{target} vanished"
                continue
            assert sha256_file(target) == self.sha256[url], f"{target} is not the whole file"
            info = target.stat()
            if url not in self.complete_since:
                self.complete_since[url] = (requests, info.st_ino, info.st_mtime_ns)

    def history(self) -> str:
        return "\n".join(run.describe() for run in self.runs)


# --------------------------------------------------------------------------------------
# the checks over a whole history
# --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    offset: int | None = None
    validator: str | None = None
    resume_data: str | None = field(default=None, compare=False)


def outcome_of(line: dict[str, Any]) -> Outcome:
    if "cancel_returned" in line:  # None: the task had finished (our target has an ETag)
        kind = "finished" if line["resume_data"] is None else "cancelled"
    else:
        kind = line["kind"]
    return Outcome(kind, line.get("offset"), line.get("validator"), line.get("resume_data"))


class History:
    """Reads the runs in order and checks the rules of the module docstring."""

    def __init__(self, scene: Scene, cancel: dict[str, Any] | None) -> None:
        self.scene = scene
        self.cancel = cancel
        self.url_of_id: dict[int, str] = {}
        self.id_of_url: dict[str, int] = {}
        # "pending": no terminal event delivered yet, so the next process must list
        # it; "maybe-acked": delivered by a process that was then killed; "acked":
        # delivered to a process that closed normally, or missing
        # from a later process's tasks().
        self.status: dict[int, str] = {}
        self.outcome: dict[int, Outcome] = {}
        for number, run in enumerate(scene.runs):
            previous = scene.runs[number - 1] if number else None
            reattached = {line["reattached"]: line for line in run.lines if "reattached" in line}
            self.check_reattached(run, previous, reattached)
            self.check_created(run)
            self.check_backlog(run, reattached)
            self.check_terminals(run)
        assert set(self.id_of_url) == set(scene.specs), "a URL never got a task"
        assert set(self.outcome) == set(self.url_of_id), "a terminal event was never delivered"
        assert all(state == "acked" for state in self.status.values()), self.status

    def new_task(self, task_id: int, url: str, where: str) -> None:
        assert task_id not in self.url_of_id, f"task id {task_id} reused {where}"
        assert all(task_id > known for known in self.url_of_id), f"id {task_id} not new {where}"
        assert url not in self.id_of_url, f"a second task ({task_id}) for {url} {where}"
        self.url_of_id[task_id], self.id_of_url[url] = url, task_id

    def check_reattached(
        self, run: Run, previous: Run | None, reattached: dict[int, dict[str, Any]]
    ) -> None:
        where = f"in {run.label}"
        if any("opened" in line for line in run.lines):  # tasks() was listed in full
            for task_id, state in self.status.items():
                if state == "pending":
                    assert task_id in reattached, f"task {task_id} was lost {where}"
                elif state == "acked":
                    assert task_id not in reattached, f"acknowledged task {task_id} back {where}"
                elif task_id not in reattached:
                    self.status[task_id] = "acked"
        for task_id, line in reattached.items():
            url = line["url"]
            if task_id in self.url_of_id:
                assert self.url_of_id[task_id] == url, f"task {task_id} changed URL {where}"
            else:  # only a task whose download() call the kill cut short
                assert previous is not None, where
                assert previous.returncode == -9, f"unknown task {task_id} {where}"
                self.new_task(task_id, url, where)
            spec = self.scene.specs[url]
            assert line["description"] == spec["description"], where
            assert line["destination"] == spec["target"], where
            assert line["state"] in ("running", "completed"), where
            assert (line["result"] is not None) == (line["state"] == "completed"), where
            if self.status.get(task_id) == "maybe-acked":
                assert line["state"] == "completed", f"task {task_id} came back to life {where}"
                assert line["result"] == self.outcome[task_id].kind, where
            self.status[task_id] = "pending"  # until its terminal event is read again

    def check_created(self, run: Run) -> None:
        where = f"in {run.label}"
        for line in run.lines:
            if "created" in line:
                url = line["url"]
                self.new_task(line["created"], url, where)
                assert line["description"] == self.scene.specs[url]["description"], where
                assert line["destination"] == self.scene.specs[url]["target"], where
                self.status[line["created"]] = "pending"

    @staticmethod
    def check_backlog(run: Run, reattached: dict[int, dict[str, Any]]) -> None:
        """The replayed terminal events, then ``EventsDeliveredEvent(replayed=N)``."""
        where = f"in {run.label}"
        delivered = [index for index, line in enumerate(run.lines) if "delivered" in line]
        assert len(delivered) <= 1, where
        replays = sorted(i for i, line in reattached.items() if line["state"] == "completed")
        if delivered:
            before = [line["terminal"] for line in run.lines[: delivered[0]] if "terminal" in line]
            assert sorted(before) == replays, f"replayed terminal events {where}"
            assert run.lines[delivered[0]]["delivered"] == len(replays), where

    def check_terminals(self, run: Run) -> None:
        """At most one terminal event per task and process, the same in every process.

        ``cancel_with_resume_data()`` returning counts as a delivery too (it
        acknowledges the terminal event; the application holds the resume data).
        """
        where = f"in {run.label}"
        seen: set[int] = set()
        for line in run.lines:
            if "terminal" in line:
                task_id = line["terminal"]
                assert task_id not in seen, f"two terminal events for task {task_id} {where}"
                seen.add(task_id)
            elif "cancel_returned" in line:
                task_id = line["cancel_returned"]
            else:
                continue
            assert task_id in self.url_of_id, f"terminal event of an unknown task {where}"
            new = outcome_of(line)
            if task_id in self.outcome:
                assert new == self.outcome[task_id], f"task {task_id} changed outcome {where}"
            self.outcome[task_id] = new
            url = self.url_of_id[task_id]
            if "terminal" in line and new.kind == "finished":
                assert line["location"] == self.scene.specs[url]["target"], where
                assert line["total_bytes"] == self.scene.specs[url]["size"], where
            elif new.kind != "finished":
                assert url == self.scene.cancel_url, f"task {task_id} ended {line} {where}"
                assert self.cancel is not None, f"task {task_id} cancelled {where}"
                assert new.kind == "cancelled", line
                if self.cancel.get("plain"):
                    assert new.resume_data is None, f"resume data from cancel() {where}"
                else:
                    assert new.resume_data is not None, f"cancelled without resume data {where}"
                    assert new.offset is not None, where
                    assert new.offset > 0, where
            self.status[task_id] = "acked" if run.done else "maybe-acked"
        if run.done:
            assert all(state == "acked" for state in self.status.values()), (where, self.status)


def check_server(scene: Scene) -> None:
    """No request for a file once it was at its destination; ranges only with If-Range."""
    requests = scene.server.requests
    for url, (since, inode, mtime) in scene.complete_since.items():
        path = scene.specs[url]["path"]
        again = [r.index for r in requests[since:] if r.path == path]
        assert not again, f"{path} was requested again after it was at its destination"
        info = Path(scene.specs[url]["target"]).stat()
        assert (info.st_ino, info.st_mtime_ns) == (inode, mtime), f"{path} was overwritten"
    for request in requests:
        url = scene.server.url(request.path)
        if "Range" not in request.headers:
            continue
        etag = scene.etags[url]
        assert etag is not None, f"a range request for {request.path}, which has no validator"
        assert request.headers.get("If-Range") == etag, request.headers


def check_files(scene: Scene, outcome: dict[int, Outcome]) -> str | None:
    """Every destination byte-exact, no duplicates; return the resume data left, if any."""
    cancelled = [o for o in outcome.values() if o.kind == "cancelled"]
    names = {spec.name for spec in scene.files if spec.destination != "none"}
    if cancelled:
        names.discard(CANCEL_TARGET)
    assert sorted(os.listdir(scene.out_dir)) == sorted(names)
    downloads = [spec.name for spec in scene.files if spec.destination == "none"]
    assert sorted(os.listdir(scene.session_dir / "downloads")) == sorted(downloads)
    for url, spec in scene.specs.items():
        if cancelled and url == scene.cancel_url:
            assert not Path(spec["target"]).exists()
            continue
        assert sha256_file(Path(spec["target"])) == scene.sha256[url], spec["target"]
    partials = sorted(os.listdir(scene.session_dir / "partials"))
    if not cancelled or cancelled[0].resume_data is None:
        assert partials == [], "partial files left over"
        return None
    (data,) = cancelled
    assert data.resume_data is not None
    resume = ResumeData.from_bytes(base64.b64decode(data.resume_data))
    assert partials == [Path(resume.partial).name], "partial files left over"
    assert Path(resume.partial).stat().st_size >= resume.offset
    return data.resume_data


async def verify_final_state(scene: Scene, resume_blob: str | None) -> None:
    """A new session: nothing left to deliver; the resume data (if any) finishes the file."""
    config = _child.make_config(scene.config)
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
        assert session.tasks() == []
        stream = session.events()
        first = await anext(stream)
        assert first == EventsDeliveredEvent(replayed=0)
        await stream.aclose()
        if resume_blob is not None:
            task = await session.download_with_resume_data(base64.b64decode(resume_blob))
            async with asyncio.timeout(RUN_TIMEOUT):
                result = await task.wait()
            assert isinstance(result, FinishedEvent)
            url = scene.cancel_url
            assert str(result.location) == scene.specs[url]["target"]
            assert sha256_file(result.location) == scene.sha256[url]
    assert os.listdir(scene.session_dir / "partials") == []
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
        assert session.tasks() == []


# --------------------------------------------------------------------------------------
# the seeded cases
# --------------------------------------------------------------------------------------

MODES = (
    "startup",  # a random delay after the process started: importing, opening, creating
    "opening",  # while the tasks are being created (download() may not have returned)
    "created",  # right after the k-th download() returned: before the first checkpoint
    "mid_body",  # once some task has written a random number of bytes
    "delay",  # a random delay after the session opened
    "before_rename",  # self-kill: the body is whole, the journal says moving
    "after_rename",  # self-kill: the file is at its destination, the journal says moving
    "cancel_issued",  # self-kill k loop steps into cancel_with_resume_data()
    "cancel_returned",  # self-kill as soon as cancel_with_resume_data() returned
    "after_terminal",  # right after the k-th terminal event was read (ack in flight)
)
# 20 seeds (two per mode) in the suite; set BGTRANSFER_CRASH_SEEDS=500 to search longer.
SEEDS = range(int(os.environ.get("BGTRANSFER_CRASH_SEEDS", "20")))


def first_run_plan(
    scene: Scene, mode: str, rng: random.Random
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The first child's options for ``mode``, and its cancel (if any)."""
    count = len(FILES)
    kill_after: Callable[[dict[str, Any]], bool] | None = None
    options: dict[str, Any] = {}
    if mode == "startup":
        options["delay_from_spawn"] = rng.uniform(0.05, 0.5)
    elif mode == "opening":
        options["delay"] = rng.uniform(0.0, 0.02)
        kill_after = lambda line: "opened" in line  # noqa: E731
    elif mode == "created":
        nth = rng.randint(1, count)
        kill_after = _nth(lambda line: "created" in line, nth)
    elif mode == "mid_body":
        threshold = rng.randint(1, 200_000)
        kill_after = lambda line: line.get("bytes", 0) >= threshold  # noqa: E731
    elif mode == "delay":
        options["delay"] = rng.uniform(0.0, 0.6)
        kill_after = lambda line: "opened" in line  # noqa: E731
    elif mode in ("before_rename", "after_rename"):
        options["kill_at"] = {"point": mode, "nth": rng.randint(1, count)}
    elif mode in ("cancel_issued", "cancel_returned"):
        # Mostly cancel_with_resume_data(); now and then a plain cancel().
        options["cancel"] = cancel_plan(scene, rng, mode.removeprefix("cancel_"))
    elif mode == "after_terminal":
        if rng.random() < 0.6:
            options["cancel"] = cancel_plan(scene, rng, None)
        kill_after = _nth(lambda line: "terminal" in line, rng.randint(1, count))
    if kill_after is not None:
        options["kill_after"] = kill_after
    return options, options.get("cancel")


def cancel_plan(scene: Scene, rng: random.Random, kill: str | None) -> dict[str, Any]:
    return {
        "url": scene.cancel_url,
        "after_bytes": rng.randint(40_000, 300_000),
        "kill": kill,
        "yields": rng.choice([0, 1, 2, 3, 5, 10, 30, 100]),
        "plain": rng.random() < 0.3,
    }


def second_run_plan(rng: random.Random) -> dict[str, Any] | None:
    """Whether a second child runs, and when it dies."""
    choice = rng.choice(["none", "none", "delivered", "progress", "after_rename", "terminal"])
    if choice == "none":
        return None
    if choice == "delivered":
        return {"kill_after": lambda line: "delivered" in line, "delay": rng.uniform(0, 0.3)}
    if choice == "progress":
        return {"kill_after": _nth(lambda line: "progress" in line, rng.randint(1, 20))}
    if choice == "after_rename":
        return {"kill_at": {"point": "after_rename", "nth": 1}}
    return {"kill_after": _nth(lambda line: "terminal" in line, 1)}


def _nth(predicate: Callable[[dict[str, Any]], bool], nth: int) -> Callable[[dict[str, Any]], bool]:
    seen = 0

    def check(line: dict[str, Any]) -> bool:
        nonlocal seen
        seen += predicate(line)
        return seen >= nth

    return check


@pytest.mark.parametrize("seed", SEEDS, ids=[f"{s}-{MODES[s % len(MODES)]}" for s in SEEDS])
async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    seed: int, server: TestServer, tmp_path: Path
) -> None:
    mode = MODES[seed % len(MODES)]
    rng = random.Random(seed)
    config = {
        "checkpoint_interval": rng.choice([0.0, 0.05, 0.3]),
        "progress_interval": rng.choice([0.0, 0.02]),
        "max_connections_per_host": rng.choice([1, 2, 4]),
    }
    scene = Scene(server, tmp_path, config)
    options, cancel = first_run_plan(scene, mode, rng)
    second = second_run_plan(rng)
    try:
        first = await scene.child("run1", **options)
        if mode in ("before_rename", "after_rename", "cancel_issued", "cancel_returned"):
            assert first.self_killed, f"the kill point {mode} was never reached"
        if second is not None:
            await scene.child("run2", **second)
        final = await scene.here("final")
        assert final.done
        history = History(scene, cancel)
        check_cancel(scene, history, cancel)
        check_server(scene)
        resume_blob = check_files(scene, history.outcome)
        await verify_final_state(scene, resume_blob)
    except BaseException:
        print(f"seed {seed} mode {mode} config {config}\n{scene.history()}")
        raise


def check_cancel(scene: Scene, history: History, cancel: dict[str, Any] | None) -> None:
    """The cancel target ended as the moment of the kill allows (see the docstring)."""
    result = history.outcome[history.id_of_url[scene.cancel_url]]
    if cancel is None:
        assert result.kind == "finished", result
        return
    assert result.kind in ("finished", "cancelled"), result
    returned = [line for run in scene.runs for line in run.lines if "cancel_returned" in line]
    if returned:
        (line,) = returned
        if line["resume_data"] is None:
            assert result.kind == "finished", "cancel_with_resume_data() returned None"
            assert line["state"] == TaskState.COMPLETED.value
        else:
            assert result.kind == "cancelled", result
            assert (result.offset, result.validator) == (line["offset"], line["validator"])


# --------------------------------------------------------------------------------------
# precise moments, one at a time
# --------------------------------------------------------------------------------------

ONE_FILE = (FileSpec("a.bin", 300_000, "strong", "file"),)
QUICK = {"checkpoint_interval": 0.05, "progress_interval": 0.0, "max_connections_per_host": 2}

FSYNC = {**QUICK, "durability": "fsync"}  # the classic order: whole and synced, then moved
# A child that reads a terminal event without acknowledging it (at-least-once delivery).
EXPLICIT = {**QUICK, "acknowledge": "explicit"}

# Where the finished task is when the process dies, and the configuration and child
# options that get it there:
FINISH_KILLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # the body is whole, the journal says moving: the next process moves it
    "before_rename": (FSYNC, {"kill_at": {"point": "before_rename", "nth": 1}}),
    # the file is at its destination, the journal says moving: the next one sees it there
    "after_rename": (FSYNC, {"kill_at": {"point": "after_rename", "nth": 1}}),
    # the same, after the last write moved it in the same step (the journal said
    # moving, in one step, before that write)
    "after_one_step": (QUICK, {"kill_at": {"point": "after_rename", "nth": 1}}),
    # the journal holds the FinishedEvent; no consumer acknowledged it
    "ended": (
        EXPLICIT,
        {"pause_after_terminal": True, "kill_after": lambda line: "durable" in line},
    ),
}


def finish_scene(server: TestServer, tmp_path: Path, point: str) -> Scene:
    return Scene(server, tmp_path, FINISH_KILLS[point][0], files=ONE_FILE)


async def killed_after_finish(scene: Scene, point: str) -> tuple[int, int]:
    """Run the child until it dies at ``point``; return (task id, requests so far)."""
    run = await scene.child("run1", **FINISH_KILLS[point][1])
    assert run.returncode == -9, run.describe()
    (created,) = [line for line in run.lines if "created" in line]
    return created["created"], len(scene.server.requests)


@pytest.mark.parametrize("point", FINISH_KILLS)
async def test_replayed_finish_reaches_every_channel_once_acknowledged(
    point: str, server: TestServer, tmp_path: Path
) -> None:
    scene = finish_scene(server, tmp_path, point)
    (url,) = scene.specs
    spec = scene.specs[url]
    task_id, requests = await killed_after_finish(scene, point)
    config = _child.make_config(QUICK)
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
        (task,) = session.tasks()
        assert (task.id, task.url, task.description) == (task_id, url, spec["description"])
        assert task.state is TaskState.COMPLETED
        expected = FinishedEvent(
            task_id=task_id, location=Path(spec["target"]), total_bytes=300_000
        )
        assert task.result == expected
        waiter = asyncio.ensure_future(session.wait_events_delivered())
        for _ in range(10):
            await asyncio.sleep(0)
        assert not waiter.done(), "wait_events_delivered() returned before the replay was read"
        events = await collect(task.events())  # reading to the end acknowledges it
        assert events[-1] == expected
        async with asyncio.timeout(10):
            await waiter
        assert await task.wait() == expected  # still there for every channel
        async with session.events() as stream:
            backlog = [await anext(stream) for _ in range(3)]  # progress, finish, marker
        assert backlog[-2:] == [expected, EventsDeliveredEvent(replayed=1)]
    assert sha256_file(Path(spec["target"])) == scene.sha256[url]
    assert os.listdir(scene.out_dir) == ["a.bin"]
    assert os.listdir(scene.session_dir / "partials") == []
    assert scene.server.requests[requests:] == (), "the finished file was fetched again"
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
        assert session.tasks() == []


@pytest.mark.parametrize("point", FINISH_KILLS)
async def test_replayed_finish_counts_its_bytes_like_a_live_one(
    point: str, server: TestServer, tmp_path: Path
) -> None:
    """A finished task read from the journal says how many bytes it received, as it
    did in the process that finished it (``countOfBytesReceived``), whatever the
    moment the process died."""
    scene = finish_scene(server, tmp_path, point)
    await killed_after_finish(scene, point)
    config = _child.make_config(QUICK)
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
        (task,) = session.tasks()
        assert isinstance(task.result, FinishedEvent)
        assert task.result.total_bytes == 300_000
        assert (task.bytes_received, task.bytes_expected) == (300_000, 300_000)


@pytest.mark.parametrize("point", FINISH_KILLS)
async def test_replayed_task_stream_is_a_late_subscribers_stream(
    point: str, server: TestServer, tmp_path: Path
) -> None:
    """The guide: a late subscriber first receives one progress event with the total
    so far, then the terminal event; deltas add up to ``FinishedEvent.total_bytes``
    (the house invariant ``check_task_stream``). A task replayed from the journal
    is such a late subscription."""
    scene = finish_scene(server, tmp_path, point)
    task_id, _ = await killed_after_finish(scene, point)
    config = _child.make_config(QUICK)
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
        (task,) = session.tasks()
        events = await collect(task.events())
        assert isinstance(events[-1], FinishedEvent)
        check_task_stream(events, task_id)


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
async def test_a_finished_body_moved_by_the_next_process_gets_the_umask_mode(
    umask: int, server: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed with the body whole and not yet moved, the partial file is private
    (0600); the next process moves it into place with a new file's mode under
    its umask (0644 under 022, 0600 under 077), as a live finish would."""
    scene = finish_scene(server, tmp_path, "before_rename")
    await killed_after_finish(scene, "before_rename")
    (partial,) = (scene.session_dir / "partials").iterdir()
    assert partial.stat().st_mode & 0o777 == 0o600
    ((url, spec),) = scene.specs.items()
    target = Path(spec["target"])
    assert not target.exists()
    monkeypatch.setattr(files, "_finished_mode", None)  # read afresh, under this umask
    old = os.umask(umask)
    try:
        config = _child.make_config(QUICK)
        async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
            (task,) = session.tasks()
            assert isinstance(await task.wait(), FinishedEvent)
    finally:
        os.umask(old)
    assert sha256_file(target) == scene.sha256[url]
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# -- killed during the one step at the end (the last write, the close, the rename) --


def _journal_row(scene: Scene, task_id: int) -> tuple[str, int, Any]:
    """(phase, offset, one_step decoded) as committed, read by a separate connection."""
    path = scene.session_dir / "journal.sqlite3"
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        phase, offset, one_step = connection.execute(
            "SELECT phase, offset, one_step FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
    finally:
        connection.close()
    return phase, offset, None if one_step is None else json.loads(one_step)


@pytest.mark.parametrize("point", ["before_rename", "before_replace"])
async def test_killed_in_the_one_step_after_every_byte_was_written_moves_it(
    point: str, server: TestServer, tmp_path: Path
) -> None:
    """A body that drips in is written as it arrives, so when it ends the one step
    at the end only closes and renames the file; the journal says "moving, in one
    step" with every byte vouched for. Killed before that step (``before_rename``)
    or inside it, before the rename (``before_replace``), the next process moves
    the partial file into place without fetching anything again."""
    scene = Scene(server, tmp_path, QUICK, files=ONE_FILE)
    (url,) = scene.specs
    target = Path(scene.specs[url]["target"])
    run = await scene.child("run1", kill_at={"point": point, "nth": 1})
    assert run.self_killed, run.describe()
    assert not target.exists()
    assert _journal_row(scene, 1) == ("moving", 300_000, {"size": 300_000, "replaces": None})
    assert (scene.session_dir / "partials" / "1.part").stat().st_size == 300_000
    requests = len(server.requests)
    final = await scene.here("run2")
    assert final.done, final.describe()
    (finished,) = [line for line in final.lines if line.get("kind") == "finished"]
    assert finished["total_bytes"] == 300_000
    assert sha256_file(target) == scene.sha256[url]
    assert server.requests[requests:] == (), "the whole file was fetched again"
    assert os.listdir(scene.session_dir / "partials") == []


SMALL = (FileSpec("s.bin", 16_000, "strong", "file"),)  # arrives at once: one write


@pytest.mark.parametrize("older_copy", [False, True], ids=["nothing-there", "older-copy-there"])
async def test_killed_before_a_small_files_one_step_fetches_it_again(
    older_copy: bool, server: TestServer, tmp_path: Path
) -> None:
    """A small body is opened, written, closed and renamed by one call, after the
    journal said "moving, in one step": killed before that call, there is no
    partial file at all. With nothing at the destination, the classic rule would
    report the finished file deleted (an error); with an older file there, it
    would report the download finished and leave the old file. The identity
    recorded with the entry tells the next process the step never happened: it
    fetches the file again and replaces whatever was there."""
    scene = Scene(server, tmp_path, QUICK, files=SMALL)
    (url,) = scene.specs
    target = Path(scene.specs[url]["target"])
    if older_copy:  # the whole file, as a previous download left it (another inode)
        target.write_bytes(server.file("/s.bin").data)
    before = target.stat() if older_copy else None
    run = await scene.child(
        "run1", kill_at={"point": "before_rename", "nth": 1}, overwrite=older_copy
    )
    assert run.self_killed, run.describe()
    phase, offset, one_step = _journal_row(scene, 1)
    assert (phase, offset) == ("moving", 0)
    recorded = None if before is None else [before.st_dev, before.st_ino, 16_000]
    assert one_step["size"] == 16_000
    assert (one_step["replaces"] or [None] * 4)[:3] == (recorded or [None] * 4)[:3]
    assert not (scene.session_dir / "partials" / "1.part").exists()
    requests = len(server.requests)
    final = await scene.here("run2")
    assert final.done, final.describe()
    kinds = [line.get("kind") for line in final.lines if "terminal" in line]
    assert kinds == ["finished"]
    (request,) = server.requests[requests:]
    assert "Range" not in request.headers
    assert sha256_file(target) == scene.sha256[url]
    if before is not None:
        assert target.stat().st_ino != before.st_ino, "the older copy was taken for the download"
    assert os.listdir(scene.session_dir / "partials") == []


class ConsumerFailed(Exception):
    pass


async def fail_on_terminal_event(task: DownloadTask) -> None:
    async with task.events() as stream:
        async for event in stream:
            if isinstance(event, FinishedEvent):
                raise ConsumerFailed


async def test_unacknowledged_terminal_event_is_delivered_until_acknowledged(
    server: TestServer, tmp_path: Path
) -> None:
    scene = Scene(server, tmp_path, EXPLICIT, files=ONE_FILE)
    task_id, _ = await killed_after_finish(scene, "ended")
    config = _child.make_config(QUICK)

    async def reopen() -> list[int]:
        async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
            return [task.id for task in session.tasks()]

    # Reading task.result does not acknowledge it.
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
        (task,) = session.tasks()
        assert isinstance(task.result, FinishedEvent)
    assert await reopen() == [task_id]
    # With explicit acknowledgement, neither does a reader of the terminal event.
    explicit = attrs.evolve(config, acknowledge="explicit")
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=explicit) as session:
        (task,) = session.tasks()
        with pytest.raises(ConsumerFailed):
            await fail_on_terminal_event(task)
    assert await reopen() == [task_id]
    # acknowledge() does.
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=explicit) as session:
        (task,) = session.tasks()
        await task.acknowledge()
        async with asyncio.timeout(10):
            await session.wait_events_delivered()
    assert await reopen() == []


async def test_suspended_task_stays_suspended_after_sigkill(
    server: TestServer, tmp_path: Path
) -> None:
    scene = Scene(server, tmp_path, QUICK, files=ONE_FILE)
    (url,) = scene.specs
    run = await scene.child(
        "run1",
        suspend={"url": url, "after_bytes": 100_000},
        kill_after=lambda line: "suspend_durable" in line,
    )
    (durable,) = [line for line in run.lines if "suspend_durable" in line]
    task_id, offset = durable["suspend_durable"], durable["offset"]
    assert offset >= 100_000
    config = _child.make_config(QUICK)
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
        (task,) = session.tasks()
        assert (task.id, task.state, task.bytes_received) == (task_id, TaskState.SUSPENDED, offset)
        statistics = session.statistics()
        assert (statistics.active, statistics.queued) == (0, 0), "a suspended task was queued"
        requests = len(server.requests)
        events = task.events()
        task.resume()
        async with asyncio.timeout(RUN_TIMEOUT):
            result = await task.wait()
        assert isinstance(result, FinishedEvent)
        check_resumable_stream(await collect(events), task_id)
    (request,) = server.requests[requests:]
    assert request.headers["Range"] == f"bytes={offset}-"
    assert request.headers["If-Range"] == scene.etags[url]
    assert sha256_file(Path(scene.specs[url]["target"])) == scene.sha256[url]
    assert os.listdir(scene.session_dir / "partials") == []


@pytest.mark.parametrize("point", ["before_replace", "after_replace"])
async def test_sigkill_around_download_with_resume_data_taking_the_partial(
    point: str, server: TestServer, tmp_path: Path
) -> None:
    """``download_with_resume_data()`` journals a new task and takes the resume
    data's partial file over with one rename. Killed just before or just after that
    rename, the next process still finishes the file (the new task continues, or
    the resume data still works), byte-exact, and no partial file is left behind:
    neither under the new task's name nor under the old one's."""
    scene = Scene(server, tmp_path, QUICK, files=ONE_FILE)
    (url,) = scene.specs
    first = await scene.child(
        "run1", cancel={"url": url, "after_bytes": 100_000, "kill": None, "yields": 0}
    )
    assert first.done, first.describe()
    (cancelled,) = [line for line in first.lines if line.get("kind") == "cancelled"]
    blob = cancelled["resume_data"]
    assert blob is not None
    second = await scene.child("run2", resume=blob, kill_at={"point": point, "nth": 1})
    assert second.self_killed, second.describe()
    config = _child.make_config(QUICK)
    async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
        tasks = [task for task in session.tasks() if task.url == url]
        if tasks:
            (task,) = tasks
        else:
            try:
                task = await session.download_with_resume_data(base64.b64decode(blob))
            except InvalidResumeDataError as exc:
                left = sorted(os.listdir(scene.session_dir / "partials"))
                pytest.fail(f"the downloaded bytes are lost: no task, {exc}; partials: {left}")
        async with asyncio.timeout(RUN_TIMEOUT):
            assert isinstance(await task.wait(), FinishedEvent)
    assert sha256_file(Path(scene.specs[url]["target"])) == scene.sha256[url]
    assert os.listdir(scene.session_dir / "partials") == [], "a partial file is left over"


SEGMENTED = (
    # Small drips: each write is smaller than a buffered file's buffer.
    FileSpec("big.bin", 2_600_000, "strong", "file", drip=(2_000, 0.001), segments=2),
)


async def test_segmented_download_killed_after_a_checkpoint_finishes_byte_exact(
    server: TestServer, tmp_path: Path
) -> None:
    """Segments write in place into a partial file preallocated to the whole length,
    so after a crash its size says nothing about which bytes arrived: only the
    journal's per-segment counts do (the module invariant, per segment: a
    checkpoint never claims more than the file holds). Killed right after a
    checkpoint was committed, every byte the journal vouches for is in the file,
    and the next process finishes it byte-exact."""
    config = {"checkpoint_interval": 0.0, "progress_interval": 0.0, "max_connections_per_host": 4}
    scene = Scene(server, tmp_path, config, files=SEGMENTED)
    (url,) = scene.specs
    run = await scene.child("run1", kill_at={"point": "after_commit", "nth": 300_000})
    assert run.self_killed, run.describe()
    data = server.file("/big.bin").data
    partial = (scene.session_dir / "partials" / "1.part").read_bytes()
    journal = sqlite3.connect(scene.session_dir / "journal.sqlite3")
    try:
        (text,) = journal.execute("SELECT segments FROM tasks WHERE id = 1").fetchone()
    finally:
        journal.close()
    assert text is not None, "the download was not segmented"
    for start, _, done in json.loads(text):
        region = partial[start : start + done]
        if region != data[start : start + done]:
            good = next(i for i in range(done) if region[i] != data[start + i])
            rest = "zeros" if set(region[good:]) == {0} else "other bytes"
            pytest.fail(
                f"the journal vouches for {done} bytes at {start}, the file holds only {good} "
                f"of them (then {rest}): bytes still in a write buffer were checkpointed"
            )
    await scene.here("final")
    assert sha256_file(Path(scene.specs[url]["target"])) == scene.sha256[url]


def _other_file_system(tmp_path: Path) -> Path:
    """A directory on another file system than ``tmp_path`` (skip if there is none)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary directory")
    return Path(tempfile.mkdtemp(dir=shm, prefix="bgtransfer-crash-"))


@pytest.mark.parametrize("point", ["after_replace", "during_copy"])
async def test_move_to_another_file_system_survives_sigkill(
    point: str, server: TestServer, tmp_path: Path
) -> None:
    """The move to another file system is a copy beside the destination, a rename,
    then the removal of the partial file. Killed in between, the next process
    finishes the task without leaving the copy behind (``during_copy``) and without
    writing the destination a second time (``after_replace``)."""
    out_dir = _other_file_system(tmp_path)
    try:
        scene = Scene(server, tmp_path, QUICK, files=ONE_FILE, out_dir=out_dir)
        (url,) = scene.specs
        target = Path(scene.specs[url]["target"])
        run = await scene.child("run1", kill_at={"point": point, "nth": 1})
        assert run.self_killed, run.describe()
        before = target.stat() if point == "after_replace" else None
        config = _child.make_config(QUICK)
        async with Session(IDENTIFIER, state_dir=scene.state_dir, config=config) as session:
            (task,) = session.tasks()
            assert isinstance(task.result, FinishedEvent)
            await task.acknowledge()
        assert sha256_file(target) == scene.sha256[url]
        if before is not None:
            after = target.stat()
            assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), (
                "the destination was written again"
            )
        assert os.listdir(out_dir) == ["a.bin"], "a temporary copy was left beside the file"
        assert os.listdir(scene.session_dir / "partials") == []
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
