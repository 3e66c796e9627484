"""The machine the numbers came from: hardware, kernel, and every contender's version."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path

__all__ = ["describe_machine", "engine_revision"]

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import json, sys, importlib.metadata as m
import aiohttp, bgtransfer
versions = {name: m.version(name) for name in ("aiohttp", "aiofiles", "anyio", "attrs")}
print(json.dumps({"python": sys.version.split()[0], "implementation": sys.implementation.name,
                  "bgtransfer": bgtransfer.__version__, "bgtransfer_path": bgtransfer.__file__,
                  **versions}))
"""


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    text = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    return text[0] if text else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def _filesystem(path: Path) -> str:
    """The type of the file system holding ``path`` (longest matching mount point)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def engine_revision() -> str:
    """The repository's commit, and whether src/ differs from it."""
    head = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{head} (src/ has uncommitted changes)" if dirty else head


def describe_machine(
    *,
    python: str,
    env: Mapping[str, str],
    tools: Mapping[str, str | None],
    work: Path,
    engine: str,
) -> dict[str, str]:
    """Everything the report prints next to absolute numbers."""
    probe = subprocess.run(
        [python, "-c", _PROBE], capture_output=True, text=True, env=dict(env), check=False
    )
    versions: dict[str, str] = json.loads(probe.stdout) if probe.returncode == 0 else {}
    machine = {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": _memory(),
        "OS": _os_name(),
        "kernel": f"{platform.system()} {platform.release()}",
        "file system (outputs)": _filesystem(work),
        "Python": f"{versions.get('implementation', '?')} {versions.get('python', '?')}",
        "bgtransfer": f"{versions.get('bgtransfer', '?')} at {engine}",
    }
    for name in ("aiohttp", "aiofiles", "anyio", "attrs"):
        machine[name] = versions.get(name, "?")
    version_flags = {"nginx": "-v", "curl": "--version", "wget": "--version", "aria2c": "--version"}
    for tool, flag in version_flags.items():
        path = tools.get(tool)
        machine[tool] = _first_line([path, flag]) if path else "not available"
    return machine
