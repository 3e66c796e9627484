"""Running contenders: one process per step, timed and measured the same way for all.

Wall time is from just before the process is spawned to ``os.wait4`` returning.
Peak RSS is ``ru_maxrss`` of a ``wait4`` too, but taken by GNU ``time`` (``time -f
%M``) wrapped around the command: on Linux a child's ``ru_maxrss`` starts at the
high-water RSS of the process it was forked from, so measured directly from this
(50 MiB) runner every contender, even curl, would show at least 50 MiB; forked
from ``time`` (1 MiB) the figure is the contender's own. Without GNU time, RSS is
not reported. CPU time (scenario 9's "client CPU") is the user and system time
of that same ``wait4``: the step's process and the processes it waited for (GNU
``time`` and the command), not the runner's. Each run writes into a fresh
directory that is verified (sizes and SHA-256 of every file), followed by
``os.sync()``, so no run inherits another's dirty pages. Within a scenario the
contenders alternate round by round, the order rotated each round.

A run's directory is deleted at once when it holds few or large files; one with
many small files (scenarios 2 and 6) is kept until the suite ends. Deleting
thousands of files makes the next run's file creations slow on some file systems,
and then the run that follows another pays for it: ext4 without a journal (this
suite's machine) will not reuse an inode freed in the last 30 seconds, and every
``open(O_CREAT)`` reads past each such inode of its block group
(``recently_deleted`` in the kernel). Measured here: the raw aiohttp loop took
2.4 s for scenario 2 right after another run had deleted its 2,000 files and
0.7 s with them kept; the system time went from 0.45 s to 3.5 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from _data import verify_output
from _model import Contender, Job, RunContext, RunResult, Step
from _servers import FileServer

__all__ = ["DAEMON_PROFILE_ENV", "EXIT_UNSUPPORTED", "Runner"]

EXIT_UNSUPPORTED = 3  # clients/_common.py: the engine cannot do this yet


@dataclass
class _Outcome:
    returncode: int
    wall: float
    cpu: float  # user + system seconds of the step's process tree (wait4's rusage)
    max_rss_kib: int | None
    timed_out: bool
    report: dict[str, object]
    stderr_tail: str


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended just now
        os.killpg(pid, signal.SIGKILL)


def _last_json_line(path: Path) -> dict[str, object]:
    lines = path.read_text(errors="replace").strip().splitlines()
    if not lines:
        return {}
    try:
        value = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _read_rss(path: Path) -> int | None:
    """The KiB GNU time wrote (its last line), or None."""
    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        return None
    return int(lines[-1]) if lines and lines[-1].isdigit() else None


def run_step(
    step: Step, env: Mapping[str, str], scratch: Path, timeout: float, gnu_time: str | None
) -> _Outcome:
    """Run one process to its end (killed after ``timeout`` s); measure it."""
    out_path = scratch / f"{step.label}.stdout"
    err_path = scratch / f"{step.label}.stderr"
    rss_path = scratch / f"{step.label}.rss"
    argv = step.argv
    if gnu_time is not None:
        argv = [gnu_time, "--format=%M", f"--output={rss_path}", "--", *argv]
    with out_path.open("wb") as stdout, err_path.open("wb") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env={**env, **(step.env or {})},
            start_new_session=True,  # a timeout kills the whole group
        )
        killer = threading.Timer(timeout, _kill_group, (proc.pid,))
        killer.start()
        try:
            # Its rusage gives the CPU time, not the RSS: see the module docstring.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            wall = time.perf_counter() - started
            timed_out = not killer.is_alive()
            killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    stderr_tail = err_path.read_text(errors="replace").strip()[-600:]
    return _Outcome(
        returncode=proc.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_kib=_read_rss(rss_path) if gnu_time is not None else None,
        timed_out=timed_out,
        report=_last_json_line(out_path),
        stderr_tail=stderr_tail,
    )


def _numbers(report: Mapping[str, object]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in report.items()
        if isinstance(value, int | float)  # bool is an int: True -> 1.0
    }


DAEMON_PROFILE_ENV = "BENCH_DAEMON_PROFILE"
"""Read by ``clients/bgtransfer_daemon.py`` only: run the daemon it starts under
cProfile, writing ``<value>.prof`` and, once it stopped, ``<value>.txt``."""


def _profiled(step: Step, python: str, prefix: Path) -> Step:
    """The step under pyinstrument (main thread: the event loop), if it is a Python
    one and timed; a daemon the run starts goes under cProfile (see above)."""
    env = {**(step.env or {}), DAEMON_PROFILE_ENV: f"{prefix}-daemon"}
    if step.argv[0] != python or not step.timed or step.cleanup:
        return dataclasses.replace(step, env=env)
    report = f"{prefix}-{step.label}.txt"
    profiler = [python, "-m", "pyinstrument", "--renderer=text", "--show-all", "-o", report]
    return dataclasses.replace(step, argv=[*profiler, *step.argv[1:]], env=env)


KEEP_FILES_FROM = 500
"""A run with at least this many files is kept until the suite ends ..."""
KEEP_BYTES_UP_TO = 256 * 2**20
"""... unless they hold more bytes than this (scenario 2's 2,000 files: 31 MiB)."""


class Runner:
    """Runs contenders in fresh directories under ``work`` and checks their output."""

    def __init__(
        self,
        work: Path,
        *,
        python: str,
        tools: Mapping[str, str],
        env: Mapping[str, str],
        timeout: float,
        gnu_time: str | None,
        log: Callable[[str], None],
        server: FileServer | None = None,
    ) -> None:
        self._work = work
        self._python = python
        self._tools = tools
        self._env = env
        self._timeout = timeout
        self._gnu_time = gnu_time
        self._server = server
        self._log = log
        self._kept = work.parent / "kept-runs"

    def _dispose(self, run_dir: Path) -> None:
        """Delete ``run_dir`` now, or keep it until the suite ends (see the module
        docstring) when it holds many files and they are small."""
        count, size = 0, 0
        for root, _dirs, files in os.walk(run_dir):
            count += len(files)
            size += sum(os.path.getsize(os.path.join(root, name)) for name in files)
        if count >= KEEP_FILES_FROM and size <= KEEP_BYTES_UP_TO:
            self._kept.mkdir(exist_ok=True)
            os.rename(run_dir, self._kept / run_dir.name)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)

    def run_once(
        self,
        contender: Contender,
        job: Job,
        round_number: int,
        check: Callable[[RunResult, Job], None] | None = None,
        *,
        profile_to: Path | None = None,
    ) -> RunResult:
        """One run in a fresh directory, verified, then disposed of. With ``profile_to``,
        Python steps run under pyinstrument, writing ``<profile_to>-<step>.txt``."""
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self._work))
        try:
            return self._run_in(
                run_dir, contender, job, round_number, check=check, profile_to=profile_to
            )
        finally:
            self._dispose(run_dir)
            os.sync()

    def _run_in(
        self,
        run_dir: Path,
        contender: Contender,
        job: Job,
        round_number: int,
        *,
        check: Callable[[RunResult, Job], None] | None,
        profile_to: Path | None,
    ) -> RunResult:
        out, scratch = run_dir / "out", run_dir / "scratch"
        out.mkdir()
        scratch.mkdir()
        context = RunContext(job, out, scratch, self._python, self._tools)
        steps = contender.steps(context)  # list files are written before the clock starts
        if profile_to is not None:
            steps = [_profiled(step, self._python, profile_to) for step in steps]
        result = RunResult(contender=contender.name, round=round_number, ok=True)
        walls: list[float] = []
        peaks: list[float] = []
        mark = self._server.log_mark() if self._server is not None else 0
        main = [step for step in steps if not step.cleanup]
        try:
            for step in main:
                if not self._step(step, scratch, result, walls, peaks, several=len(steps) > 1):
                    return result
        finally:
            # Stopping a daemon: always, even after a failure (no stray processes).
            for step in steps:
                if step.cleanup:
                    self._step(step, scratch, result, walls, peaks, several=True)
        if not result.ok:
            return result
        if self._server is not None:  # how many connections it really used, and ranges
            result.metrics.update(self._server.requests_since(mark))
        result.metrics["wall_s"] = sum(walls)
        if peaks:
            result.metrics["peak_rss_mib"] = max(peaks)
        wrong = verify_output(out, job.expected)
        if wrong is not None:
            result.ok = False
            result.error = f"wrong output: {wrong}"
            return result
        if job.expected:
            result.metrics["mib_per_s"] = job.total_bytes / 2**20 / result.metrics["wall_s"]
            result.metrics["files_per_s"] = len(job.expected) / result.metrics["wall_s"]
        if check is not None:
            check(result, job)
        return result

    def _step(
        self,
        step: Step,
        scratch: Path,
        result: RunResult,
        walls: list[float],
        peaks: list[float],
        *,
        several: bool,
    ) -> bool:
        """Run one step, adding its measurements to ``result``; False if it failed.
        An untimed or cleanup step's wall time and RSS are reported under its label
        only, not in the run's ``wall_s`` and ``peak_rss_mib``."""
        outcome = run_step(step, self._env, scratch, self._timeout, self._gnu_time)
        counted = step.timed and not step.cleanup
        if counted:
            walls.append(outcome.wall)
            result.metrics["client_cpu_s"] = result.metrics.get("client_cpu_s", 0.0) + outcome.cpu
        result.metrics.update(_numbers(outcome.report))
        if several:
            result.metrics[f"{step.label}_wall_s"] = outcome.wall
        if outcome.max_rss_kib is not None:
            if counted:
                peaks.append(outcome.max_rss_kib / 1024)
            if several:
                result.metrics[f"{step.label}_peak_rss_mib"] = outcome.max_rss_kib / 1024
        unsupported = outcome.report.get("unsupported")
        if outcome.returncode == EXIT_UNSUPPORTED and isinstance(unsupported, str):
            result.ok = False
            result.unsupported = unsupported
            return False
        if outcome.timed_out or outcome.returncode != 0:
            why = "timed out" if outcome.timed_out else f"exit status {outcome.returncode}"
            # The last line (a traceback's exception): the report's tables are one line.
            last = outcome.stderr_tail.splitlines()[-1] if outcome.stderr_tail else "(no stderr)"
            error = f"{step.label}: {why}: {last}"
            if result.ok:  # the first failure is the run's error
                result.ok = False
                result.error = error
            else:
                result.notes.append(error)
            return False
        return True

    def run_rounds(
        self,
        contenders: list[Contender],
        job: Job,
        rounds: int,
        check: Callable[[RunResult, Job], None] | None = None,
    ) -> dict[str, list[RunResult]]:
        """Every contender once per round, in :func:`round_order`; unsupported ones
        are dropped after their first answer (they are reported, not retried)."""
        results: dict[str, list[RunResult]] = {c.name: [] for c in contenders}
        active = [c for c in contenders if c.missing is None]
        for round_number in range(rounds):
            if not active:
                break
            for index in round_order(len(active), round_number):
                contender = active[index]
                result = self.run_once(contender, job, round_number + 1, check)
                results[contender.name].append(result)
                self._log(_describe(result, rounds))
            active = [c for c in active if not results[c.name][-1].unsupported]
        return results


def round_order(count: int, round_number: int) -> list[int]:
    """The order of round ``round_number``: a Williams sequence, rotated each round.

    Round 0 is 0, 1, n-1, 2, n-2, ...; round r adds r to every index (mod n). So each
    contender takes every position once in n rounds and, unlike a plain rotation
    (where B always runs right after A), follows each other contender equally
    often: a run that leaves the machine slower for the next one (the page cache,
    the scheduler) does not always hit the same contender.
    """
    base = [0]
    low, high = 1, count - 1
    while low <= high:
        base.append(low)
        if low != high:
            base.append(high)
        low, high = low + 1, high - 1
    return [(index + round_number) % count for index in base]


def _describe(result: RunResult, rounds: int) -> str:
    head = f"  round {result.round}/{rounds}  {result.contender:<36}"
    if result.unsupported:
        return f"{head} {result.unsupported}"
    metrics = result.metrics
    wall = metrics.get("wall_s")
    timing = f"{wall:7.2f} s" if wall is not None else "      - "
    rss = metrics.get("peak_rss_mib")
    memory = f"{rss:6.0f} MiB" if rss is not None else ""
    status = "ok" if result.ok else f"FAILED: {result.error}"
    notes = f" ({'; '.join(result.notes)})" if result.notes else ""
    return f"{head} {timing} {memory}  {status}{notes}"
