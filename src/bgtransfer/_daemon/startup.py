"""``Session(..., daemon=True)``'s start-up: connect to the daemon (launched on
demand, ``connection.py``) and attach the session (``client.py``, which
reconnects by itself when the daemon goes away)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .._core.config import Configuration

if TYPE_CHECKING:
    from .client import DaemonBackend

__all__ = ["DaemonStartup", "check_daemon_session", "open_daemon_backend"]


def check_daemon_session(identifier: str | None, config: Configuration) -> None:
    """What ``daemon=True`` refuses, at ``Session(...)``: an ephemeral session,
    and settings that cannot cross to the daemon's process (callables, an
    ``ssl.SSLContext``); each with a :class:`ValueError` saying what to give
    instead. (An ``auth`` provider does not cross either, but it need not: it
    stays here, and the daemon asks it through the client, ``client.py``.)"""
    if identifier is None:
        raise ValueError("daemon=True needs a background session: give it an identifier")
    if config.headers_provider is not None:
        raise ValueError(
            "Configuration.headers_provider cannot be used with daemon=True: a callable "
            "cannot cross to the daemon's process; give credentials as headers "
            "(Configuration.headers or per task), which the daemon keeps in memory only"
        )
    if config.redirect_policy is not None:
        raise ValueError(
            "Configuration.redirect_policy cannot be used with daemon=True: a callable "
            "cannot cross to the daemon's process (max_redirects can)"
        )
    if not isinstance(config.ssl, bool | str):
        raise ValueError(  # noqa: TRY004 - a setting daemons refuse, as headers_provider
            "Configuration.ssl cannot be an ssl.SSLContext with daemon=True: a context "
            "cannot cross to the daemon's process; give the path of a CA bundle (and "
            "client_cert for a client certificate) instead"
        )


def open_daemon_backend(
    identifier: str | None, *, state_dir: Path, config: Configuration, default: bool = False
) -> DaemonStartup:
    """``async with open_daemon_backend(...) as backend``: the session
    ``identifier`` of ``state_dir``'s daemon, launched if nothing answers.
    ``default``: ``state_dir`` is the default one (the socket may then live in
    ``$XDG_RUNTIME_DIR``)."""
    return DaemonStartup(identifier, state_dir=state_dir, config=config, default=default)


class DaemonStartup:
    """The async context manager :func:`open_daemon_backend` returns."""

    def __init__(
        self, identifier: str | None, *, state_dir: Path, config: Configuration, default: bool
    ) -> None:
        check_daemon_session(identifier, config)
        assert identifier is not None
        self._identifier = identifier
        self._state_dir = state_dir.absolute()
        self._config = config
        self._default = default
        self._backend: DaemonBackend | None = None

    async def __aenter__(self) -> DaemonBackend:
        # Imported here: only daemon sessions need the client (~3 ms of
        # modules), so ``import bgtransfer`` does not pay for it.
        from .client import DaemonBackend  # noqa: PLC0415

        backend = DaemonBackend(
            self._identifier, self._config, state_dir=self._state_dir, default=self._default
        )
        try:
            await backend._open()
        except BaseException:
            await backend._close()
            raise
        self._backend = backend
        return backend

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend._close()
