"""One start-up path: a session's backend opened, and closed, for one identifier.

``Session`` opens its backend here, and so will the daemon, once per identifier
it serves: the lock, the private directories, the resume data key, the
journal, the engine, the restore of the journal's tasks (and the removal of
partial files nobody owns any more) and the SIGTERM registration, in that order,
and undone in the reverse order whatever happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import anyio

from .._core.config import Configuration
from .._core.journal import TaskEntry
from .._core.secrets import SecretHeaders
from .._exceptions import SessionInUseError
from .._io import sigterm
from .._io.files import make_private_dir
from .._io.journal import JOURNAL_NAME, Journal
from .._io.lock import SessionLock, owner_pid
from .._io.partials import sweep_partials
from .._io.resume_key import load_key, process_key
from .._io.session_dirs import make_session_dir, remove_ephemeral_dir
from .._io.threads import run_blocking
from .engine import Engine
from .local import LocalBackend

__all__ = ["BackendStartup", "open_backend"]

logger = logging.getLogger("bgtransfer")


def open_backend(
    identifier: str | None, *, state_dir: Path | None, config: Configuration
) -> BackendStartup:
    """``async with open_backend(identifier, state_dir=..., config=...) as backend``.

    A background session (``identifier``) keeps its files in
    ``state_dir/identifier`` and its resume data key in ``state_dir`` (required);
    an ephemeral one (None) in a fresh temporary directory, in ``state_dir``
    when given (then resume data is signed with its key), removed at the end."""
    return BackendStartup(identifier, state_dir=state_dir, config=config)


class BackendStartup:
    """The async context manager :func:`open_backend` returns; enter it once."""

    def __init__(
        self, identifier: str | None, *, state_dir: Path | None, config: Configuration
    ) -> None:
        if identifier is not None and state_dir is None:
            raise ValueError("a background session needs a state directory")
        self._identifier = identifier
        self._state_dir = state_dir
        self._config = config
        self._directory: Path | None = None
        self._lock: SessionLock | None = None
        self._journal: Journal | None = None
        self._engine: Engine | None = None
        self._sigterm: object | None = None  # the SIGTERM registration, if any

    async def __aenter__(self) -> LocalBackend:
        config = self._config
        directory = make_session_dir(self._state_dir, self._identifier)
        self._directory = directory
        if self._identifier is not None:
            lock = SessionLock(directory / "lock", self._identifier)
            if not lock.try_acquire():  # SessionInUseError at once, naming the owner
                # Looking for a live owner may take up to 0.1 s: in a worker thread.
                raise SessionInUseError(self._identifier, await run_blocking(owner_pid, lock.path))
            self._lock = lock
        try:
            partials = make_private_dir(directory / "partials")
            downloads = make_private_dir(directory / "downloads")
            base = self._state_dir
            key = process_key() if base is None else load_key(base)
            journal = None
            if self._identifier is not None:
                journal = await Journal.open(
                    directory / JOURNAL_NAME,
                    fsync=config.durability == "fsync",
                    interval=config.checkpoint_interval,
                    secrets=SecretHeaders(config.secret_headers),
                    event_log_size=config.event_log_size,
                )
                self._journal = journal  # closed by __aexit__, entered or not
                await journal.__aenter__()
            engine = Engine(
                config=config,
                downloads_dir=downloads,
                partials_dir=partials,
                state_dir=self._protected_dir(directory),
                resume_key=key,
                resume_root=base,
                journal=journal,
                next_id=journal.next_id if journal is not None else 1,
            )
            await engine.__aenter__()
            self._engine = engine
            if journal is not None:
                entries, journal.entries = journal.entries, []
                await _sweep(partials, entries, config.resume_data_max_age)
                # No await from here until the backend is handed out: restored
                # tasks start at once, and the application must be able to
                # subscribe before their first event.
                await engine.restore(entries)
                terminations, journal.terminations = journal.terminations, []
                engine.recover_terminations(terminations)
                if config.handle_sigterm:
                    self._sigterm = sigterm.register(engine.journal_running)
        except BaseException:
            await self.__aexit__(None, None, None)  # its cleanup shields itself
            raise
        return LocalBackend(engine, directory)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Engine, then journal (its last commit shielded and bounded), then the
        SIGTERM registration, the lock, and an ephemeral session's directory."""
        engine, self._engine = self._engine, None
        journal, self._journal = self._journal, None
        try:
            if engine is not None:
                await engine.__aexit__(exc_type, exc, tb)
        finally:
            try:
                if journal is not None:
                    await journal.__aexit__(exc_type, exc, tb)
            finally:
                if self._sigterm is not None:
                    sigterm.unregister(self._sigterm)
                    self._sigterm = None
                if self._lock is not None:
                    self._lock.release()
                    self._lock = None
                directory, self._directory = self._directory, None
                if self._identifier is None and directory is not None:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(remove_ephemeral_dir, directory)

    def _protected_dir(self, directory: Path) -> Path:
        """Where no destination may go (but into ``downloads/``): a background
        session's state directory (every session's journal, lock and partial
        files), an ephemeral session's own temporary directory (its
        ``state_dir``, if given, may hold the application's destinations)."""
        return directory.parent if self._identifier is not None else directory


async def _sweep(partials: Path, entries: Sequence[TaskEntry], max_age: float | None) -> None:
    """Remove the partial files nobody will use: owned by no task of the journal and
    older than ``Configuration.resume_data_max_age``."""
    if max_age is None:
        return
    owned = {f"{entry.id}.part" for entry in entries}
    removed = await run_blocking(sweep_partials, partials, owned, time.time() - max_age)
    if removed:
        logger.info(
            "removed %d partial file(s) older than %g s that no task owns from %s",
            len(removed),
            max_age,
            partials,
        )
