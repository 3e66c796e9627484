"""Instructions per file through the daemon, client and daemon apart (issue #20).

Wall times on the shared benchmark machine swing by tens of percent; callgrind's
instruction counts do not. This runs scenario 2's client
(``clients/bgtransfer_get.py --session daemon``) against a daemon it started
first (warm, as the benchmark's "(daemon" contenders), both under
``valgrind --tool=callgrind``, for two numbers of files; the difference of the
counts divided by the difference of the files is the cost of one more file, in
each process, without the start-up. The files (16 KiB each) come from a
``bgtransfer.testing.ThreadedTestServer`` in this process (not counted).

``PYTHONHASHSEED=0``; the bytecode cache (``PYTHONPYCACHEPREFIX`` in the work
directory) is warmed by one uncounted run of both processes first: without
it, the first counted run's daemon and client compile every module they import
(about 0.4 G instructions in the daemon), which the difference then takes off
the cost per file. ``--inline-writes`` sets
``bgtransfer._io.threads.INLINE_SLOW`` to infinity in both processes (a
``sitecustomize`` in the work directory): a small file's writes then run on the
loop in every run, as they do at full speed, instead of going to the file thread
whenever callgrind's slowness made one look slow, which moves the counts by
timing.

Usage: ``python benchmarks/daemon_callgrind.py [--files 100,400] [--events none|all]
[--enqueue each|many] [--inline-writes] [--keep DIR]`` (prints one JSON line per count, then the
per-file result). With ``--keep``, the callgrind outputs stay in DIR for
``callgrind_annotate``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _callgrind import print_per_unit, total_instructions

from bgtransfer.testing import ThreadedTestServer

HERE = Path(__file__).resolve().parent
SIZE = 16 * 1024
VALGRIND = ["valgrind", "--tool=callgrind", "--quiet"]
SITECUSTOMIZE = """\
import math
import bgtransfer._io.threads
bgtransfer._io.threads.INLINE_SLOW = math.inf  # daemon_callgrind.py --inline-writes
"""


def _wait_socket(state_dir: Path, daemon: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once the daemon answers ``bgtransfer status``."""
    deadline = time.monotonic() + timeout
    command = [sys.executable, "-m", "bgtransfer", "status", "--state-dir", str(state_dir)]
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with {daemon.returncode}")
        probe = subprocess.run(command, capture_output=True, check=False)
        if probe.returncode == 0 and b"pid" in probe.stdout:
            return
        time.sleep(0.5)  # a harness's poll of another process, not a test's synchronisation
    raise SystemExit("the daemon did not answer in time")


def _tool(args: argparse.Namespace, out_file: Path | None) -> list[str]:
    """The command line's start: Python under callgrind (or under cProfile;
    neither for ``out_file`` None: the warm-up)."""
    if out_file is None:
        return [sys.executable]
    if args.cprofile:
        return [sys.executable, "-m", "cProfile", "-o", f"{out_file}.prof"]
    return [*VALGRIND, f"--callgrind-out-file={out_file}", sys.executable]


def _client(
    args: argparse.Namespace, paths: list[Path | None], env: dict[str, str], session: str
) -> None:
    """Scenario 2's client on ``paths`` (URL list, output, state dir, count
    file or None: not counted)."""
    urls, out, state, out_file = paths
    client = subprocess.run(
        [*_tool(args, out_file),
         str(HERE / "clients" / "bgtransfer_get.py"), "--urls", str(urls), "--out", str(out),
         "--per-host", "6", "--total", "6", "--session", session, "--state-dir", str(state),
         "--events", args.events, "--enqueue", args.enqueue],
        capture_output=True, check=False, env=env, cwd=HERE / "clients",
    )  # fmt: skip
    if client.returncode != 0:
        raise SystemExit(f"the client failed: {client.stderr.decode()[-2000:]}")


def count(
    server: ThreadedTestServer,
    files: int,
    args: argparse.Namespace,
    work: Path,
    *,
    counted: bool = True,
) -> dict[str, int]:
    """Scenario 2 on ``files`` files; each process's instructions (none
    counted, the warm-up's, with ``counted`` false)."""
    run = work / (f"run-{files}" if counted else "warm")
    out, state = run / "out", run / "state"
    out.mkdir(parents=True)
    state.mkdir()
    urls = run / "urls.txt"
    urls.write_text("".join(server.url(f"/f{i:05d}.bin") + "\n" for i in range(files)))
    daemon_out = run / "daemon.cg" if counted else None
    client_out = run / "client.cg" if counted else None
    env = args.env
    if args.in_process:  # the reference: the same client, the background session in-process
        _client(args, [urls, out, state, client_out], env, "background")
        _verify(out, files)
        if args.cprofile or client_out is None:
            return {"files": files}
        return {"files": files, "client": total_instructions(client_out)}
    daemon = subprocess.Popen(
        [*_tool(args, daemon_out), "-m", "bgtransfer",
         "daemon", "--state-dir", str(state), "--idle-timeout", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )  # fmt: skip
    try:
        _wait_socket(state, daemon, 300)
        _client(args, [urls, out, state, client_out], env, "daemon")
    finally:
        subprocess.run(
            [sys.executable, "-m", "bgtransfer", "daemon", "--stop", "--state-dir", str(state)],
            capture_output=True, check=False,
        )  # fmt: skip
        daemon.wait(timeout=600)
    _verify(out, files)
    if (state / "daemon.log").exists():  # the client launched one: not the one counted
        raise SystemExit("the client did not reach the daemon started for it")
    if args.cprofile or client_out is None or daemon_out is None:
        return {"files": files}
    return {
        "files": files,
        "client": total_instructions(client_out),
        "daemon": total_instructions(daemon_out),
    }


def _verify(out: Path, files: int) -> None:
    made = sorted(p.name for p in out.iterdir())
    if len(made) != files or any((out / name).stat().st_size != SIZE for name in made):
        raise SystemExit(f"wrong output: {len(made)} files")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="100,400")
    parser.add_argument("--events", choices=["none", "all"], default="none")
    parser.add_argument("--enqueue", choices=["each", "many"], default="each")
    parser.add_argument("--keep", type=Path)
    parser.add_argument(
        "--inline-writes", action="store_true", help="small files' writes always on the loop"
    )
    parser.add_argument(
        "--in-process", action="store_true", help="the background session in-process instead"
    )
    parser.add_argument("--cprofile", action="store_true", help="cProfile (.prof) instead")
    args = parser.parse_args()
    low, high = (int(n) for n in args.files.split(","))
    work = Path(tempfile.mkdtemp(prefix="daemon-cg-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    args.env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    args.env.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.inline_writes:
        site = work / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
        args.env["PYTHONPATH"] = os.pathsep.join(path)
    try:
        with ThreadedTestServer() as server:
            for i in range(high):
                server.add_file(f"/f{i:05d}.bin", size=SIZE, seed=i)
            count(server, min(low, 10), args, work, counted=False)  # fills the bytecode cache
            counts = [count(server, n, args, work) for n in (low, high)]
        if args.cprofile:
            print(f"profiles in {work}")
            return 0
        print_per_unit(
            counts,
            "file",
            ("client", "daemon"),
            events=args.events,
            enqueue=args.enqueue,
            writes="inline" if args.inline_writes else "default",
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
