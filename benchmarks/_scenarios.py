"""The scenarios: issue #5's six, with their files, contenders, references and
targets (those of issue #5, and the speed targets of issue #19), and the daemon's of
issue #20 (daemon contenders in scenarios 1 and 2; scenarios 7 and 8), and the
uploads' of issue #21 (scenarios 9 and 10)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from _contenders import (
    aiohttp_aiofiles,
    aiohttp_raw,
    aria2c,
    asyncio_lean,
    bgtransfer,
    bgtransfer_queue,
    bgtransfer_upload,
    curl,
    curl_upload,
    daemon_idle,
    wget,
)
from _data import SourceStore
from _model import Contender, Job, RunResult
from _servers import FileServer, UploadReceiver

__all__ = ["SCENARIOS", "Column", "Scenario", "Setup", "Sizes", "Target"]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

FLOOR = "aiohttp raw"
FLOOR_SEGMENTED = "aiohttp raw (4 ranges)"
PLAIN = "aiohttp + aiofiles"  # the script a user would write instead of bgtransfer
EPHEMERAL = "bgtransfer (ephemeral)"
BACKGROUND = "bgtransfer (background)"
BACKGROUND_BATCH = "bgtransfer (background, download_many)"
NO_EVENTS = "bgtransfer (no events)"
EVERY_EVENT = "bgtransfer (every event)"
DAEMON = "bgtransfer (daemon)"  # a warm daemon: started before the clock
DAEMON_BATCH = "bgtransfer (daemon, download_many)"
DAEMON_UPLOAD_MANY = "bgtransfer (daemon, upload_many)"
DAEMON_COLD = "bgtransfer (daemon, cold start)"  # launched on demand, inside the time
# Waiting through each task's event stream (the attach stream) instead of one
# wait request per task: 2,000 concurrent task.wait() through the daemon fail here.
BACKGROUND_EVENTS = "bgtransfer (background, every event)"
DAEMON_EVENTS = "bgtransfer (daemon, every event)"
JOURNAL_MISSING = "journal not available yet"
CURL_PUT = "curl -T"


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: the issue's sizes, or small ones for ``--quick``."""

    big: int = GIB
    small_count: int = 2000
    small_size: int = 16 * KIB
    mid_count: int = 100
    mid_size: int = 10 * MIB
    hosts: int = 4
    queued: int = 10_000
    idle_s: float = 10.0  # scenario 8: how long the idle daemon is watched
    timeout: float = 600.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            big=32 * MIB,
            small_count=200,
            mid_count=20,
            mid_size=MIB,
            queued=1000,
            idle_s=3.0,
            timeout=60.0,
        )


@dataclass(frozen=True)
class Setup:
    """What a scenario builds its job from."""

    sizes: Sizes
    store: SourceStore
    server: FileServer
    black_hole: str  # base URL of a port that accepts and never answers
    receiver: UploadReceiver | None = None  # scenario 9: counts and discards PUT bodies


@dataclass(frozen=True)
class Column:
    """One column of a scenario's table: a metric's median (and min-max)."""

    metric: str
    label: str
    digits: int = 2


@dataclass(frozen=True)
class Target:
    """A target from an issue: ``contender``'s median ``metric`` at most ``limit``,
    either absolute or as a ratio to ``versus``'s median."""

    contender: str
    metric: str
    limit: float
    versus: str | None = None
    label: str = ""
    issue: int = 5  # the issue that set it

    def describe(self) -> str:
        if self.label:
            return self.label
        if self.versus is None:
            return f"{self.contender}: {self.metric} <= {self.limit:g}"
        return f"{self.contender} <= {self.limit:g}x {self.versus}"


@dataclass(frozen=True)
class Scenario:
    number: int
    title: str
    contenders: Callable[[], list[Contender]]
    build: Callable[[Setup], Job]
    primary: str = "wall_s"  # the metric ratios are taken of
    references: tuple[str, ...] = (FLOOR, PLAIN, "curl", "aria2c")
    columns: tuple[Column, ...] = ()
    targets: tuple[Target, ...] = ()
    plot_versus: str | None = FLOOR  # bars show ratios to it; None: absolute values
    plot_metrics: tuple[str, ...] = ("wall_s",)
    check: Callable[[RunResult, Job], None] | None = None
    notes: tuple[str, ...] = field(default=())


def _rss_columns() -> tuple[Column, ...]:
    return (Column("peak_rss_mib", "peak RSS (MiB)", 0), Column("elapsed_s", "in-process (s)"))


# Distinct TCP connections in nginx's access log over the run (a reused one counts once).
CONNECTIONS = Column("connections", "TCP connections", 0)
BYTES_COLUMNS = (
    Column("wall_s", "wall (s)"),
    Column("mib_per_s", "MiB/s", 0),
    *_rss_columns(),
    CONNECTIONS,
)
FILES_COLUMNS = (
    Column("wall_s", "wall (s)"),
    Column("files_per_s", "files/s", 0),
    *_rss_columns(),
    CONNECTIONS,
)


def _single_connection() -> list[Contender]:
    return [
        bgtransfer("ephemeral"),
        bgtransfer("background"),
        aiohttp_raw(),
        aiohttp_aiofiles(),
        curl(),
        wget(),
        aria2c(),
    ]


def _many_small() -> list[Contender]:
    """Scenario 2 also enqueues with one ``download_many`` call (one journal commit),
    and shows what plain asyncio reaches without aiohttp (a reference, no target)."""
    return [
        *_single_connection()[:2],
        bgtransfer("background", enqueue="many"),
        *_single_connection()[2:],
        asyncio_lean(),
        asyncio_lean(journal=True),
    ]


# The daemon's own peak RSS (VmHWM when it is stopped); the client's is "peak RSS".
DAEMON_RSS = Column("daemon_peak_rss_mib", "daemon peak RSS (MiB)", 0)


def _with_daemon(contenders: list[Contender], *, batch: bool = False) -> list[Contender]:
    """Issue #20: the same job through a daemon, warm (the headline) and cold, right
    after the in-process background session(s)."""
    daemon = [bgtransfer("daemon")]
    if batch:
        daemon.append(bgtransfer("daemon", enqueue="many"))
    daemon.append(bgtransfer("daemon", cold=True))
    if batch:
        daemon += [
            bgtransfer("background", events="all", name=BACKGROUND_EVENTS),
            bgtransfer("daemon", events="all", name=DAEMON_EVENTS),
        ]
    names = [c.name for c in contenders]
    at = max(names.index(n) for n in (BACKGROUND, BACKGROUND_BATCH) if n in names) + 1
    return [*contenders[:at], *daemon, *contenders[at:]]


def _big(setup: Setup, *, per_host: int, segments: int = 1) -> Job:
    source = setup.store.file("big.bin", setup.sizes.big)
    setup.server.publish(source)
    return Job(
        urls=(setup.server.url(source.name),),
        expected=(source,),
        per_host=per_host,
        hosts=1,
        segments=segments,
    )


def _small(setup: Setup) -> Job:
    sizes = setup.sizes
    sources = [
        setup.store.file(f"small/s{index:05d}.bin", sizes.small_size)
        for index in range(sizes.small_count)
    ]
    for source in sources:
        setup.server.publish(source)
    return Job(
        urls=tuple(setup.server.url(source.name) for source in sources),
        expected=tuple(sources),
        per_host=6,
        hosts=1,
    )


def _hosts(setup: Setup) -> Job:
    sizes = setup.sizes
    sources = [
        setup.store.file(f"mid/m{index:04d}.bin", sizes.mid_size)
        for index in range(sizes.mid_count)
    ]
    for source in sources:
        setup.server.publish(source)
    # File i on host i mod 4: every client sees the hosts interleaved.
    return Job(
        urls=tuple(
            setup.server.url(source.name, host=index % sizes.hosts)
            for index, source in enumerate(sources)
        ),
        expected=tuple(sources),
        per_host=2,
        hosts=sizes.hosts,
    )


def _queue(setup: Setup) -> Job:
    # Nothing is downloaded: the output directory must stay empty.
    return Job(
        urls=(setup.black_hole,), expected=(), per_host=1, hosts=1, queue_count=setup.sizes.queued
    )


def _idle(setup: Setup) -> Job:
    source = setup.store.file("idle/i.bin", setup.sizes.small_size)
    setup.server.publish(source)
    return Job(
        urls=(setup.server.url(source.name),),
        expected=(source,),
        per_host=1,
        hosts=1,
        idle_s=setup.sizes.idle_s,
    )


def _check_queue(result: RunResult, job: Job) -> None:
    """Scenario 4: every task queued; the reopen counts only if it found them all."""
    metrics = result.metrics
    if metrics.get("enqueued") != job.queue_count:
        result.ok = False
        result.error = f"enqueued {metrics.get('enqueued')} tasks, expected {job.queue_count}"
        return
    listed = int(metrics.get("listed", 0))
    if listed == job.queue_count and metrics.get("urls_match") == 1:
        return
    if listed == 0:
        result.notes.append(JOURNAL_MISSING)
    else:
        result.notes.append(f"the reopened session listed {listed} of {job.queue_count} tasks")
    for name in ("reopen_s", "list_s", "reopen_list_s"):
        metrics.pop(name, None)


def _upload(setup: Setup) -> Job:
    if setup.receiver is None:
        raise RuntimeError("scenario 9 needs the upload receiver")
    source = setup.store.file("upload/u.bin", setup.sizes.big)
    return Job(
        urls=(f"{setup.receiver.url}/u.bin",),
        expected=(),  # nothing is written: the output directory must stay empty
        per_host=1,
        hosts=1,
        upload_file=str(setup.store.root / source.name),
        upload_size=source.size,
    )


def _check_upload(result: RunResult, job: Job) -> None:
    """Scenario 9: the receiver counted every byte of the file (the run's report is
    its answer); the throughput is the file's size over the run's wall time."""
    received = result.metrics.get("received")
    if received != job.upload_size:
        result.ok = False
        result.error = f"the receiver counted {received} bytes, expected {job.upload_size}"
        return
    result.metrics["mib_per_s"] = job.upload_size / 2**20 / result.metrics["wall_s"]


def _queue_uploads(setup: Setup) -> Job:
    # One small file behind every task; nothing is sent but the first task's head.
    source = setup.store.file("upload/q.bin", setup.sizes.small_size)
    return Job(
        urls=(setup.black_hole,),
        expected=(),
        per_host=1,
        hosts=1,
        queue_count=setup.sizes.queued,
        upload_file=str(setup.store.root / source.name),
    )


QUEUE_COLUMNS = (
    Column("enqueue_s", "enqueue (s)"),
    Column("rss_after_enqueue_mib", "RSS after enqueue (MiB)", 0),
    Column("enqueue_peak_rss_mib", "peak RSS (MiB)", 0),
    Column("reopen_list_s", "reopen + list (s)"),
    Column("listed", "tasks listed", 0),
    Column("reopen_wall_s", "reopen process wall (s)"),
)


SCENARIOS: dict[int, Scenario] = {
    scenario.number: scenario
    for scenario in (
        Scenario(
            number=1,
            title="one 1 GiB file (throughput, peak RSS)",
            contenders=lambda: _with_daemon(_single_connection()),
            build=lambda setup: _big(setup, per_host=1),
            references=(FLOOR, PLAIN, "curl", "aria2c", BACKGROUND),
            columns=(*BYTES_COLUMNS, DAEMON_RSS),
            targets=(
                *(Target(c, "wall_s", 1.15, FLOOR) for c in (EPHEMERAL, BACKGROUND)),
                # Issue #19 replaced issue #5's 0.6x curl: no slower than curl.
                *(Target(c, "wall_s", 1.0, "curl", issue=19) for c in (EPHEMERAL, BACKGROUND)),
                *(
                    Target(c, "peak_rss_mib", 80, label=f"{c}: peak RSS < 80 MiB")
                    for c in (EPHEMERAL, BACKGROUND)
                ),
                Target(DAEMON, "wall_s", 1.05, BACKGROUND, issue=20),
            ),
        ),
        Scenario(
            number=2,
            title="2,000 files of 16 KiB from one host, per-host limit 6 (files per second)",
            contenders=lambda: _with_daemon(_many_small(), batch=True),
            build=_small,
            references=(FLOOR, PLAIN, "curl", "aria2c", BACKGROUND),
            columns=(*FILES_COLUMNS, DAEMON_RSS),
            # Issue #19: the aria2c ratios are information, no longer a target (0.75x
            # aria2c is out of reach on aiohttp, see docs/benchmarks.md).
            targets=(
                *(Target(EPHEMERAL, "wall_s", 1.1, base, issue=19) for base in (FLOOR, PLAIN)),
                *(
                    Target(c, "wall_s", 1.3, base, issue=5 if base == FLOOR else 19)
                    for c in (BACKGROUND, BACKGROUND_BATCH)
                    for base in (FLOOR, PLAIN)
                ),
                Target(DAEMON, "wall_s", 1.3, BACKGROUND, issue=20),
                Target(DAEMON_BATCH, "wall_s", 1.3, BACKGROUND_BATCH, issue=20),
                Target(DAEMON_EVENTS, "wall_s", 1.3, BACKGROUND_EVENTS, issue=20),
            ),
        ),
        Scenario(
            number=3,
            title="100 files of 10 MiB from 4 hosts, per-host limit 2",
            contenders=_single_connection,
            build=_hosts,
            columns=BYTES_COLUMNS,
        ),
        Scenario(
            number=4,
            title="10,000 queued tasks: enqueue, resident memory, reopen and list",
            contenders=lambda: [bgtransfer_queue()],
            build=_queue,
            primary="enqueue_s",
            references=(),
            columns=QUEUE_COLUMNS,
            targets=(
                Target(BACKGROUND, "enqueue_s", 1.0, label="enqueue 10,000 tasks < 1 s"),
                Target(BACKGROUND, "reopen_list_s", 0.5, label="reopen and list them < 0.5 s"),
                Target(BACKGROUND, "enqueue_peak_rss_mib", 150, label="resident memory < 150 MiB"),
            ),
            plot_versus=None,
            plot_metrics=("enqueue_s", "reopen_list_s"),
            check=_check_queue,
        ),
        Scenario(
            number=5,
            title="one 1 GiB file over 4 connections (segmented) vs aria2c -x4 -s4",
            contenders=lambda: [
                bgtransfer("ephemeral", segments=4),
                bgtransfer("background", segments=4),
                aiohttp_raw(segments=4),
                aria2c(split=4),
                aiohttp_raw(),
                curl(),
                wget(),
            ],
            build=lambda setup: _big(setup, per_host=4, segments=4),
            references=(FLOOR_SEGMENTED, "curl", "aria2c -x4 -s4"),
            columns=BYTES_COLUMNS,
            targets=tuple(
                Target(f"bgtransfer ({kind}, 4 segments)", "wall_s", 1.0, "aria2c -x4 -s4")
                for kind in ("ephemeral", "background")
            ),
            plot_versus=FLOOR_SEGMENTED,
        ),
        Scenario(
            number=6,
            title="scenario 2 consuming every progress event vs consuming none",
            contenders=lambda: [
                bgtransfer("ephemeral", name=NO_EVENTS),
                bgtransfer("ephemeral", events="all", name=EVERY_EVENT),
            ],
            build=_small,
            primary="elapsed_s",
            references=(NO_EVENTS,),
            columns=(*FILES_COLUMNS, Column("progress_events", "progress events", 0)),
            targets=(
                Target(
                    EVERY_EVENT,
                    "elapsed_s",
                    1.05,
                    NO_EVENTS,
                    label="consuming every event costs < 5% (in-process time)",
                ),
            ),
            plot_versus=NO_EVENTS,
            plot_metrics=("elapsed_s",),
        ),
        Scenario(
            number=7,
            title="10,000 tasks through the daemon: enqueue, then a new client lists them",
            contenders=lambda: [bgtransfer_queue(daemon=True)],
            build=_queue,
            primary="enqueue_s",
            references=(),
            columns=(
                Column("enqueue_s", "enqueue (s)"),
                Column("open_s", "first attach (s)"),
                Column("reopen_list_s", "attach + list (s)"),
                Column("listed", "tasks listed", 0),
                Column("enqueue_peak_rss_mib", "client peak RSS (MiB)", 0),
                DAEMON_RSS,
                Column("daemon_start_s", "daemon start (s)"),
            ),
            targets=(
                Target(DAEMON, "enqueue_s", 2.0, label="enqueue 10,000 tasks < 2 s", issue=20),
                Target(
                    DAEMON, "reopen_list_s", 0.5, label="a new client lists them < 0.5 s", issue=20
                ),
            ),
            plot_versus=None,
            plot_metrics=("enqueue_s", "reopen_list_s"),
            check=_check_queue,
        ),
        Scenario(
            number=8,
            title="an idle daemon: CPU time, wake-ups and resident memory",
            contenders=lambda: [daemon_idle()],
            build=_idle,
            primary="served_idle_cpu_ms",
            references=(),
            columns=(
                Column("idle_cpu_ms", "CPU idle, fresh (ms)", 0),
                Column("idle_wakeups", "wake-ups, fresh", 0),
                Column("idle_rss_mib", "RSS, fresh (MiB)", 1),
                Column("served_idle_cpu_ms", "CPU idle, after a client (ms)", 0),
                Column("served_idle_wakeups", "wake-ups, after a client", 0),
                Column("served_idle_rss_mib", "RSS, after a client (MiB)", 1),
                Column("idle_threads", "threads", 0),
            ),
            targets=(
                *(
                    Target(DAEMON, m, 10, label=f"idle daemon ({when}): CPU <= 10 ms", issue=20)
                    for m, when in (("idle_cpu_ms", "fresh"), ("served_idle_cpu_ms", "served"))
                ),
                *(
                    Target(DAEMON, m, 60, label=f"idle daemon ({when}): RSS < 60 MiB", issue=20)
                    for m, when in (("idle_rss_mib", "fresh"), ("served_idle_rss_mib", "served"))
                ),
            ),
            plot_versus=None,
            plot_metrics=("idle_rss_mib", "served_idle_rss_mib"),
            notes=(
                "CPU over the idle interval is counted in clock ticks (10 ms each): 0 means "
                "no tick was charged to the daemon; wake-ups are the context switches of all "
                "its threads over the interval",
            ),
        ),
        Scenario(
            number=9,
            title="one 1 GiB file uploaded (PUT) vs curl -T",
            contenders=lambda: [
                bgtransfer_upload("ephemeral"),
                bgtransfer_upload("background"),
                curl_upload(),
            ],
            build=_upload,
            references=(CURL_PUT,),
            columns=(
                Column("wall_s", "wall (s)"),
                Column("mib_per_s", "MiB/s", 0),
                Column("client_cpu_s", "client CPU (s)"),
                *_rss_columns(),
            ),
            targets=tuple(
                Target(c, "wall_s", 1.2, CURL_PUT, issue=21) for c in (EPHEMERAL, BACKGROUND)
            ),
            plot_versus=CURL_PUT,
            check=_check_upload,
            notes=(
                "the receiver is benchmarks/_receiver.py, a process of its own that counts "
                "each body and discards it (nginx would write the body to disk first)",
            ),
        ),
        Scenario(
            number=10,
            title="10,000 queued uploads: enqueue, then reopen (or a new daemon client) and list",
            contenders=lambda: [
                bgtransfer_queue(upload=True),
                bgtransfer_queue(upload=True, many=True),
                bgtransfer_queue(upload=True, daemon=True),
                bgtransfer_queue(upload=True, daemon=True, many=True),
            ],
            build=_queue_uploads,
            primary="enqueue_s",
            references=(),
            columns=(*QUEUE_COLUMNS, DAEMON_RSS),
            # Issue 21: "within the same bounds as downloads" (scenarios 4 and 7: one
            # download() each in-process, one download_many() through the daemon).
            targets=(
                Target(
                    BACKGROUND, "enqueue_s", 1.0, label="enqueue 10,000 uploads < 1 s", issue=21
                ),
                Target(
                    BACKGROUND, "reopen_list_s", 0.5, label="reopen and list them < 0.5 s", issue=21
                ),
                Target(
                    BACKGROUND,
                    "enqueue_peak_rss_mib",
                    150,
                    label="resident memory < 150 MiB",
                    issue=21,
                ),
                Target(
                    DAEMON_UPLOAD_MANY,
                    "enqueue_s",
                    2.0,
                    label="daemon: enqueue 10,000 uploads (one upload_many) < 2 s",
                    issue=21,
                ),
                Target(
                    DAEMON_UPLOAD_MANY,
                    "reopen_list_s",
                    0.5,
                    label="daemon: a new client lists them < 0.5 s",
                    issue=21,
                ),
            ),
            plot_versus=None,
            plot_metrics=("enqueue_s", "reopen_list_s"),
            check=_check_queue,
            notes=(
                "the daemon's target is for one upload_many() (scenario 7 enqueues downloads "
                "with one download_many()); one upload() per task, one request each, is shown "
                "beside it",
            ),
        ),
    )
}
