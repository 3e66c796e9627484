"""Session configuration: one frozen value, validated when built."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, TypeAlias

import attrs

from .auth import AuthSetting, NetrcSetting, TaskInfo, auth_repr, convert_auth, convert_netrc
from .network import (
    ProxySetting,
    SSLContextLike,
    SSLSetting,
    check_user_agent,
    convert_client_cert,
    convert_proxy,
    convert_ssl,
    proxy_repr,
)
from .retry import RetryPolicy
from .secrets import DEFAULT_SECRETS

__all__ = [
    "Acknowledge",
    "Configuration",
    "Durability",
    "HeaderPairs",
    "HeadersProvider",
    "ProxySetting",
    "RedirectPolicy",
    "SSLContextLike",
    "SSLSetting",
    "check_description",
    "headers_repr",
    "normalize_headers",
]

HeaderPairs = tuple[tuple[str, str], ...]

HeadersProvider: TypeAlias = Callable[
    [str], Mapping[str, str] | Awaitable[Mapping[str, str]] | None
]
"""Called with a task's URL before each request; returns headers to add (sync or async)."""

RedirectPolicy: TypeAlias = Callable[[TaskInfo, int, str], Awaitable[str | bool] | str | bool]
"""Called before a redirect is followed with the task, the status and the next
URL; True follows it, False refuses it (``RedirectError``), a str goes there instead."""

Durability: TypeAlias = Literal["process", "fsync"]

Acknowledge: TypeAlias = Literal["auto", "explicit"]

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def check_description(description: object) -> None:
    """A task's description is a str or None; :class:`TypeError` otherwise."""
    if description is not None and not isinstance(description, str):
        raise TypeError(f"description must be a str or None, not {type(description).__name__}")


def normalize_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> HeaderPairs:
    """Validate request headers and return them as an ordered tuple of pairs.

    Raises :class:`TypeError` for non-string names or values and :class:`ValueError`
    for a name that is not an HTTP token or a value holding CR, LF or NUL (header
    injection).
    """
    if headers is None or headers == ():  # (the usual case, without the ABC checks below)
        return ()
    given: object = headers  # checked at run time: callers are not always type-checked
    if isinstance(given, str | bytes) or not isinstance(given, Mapping | Iterable):
        raise TypeError(f"headers must be a mapping of str to str, not {type(given).__name__}")
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str | bytes):  # "ab" would unpack as ("a", "b")
            raise TypeError(f"headers must be (name, value) pairs, got a {type(item).__name__}")
        try:
            name, value = item
        except (TypeError, ValueError):
            raise TypeError(
                f"headers must be (name, value) pairs, got a {type(item).__name__}"
            ) from None
        # (Values are never shown: they may be credentials.)
        if not isinstance(name, str):
            raise TypeError(f"header names must be a str, not {type(name).__name__}")
        if not isinstance(value, str):
            raise TypeError(f"header {name!r}: the value must be a str, not {type(value).__name__}")
        if not name or not set(name) <= _TOKEN_CHARS:
            raise ValueError(f"header name {name!r} is not a valid HTTP token")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r}: value must not contain CR, LF or NUL")
        pairs.append((name, value))
    return tuple(pairs)


def headers_repr(headers: HeaderPairs) -> str:
    """The repr of header pairs, the secret values (by the default rule) as ``***``."""
    shown = tuple(
        (name, "***" if DEFAULT_SECRETS.is_secret(name) else value) for name, value in headers
    )
    return repr(shown)


def _secret_names(value: object) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(
            f"secret_headers must be a collection of header names, not {type(value).__name__}"
        )
    names = set()
    for name in value:
        if not isinstance(name, str):
            raise TypeError(f"secret_headers: header names must be str, not {type(name).__name__}")
        if not name or not set(name) <= _TOKEN_CHARS:
            raise ValueError(f"secret_headers: {name!r} is not a valid HTTP header name")
        names.add(name.lower())
    return frozenset(names)


def _bool(instance: Any, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be a bool, not {type(value).__name__}")


def _positive_int(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


def _optional_positive_int(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None:
        _positive_int(instance, attribute, value)


def _seconds(*, optional: bool, allow_zero: bool) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[float | None], value: float | None) -> None:
        if value is None:
            if optional:
                return
            raise TypeError(f"{attribute.name} must be a number of seconds, not None")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"{attribute.name} must be a number of seconds, not {type(value).__name__}"
            )
        if not math.isfinite(value):
            hint = " (None means no limit)" if optional else ""
            raise ValueError(
                f"{attribute.name} must be a finite number of seconds{hint}, got {value}"
            )
        if value < 0 or (value == 0 and not allow_zero):
            bound = "at least 0" if allow_zero else "greater than 0"
            raise ValueError(f"{attribute.name} must be {bound} seconds, got {value}")

    return check


def _segments(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    _positive_int(instance, attribute, value)
    if value > 16:
        raise ValueError(f"segments must be at most 16, got {value}")


def _durability(instance: Any, attribute: Any, value: object) -> None:
    if value not in ("process", "fsync"):
        raise ValueError(f"durability must be 'process' or 'fsync', got {value!r}")


def _acknowledge(instance: Any, attribute: Any, value: object) -> None:
    if value not in ("auto", "explicit"):
        raise ValueError(f"acknowledge must be 'auto' or 'explicit', got {value!r}")


def _launch_command(value: object) -> tuple[str, ...] | None:
    """``launch_command``: None, or a non-empty sequence of str as a tuple."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(
            "launch_command must be a sequence of str (an argument list, no shell), "
            f"not {type(value).__name__}"
        )
    argv = tuple(value)
    for argument in argv:
        if not isinstance(argument, str):
            raise TypeError(
                f"launch_command: every argument must be a str, not {type(argument).__name__}"
            )
        if "\0" in argument:
            raise ValueError("launch_command: an argument must not contain NUL")
    if not argv or not argv[0]:
        raise ValueError("launch_command must name a program (None means no launches)")
    program = argv[0]
    if "/" in program and not program.startswith("/"):
        raise ValueError(
            f"launch_command: the program {program!r} is a relative path; give an absolute "
            "path (or a bare name looked up in PATH): it is run by the daemon, elsewhere"
        )
    return argv


def _optional_callable(instance: Any, attribute: Any, value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{attribute.name} must be callable or None, not {type(value).__name__}")


@attrs.frozen(kw_only=True)
class Configuration:
    """How a session behaves. Frozen: make a changed copy with :meth:`replace`.

    Every field is validated when the value is built; a wrong type raises
    :class:`TypeError`, a wrong value :class:`ValueError`.
    """

    max_connections_per_host: int = attrs.field(default=6, validator=_positive_int)
    """Simultaneous connections to one origin (scheme, host, port); the
    ``HTTPMaximumConnectionsPerHost`` analog. Tasks beyond it wait in creation order."""

    max_concurrent_transfers: int = attrs.field(default=32, validator=_positive_int)
    """Transfers running at once over all hosts; the rest wait in creation order."""

    request_timeout: float | None = attrs.field(
        default=60.0, validator=_seconds(optional=True, allow_zero=False)
    )
    """Seconds without a byte (connecting, waiting for headers, or mid-body) before the
    attempt fails with ``TransferTimeoutError``. ``None`` waits forever."""

    resource_timeout: float | None = attrs.field(
        default=None, validator=_seconds(optional=True, allow_zero=False)
    )
    """Seconds the whole task may take. ``None`` (the default) never kills a long,
    healthy download."""

    headers: HeaderPairs = attrs.field(default=(), converter=normalize_headers, repr=headers_repr)
    """Headers sent with every request; a task's own headers override them by name."""

    progress_interval: float = attrs.field(
        default=0.1, validator=_seconds(optional=False, allow_zero=True)
    )
    """Minimum seconds between two progress events of one task (0: one per chunk)."""

    retry: RetryPolicy = attrs.field(
        factory=RetryPolicy, validator=attrs.validators.instance_of(RetryPolicy)
    )
    """When a task retries by itself after a transient failure."""

    min_speed: int | None = attrs.field(default=1024, validator=_optional_positive_int)
    """Bytes per second below which, sustained over ``min_speed_window``, an attempt
    fails with ``TransferTimeoutError`` (and is retried, but never as progress: a
    server that keeps trickling ends the task after ``RetryPolicy.max_attempts``):
    catches a server that trickles. None turns the check off (curl's ``--speed-limit``)."""

    min_speed_window: float = attrs.field(
        default=60.0, validator=_seconds(optional=False, allow_zero=False)
    )
    """The window over which ``min_speed`` is judged (curl's ``--speed-time``)."""

    durability: Durability = attrs.field(default="process", validator=_durability)
    """What a background session's journal survives. ``"process"`` (the default):
    the process dying at any point, SIGKILL included; a power loss may lose the
    last checkpoints. ``"fsync"``: a power loss too; partial data is fsynced before
    each checkpoint that counts it, the journal commits with ``synchronous=FULL``,
    and the destination's directory is fsynced after the final rename. Slower."""

    checkpoint_interval: float = attrs.field(
        default=1.0, validator=_seconds(optional=False, allow_zero=True)
    )
    """How often a background session records its tasks' progress (the bytes on disk)
    in its journal, in seconds: a *checkpoint*.
    New tasks, state changes and terminal events are committed at once; after a
    crash a task continues from its last checkpoint."""

    headers_provider: HeadersProvider | None = attrs.field(
        default=None, validator=_optional_callable
    )
    """Called with the task's URL before every request (sync or async); the headers
    it returns are added to the task's own, overriding them by name. The way to
    supply credentials: secret headers (see ``secret_headers``) are never written
    to the journal or resume data, so a reattached task gets them from here. An
    exception it raises fails the task with a ``TransferError``."""

    secret_headers: frozenset[str] = attrs.field(default=frozenset(), converter=_secret_names)
    """More request header names (any case) to treat as secret, beside the default
    ones: ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and every name
    containing ``auth``, ``token``, ``secret``, ``key``, ``password``, ``passwd``,
    ``session``, ``cookie``, ``signature`` or ``credential``. A secret header is
    sent, but never written to the journal, resume data, reprs, errors or logs,
    and is dropped when a redirect leads to another origin."""

    allow_insecure_redirects: bool = attrs.field(default=False, validator=_bool)
    """Follow a redirect from https to http. Off by default: such a redirect fails
    the task with ``RedirectError`` (never retried), since the file would travel
    unencrypted."""

    segments: int = attrs.field(default=1, validator=_segments)
    """Connections per download (1-16; ``session.download(segments=N)`` overrides).
    Above 1, a file the server can serve in ranges (known length of at least 2 MiB,
    strong validator, ``Accept-Ranges: bytes``) is fetched as that many byte ranges
    at once, written in place into one preallocated partial file. Each extra
    connection takes a free slot of the host's ``max_connections_per_host``, never
    one a queued task waits for. Otherwise one connection, as usual."""

    handle_sigterm: bool = attrs.field(default=True, validator=_bool)
    """While a background session is open in the main thread and SIGTERM has its
    default disposition, SIGTERM checkpoints the running tasks of every open
    background session (their journals record the bytes on disk, within a few
    seconds), then ends the process as SIGTERM would (status -15). An
    application's own SIGTERM handler is never replaced. False: nothing is
    installed; SIGTERM ends the process at once, and the tasks continue from
    their last checkpoint."""

    acknowledge: Acknowledge = attrs.field(default="auto", validator=_acknowledge)
    """When a background session's terminal event counts as delivered, so that a
    later process does not deliver it again and the journal forgets the task.
    ``"auto"`` (the default): once it is handed to the application, returned by
    an event stream or by ``task.wait()`` (the file is at its destination and the
    journal holds the end by then). ``"explicit"``: at-least-once delivery; only
    ``await task.acknowledge()`` or ``await session.acknowledge(task_id)`` does,
    and until then every later process delivers the event again."""

    event_log_size: int = attrs.field(default=4096, validator=_positive_int)
    """How many events a background session's event log keeps at least (every
    task event but progress, numbered; what ``Session.events(since=...)`` replays).
    Older ones are dropped once their task is acknowledged; those of tasks not
    acknowledged yet are always kept. A cursor older than what is kept gets an
    ``EventsGapEvent``."""

    resume_data_max_age: float | None = attrs.field(
        default=7 * 24 * 3600.0, validator=_seconds(optional=True, allow_zero=False)
    )
    """How long, in seconds, a background session keeps a partial file that no task
    of its journal owns: the partial behind resume data the application has not used
    yet (``cancel_with_resume_data()``, an ``ErrorEvent`` for a full disk), or one a
    crash left behind. The session removes older ones when it opens; resume data
    whose partial is gone is refused with ``InvalidResumeDataError``. Counted from
    the partial's last write. None: keep them until the application removes them."""

    launch_command: tuple[str, ...] | None = attrs.field(default=None, converter=_launch_command)
    """The program a session served by the daemon (``Session(..., daemon=True)``)
    runs when events wait for an application that is not attached (the
    ``sessionSendsLaunchEvents`` analog): an argument list, run without a shell,
    with ``BGTRANSFER_IDENTIFIER``, ``BGTRANSFER_STATE_DIR`` and
    ``BGTRANSFER_CURSOR`` in its environment. None (the default): no launches.
    An in-process session has its application attached by definition and never
    launches anything; it accepts and keeps the field, so one ``Configuration``
    serves both. See docs/launch-events.md."""

    launch_delay: float = attrs.field(
        default=5.0, validator=_seconds(optional=False, allow_zero=False)
    )
    """Seconds between the first event waiting for the application and its
    launch (events in that window join the launch); while the application does
    not attach and acknowledge, each next launch waits twice as long after the
    previous one ended, up to ``launch_delay_max``."""

    launch_delay_max: float = attrs.field(
        default=3600.0, validator=_seconds(optional=False, allow_zero=False)
    )
    """The cap on the doubling delay between launches, in seconds (at least
    ``launch_delay``)."""

    proxy: ProxySetting = attrs.field(default=None, converter=convert_proxy, repr=proxy_repr)
    """The HTTP proxy every request goes through. None (the default): the
    environment's, read when the session opens (``http_proxy``, ``https_proxy``,
    ``no_proxy``, upper case too, as curl and aiohttp read them; a daemon
    session: the daemon's environment). A URL ``http://[user:password@]host[:port]``:
    that proxy for every request, the environment ignored; HTTPS goes through it
    in a CONNECT tunnel. False: no proxy at all, whatever the environment says.
    Credentials are sent as ``Proxy-Authorization`` (Basic) and never shown in a
    repr, error, log or the journal. See docs/network.md."""

    ssl: SSLSetting = attrs.field(default=True, converter=convert_ssl)
    """How servers' certificates are verified. True (the default): against the
    system's authorities. A path (str or os.PathLike) to a PEM CA bundle: against
    the authorities in it only (curl's ``--cacert``). An ``ssl.SSLContext``: as
    it says (not with ``daemon=True``: a context cannot cross to the daemon).
    False: no verification at all (a WARNING is logged once per session). A
    failed check ends the task with ``TLSError`` (never retried)."""

    client_cert: tuple[str, str | None] | None = attrs.field(
        default=None, converter=convert_client_cert
    )
    """A client certificate for servers that ask for one: the path of a PEM file
    holding the certificate and its (unencrypted) key, or a ``(certificate, key)``
    pair of paths. Not with an ``ssl.SSLContext`` (load it into the context)."""

    user_agent: str | None = attrs.field(default=None, validator=check_user_agent)
    """The ``User-Agent`` sent with every request. None (the default):
    ``bgtransfer/<version> aiohttp/<version> Python/<version>``. A ``User-Agent``
    in ``headers`` or a task's headers wins over it."""
    upload_reply_max_bytes: int = attrs.field(default=64 * 1024, validator=_positive_int)
    """How much of an upload's response body ``FinishedEvent.reply.body`` keeps,
    in bytes (default 64 KiB). A longer body is cut there and the reply says so
    (``truncated``): the upload itself succeeded, and failing it for a long
    answer would send the file again. An upload given ``reply_to=`` writes the
    whole body to that file instead."""

    auth: AuthSetting = attrs.field(default=None, converter=convert_auth, repr=auth_repr)
    """Credentials for servers that answer 401. ``BasicAuth(user, password)`` or
    ``BearerToken(token)``: sent with every request to the origin of each task's
    URL (never to another origin a redirect leads to). An async provider
    ``provider(task_info, challenges) -> credentials | None``: called on a 401
    with the task (``TaskInfo``) and the parsed ``WWW-Authenticate`` challenges;
    the credentials it returns are sent again (and to later requests to that
    origin); None lets the 401 stand (``HTTPStatusError``). Credentials are tried
    once: a 401 to the same ones ends the task with ``AuthenticationError``.
    Never written to the journal, resume data, logs or reprs; a provider cannot
    be used with ``daemon=True``. A 407 is the proxy's (``proxy``), never this.
    An ``Authorization`` header in ``headers`` or a task's wins. See docs/auth.md."""

    netrc: NetrcSetting = attrs.field(default=False, converter=convert_netrc)
    """Take Basic credentials for a task's host from a ``.netrc`` file, as
    ``curl --netrc``: True reads ``$NETRC`` or ``~/.netrc``; a path reads that
    file. Sent with every request to that host (not to another a redirect leads
    to); ``auth`` given as credentials wins over it. False (the default): no."""

    max_redirects: int = attrs.field(default=10)
    """Redirects one request follows at most (0: none); past it the task fails
    with ``RedirectError``. A redirect back to a URL already requested in the
    chain fails at once (a loop)."""

    redirect_policy: RedirectPolicy | None = attrs.field(default=None, validator=_optional_callable)
    """Called (async or not) before each redirect is followed, with the task
    (``TaskInfo``), the status and the next URL (without userinfo): True follows
    it, False refuses it (``RedirectError``, never retried), a str follows that
    URL instead (checked as any redirect target). Not with ``daemon=True``."""

    fetch_max_bytes: int = attrs.field(default=1024 * 1024, validator=_positive_int)
    """The longest response body :meth:`Session.fetch` keeps in memory, in
    bytes (default 1 MiB), unless the call gives its own ``max_bytes``. A longer
    body fails the fetch with :class:`~bgtransfer.ResponseTooLargeError`
    naming the cap; no more than the cap is ever buffered."""

    max_bytes_per_second: int | None = attrs.field(default=None)
    """The session's bandwidth limit, in bytes per second, in each direction:
    its downloads together (segments included) receive no faster, and its
    uploads together send no faster (a budget of their own: links are full
    duplex). A quarter second's worth may go at once after an idle moment;
    beyond it, each transfer waits for its share between chunks. Time a
    transfer waits for the limit does not count against ``min_speed`` or
    ``request_timeout``. None (the default): no limit (``wget --limit-rate``,
    ``curl --limit-rate``; ``bgtransfer get --limit-rate``)."""

    @max_bytes_per_second.validator
    def _check_max_bytes_per_second(self, attribute: Any, value: object) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                "max_bytes_per_second must be an int (bytes per second) or None, "
                f"not {type(value).__name__}"
            )
        if value < 1:
            raise ValueError(
                f"max_bytes_per_second must be at least 1 (None means no limit), got {value}"
            )

    @max_redirects.validator
    def _check_max_redirects(self, attribute: Any, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"max_redirects must be an int, not {type(value).__name__}")
        if not 0 <= value <= 1000:
            raise ValueError(f"max_redirects must be between 0 and 1000, got {value}")

    def __attrs_post_init__(self) -> None:
        if self.client_cert is not None and isinstance(self.ssl, SSLContextLike):
            raise ValueError(
                "client_cert cannot be used with an ssl.SSLContext: load the certificate "
                "into the context (context.load_cert_chain(...))"
            )
        if self.launch_delay_max < self.launch_delay:
            raise ValueError(
                f"launch_delay_max ({self.launch_delay_max}) must be at least "
                f"launch_delay ({self.launch_delay})"
            )

    def replace(self, **changes: Any) -> Configuration:
        """A copy with ``changes`` (field names as keywords), validated as a new value is.

        ``config.replace(segments=4)``. A name that is not a field raises
        :class:`TypeError` naming it; a wrong type or value raises as the
        constructor does. The original is unchanged.
        """
        fields = attrs.fields_dict(Configuration)
        unknown = [name for name in changes if name not in fields]
        if unknown:
            raise TypeError(
                f"Configuration has no field {unknown[0]!r}; its fields are: {', '.join(fields)}"
            )
        return attrs.evolve(self, **changes)
