"""The values the benchmark modules pass around: files, jobs, contenders, runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Contender", "Job", "RunContext", "RunResult", "SourceFile", "Step"]


@dataclass(frozen=True)
class SourceFile:
    """A file the server serves, and what a correct download of it looks like."""

    name: str  # relative to the served root; also the output file's name
    size: int
    sha256: str


@dataclass(frozen=True)
class Job:
    """What every contender of a scenario is asked to do."""

    urls: tuple[str, ...]  # each saved as <out>/<last path segment>
    expected: tuple[SourceFile, ...]  # what the output directory must hold afterwards
    per_host: int  # connections per host (origin)
    hosts: int  # distinct origins among the URLs
    segments: int = 1  # ranges per file for the segmented contenders
    queue_count: int = 0  # scenarios 4 and 7: how many tasks to queue
    idle_s: float = 0.0  # scenario 8: how long the daemon is watched while idle
    upload_file: str = ""  # scenarios 9 and 10: the file every contender uploads
    upload_size: int = 0  # its size (scenario 9: what the receiver must count)

    @property
    def total(self) -> int:
        """Connections overall: the per-host limit on every host."""
        return self.per_host * self.hosts

    @property
    def total_bytes(self) -> int:
        return sum(file.size for file in self.expected)


@dataclass(frozen=True)
class RunContext:
    """Where one run works: ``out`` is verified afterwards, ``scratch`` is private."""

    job: Job
    out: Path
    scratch: Path
    python: str  # the interpreter for the Python clients
    tools: Mapping[str, str]  # executable name -> resolved path


@dataclass(frozen=True)
class Step:
    """One process of a run (most runs are one step; scenario 4 has two). The daemon
    contenders add an untimed step that starts the daemon and a ``cleanup`` one that
    stops it: cleanup steps run last, whatever happened, and are not timed either."""

    label: str
    argv: list[str]
    env: Mapping[str, str] | None = None  # extra environment (on top of the runner's)
    timed: bool = True  # False: its wall time and RSS are not the run's (starting a daemon)
    cleanup: bool = False  # runs after the other steps even when one failed (stopping it)


@dataclass(frozen=True)
class Contender:
    """One way to do a scenario's job: a command line per step, and how it is set up."""

    name: str
    steps: Callable[[RunContext], list[Step]]
    flags: str  # the command line as documented in the report (fairness notes)
    binary: str | None = None  # required executable (None: the Python running the suite)
    python: bool = False  # a Python client script (gets the warmed bytecode cache)
    missing: str | None = None  # why it cannot run here ("not available: ..."), set at startup


@dataclass
class RunResult:
    """One run of one contender: measurements, client report, verdict."""

    contender: str
    round: int
    ok: bool
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    unsupported: str | None = None  # the client said the engine cannot do this yet
