"""Launch on demand: a detached daemon, and a clear error when it cannot start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _helpers import daemon_pid, open_fds
from bgtransfer import DaemonError, Session
from bgtransfer._daemon import connection as daemon_client
from bgtransfer._daemon.paths import make_socket_dir


@pytest.mark.asyncio
async def test_the_launched_daemon_is_detached_and_inherits_no_descriptor(
    daemon_state: Path,
) -> None:
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # what a careless application leaves open
    try:
        async with Session("detached", state_dir=daemon_state, daemon=True):
            pid = daemon_pid(daemon_state)
            assert pid is not None
            assert os.getsid(pid) == pid  # a session of its own: no terminal
            assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
            log = str(daemon_state / "daemon.log")
            assert os.readlink(f"/proc/{pid}/fd/1") == log
            assert os.readlink(f"/proc/{pid}/fd/2") == log
            pipe = os.readlink(f"/proc/self/fd/{write_end}")
            assert pipe not in {target for _fd, target in open_fds(pid)}
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.asyncio
async def test_a_daemon_that_cannot_start_is_a_clear_error(
    daemon_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_client.sys, "executable", "/bin/false")
    with pytest.raises(DaemonError, match="exited with status 1") as caught:
        async with Session("nope", state_dir=daemon_state, daemon=True):
            pass
    assert str(daemon_state / "daemon.log") in str(caught.value)


def test_a_socket_directory_that_is_not_private_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    # make_private_dir tightens a directory of ours; one that stays open is refused.
    make_socket_dir(shared / "daemon.sock")
    assert (os.stat(shared).st_mode & 0o777) == 0o700
    link = tmp_path / "link"
    link.symlink_to(shared)
    with pytest.raises(DaemonError, match="socket directory"):
        make_socket_dir(link / "daemon.sock")
