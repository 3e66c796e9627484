"""Reading a ``.netrc`` file for ``Configuration(netrc=...)``."""

from __future__ import annotations

import netrc as _netrc
import os
from pathlib import Path

from .._core.auth import BasicAuth, NetrcSetting
from .._exceptions import TransferError

__all__ = ["DEFAULT_ENTRY", "read_netrc"]

DEFAULT_ENTRY = ""
"""The key of the file's ``default`` entry."""


def netrc_path(setting: NetrcSetting) -> Path:
    """The file ``setting`` names: True is ``$NETRC`` or ``~/.netrc`` (as curl)."""
    if isinstance(setting, str):
        return Path(setting)
    return Path(os.environ.get("NETRC") or Path.home() / ".netrc")


def read_netrc(setting: NetrcSetting, url: str) -> dict[str, BasicAuth]:
    """The file's entries by lower-case host (its ``default`` one under
    :data:`DEFAULT_ENTRY`); an entry without a login or a password is left out.
    A missing file is empty for ``True`` (as curl) and an error (naming ``url``
    and the file, never its contents) for a path given."""
    path = netrc_path(setting)
    try:
        parsed = _netrc.netrc(str(path))
    except FileNotFoundError:
        if setting is True:
            return {}
        raise TransferError(f"the netrc file {str(path)!r} does not exist", url=url) from None
    except _netrc.NetrcParseError as exc:
        raise TransferError(
            f"the netrc file {str(path)!r} could not be parsed (line {exc.lineno})", url=url
        ) from None
    except OSError as exc:
        raise TransferError(
            f"the netrc file {str(path)!r} could not be read: {exc.strerror}", url=url
        ) from None
    entries: dict[str, BasicAuth] = {}
    for host, (login, _account, password) in parsed.hosts.items():
        if login and password is not None:
            key = DEFAULT_ENTRY if host == "default" else host.lower()
            try:
                entries[key] = BasicAuth(login, password)
            except ValueError:
                continue  # (a ':' in the login: not sendable as Basic)
    return entries
