"""Terminations the journal holds until they are sent: the durable half of a
cancelled resumable upload's ``DELETE``.

A cancel that removes a tus or IETF-draft upload from its server first records
a :class:`PendingTermination` (the journal's ``terminations`` table, schema 7)
and commits it, then sends the ``DELETE``, then forgets it. A process killed in
between leaves the row; the next open of the session (in-process, or the
daemon's recovery) sends it again, at most :data:`MAX_TRIES` times in all, and
forgets it after an answer or after the last try. What the row keeps is what
the request needs and nothing secret: the task's URL (which errors and
``headers_provider`` are given), the upload URL (never with userinfo), the
protocol, and the task's headers without the secret ones (the session's
``headers_provider`` supplies those again).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import attrs

from .resumable_upload import IetfUpload
from .secrets import DEFAULT_SECRETS, SecretHeaders, check_no_userinfo
from .tus import TusUpload
from .upload_protocol import UploadRequest

__all__ = [
    "MAX_TRIES",
    "TERMINATION_COLUMNS",
    "PendingTermination",
    "termination_from_row",
    "termination_request",
    "termination_to_row",
]

MAX_TRIES: Final = 3
"""Times a termination is sent at most (the cancel's own, then one per open):
a server that is gone for good must not be asked forever."""

TERMINATION_COLUMNS: Final = ("task_id", "url", "upload_url", "protocol", "headers", "tries")

_PROTOCOLS: Final = ("tus", "ietf")


@attrs.frozen(kw_only=True)
class PendingTermination:
    """A ``DELETE`` of a cancelled upload that the journal holds until it is sent."""

    task_id: int
    url: str
    """The task's URL (for errors, logs and ``headers_provider``)."""
    upload_url: str
    """The upload to remove; never with userinfo."""
    protocol: str
    """``tus`` or ``ietf``: which protocol's headers the request carries."""
    headers: tuple[tuple[str, str], ...] = ()
    """The task's headers without the secret ones."""
    tries: int = 0
    """Times it was sent (or about to be) so far."""


def termination_request(pending: PendingTermination) -> UploadRequest:
    """The ``DELETE`` the protocol's machine sends to remove the upload."""
    machine: TusUpload | IetfUpload
    if pending.protocol == "tus":
        machine = TusUpload.start(
            pending.url, 0, task_url=pending.url, upload_url=pending.upload_url
        )
    else:
        machine = IetfUpload.start(
            pending.url, 0, task_url=pending.url, upload_url=pending.upload_url
        )
    request = machine.cancel_request()
    assert request is not None  # (a machine with an upload URL and no answer yet)
    return request


def termination_to_row(
    pending: PendingTermination, secrets: SecretHeaders = DEFAULT_SECRETS
) -> tuple[Any, ...]:
    """The row in :data:`TERMINATION_COLUMNS` order (secret headers left out)."""
    headers = json.dumps([list(pair) for pair in secrets.public(pending.headers)])
    return (
        pending.task_id,
        pending.url,
        pending.upload_url,
        pending.protocol,
        headers,
        pending.tries,
    )


def termination_from_row(
    row: Sequence[Any], secrets: SecretHeaders = DEFAULT_SECRETS
) -> PendingTermination:
    """Decode a row; ``ValueError`` naming the task and what is wrong."""
    if len(row) != len(TERMINATION_COLUMNS):
        raise ValueError(f"a termination row has {len(row)} columns")
    task_id, url, upload_url, protocol, headers_text, tries = row
    if not _count(task_id) or task_id < 1:
        raise ValueError(f"a termination row has an invalid task id {task_id!r}")
    where = f"the termination of task {task_id}"
    if not isinstance(url, str) or not isinstance(upload_url, str) or not url or not upload_url:
        raise ValueError(f"{where}: invalid url or upload_url")
    check_no_userinfo(upload_url)
    if protocol not in _PROTOCOLS:
        raise ValueError(f"{where}: invalid protocol {protocol!r}")
    if not _count(tries):
        raise ValueError(f"{where}: invalid tries {tries!r}")
    try:
        pairs = json.loads(headers_text) if isinstance(headers_text, str) else None
    except (ValueError, RecursionError):
        pairs = None
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        for pair in pairs
    ):
        raise ValueError(f"{where}: invalid headers")
    return PendingTermination(
        task_id=task_id,
        url=url,
        upload_url=upload_url,
        protocol=protocol,
        headers=secrets.public(tuple((name, value) for name, value in pairs)),
        tries=tries,
    )


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
