"""Instructions per queued task: one ``download()`` or ``upload()`` call, and its reopen.

Scenario 4 and 10 time 10,000 calls; on the shared benchmark machine wall times
swing by tens of percent, callgrind's instruction counts do not. This runs the
scenarios' own client (``clients/bgtransfer_queue.py enqueue``, a background
session, one call per task, tasks queued behind one connection to a loopback port
that accepts and never answers) under ``valgrind --tool=callgrind`` for two
numbers of tasks; the difference of the counts over the difference of the tasks
is the cost of one more call, without the process's start. With ``--reopen`` the
same is done for ``clients/bgtransfer_queue.py reopen`` on the journal each
enqueue left: the cost of one more task to reopen and list.

``PYTHONHASHSEED=0``; the bytecode cache is warmed by one uncounted run first
(this machine's shell sets ``PYTHONDONTWRITEBYTECODE=1``; without a cache every
process compiles the package again and that dominates the count).

Usage: ``python benchmarks/enqueue_callgrind.py [--tasks 500,2500] [--upload]
[--reopen] [--cprofile] [--keep DIR]`` (prints one JSON line per count, then the
per-task result). With ``--keep``, the callgrind outputs (or ``.prof`` files with
``--cprofile``) stay in DIR for ``callgrind_annotate`` or ``pstats``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from _callgrind import print_per_unit, total_instructions

HERE = Path(__file__).resolve().parent
VALGRIND = ["valgrind", "--tool=callgrind", "--quiet", "--dump-instr=no"]
# The client ends with os._exit (the app killed while its tasks wait), which
# cProfile's own command line never sees: this runs it with the profile written
# just before that exit.
PROFILED = """
import cProfile, os, runpy, sys
out, sys.argv = sys.argv[1], sys.argv[2:]
profile = cProfile.Profile()
real_exit = os._exit
def _exit(status):
    profile.disable()
    profile.dump_stats(out)
    real_exit(status)
os._exit = _exit
profile.enable()
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _tool(args: argparse.Namespace, out_file: Path | None) -> list[str]:
    """The command line's start: Python, under callgrind or cProfile (or neither)."""
    if out_file is None:
        return [sys.executable]
    if args.cprofile:
        return [sys.executable, "-c", PROFILED, f"{out_file}.prof"]
    return [*VALGRIND, f"--callgrind-out-file={out_file}", sys.executable]


def _run(
    args: argparse.Namespace, action: str, tasks: int, run: Path, out_file: Path | None
) -> dict[str, object]:
    """One client run; its JSON report."""
    command = [
        *_tool(args, out_file), str(HERE / "clients" / "bgtransfer_queue.py"), action,
        "--state-dir", str(run / "state"), "--count", str(tasks),
        "--url-base", args.url_base, "--out", str(run / "out"),
    ]  # fmt: skip
    if args.upload:
        command += ["--upload", str(args.source)]
    done = subprocess.run(
        command, capture_output=True, check=False, env=args.env, cwd=HERE / "clients"
    )
    if done.returncode != 0:
        raise SystemExit(f"the client failed: {done.stderr.decode()[-2000:]}")
    report: dict[str, object] = json.loads(done.stdout.decode().splitlines()[-1])
    return report


def count(tasks: int, args: argparse.Namespace, work: Path) -> dict[str, int]:
    run = work / f"run-{tasks}"
    (run / "out").mkdir(parents=True)
    (run / "state").mkdir()
    enqueued = _run(args, "enqueue", tasks, run, run / "enqueue.cg")
    if enqueued.get("enqueued") != tasks:
        raise SystemExit(f"enqueued {enqueued.get('enqueued')} tasks, expected {tasks}")
    result = {"tasks": tasks}
    if not args.cprofile:
        result["enqueue"] = total_instructions(run / "enqueue.cg")
    if args.reopen:
        listed = _run(args, "reopen", tasks, run, run / "reopen.cg")
        if listed.get("listed") != tasks or listed.get("urls_match") != 1:
            raise SystemExit(f"the reopen listed {listed.get('listed')} of {tasks} tasks")
        if not args.cprofile:
            result["reopen"] = total_instructions(run / "reopen.cg")
    if any((run / "out").iterdir()):
        raise SystemExit("a queued task wrote its output")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="500,2500")
    parser.add_argument("--upload", action="store_true", help="upload() instead of download()")
    parser.add_argument("--reopen", action="store_true", help="also count reopen and list")
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--cprofile", action="store_true", help="cProfile (.prof) instead")
    args = parser.parse_args()
    low, high = (int(n) for n in args.tasks.split(","))
    work = Path(tempfile.mkdtemp(prefix="enqueue-cg-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    args.env = env
    args.source = work / "source.bin"
    args.source.write_bytes(bytes(range(256)) * 64)  # 16 KiB; only the first task opens it
    black_hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(4096)  # accepts, never answers: every task but the first stays queued
        args.url_base = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
        warm = work / "warm"
        (warm / "out").mkdir(parents=True)
        (warm / "state").mkdir()
        _run(args, "enqueue", 10, warm, None)  # fills the bytecode cache; not counted
        _run(args, "reopen", 10, warm, None)
        counts = [count(n, args, work) for n in (low, high)]
    finally:
        black_hole.close()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.cprofile:
        print(f"profiles in {work}")
        return 0
    print_per_unit(
        counts, "task", ("enqueue", "reopen"), kind="upload" if args.upload else "download"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
