"""The daemon scenarios' harness: start a daemon, watch it idle, stop it.

``start`` runs ``python -m bgtransfer daemon --state-dir DIR`` (its default idle
timeout, as a daemon launched on demand has; ``--idle-timeout S`` passes one)
detached (its own session, stdin from /dev/null, output to
``DIR/bench-daemon.log``) and returns once it answers ``hello``; it reports the
daemon's pid and how long the start took. The runner does this before the timed
step of a "warm" daemon contender, so the daemon's start-up is outside the
measured time (the cold-start contender leaves it to ``Session(...,
daemon=True)``, which launches one on demand).

``stop`` reads the daemon's pid from ``DIR/daemon.lock``, takes its peak and current
resident memory (``VmHWM``, ``VmRSS``) and CPU time (``/proc/<pid>/stat``), runs
``python -m bgtransfer daemon --stop --state-dir DIR`` and waits for the process to
be gone; one still there after that is SIGKILLed (and the step fails). The runner
runs it after every daemon run, whatever happened.

``idle`` watches a started daemon for ``--seconds`` (after a 1 s pause, so the
start-up's last work is not counted): CPU time consumed, context switches of all
its threads (each one a wake-up), resident memory. Then it serves one client
(``Session(..., daemon=True)``, one ``download`` of ``--url``, wait, leave) and
watches it idle again: the daemon has then loaded the engine and closed a session.

With ``BENCH_DAEMON_PROFILE=PREFIX`` (``run.py --profile``), ``start`` runs the
daemon under cProfile (``PREFIX.prof``) and ``stop`` writes the top functions by
cumulative and by own time to ``PREFIX.txt`` once the daemon has exited.

Usage: ``python bgtransfer_daemon.py start|stop|idle --state-dir DIR
[--idle-timeout S] [--seconds S --url URL --out DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import pstats
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import output_name, report

from bgtransfer import Configuration, Session
from bgtransfer._daemon.control import daemon_status

PROFILE_ENV = "BENCH_DAEMON_PROFILE"  # benchmarks/_measure.py sets it under --profile
START_TIMEOUT = 30.0
STOP_TIMEOUT = 40.0  # the daemon's own bound is 10 s; --stop waits twice that and 5 s
TICK = os.sysconf("SC_CLK_TCK")


def daemon_pid(state_dir: Path) -> int | None:
    """The pid in the daemon's lock file, if that process is a bgtransfer daemon."""
    try:
        pid = int((state_dir / "daemon.lock").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None
    return pid if b"bgtransfer" in command and b"daemon" in command else None


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` (not a child of ours) has exited, at most ``timeout`` s:
    its pidfd turns readable then (no polling). True if it has."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def status_kib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    raise KeyError(key)


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def wakeups(pid: int) -> int:
    """Context switches (voluntary and not) of every thread of ``pid`` so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


async def answers(state_dir: Path) -> bool:
    try:
        return await daemon_status(state_dir) is not None
    except RuntimeError:
        return False


async def wait_for_hello(state_dir: Path, process: subprocess.Popen[bytes], started: float) -> bool:
    """True once the daemon answers; False if it exited or took too long."""
    delay = 0.005
    while not await answers(state_dir):
        if process.poll() is not None or time.perf_counter() - started > START_TIMEOUT:
            return False
        await asyncio.sleep(delay)  # bounded: polls the socket until it answers
        delay = min(delay * 2, 0.05)
    return True


def start(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.absolute()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    daemon = ["-m", "bgtransfer", "daemon", "--state-dir", str(state_dir)]
    if args.idle_timeout is not None:
        daemon += ["--idle-timeout", str(args.idle_timeout)]
    profile = os.environ.get(PROFILE_ENV)
    if profile:
        daemon = ["-m", "cProfile", "-o", f"{profile}.prof", *daemon]
    started = time.perf_counter()
    with (state_dir / "bench-daemon.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, *daemon],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=True,
            start_new_session=True,
            cwd="/",
        )
    if not asyncio.run(wait_for_hello(state_dir, process, started)):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        why = f"exited with status {process.poll()}" if process.poll() else "did not answer"
        print(f"the daemon {why}; see {state_dir / 'bench-daemon.log'}", file=sys.stderr)
        return 1
    report(daemon_pid=process.pid, daemon_start_s=time.perf_counter() - started)
    return 0


def stop(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.absolute()
    pid = daemon_pid(state_dir)
    if pid is None:
        report()  # no daemon runs (one that failed to start, say): nothing to stop
        return 0
    measured = {
        "daemon_peak_rss_mib": status_kib(pid, "VmHWM") / 1024,
        "daemon_rss_mib": status_kib(pid, "VmRSS") / 1024,
        "daemon_cpu_s": cpu_seconds(pid),
    }
    started = time.perf_counter()
    stopped = subprocess.run(
        [sys.executable, "-m", "bgtransfer", "daemon", "--stop", "--state-dir", str(state_dir)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT,
        check=False,
    )
    killed = not wait_gone(pid, STOP_TIMEOUT)  # --stop returns once the lock is free
    if killed:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the daemon leads its own session
    report(**measured, daemon_stop_s=time.perf_counter() - started)
    profile = os.environ.get(PROFILE_ENV)
    if profile and Path(f"{profile}.prof").exists():
        text = io.StringIO()
        stats = pstats.Stats(f"{profile}.prof", stream=text)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(40)
        Path(f"{profile}.txt").write_text(text.getvalue())
    if killed or stopped.returncode != 0:
        print(
            f"bgtransfer daemon --stop: status {stopped.returncode} "
            f"{stopped.stderr.strip()!r}; {'SIGKILLed' if killed else 'exited'}",
            file=sys.stderr,
        )
        return 1
    return 0


async def watch(pid: int, seconds: float) -> dict[str, float]:
    """CPU time and wake-ups of ``pid`` over ``seconds`` of idleness, and its RSS."""
    await asyncio.sleep(1.0)  # the start-up's (or the last client's) tail is not idle time
    cpu, switches = cpu_seconds(pid), wakeups(pid)
    await asyncio.sleep(seconds)  # the measurement itself: what the daemon does meanwhile
    return {
        "cpu_ms": (cpu_seconds(pid) - cpu) * 1000,
        "wakeups": wakeups(pid) - switches,
        "rss_mib": status_kib(pid, "VmRSS") / 1024,
        "threads": threads(pid),
    }


async def idle(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.absolute()
    pid = daemon_pid(state_dir)
    if pid is None:
        print(f"no daemon runs for {state_dir}", file=sys.stderr)
        return 1
    fresh = await watch(pid, args.seconds)
    config = Configuration(max_connections_per_host=1, max_concurrent_transfers=1)
    async with Session("bench.idle", config=config, state_dir=state_dir, daemon=True) as session:
        task = await session.download(args.url, args.out / output_name(args.url))
        await task.wait()
    served = await watch(pid, args.seconds)
    report(
        idle_s=args.seconds,
        **{f"idle_{key}": value for key, value in fresh.items()},
        **{f"served_idle_{key}": value for key, value in served.items()},
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "idle"])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--idle-timeout", type=float, help="default: the daemon's own")
    parser.add_argument("--seconds", type=float, default=10.0, help="idle: how long to watch")
    parser.add_argument("--url", default="", help="idle: what the one client downloads")
    parser.add_argument("--out", type=Path, default=Path.cwd())
    args = parser.parse_args()
    if args.action == "start":
        return start(args)
    if args.action == "stop":
        return stop(args)
    return asyncio.run(idle(args))


if __name__ == "__main__":
    sys.exit(main())
