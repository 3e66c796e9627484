"""Running a session's launch command: its own process, never a shell.

:func:`spawn` starts ``Configuration.launch_command`` the way a service
manager would: no shell, stdin from ``/dev/null``, output appended to the
session's launch log, a session of its own (``setsid``: no controlling
terminal, out of the daemon's process group and its signals), no inherited
descriptor but 0-2, the daemon's environment plus
``BGTRANSFER_IDENTIFIER``, ``BGTRANSFER_STATE_DIR`` and ``BGTRANSFER_CURSOR``.

A command that cannot start (no such program, not executable, the log cannot
be opened) is a :class:`SpawnFailure` value, never an exception: the caller
records it and goes on.

Why ``subprocess.Popen`` in a worker thread, and not
``asyncio.create_subprocess_exec``: asyncio's subprocess transport kills its
child when it is closed or collected while the child runs, and a launched
application must outlive the daemon's interest in it (a daemon that stops, or
closes the session, leaves the application it launched alone). The exit
status is collected by a thread of its own blocked in ``waitpid`` (what
asyncio's default child watcher does too): nothing polls, the loop never
blocks, and the child is reaped even when nobody waits for it any more.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs

from .threads import run_blocking, start_thread

__all__ = [
    "LOG_LIMIT",
    "LaunchedProcess",
    "SpawnFailure",
    "launch_environment",
    "spawn",
]

LOG_LIMIT: Final = 1 << 20
"""Bytes a launch log may reach before the next launch moves it to ``<name>.1``
(the one older log kept): the logs of a session take at most about 2 MiB."""


@attrs.frozen
class SpawnFailure:
    """The command could not be started; ``reason`` says why (for the history)."""

    reason: str


class LaunchedProcess:
    """A started launch: its pid, and its exit status once it ends."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.pid: int = process.pid
        self._status = start_thread(process.wait, name=f"bgtransfer-launch-{process.pid}")

    async def wait(self) -> int:
        """The exit status (negative: the signal that killed it). Cancelling a
        waiter leaves the process, and its reaping, alone."""
        return await asyncio.shield(self._status)


def launch_environment(
    identifier: str, *, state_dir: Path, cursor: int, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a launch: ``base`` (the daemon's by default) and the
    three variables that tell the application why it runs."""
    environment = dict(os.environ if base is None else base)
    environment["BGTRANSFER_IDENTIFIER"] = identifier
    environment["BGTRANSFER_STATE_DIR"] = str(state_dir)
    environment["BGTRANSFER_CURSOR"] = str(cursor)
    return environment


async def spawn(
    argv: Sequence[str],
    *,
    environment: Mapping[str, str],
    log: Path | None,
    cwd: Path | None = None,
) -> LaunchedProcess | SpawnFailure:
    """Start ``argv``; see the module docstring. ``log``: the file its output
    is appended to (created private), None for ``/dev/null``. ``cwd``: its
    working directory (the user's home directory by default)."""
    started = await run_blocking(_spawn, tuple(argv), dict(environment), log, cwd)
    if isinstance(started, SpawnFailure):
        return started
    return LaunchedProcess(started)  # its reaper thread starts here, with the loop at hand


def _spawn(
    argv: tuple[str, ...], environment: dict[str, str], log: Path | None, cwd: Path | None
) -> subprocess.Popen[bytes] | SpawnFailure:
    output = subprocess.DEVNULL
    if log is not None:
        try:
            output = _open_log(log, argv)
        except OSError as exc:
            return SpawnFailure(f"cannot open the launch log {str(log)!r}: {_describe(exc)}")
    directory = None
    try:
        directory = Path.home() if cwd is None else cwd
        process = subprocess.Popen(  # an argument list, never a shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env=environment,
            cwd=directory,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        if directory is not None and str(exc.filename) == str(directory):  # (not argv[0])
            where = f"its working directory {str(directory)!r}"
            return SpawnFailure(f"cannot run {argv[0]!r} in {where}: {_describe(exc)}")
        return SpawnFailure(f"cannot run {argv[0]!r}: {_describe(exc)}")
    except (ValueError, RuntimeError) as exc:  # e.g. an environment with NUL
        return SpawnFailure(f"cannot run {argv[0]!r}: {exc}")
    finally:
        if output != subprocess.DEVNULL:
            os.close(output)
    return process


def _open_log(log: Path, argv: tuple[str, ...]) -> int:
    """The launch log open for appending (rotated past :data:`LOG_LIMIT`), with
    a line saying which launch the output below it belongs to."""
    try:
        if log.stat().st_size > LOG_LIMIT:
            log.replace(log.with_name(log.name + ".1"))
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(log, flags, 0o600)  # (in the session's private directory)
    try:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.write(fd, f"--- {stamp} launch: {list(argv)!r}\n".encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    if exc.strerror and name:
        return f"{exc.strerror} ({name})"
    return str(exc)
