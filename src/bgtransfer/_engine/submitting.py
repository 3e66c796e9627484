"""New tasks, as the engine takes them: downloads and uploads (one or a batch,
all or none) and data tasks (``fetch``), each queued for a slot of its origin.

The half of :class:`~bgtransfer._engine.engine.Engine` between its commands and
:mod:`.admission`: it numbers, claims and queues what admission validated, and
lends a task's slot out while it waits for the application (``_give_back``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import anyio

from .._core.auth import TaskInfo
from .._core.config import HeaderPairs
from .._core.digests import Integrity
from .._core.fetch import FetchResponse, check_fetch
from .._core.naming import parse_url
from .._exceptions import SessionClosedError
from .admission import Admission, Request, merge_headers
from .fetch import Fetcher
from .record import TaskRecord
from .restoring import Restoring

if TYPE_CHECKING:
    from .._core.upload import UploadRequest

__all__ = ["Submitting"]

R = TypeVar("R")  # a batch's request (Submitting._prepare_batch)


class Submitting(Restoring):
    """New tasks and data tasks for an engine (its state is the engine's)."""

    _admission: Admission
    _fetcher: Fetcher
    _fetch_scopes: dict[int, anyio.CancelScope]

    def submit(
        self,
        url: object,
        destination: str | os.PathLike[str] | None,
        *,
        description: str | None,
        headers: HeaderPairs,
        segments: int | None = None,
        integrity: Integrity | None = None,
    ) -> TaskRecord:
        """Validate a download request, queue it, and start it if a slot is free."""
        self._check_open()
        request = (url, destination, description, headers, segments, integrity)
        record = self._admission.prepare(self._next_id, request, checked_dirs={})
        self._next_id += 1
        return self._admit(self._downloading(record))

    def submit_many(self, requests: Sequence[Request]) -> list[TaskRecord]:
        """:meth:`submit` for each request, all or none: every request is validated
        (destinations against each other too) before the first task is queued.
        An error gets a note naming the request."""
        self._check_open()
        checked_dirs: dict[str, tuple[Path, str]] = {}  # one check per directory for the batch
        records = self._prepare_batch(
            requests,
            lambda task_id, request: self._admission.prepare(
                task_id, request, checked_dirs=checked_dirs
            ),
        )
        return [self._admit(self._downloading(record)) for record in records]

    def submit_upload(self, request: UploadRequest) -> TaskRecord:
        """Validate an upload request (its file, its ``reply_to``), queue it, and
        start it if a slot is free."""
        self._check_open()
        record = self._uploads.prepare(self._next_id, request)
        self._next_id += 1
        return self._admit(record)

    def submit_uploads(self, requests: Sequence[UploadRequest]) -> list[TaskRecord]:
        """:meth:`submit_upload` for each request, all or none (as :meth:`submit_many`)."""
        self._check_open()
        records = self._prepare_batch(requests, self._uploads.prepare)
        return [self._admit(record) for record in records]

    def _prepare_batch(
        self, requests: Sequence[R], prepare: Callable[[int, R], TaskRecord]
    ) -> list[TaskRecord]:
        """A record for each request, in order, or none: the first that fails
        raises with a note naming it. Each claims its destination at once (the
        next ones see it) and frees it if the batch fails."""
        records: list[TaskRecord] = []
        try:
            for index, request in enumerate(requests):
                try:
                    record = prepare(self._next_id + index, request)
                except Exception as exc:
                    exc.add_note(f"request {index} of {len(requests)}; no task was made")
                    raise
                if record.claims_destination:
                    self._claims[record.destination_key] = record.id
                records.append(record)
        finally:
            if len(records) != len(requests):  # failed: nothing stays claimed
                for record in records:
                    if record.claims_destination:
                        del self._claims[record.destination_key]
        self._next_id += len(records)
        return records

    async def fetch(
        self, url: object, *, method: object, headers: HeaderPairs, max_bytes: object
    ) -> FetchResponse:
        """A data task: queue for a slot of the URL's origin as a download does
        (in creation order, under the same limits), then the attempts (see
        :mod:`.fetch`); the slot is given back however it ends."""
        self._check_open()
        verb = check_fetch(method, max_bytes)
        cap = self.config.fetch_max_bytes if max_bytes is None else max_bytes
        assert isinstance(cap, int)
        url, origin = parse_url(url, self._admission.origins)
        merged = tuple(merge_headers(self.config.headers, headers).items())
        task_id = self._next_id
        self._next_id += 1
        granted = anyio.Event()
        self._slot_waiters[task_id] = granted
        with anyio.CancelScope() as scope:
            self._fetch_scopes[task_id] = scope
            try:
                self._start(self._supervisor.enqueue(task_id, origin, now=self.clock()))
                await granted.wait()
                return await self._fetcher.fetch(
                    TaskInfo(id=task_id, url=url, description=None),
                    origin,
                    method=verb,
                    headers=merged,
                    max_bytes=cap,
                )
            finally:
                del self._fetch_scopes[task_id]
                self._slot_waiters.pop(task_id, None)
                self._start(self._supervisor.remove(task_id, now=self.clock()))
        raise SessionClosedError(f"{url}: the session closed before fetch() ended")

    def _give_back(self, task_id: int) -> Callable[[], Awaitable[None]]:
        """Free the connection slot of the active task (or fetch) ``task_id``
        while it waits for the application (``auth.py``): other tasks may start
        meanwhile. The function returned queues it for a slot of its origin
        again, in its place (creation order), and returns once granted; if it
        is stopped before, the runner's end (``Supervisor.remove``) tidies up."""
        origin = self._supervisor.origin(task_id)
        self._start(self._supervisor.release(task_id, now=self.clock()))

        async def take_again() -> None:
            granted = anyio.Event()
            self._slot_waiters[task_id] = granted
            try:
                self._start(self._supervisor.enqueue(task_id, origin, now=self.clock()))
                await granted.wait()
            finally:
                self._slot_waiters.pop(task_id, None)

        return take_again

    # -- internals ----------------------------------------------------------------

    def _admit(self, record: TaskRecord) -> TaskRecord:
        self._records[record.id] = record
        if record.claims_destination:
            self._claims[record.destination_key] = record.id
        self._journal_task(record)  # made durable by the caller's flush()
        self._start(self._supervisor.enqueue(record.id, record.origin, now=self.clock()))
        return record
