"""Benchmarks (issue #5): bgtransfer against a raw aiohttp floor, a plain script, curl, aria2c.

The plain script is what a user would write instead (aiohttp + aiofiles); wget runs too.

Serves files from nginx on loopback and runs every contender of a scenario in the
same run, alternating, for several rounds; verifies every byte of every run; and
reports medians, min/max and ratios to the references as a markdown table, a JSON
file and a PNG plot. See benchmarks/README.md and docs/benchmarks.md.

    python benchmarks/run.py                 # everything, 5 rounds (long)
    python benchmarks/run.py --quick         # small sizes, 1 round: a smoke run
    python benchmarks/run.py --scenario 1,2 --rounds 3 --big-rounds 3
    python benchmarks/run.py --publish       # also update docs/benchmarks.md and its plot
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _contenders import aiohttp_aiofiles, aiohttp_raw, bgtransfer
from _data import SourceStore
from _machine import describe_machine, engine_revision
from _measure import Runner
from _model import Contender, Job
from _plot import plot
from _report import ScenarioSummary, as_json, markdown, summarize
from _scenarios import SCENARIOS, Setup, Sizes
from _servers import BlackHole, UploadReceiver, ensure_binary, is_gnu_time, serve

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("nginx", "curl", "wget", "aria2c", "time")
BIG_SCENARIOS = (1, 5, 9)
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
DOCS_IMAGE = ROOT / "docs" / "img" / "benchmarks.png"
LATEST_JSON = ROOT / "benchmarks" / "latest.json"
BEGIN = "<!-- BEGIN GENERATED RESULTS (benchmarks/run.py --publish) -->"
END = "<!-- END GENERATED RESULTS -->"


def log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round (smoke run)")
    parser.add_argument(
        "--scenario",
        default=",".join(map(str, SCENARIOS)),
        help=f"comma-separated scenario numbers (1-{max(SCENARIOS)})",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated words: run only the contenders whose name contains one "
        "(e.g. 'bgtransfer'; ratios to a reference left out are not shown)",
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 5; quick: 1)")
    parser.add_argument(
        "--big-rounds",
        type=int,
        help="rounds for the 1 GiB scenarios 1, 5 and 9 (default: --rounds)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results", help="where reports go"
    )
    parser.add_argument("--work", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument(
        "--server", choices=["nginx", "builtin"], default="nginx", help="builtin: skip nginx"
    )
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument("--timeout", type=float, help="seconds a run may take before it fails")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after each scenario, run every bgtransfer contender once more under "
        "pyinstrument; the text reports go to --out (needs pyinstrument)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also write docs/benchmarks.md's results, docs/img/benchmarks.png, "
        "benchmarks/latest.json",
    )
    args = parser.parse_args(argv)
    try:
        args.scenarios = sorted({int(part) for part in args.scenario.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--scenario takes numbers like 1,2 (got {args.scenario!r})")
    unknown = [n for n in args.scenarios if n not in SCENARIOS]
    if unknown or not args.scenarios:
        parser.error(f"unknown scenario(s) {unknown}; choose from {sorted(SCENARIOS)}")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.big_rounds is None:
        args.big_rounds = args.rounds
    if min(args.rounds, args.big_rounds) < 1:
        parser.error("rounds must be at least 1")
    return args


def _load() -> str:
    """The load average: other work on the machine shows up as noise."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def python_env(work: Path) -> dict[str, str]:
    """The contenders' environment: Python clients read bytecode from a warmed cache."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def snapshot_engine(work: Path, env: dict[str, str]) -> str:
    """Copy the bgtransfer package the contenders would import and put the copy first
    on their ``PYTHONPATH``: a commit to src/ during the run cannot mix two engines.
    Returns the revision it was taken at."""
    revision = engine_revision()
    probe = subprocess.run(
        [sys.executable, "-c", "import bgtransfer; print(bgtransfer.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    source = Path(probe.stdout.strip()).parent
    target = work / "engine"
    shutil.copytree(source, target / "bgtransfer", ignore=shutil.ignore_patterns("__pycache__"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    log(f"engine: {source} at {revision}, copied to {target}")
    return f"{revision}, copied from {source} at the start"


def warm_up(runner: Runner, store: SourceStore, setup: Setup) -> None:
    """One untimed run of each Python client: fills the bytecode cache, fails early."""
    source = store.file("warmup/w.bin", 16 * 1024)
    setup.server.publish(source)
    job = Job(urls=(setup.server.url(source.name),), expected=(source,), per_host=1, hosts=1)
    python_clients = (
        bgtransfer("ephemeral"),
        bgtransfer("background"),
        bgtransfer("daemon"),
        aiohttp_raw(),
        aiohttp_aiofiles(),
    )
    for contender in python_clients:
        result = runner.run_once(contender, job, 0)
        if not result.ok:
            log(f"warm-up: {contender.name} failed: {result.error}")


def resolve(contenders: list[Contender], tools: dict[str, str | None]) -> list[Contender]:
    """Mark contenders whose executable is missing (they are reported, not dropped)."""
    return [
        dataclasses.replace(contender, missing=f"{contender.binary} is not installed")
        if contender.binary is not None and tools.get(contender.binary) is None
        else contender
        for contender in contenders
    ]


def run_all(args: argparse.Namespace, work: Path, tools: dict[str, str | None]) -> None:
    sizes = Sizes.quick() if args.quick else Sizes()
    env = python_env(work)
    engine = snapshot_engine(work, env)
    store = SourceStore(work / "www")
    nginx = tools["nginx"] if args.server == "nginx" else None
    available = {name: path for name, path in tools.items() if path is not None}
    gnu_time = tools["time"] if tools["time"] and is_gnu_time(tools["time"]) else None
    if gnu_time is None:
        log("GNU time is not available: peak RSS will not be reported")
    (work / "runs").mkdir(parents=True)
    started = time.monotonic()
    load_before = _load()
    black_hole = BlackHole()
    receiver = UploadReceiver(sys.executable)
    try:
        with serve(store.root, work / "nginx", hosts=sizes.hosts, nginx=nginx, log=log) as server:
            runner = Runner(
                work / "runs",
                python=sys.executable,
                tools=available,
                env=env,
                timeout=args.timeout or sizes.timeout,
                gnu_time=gnu_time,
                log=log,
                server=server,
            )
            server_text = server.description
            log(f"server: {server_text}")
            setup = Setup(sizes, store, server, black_hole.url, receiver)
            warm_up(runner, store, setup)
            tables = [run_scenario(n, args, setup, runner, tools) for n in args.scenarios]
    finally:
        receiver.close()
        black_hole.close()
    machine = describe_machine(
        python=sys.executable, env=env, tools=tools, work=work, engine=engine
    )
    header = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "server": server_text,
        "mode": "quick (small sizes)" if args.quick else "full (the issue's sizes)",
        "duration": f"{(time.monotonic() - started) / 60:.1f} min",
        "load average (1, 5, 15 min) before / after": f"{load_before} / {_load()}",
    }
    write_reports(args, tables, machine, header)


def run_scenario(
    number: int,
    args: argparse.Namespace,
    setup: Setup,
    runner: Runner,
    tools: dict[str, str | None],
) -> ScenarioSummary:
    scenario = SCENARIOS[number]
    rounds = args.big_rounds if number in BIG_SCENARIOS else args.rounds
    log(f"\nscenario {number}: {scenario.title}")
    job = scenario.build(setup)
    contenders = resolve(scenario.contenders(), tools)
    words = [word.strip() for word in args.only.split(",") if word.strip()]
    if words:
        contenders = [c for c in contenders if any(word in c.name for word in words)]
    for contender in contenders:
        if contender.missing:
            log(f"  {contender.name}: not available ({contender.missing})")
    results = runner.run_rounds(contenders, job, rounds, scenario.check)
    if args.profile:
        supported = [c for c in contenders if not any(r.unsupported for r in results[c.name])]
        profile(number, supported, job, runner, args.out)
    return summarize(scenario, job, rounds, contenders, results)


def profile(number: int, contenders: list[Contender], job: Job, runner: Runner, out: Path) -> None:
    """One more run of each bgtransfer contender, under pyinstrument (not counted)."""
    out.mkdir(parents=True, exist_ok=True)
    for contender in contenders:
        if not contender.name.startswith("bgtransfer") or contender.missing:
            continue
        slug = re.sub(r"[^a-z0-9]+", "-", contender.name.lower()).strip("-")
        prefix = out / f"profile-s{number}-{slug}"
        result = runner.run_once(contender, job, 0, profile_to=prefix)
        state = "ok" if result.ok else f"failed: {result.unsupported or result.error}"
        log(f"  profiled {contender.name}: {prefix}-*.txt ({state})")


def write_reports(
    args: argparse.Namespace,
    tables: list[ScenarioSummary],
    machine: dict[str, str],
    header: dict[str, str],
) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    title = f"bgtransfer benchmarks, {header['date']}: {machine['CPU']}, {machine['cores']} cores"
    image = plot(tables, out / "latest.png", title)
    if image is None:
        log("matplotlib is not installed: no plot (nox -s bench installs it)")
    report = markdown(tables, machine, header, image="latest.png" if image else None)
    (out / "latest.md").write_text(report)
    data = json.dumps(as_json(tables, machine, header), indent=1, default=str) + "\n"
    (out / "latest.json").write_text(data)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    (out / f"run-{stamp}.json").write_text(data)
    log("\n" + report)
    log(f"written: {out / 'latest.md'}, {out / 'latest.json'}, {out / 'latest.png'}")
    if args.publish:
        publish(tables, machine, header, image, data)


def publish(
    tables: list[ScenarioSummary],
    machine: dict[str, str],
    header: dict[str, str],
    image: Path | None,
    data: str,
) -> None:
    """Put the results into docs/benchmarks.md (between the markers) and its plot."""
    page = DOCS_PAGE.read_text()
    if BEGIN not in page or END not in page:
        raise SystemExit(f"{DOCS_PAGE} lacks the markers {BEGIN!r} ... {END!r}")
    relative = DOCS_IMAGE.relative_to(DOCS_PAGE.parent).as_posix()
    generated = markdown(tables, machine, header, image=relative if image else None)
    head, rest = page.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOCS_PAGE.write_text(f"{head}{BEGIN}\n{generated}{END}{tail}")
    if image is not None:
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, DOCS_IMAGE)
    LATEST_JSON.write_text(data)
    log(f"published: {DOCS_PAGE}, {DOCS_IMAGE}, {LATEST_JSON}")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers: nginx stops too


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGTERM, _terminate)
    args = parse_args(argv)
    tools = {name: ensure_binary(name, install=not args.no_install, log=log) for name in TOOLS}
    for name, path in tools.items():
        log(f"{name}: {path or 'not available'}")
    if args.server == "nginx" and tools["nginx"] is None:
        args.server = "builtin"
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bgtransfer-bench-", dir=args.work))
    try:
        run_all(args, work, tools)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
