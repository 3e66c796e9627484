"""Pure rules for the network settings: proxy URLs, the names of TLS checks, the User-Agent,
and how ``Configuration`` checks its network fields.

The I/O shell (``_io/client.py``, ``_io/proxy.py``) reads the environment,
loads certificates and builds aiohttp's client from these.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeAlias, runtime_checkable
from urllib.parse import unquote, urlsplit

import attrs

from .secrets import shown_url

__all__ = [
    "TLS_CHECKS",
    "ProxySetting",
    "ProxyURL",
    "SSLContextLike",
    "SSLSetting",
    "bypasses_proxy",
    "check_user_agent",
    "convert_client_cert",
    "convert_proxy",
    "convert_ssl",
    "parse_proxy",
    "proxy_repr",
    "tls_check_for_verify_code",
    "user_agent",
]


@attrs.frozen
class ProxyURL:
    """A proxy, split: where it is (``url``: ``http://host:port``, no credentials:
    what messages show) and the credentials to send it, if any."""

    url: str
    user: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)


def parse_proxy(value: str, *, what: str = "proxy") -> ProxyURL:
    """A proxy URL (``http://[user[:password]@]host[:port]``) checked and split;
    :class:`ValueError` naming ``what`` and the URL (password as ``***``) otherwise.

    Only ``http://`` proxies are supported (an HTTPS download goes through one in
    a CONNECT tunnel, encrypted end to end); the port defaults to 80.
    """
    shown = shown_url(value)
    if any(c in value for c in "\r\n\0 "):
        raise ValueError(f"{what} {shown!r}: a URL must not contain spaces, CR, LF or NUL")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{what} {shown!r} is not a valid URL ({exc})") from None
    if parts.scheme.lower() != "http":
        raise ValueError(
            f"{what} {shown!r}: only http:// proxies are supported (https downloads go "
            "through them in a CONNECT tunnel); got "
            f"{parts.scheme + '://' if parts.scheme else 'no scheme'}"
        )
    if not host:
        raise ValueError(f"{what} {shown!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{what} {shown!r}: a proxy URL has no path, query or fragment")
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{80 if port is None else port}"
    user = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return ProxyURL(url, user, password)


_ENTRY_PORT = re.compile(r"^(?P<name>\[[^\]]*\]|[^:]*):(?P<port>[0-9]+)$")


def bypasses_proxy(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``no_proxy`` (the variable's value) exempts ``host`` (and ``port``,
    None: the scheme's default) from the environment's proxy.

    Comma-separated entries, as curl reads them: ``*`` (every host); a host
    name, matching itself and its subdomains (a leading dot changes nothing);
    an IP address or a CIDR block (``10.0.0.0/8``, ``::1``); any of these with
    ``:port`` for that port only. Case-insensitive."""
    host = host.lower().rstrip(".").strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        match = _ENTRY_PORT.match(entry)
        if match is not None:
            if port is None or int(match["port"]) != port:
                continue
            entry = match["name"]
        entry = entry.strip("[]").lstrip(".").rstrip(".")
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if host == entry or host.endswith("." + entry):
            return True
    return False


TLS_CHECKS: Final = (
    "unknown_ca",
    "self_signed",
    "hostname_mismatch",
    "expired",
    "not_yet_valid",
    "revoked",
    "certificate",
    "client_certificate",
    "handshake",
)
"""The values of ``TLSError.check``."""

_VERIFY_CODES: Final = {
    2: "unknown_ca",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    20: "unknown_ca",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown_ca",  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    18: "self_signed",  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19: "self_signed",  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    9: "not_yet_valid",  # X509_V_ERR_CERT_NOT_YET_VALID
    10: "expired",  # X509_V_ERR_CERT_HAS_EXPIRED
    23: "revoked",  # X509_V_ERR_CERT_REVOKED
    62: "hostname_mismatch",  # X509_V_ERR_HOSTNAME_MISMATCH
    64: "hostname_mismatch",  # X509_V_ERR_IP_ADDRESS_MISMATCH
}


def tls_check_for_verify_code(code: int | None) -> str:
    """The ``TLSError.check`` for OpenSSL's certificate verification result ``code``."""
    return _VERIFY_CODES.get(code or 0, "certificate")


def user_agent(bgtransfer: str, aiohttp: str, python: str) -> str:
    """The default User-Agent: ``bgtransfer/<v> aiohttp/<v> Python/<major.minor>``."""
    return f"bgtransfer/{bgtransfer} aiohttp/{aiohttp} Python/{python}"


# The converters and validators of Configuration's network fields.


@runtime_checkable
class SSLContextLike(Protocol):
    """What ``Configuration.ssl`` takes as a context: an :class:`ssl.SSLContext`
    (described by shape: this module does no I/O and imports no ``ssl``)."""

    def wrap_socket(self, *args: Any, **kwargs: Any) -> Any: ...

    def load_verify_locations(self, *args: Any, **kwargs: Any) -> None: ...

    def load_cert_chain(self, *args: Any, **kwargs: Any) -> None: ...


ProxySetting: TypeAlias = str | Literal[False] | None
"""``Configuration.proxy``: a proxy URL, False (no proxy), None (the environment's)."""

SSLSetting: TypeAlias = SSLContextLike | str | bool
"""``Configuration.ssl``: a context, a CA bundle's path, True (verify) or False."""


def convert_proxy(value: object) -> ProxySetting:
    if value is None or value is False:
        return value
    if not isinstance(value, str):
        raise TypeError(
            "proxy must be a proxy URL (str), False (no proxy) or None (the environment's), "
            f"not {type(value).__name__}"
        )
    parse_proxy(value)  # raises ValueError
    return value


def proxy_repr(value: ProxySetting) -> str:
    return repr(shown_url(value)) if isinstance(value, str) else repr(value)


def _file_path(value: object, what: str) -> str:
    """A path given as str or os.PathLike, made absolute (relative to the working
    directory now: a daemon has another)."""
    fspath = getattr(value, "__fspath__", None)
    if isinstance(value, str):
        text = value
    elif fspath is not None and isinstance(path := fspath(), str):
        text = path
    else:
        raise TypeError(f"{what} must be a path (str or os.PathLike), not {type(value).__name__}")
    if not text or "\0" in text:
        raise ValueError(f"{what} must be a file's path, got {text!r}")
    return str(Path(text).absolute())


def convert_ssl(value: object) -> SSLSetting:
    if isinstance(value, bool | SSLContextLike):
        return value
    if isinstance(value, str) or hasattr(value, "__fspath__"):
        return _file_path(value, "ssl (a CA bundle)")
    raise TypeError(
        "ssl must be an ssl.SSLContext, a CA bundle's path, True (verify against the "
        f"system's authorities) or False (no verification), not {type(value).__name__}"
    )


def convert_client_cert(value: object) -> tuple[str, str | None] | None:
    if value is None:
        return None
    if isinstance(value, str) or hasattr(value, "__fspath__"):
        return (_file_path(value, "client_cert"), None)
    if isinstance(value, tuple | list) and len(value) == 2:  # (cert, key)
        cert, key = value
        return (
            _file_path(cert, "client_cert (the certificate)"),
            None if key is None else _file_path(key, "client_cert (the key)"),
        )
    raise TypeError(
        "client_cert must be a path (a PEM file holding the certificate and its key) or "
        f"a (certificate, key) pair of paths, not {type(value).__name__}"
    )


def check_user_agent(instance: Any, attribute: Any, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"user_agent must be a str or None, not {type(value).__name__}")
    if not value.strip() or any(c in value for c in "\r\n\0"):
        raise ValueError(
            f"user_agent must be a non-empty header value without CR, LF or NUL, got {value!r}"
        )
