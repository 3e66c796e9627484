"""The contenders: how each one is asked to do a scenario's job.

Every contender runs as its own process (or two, for scenario 4), so wall time
and peak RSS are measured the same way for all of them. Each tool gets the
flags that make it fastest at the job while keeping the scenario's rules (the
same connections per host, every file saved under its own name, no config
files read); ``Contender.flags`` documents the command line in the report.
"""

from __future__ import annotations

from pathlib import Path

from _model import Contender, RunContext, Step

__all__ = [
    "aiohttp_aiofiles",
    "aiohttp_raw",
    "aria2c",
    "asyncio_lean",
    "bgtransfer",
    "bgtransfer_queue",
    "bgtransfer_upload",
    "curl",
    "curl_upload",
    "daemon_idle",
    "wget",
]

CLIENTS = Path(__file__).resolve().parent / "clients"


def _name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _write(ctx: RunContext, filename: str, lines: list[str]) -> Path:
    path = ctx.scratch / filename
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _client_args(ctx: RunContext) -> list[str]:
    job = ctx.job
    urls = _write(ctx, "urls.txt", list(job.urls))
    return [
        *("--urls", str(urls), "--out", str(ctx.out)),
        *("--per-host", str(job.per_host), "--total", str(job.total)),
    ]


def _daemon_steps(ctx: RunContext, timed: list[Step], *, warm: bool = True) -> list[Step]:
    """``timed`` between an untimed start of the run's daemon (``warm``; else the
    first client launches it on demand, inside the measured time) and its stop,
    which runs whatever happened (``clients/bgtransfer_daemon.py``)."""
    control = [ctx.python, str(CLIENTS / "bgtransfer_daemon.py")]
    state = ["--state-dir", str(ctx.scratch / "state")]
    start = [Step("daemon-start", [*control, "start", *state], timed=False)] if warm else []
    return [*start, *timed, Step("daemon-stop", [*control, "stop", *state], cleanup=True)]


def bgtransfer(
    session: str,
    *,
    events: str = "none",
    segments: int = 1,
    enqueue: str = "each",
    name: str | None = None,
    cold: bool = False,
) -> Contender:
    """bgtransfer through its public API (``clients/bgtransfer_get.py``); ``session``
    "daemon" runs the tasks in a daemon the run starts first (untimed) or, ``cold``,
    one the client launches on demand (timed)."""

    def steps(ctx: RunContext) -> list[Step]:
        argv = [ctx.python, str(CLIENTS / "bgtransfer_get.py"), *_client_args(ctx)]
        argv += ["--session", session, "--events", events, "--enqueue", enqueue]
        if session != "ephemeral":
            argv += ["--state-dir", str(ctx.scratch / "state")]
        if segments > 1:
            argv += ["--segments", str(segments)]
        if session == "daemon":
            return _daemon_steps(ctx, [Step("run", argv)], warm=not cold)
        return [Step("run", argv)]

    opened = {
        "ephemeral": "Session()",
        "background": 'Session("bench.bg", state_dir=<fresh>)',
        "daemon": 'Session("bench.bg", state_dir=<fresh>, daemon=True)',
    }[session]
    if session == "daemon":
        opened = (
            "the daemon launched on demand by the client (inside the time), then " + opened
            if cold
            else "a daemon started and answering before the clock starts, then " + opened
        )
    call = f"download(url, dest, segments={segments})" if segments > 1 else "download(url, dest)"
    wait = "every event of task.events()" if events == "all" else "task.wait()"
    if enqueue == "many":
        how = "one download_many([DownloadRequest(url, dest), ...]) for every file"
        label = name or f"bgtransfer ({session}, download_many)"
    else:
        how = f"one {call} per file"
        extra = f", {segments} segments" if segments > 1 else ", cold start" if cold else ""
        label = name or f"bgtransfer ({session}{extra})"
    return Contender(
        name=label,
        steps=steps,
        flags=f"{opened}, Configuration(max_connections_per_host, max_concurrent_transfers); "
        f"{how}, then {wait}",
        python=True,
    )


def aiohttp_raw(*, segments: int = 1) -> Contender:
    """The raw aiohttp floor (``clients/aiohttp_raw.py``)."""

    def steps(ctx: RunContext) -> list[Step]:
        argv = [ctx.python, str(CLIENTS / "aiohttp_raw.py"), *_client_args(ctx)]
        if segments > 1:
            argv += ["--segments", str(segments)]
        return [Step("run", argv)]

    ranges = f"; HEAD, then {segments} Range GETs written in place" if segments > 1 else ""
    return Contender(
        name=f"aiohttp raw ({segments} ranges)" if segments > 1 else "aiohttp raw",
        steps=steps,
        flags="one ClientSession, a semaphore per host, iter_chunks from a 4 MiB read buffer, "
        "chunks kept in a list and written with writev: a body under 256 KiB on the loop "
        "at its end, a larger one >= 256 KiB at a time in a worker thread while reading "
        f"continues{ranges}",
        python=True,
    )


def aiohttp_aiofiles() -> Contender:
    """What a user would write instead: plain aiohttp + aiofiles
    (``clients/aiohttp_aiofiles.py``)."""

    def steps(ctx: RunContext) -> list[Step]:
        return [Step("run", [ctx.python, str(CLIENTS / "aiohttp_aiofiles.py"), *_client_args(ctx)])]

    return Contender(
        name="aiohttp + aiofiles",
        steps=steps,
        flags="a plain script, no tuning: one ClientSession with TCPConnector(limit=<total>, "
        "limit_per_host=<per host>), one coroutine per URL under asyncio.gather, "
        "raise_for_status(), iter_chunked(64 KiB), each chunk written with aiofiles to "
        "NAME.part, then aiofiles.os.replace to NAME; the session's default timeouts",
        python=True,
    )


def asyncio_lean(*, journal: bool = False) -> Contender:
    """A reference for small files: plain asyncio, no aiohttp (``clients/asyncio_lean.py``)."""

    def steps(ctx: RunContext) -> list[Step]:
        argv = [ctx.python, str(CLIENTS / "asyncio_lean.py"), *_client_args(ctx)]
        if journal:
            argv += ["--journal", str(ctx.scratch / "lean.db")]
        return [Step("run", argv)]

    durable = (
        "; every URL inserted into SQLite (WAL) before the first request, each end "
        "group-committed within 5 ms"
        if journal
        else ""
    )
    return Contender(
        name="asyncio lean + journal" if journal else "asyncio lean",
        steps=steps,
        flags="reference, not a contender: a hand-written HTTP/1.1 GET on asyncio.Protocol, "
        "keep-alive pool and semaphore per host, one task per URL, each whole body written "
        f"on the loop to NAME.part and renamed; 200 + Content-Length only{durable}",
        python=True,
    )


def curl() -> Contender:
    """curl: one process; many URLs go in parallel from a config file."""

    def steps(ctx: RunContext) -> list[Step]:
        urls = ctx.job.urls
        base = [ctx.tools["curl"], "-q", "--silent", "--show-error", "--fail"]
        if len(urls) == 1:
            return [Step("run", [*base, "-o", str(ctx.out / _name(urls[0])), urls[0]])]
        config = _write(
            ctx,
            "curl.cfg",
            [f'url = "{url}"\noutput = "{ctx.out / _name(url)}"' for url in urls],
        )
        parallel = ["--parallel", "--parallel-immediate", "--parallel-max", str(ctx.job.total)]
        return [Step("run", [*base, *parallel, "--config", str(config)])]

    return Contender(
        name="curl",
        steps=steps,
        flags="curl -q -sS --fail -o FILE URL; many files: one process, --parallel "
        "--parallel-immediate --parallel-max <per-host limit x hosts> --config LIST "
        "(url/output pairs). curl 7.x has no per-host cap: with several hosts it only "
        "bounds the total, and the URLs are interleaved across hosts",
        binary="curl",
    )


def wget() -> Contender:
    """wget: one process, sequential over one keep-alive connection."""

    def steps(ctx: RunContext) -> list[Step]:
        urls = ctx.job.urls
        base = [ctx.tools["wget"], "--no-config", "--quiet"]
        if len(urls) == 1:
            return [Step("run", [*base, "-O", str(ctx.out / _name(urls[0])), urls[0]])]
        listing = _write(ctx, "wget.txt", list(urls))
        return [Step("run", [*base, "--directory-prefix", str(ctx.out), "-i", str(listing)])]

    return Contender(
        name="wget",
        steps=steps,
        flags="wget --no-config -q -O FILE URL; many files: -P DIR -i LIST. wget is "
        "sequential (one file at a time over one keep-alive connection), whatever "
        "the limits",
        binary="wget",
    )


def aria2c(*, split: int = 1) -> Contender:
    """aria2c: one process; ``split`` > 1 is its segmented download."""

    def steps(ctx: RunContext) -> list[Step]:
        urls = ctx.job.urls
        argv = [
            ctx.tools["aria2c"],
            "--no-conf",
            "--quiet",
            "--console-log-level=error",
            "--summary-interval=0",
            "--download-result=hide",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--auto-save-interval=0",  # 2.5x faster on scenario 2 than the default 60
            "--dir",
            str(ctx.out),
        ]
        if split > 1:
            argv += [f"-x{split}", f"-s{split}", "-k1M", "--file-allocation=falloc"]
        else:
            argv += ["-x1", "-s1", "--file-allocation=none"]
        if len(urls) == 1:
            return [Step("run", [*argv, "--out", _name(urls[0]), urls[0]])]
        listing = _write(ctx, "aria2.txt", [f"{url}\n  out={_name(url)}" for url in urls])
        jobs = f"--max-concurrent-downloads={ctx.job.total}"
        return [Step("run", [*argv, jobs, "--input-file", str(listing)])]

    if split > 1:
        flags = (
            f"aria2c --no-conf -q --auto-save-interval=0 -x{split} -s{split} -k1M "
            "--file-allocation=falloc (its recommended allocation on ext4) -d DIR -o NAME URL"
        )
    else:
        flags = (
            "aria2c --no-conf -q --auto-save-interval=0 -x1 -s1 --file-allocation=none "
            "-d DIR -o NAME URL; many files: -i LIST (out= per URL) -j <per-host limit x "
            "hosts>. -x is per download, so -j bounds the connections; with several hosts "
            "only the total is bounded. --auto-save-interval=0 (no periodic control-file "
            "saves) made it 2.5x faster on scenario 2 here"
        )
    return Contender(
        name=f"aria2c -x{split} -s{split}" if split > 1 else "aria2c",
        steps=steps,
        flags=flags,
        binary="aria2c",
    )


def bgtransfer_upload(session: str) -> Contender:
    """Scenario 9: one ``upload()`` of the job's file (``clients/bgtransfer_put.py``)."""

    def steps(ctx: RunContext) -> list[Step]:
        job = ctx.job
        argv = [ctx.python, str(CLIENTS / "bgtransfer_put.py"), "--url", job.urls[0]]
        argv += ["--file", job.upload_file, "--session", session]
        if session != "ephemeral":
            argv += ["--state-dir", str(ctx.scratch / "state")]
        return [Step("run", argv)]

    opened = "Session()" if session == "ephemeral" else 'Session("bench.up", state_dir=<fresh>)'
    return Contender(
        name=f"bgtransfer ({session})",
        steps=steps,
        flags=f"{opened}, the default configuration; one upload(url, file) (PUT), then task.wait()",
        python=True,
    )


def curl_upload() -> Contender:
    """Scenario 9: ``curl -T`` (its PUT); the receiver's answer goes to stdout."""

    def steps(ctx: RunContext) -> list[Step]:
        job = ctx.job
        base = [ctx.tools["curl"], "-q", "--silent", "--show-error", "--fail"]
        return [Step("run", [*base, "-T", job.upload_file, job.urls[0]])]

    return Contender(
        name="curl -T",
        steps=steps,
        flags="curl -q -sS --fail -T FILE URL (a PUT; the receiver's one-line answer to stdout)",
        binary="curl",
    )


def bgtransfer_queue(
    *, daemon: bool = False, upload: bool = False, many: bool = False
) -> Contender:
    """Scenario 4: queue many tasks, kill the process, reopen and list (two processes).
    ``daemon``, scenario 7: the same through a daemon started first, with one
    ``download_many``, and each client leaves its session (the tasks stay in the daemon).
    ``upload``, scenario 10: uploads, one ``upload()`` each or (``many``) one
    ``upload_many()``."""

    def steps(ctx: RunContext) -> list[Step]:
        script = str(CLIENTS / "bgtransfer_queue.py")
        common = [
            *("--state-dir", str(ctx.scratch / "state"), "--count", str(ctx.job.queue_count)),
            *("--url-base", ctx.job.urls[0]),
        ]
        if upload:
            common += ["--upload", ctx.job.upload_file]
        if daemon:
            common += ["--daemon", "--exit", "close"]
        enqueue = ["--enqueue", "many"] if (daemon and not upload) or many else []
        queued = [
            Step(
                "enqueue", [ctx.python, script, "enqueue", *common, *enqueue, "--out", str(ctx.out)]
            ),
            Step("reopen", [ctx.python, script, "reopen", *common]),
        ]
        return _daemon_steps(ctx, queued) if daemon else queued

    if upload:
        where = (
            'a daemon started before the clock; Session("bench.bg", state_dir=<fresh>, daemon=True)'
            if daemon
            else 'Session("bench.bg", state_dir=<fresh>)'
        )
        end = "leave the session" if daemon else "os._exit"
        name = "bgtransfer (daemon" if daemon else "bgtransfer (background"
        calls = "N x upload(url, FILE)"
        if many:
            calls = "one upload_many([UploadRequest(url, FILE), ...])"
        return Contender(
            name=f"{name}, upload_many)" if many else f"{name})",
            steps=steps,
            flags=f"{where}, max_connections_per_host=1; {calls} (one 16 KiB "
            "file) to a host that accepts and never answers; "
            f"{end}; then a new process: Session(...) and session.tasks()",
            python=True,
        )
    if daemon:
        return Contender(
            name="bgtransfer (daemon)",
            steps=steps,
            flags='a daemon started before the clock; Session("bench.bg", state_dir=<fresh>, '
            "daemon=True), max_connections_per_host=1; one download_many() of N requests to a "
            "host that accepts and never answers (the first task holds the only connection, "
            "the rest stay queued in the daemon); leave the session; then a new process: "
            "Session(..., daemon=True) and session.tasks()",
            python=True,
        )
    return Contender(
        name="bgtransfer (background)",
        steps=steps,
        flags='Session("bench.bg", state_dir=<fresh>), max_connections_per_host=1; '
        "N x download() to a host that accepts and never answers; os._exit; then a new "
        "process: Session(...) and session.tasks()",
        python=True,
    )


def daemon_idle() -> Contender:
    """Scenario 8: a started daemon watched while idle, before and after one client."""

    def steps(ctx: RunContext) -> list[Step]:
        control = [ctx.python, str(CLIENTS / "bgtransfer_daemon.py")]
        argv = [*control, "idle", "--state-dir", str(ctx.scratch / "state")]
        argv += ["--seconds", f"{ctx.job.idle_s:g}", "--url", ctx.job.urls[0]]
        return _daemon_steps(ctx, [Step("idle", [*argv, "--out", str(ctx.out)])])

    return Contender(
        name="bgtransfer (daemon)",
        steps=steps,
        flags="bgtransfer daemon (default --idle-timeout: its idle timer armed), started and "
        "answering; 1 s pause, then CPU time (/proc/<pid>/stat utime+stime), context "
        "switches of all its threads and VmRSS over the interval; then one client "
        "(Session(..., daemon=True), one 16 KiB download, leave) and the same again",
        python=True,
    )
