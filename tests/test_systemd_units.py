"""The systemd user units shipped in contrib/systemd/ say what the docs promise.

Read as systemd reads them (sections, ``Key=value``, repeated keys allowed),
and checked by ``systemd-analyze verify`` where the machine has it (with
ExecStart pointed at this environment's Python).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"


def parse(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_socket_unit() -> None:
    socket = parse(UNITS / "bgtransfer.socket")
    assert socket["Socket"]["ListenStream"] == ["%t/bgtransfer/daemon.sock"]  # a path: Unix
    assert socket["Socket"]["SocketMode"] == ["0600"]
    assert socket["Socket"]["DirectoryMode"] == ["0700"]
    assert socket["Socket"]["Accept"] == ["no"]  # one daemon, one inherited socket (fd 3)
    assert socket["Install"]["WantedBy"] == ["sockets.target"]


def test_the_service_unit() -> None:
    service = parse(UNITS / "bgtransfer.service")
    assert service["Unit"]["Requires"] == ["bgtransfer.socket"]
    (exec_start,) = service["Service"]["ExecStart"]
    assert exec_start.split()[1:] == ["daemon"]
    assert service["Service"]["KillMode"] == ["process"]  # launched apps outlive the daemon
    assert service["Service"]["Restart"] == ["on-failure"]  # not after an idle exit
    assert "UMask" not in service["Service"]  # finished files get the user's umask
    assert service["Install"]["WantedBy"] == ["default.target"]


def test_systemd_accepts_them(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # (the parsing tests above still ran)
        return
    program = f"{sys.executable} -m bgtransfer"
    for name in ("bgtransfer.socket", "bgtransfer.service"):
        text = (UNITS / name).read_text()
        text = text.replace("ExecStart=%h/.local/bin/bgtransfer", f"ExecStart={program}")
        (tmp_path / name).write_text(text)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        [analyze, "--user", "verify", "bgtransfer.socket", "bgtransfer.service"],
        cwd=tmp_path,
        env=os.environ | {"XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
