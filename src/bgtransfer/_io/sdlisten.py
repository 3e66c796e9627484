"""A listening socket inherited from systemd (socket activation), the ``sd_listen_fds`` way.

With ``bgtransfer.socket`` (contrib/systemd/) systemd creates and listens on
the daemon's Unix socket itself, and starts the daemon when the first client
connects, handing the socket over as descriptor 3 with ``LISTEN_PID`` (the
daemon's pid) and ``LISTEN_FDS`` (how many: 1) in its environment
(sd_listen_fds(3)). :func:`inherited_listener` takes it: the daemon then
accepts on it instead of binding its own.

As ``sd_listen_fds(unset_environment=1)``: the variables are removed from the
environment whatever they say, so that no child (a launched application)
believes the socket is its own; variables naming another pid are not ours
(None); the descriptor is made close-on-exec. Unlike the C helper it checks what
it got: exactly one descriptor, a listening ``AF_UNIX`` stream socket, at the
path the daemon expects when one is given. Anything else is a
:class:`ValueError` saying what is wrong (a unit file that does not match).
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from pathlib import Path
from typing import Final

__all__ = ["SD_LISTEN_FDS_START", "inherited_listener"]

SD_LISTEN_FDS_START: Final = 3

_VARIABLES: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def inherited_listener(
    *,
    expected_path: Path | None = None,
    environ: MutableMapping[str, str] | None = None,
    pid: int | None = None,
) -> socket.socket | None:
    """The listening Unix socket systemd passed to this process, or None when
    it passed none. ``expected_path``: the path the socket must be bound to.
    ``environ`` and ``pid`` default to the process's own (for tests)."""
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    listen_pid = environ.get("LISTEN_PID")
    listen_fds = environ.get("LISTEN_FDS")
    for name in _VARIABLES:
        environ.pop(name, None)
    if listen_pid is None or listen_fds is None:
        return None
    if _number("LISTEN_PID", listen_pid) != pid:
        return None  # meant for another process (the variables were inherited)
    count = _number("LISTEN_FDS", listen_fds)
    if count == 0:
        return None
    if count != 1:
        raise ValueError(
            f"socket activation: LISTEN_FDS={count}, but the daemon listens on one "
            "socket (one ListenStream= in bgtransfer.socket)"
        )
    fd = SD_LISTEN_FDS_START
    try:
        os.set_inheritable(fd, False)
        listener = socket.socket(fileno=fd)
    except OSError as exc:
        raise ValueError(
            f"socket activation: descriptor {fd} is not a socket ({exc.strerror})"
        ) from None
    try:
        _check(listener, expected_path)
    except BaseException:
        listener.detach()  # (not closed: the descriptor stays what it was)
        raise
    return listener


def _number(name: str, value: str) -> int:
    if not value.isdigit() or not value.isascii():
        raise ValueError(f"socket activation: {name}={value!r} is not a number")
    return int(value)


def _check(listener: socket.socket, expected_path: Path | None) -> None:
    fd = listener.fileno()
    if listener.family != socket.AF_UNIX or listener.type != socket.SOCK_STREAM:
        raise ValueError(
            f"socket activation: descriptor {fd} is a {listener.family.name} "
            f"{listener.type.name} socket; the daemon needs a Unix stream socket "
            "(ListenStream= with a path)"
        )
    if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ValueError(f"socket activation: descriptor {fd} is not listening")
    if expected_path is not None:
        bound = listener.getsockname()
        if not isinstance(bound, str) or Path(bound) != expected_path:
            raise ValueError(
                f"socket activation: the socket is bound to {bound!r}, "
                f"but this daemon's socket is {str(expected_path)!r}"
            )
