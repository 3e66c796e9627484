"""The daemon protocol's values as plain JSON, and back (``docs/daemon.md``).

Task snapshots, download requests, session configurations, events, the
supervisor's statistics and the errors a command raises, each as a JSON value
that a different process (of the same version: the hello checks it) reads back
field by field. Terminal events and transfer errors reuse :mod:`.codec`, the
journal's encoding. Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import attrs

from .._exceptions import BgTransferError, DaemonError, InvalidDestinationError, TransferError
from .auth import BasicAuth, BearerToken, decode_credentials, encode_credentials
from .codec import CodecError, decode_error, decode_terminal, encode_error, encode_terminal
from .config import Configuration
from .events import (
    EventsDeliveredEvent,
    EventsGapEvent,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
    SessionEvent,
    TerminalEvent,
)
from .request import DownloadRequest
from .retry import RetryPolicy
from .secrets import SecretHeaders, strip_userinfo
from .states import TaskState

__all__ = [
    "PROTOCOL_VERSION",
    "WireError",
    "decode_config",
    "decode_event",
    "decode_exception",
    "decode_request",
    "encode_config",
    "encode_event",
    "encode_exception",
    "encode_request",
    "encode_snapshot",
    "snapshot_fields",
]

PROTOCOL_VERSION: Final = 1
"""Bumped on any change a peer of the other version would misread."""


class WireError(CodecError):
    """A message is not what this protocol version sends (says which part)."""


# -- task snapshots ---------------------------------------------------------------


def encode_snapshot(snapshot: Any) -> dict[str, Any]:
    """A ``TaskSnapshot`` (of the engine's backend; duck-typed, as ``_core``
    imports nothing above it)."""
    terminal = snapshot.terminal
    return {
        "id": snapshot.id,
        "url": snapshot.url,
        "description": snapshot.description,
        "destination": str(snapshot.destination),
        "state": snapshot.state.value,
        "bytes_received": snapshot.bytes_received,
        "bytes_expected": snapshot.bytes_expected,
        "terminal": None
        if terminal is None
        else _numbered(encode_terminal(terminal), "seq", terminal.seq),
        "kind": snapshot.kind,
        "source": None if snapshot.source is None else str(snapshot.source),
    }


def snapshot_fields(document: object, *, ended: TerminalEvent | None = None) -> dict[str, Any]:
    """The fields of the snapshot :func:`encode_snapshot` wrote, checked: the
    keywords of ``TaskSnapshot``. ``ended``: the task's terminal event, decoded
    already (an event line carries it beside the snapshot that ends with it),
    taken instead of decoding the snapshot's copy of it."""
    doc = _object(document, "task")
    task_id = _int(doc, "id")
    terminal = doc.get("terminal")
    if ended is not None and ended.task_id == task_id and terminal is not None:
        terminal = ended
    source = _optional_str(doc, "source")
    try:
        state = TaskState(doc.get("state"))
    except ValueError:
        raise WireError(f"task {task_id}: unknown state {doc.get('state')!r}") from None
    text = _str(doc, "destination")
    destination = Path(text)
    return {
        "id": task_id,
        "url": _str(doc, "url"),
        "description": _optional_str(doc, "description"),
        "destination": destination,
        "state": state,
        "bytes_received": _int(doc, "bytes_received"),
        "bytes_expected": _optional_int(doc, "bytes_expected"),
        "terminal": terminal
        if terminal is None or terminal is ended
        else _terminal(task_id, terminal),
        "kind": _kind(doc),
        # An upload without reply_to: its destination is its file (one Path).
        "source": None if source is None else destination if source == text else Path(source),
    }


def _kind(doc: dict[str, Any]) -> str:
    kind = doc.get("kind", "download")
    if kind not in ("download", "upload"):
        raise WireError(f"unknown task kind {kind!r}")
    return str(kind)


def _terminal(task_id: int, document: object) -> TerminalEvent:
    terminal = decode_terminal(task_id, document)
    seq = _optional_int(_object(document, "terminal"), "seq")
    return terminal if seq is None else attrs.evolve(terminal, seq=seq)


# -- requests ---------------------------------------------------------------------


def encode_request(request: DownloadRequest) -> dict[str, Any]:
    """A request; its destination must already be absolute (the client's job)."""
    destination = request.destination
    return {
        "url": request.url,
        "destination": None if destination is None else str(destination),
        "description": request.description,
        "headers": [list(pair) for pair in request.headers],
        "segments": request.segments,
        "checksum": request.checksum,
        "expected_size": request.expected_size,
    }


def decode_request(document: object) -> DownloadRequest:
    """A request :func:`encode_request` wrote; a relative destination is refused
    (``InvalidDestinationError``): the daemon's working directory is not the
    client's."""
    doc = _object(document, "request")
    destination = _optional_str(doc, "destination")
    url = _str(doc, "url")
    # What Path(destination).is_absolute() says on POSIX, where the daemon runs
    # (fcntl, Unix sockets), without making a Path for it.
    if destination is not None and not destination.startswith("/"):
        raise InvalidDestinationError(
            f"destination {destination!r} for {url} is a relative path; "
            "the daemon takes absolute paths only"
        )
    return DownloadRequest(
        url,
        destination,
        description=_optional_str(doc, "description"),
        headers=_pairs(doc.get("headers", [])),
        segments=_optional_int(doc, "segments"),
        checksum=_optional_str(doc, "checksum"),
        expected_size=_optional_int(doc, "expected_size"),
    )


# -- configuration ----------------------------------------------------------------


def encode_config(config: Configuration, *, keep_secrets: bool = True) -> dict[str, Any]:
    """Every field but ``headers_provider`` (a callable cannot cross a process:
    the caller refuses it first, as it refuses an ``ssl.SSLContext``: a
    :class:`TypeError` here). Without ``keep_secrets`` the secret headers and the
    proxy's credentials are left out: what the daemon may write to disk."""
    headers = config.headers
    proxy = config.proxy
    if not keep_secrets:
        headers = SecretHeaders(config.secret_headers).public(headers)
        if isinstance(proxy, str):
            proxy = strip_userinfo(proxy)
    if not isinstance(config.ssl, bool | str):
        raise TypeError(
            "Configuration.ssl: an ssl.SSLContext cannot cross to the daemon's process; "
            "give a CA bundle's path (and client_cert) instead"
        )
    if config.redirect_policy is not None:
        raise TypeError("Configuration.redirect_policy: a callable cannot cross to the daemon")
    client_cert = config.client_cert
    retry = config.retry
    return {
        "max_connections_per_host": config.max_connections_per_host,
        "max_concurrent_transfers": config.max_concurrent_transfers,
        "request_timeout": config.request_timeout,
        "resource_timeout": config.resource_timeout,
        "headers": [list(pair) for pair in headers],
        "progress_interval": config.progress_interval,
        "retry": {
            "max_attempts": retry.max_attempts,
            "initial_delay": retry.initial_delay,
            "max_delay": retry.max_delay,
            "multiplier": retry.multiplier,
            "jitter": retry.jitter,
            "max_retry_after": retry.max_retry_after,
            "retry_statuses": sorted(retry.retry_statuses),
        },
        "min_speed": config.min_speed,
        "min_speed_window": config.min_speed_window,
        "durability": config.durability,
        "checkpoint_interval": config.checkpoint_interval,
        "secret_headers": sorted(config.secret_headers),
        "allow_insecure_redirects": config.allow_insecure_redirects,
        "segments": config.segments,
        "handle_sigterm": config.handle_sigterm,
        "acknowledge": config.acknowledge,
        "event_log_size": config.event_log_size,
        "launch_command": None if config.launch_command is None else list(config.launch_command),
        "launch_delay": config.launch_delay,
        "launch_delay_max": config.launch_delay_max,
        "resume_data_max_age": config.resume_data_max_age,
        "proxy": proxy,
        "ssl": config.ssl,
        "client_cert": None if client_cert is None else list(client_cert),
        "user_agent": config.user_agent,
        "upload_reply_max_bytes": config.upload_reply_max_bytes,
        # (Credentials are secret; "the app answers" is not, and a restarted
        # daemon needs it: a task that meets a 401 then waits for the app.)
        "auth": encode_credentials(config.auth)
        if keep_secrets or not isinstance(config.auth, BasicAuth | BearerToken)
        else None,
        "netrc": config.netrc,
        "max_redirects": config.max_redirects,
        "redirect_policy": None,  # (a callable: refused above unless None)
        "fetch_max_bytes": config.fetch_max_bytes,
        "max_bytes_per_second": config.max_bytes_per_second,
    }


def decode_config(document: object) -> Configuration:
    """The configuration :func:`encode_config` wrote, validated as any is
    (``TypeError``/``ValueError`` for a wrong field; unknown fields refused)."""
    doc = dict(_object(document, "configuration"))
    retry = doc.pop("retry", None)
    if retry is not None:
        retry = dict(_object(retry, "retry"))
        if "retry_statuses" in retry:
            retry["retry_statuses"] = frozenset(retry["retry_statuses"])
        doc["retry"] = RetryPolicy(**retry)
    if "headers" in doc:
        doc["headers"] = _pairs(doc["headers"])
    if "secret_headers" in doc:
        doc["secret_headers"] = frozenset(doc["secret_headers"])
    if "auth" in doc:
        doc["auth"] = decode_credentials(doc["auth"])
    return Configuration(**doc)


# -- events -----------------------------------------------------------------------


def encode_event(event: SessionEvent) -> dict[str, Any]:
    """An event; a logged one carries its ``seq``, ``EventsDeliveredEvent`` its
    ``cursor`` (both omitted when None)."""
    if isinstance(event, ProgressEvent):
        return {
            "kind": "progress",
            "task_id": event.task_id,
            "bytes_written": event.bytes_written,
            "total_bytes_written": event.total_bytes_written,
            "total_bytes_expected": event.total_bytes_expected,
        }
    if isinstance(event, EventsDeliveredEvent):
        return _numbered(
            {"kind": "events_delivered", "replayed": event.replayed}, "cursor", event.cursor
        )
    if isinstance(event, EventsGapEvent):
        return {
            "kind": "events_gap",
            "since": event.since,
            "earliest": event.earliest,
            "latest": event.latest,
        }
    document: dict[str, Any]
    if isinstance(event, ResumedEvent):
        document = {
            "kind": "resumed",
            "task_id": event.task_id,
            "offset": event.offset,
            "expected_total": event.expected_total,
        }
    elif isinstance(event, RetryEvent):
        document = {
            "kind": "retry",
            "task_id": event.task_id,
            "attempt": event.attempt,
            "error": encode_error(event.error),
            "delay": event.delay,
        }
    else:
        terminal: TerminalEvent = event
        document = {"task_id": terminal.task_id, **encode_terminal(terminal)}
    return _numbered(document, "seq", event.seq)


def _numbered(document: dict[str, Any], name: str, value: int | None) -> dict[str, Any]:
    if value is not None:
        document[name] = value
    return document


def decode_event(document: object) -> SessionEvent:
    doc = _object(document, "event")
    kind = doc.get("kind")
    if kind == "events_delivered":
        return EventsDeliveredEvent(
            replayed=_int(doc, "replayed"), cursor=_optional_int(doc, "cursor")
        )
    if kind == "events_gap":
        return EventsGapEvent(
            since=_int(doc, "since"),
            earliest=_int(doc, "earliest"),
            latest=_optional_int(doc, "latest"),
        )
    task_id = _int(doc, "task_id")
    if kind == "progress":
        return ProgressEvent(
            task_id=task_id,
            bytes_written=_int(doc, "bytes_written"),
            total_bytes_written=_int(doc, "total_bytes_written"),
            total_bytes_expected=_optional_int(doc, "total_bytes_expected"),
        )
    seq = _optional_int(doc, "seq")
    if kind == "resumed":
        return ResumedEvent(
            task_id=task_id,
            offset=_int(doc, "offset"),
            expected_total=_optional_int(doc, "expected_total"),
            seq=seq,
        )
    if kind == "retry":
        delay = doc.get("delay")
        if not isinstance(delay, int | float) or isinstance(delay, bool):
            raise WireError("retry event without a delay")
        return RetryEvent(
            task_id=task_id,
            attempt=_int(doc, "attempt"),
            error=decode_error(doc.get("error")),
            delay=float(delay),
            seq=seq,
        )
    if kind in ("finished", "error", "cancelled"):
        return _terminal(task_id, doc)
    raise WireError(f"unknown event kind {kind!r}")


# -- errors -----------------------------------------------------------------------

_BUILTINS: Final[dict[str, type[Exception]]] = {
    cls.__name__: cls for cls in (TypeError, ValueError, KeyError, RuntimeError)
}


def _package_errors() -> dict[str, type[Exception]]:
    """Every exception class of the package, by name (the tree below its base)."""
    found: dict[str, type[Exception]] = {}
    pending: list[type[Exception]] = [BgTransferError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.__name__, cls)
        pending.extend(cls.__subclasses__())
    return found


def encode_exception(error: BaseException) -> dict[str, Any]:
    """An error a command raised: ``{"type", "message", "fields", "notes"}``.
    Fields are the error's own plain attributes (``pid``, ``task_id``, ``url``...)."""
    if isinstance(error, TransferError):
        return {"transfer": encode_error(error), "type": type(error).__name__}
    fields = {
        name: value
        for name, value in vars(error).items()
        if not name.startswith("_")
        and (value is None or isinstance(value, str | int | float | bool))
    }
    message = str(error.args[0]) if len(error.args) == 1 else str(error)
    document: dict[str, Any] = {"type": type(error).__name__, "message": message}
    if fields:
        document["fields"] = fields
    notes = getattr(error, "__notes__", None)
    if notes:
        document["notes"] = [str(note) for note in notes]
    return document


def decode_exception(document: object) -> Exception:
    """The error :func:`encode_exception` wrote, as the same class when the
    package (or Python) has it; otherwise a ``DaemonError`` naming it."""
    doc = _object(document, "error")
    if "transfer" in doc:
        return decode_error(doc["transfer"])
    name = _str(doc, "type")
    message = _str(doc, "message")
    cls = _BUILTINS.get(name) or _package_errors().get(name)
    if cls is None:
        return DaemonError(f"the daemon answered {name}: {message}")
    error = cls.__new__(cls, message)
    BaseException.__init__(error, message)
    fields = doc.get("fields", {})
    if isinstance(fields, dict):
        for field, value in fields.items():
            setattr(error, str(field), value)
    for note in doc.get("notes", ()):
        error.add_note(str(note))
    return error


# -- helpers ----------------------------------------------------------------------


def _object(document: object, what: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise WireError(f"{what} is not a JSON object")
    return document


def _str(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str):
        raise WireError(f"field {name!r} is missing or not text")
    return value


def _optional_str(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, str):
        raise WireError(f"field {name!r} is not text")
    return value


def _int(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError(f"field {name!r} is missing or not an integer")
    return value


def _optional_int(doc: dict[str, Any], name: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise WireError(f"field {name!r} is not an integer")
    return value


def _pairs(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise WireError("headers are not a list of pairs")
    pairs: list[tuple[str, str]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2):
            raise WireError("a header is not a [name, value] pair")
        pairs.append((item[0], item[1]))
    return tuple(pairs)
