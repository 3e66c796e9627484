"""Removing cancelled resumable uploads from their servers, durably.

:class:`Terminator` sends the ``DELETE`` (tus termination, the draft's
cancellation) of an upload that a cancel (or a changed file) ends. With a
journal, the termination is recorded and committed first
(:class:`~bgtransfer._core.terminations.PendingTermination`), and forgotten once
the server answered: a process killed before that leaves it to the next open of
the session, which sends what is pending in the background (:meth:`recover`),
each at most ``MAX_TRIES`` times in all, and forgets it after an answer or the
last try. A failure is never a task's: the cancel already happened on our side,
and the server expires what it keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import anyio
import attrs

from .._core.config import Configuration
from .._core.secrets import redacted_url
from .._core.terminations import MAX_TRIES, PendingTermination, termination_request
from .._exceptions import JournalError, TransferError
from .._io.resumable import send_termination
from .admission import merge_headers, provided_headers

if TYPE_CHECKING:
    import aiohttp

    from .journaling import TaskJournal

__all__ = ["TERMINATE_TIMEOUT", "Terminator"]

logger = logging.getLogger("bgtransfer")

TERMINATE_TIMEOUT = 10.0
"""Seconds a termination may take (without a ``request_timeout``)."""


class Terminator:
    """An engine's terminations; ``client`` is set once the engine is entered."""

    def __init__(self, *, config: Configuration, journal: TaskJournal | None) -> None:
        self.config = config
        self.journal = journal
        self.client: aiohttp.ClientSession | None = None

    @property
    def timeout(self) -> float:
        return self.config.request_timeout or TERMINATE_TIMEOUT

    async def terminate(self, pending: PendingTermination, headers: Mapping[str, str]) -> None:
        """A cancel's termination: journalled and committed, sent, forgotten
        once answered (a failure is logged at WARNING; without an answer it is
        left to the next open)."""
        journal = self.journal
        pending = attrs.evolve(pending, tries=pending.tries + 1)
        if journal is not None:
            journal.put_termination(pending)
            try:
                await journal.flush()
            except JournalError as exc:  # sent anyway: only its durability is lost
                logger.warning("task %d: %s", pending.task_id, exc)
        status = await self._send(pending, headers, level=logging.WARNING)
        if status is not None or pending.tries >= MAX_TRIES:
            self._forget(pending)

    async def recover(self, found: Sequence[PendingTermination]) -> None:
        """Send the terminations a previous process left (run in the background
        at open); failures are logged at DEBUG."""
        journal = self.journal
        if not found or journal is None:
            return
        due = []
        for pending in found:
            if pending.tries >= MAX_TRIES:
                self._forget(pending)
                continue
            pending = attrs.evolve(pending, tries=pending.tries + 1)  # noqa: PLW2901
            journal.put_termination(pending)
            due.append(pending)
        try:
            await journal.flush()  # the tries count before the requests go
        except JournalError as exc:
            logger.debug("pending terminations not recorded, not sent: %s", exc)
            return
        for pending in due:
            try:
                headers = await provided_headers(
                    self.config.headers_provider,
                    pending.url,
                    merge_headers(self.config.headers, pending.headers),
                )
            except TransferError as exc:
                logger.debug("task %d: %s", pending.task_id, exc)
                status = None
            else:
                status = await self._send(pending, headers, level=logging.DEBUG)
            if status is not None or pending.tries >= MAX_TRIES:
                self._forget(pending)

    def _forget(self, pending: PendingTermination) -> None:
        if self.journal is not None:
            self.journal.drop_termination(pending.task_id)

    async def _send(
        self, pending: PendingTermination, headers: Mapping[str, str], *, level: int
    ) -> int | None:
        """The server's answer's status, or None when there was none (logged)."""
        if self.client is None:
            return None
        shown = redacted_url(pending.upload_url)
        timeout = self.timeout
        try:
            with anyio.fail_after(timeout):
                status = await send_termination(
                    self.client,
                    termination_request(pending),
                    task_url=pending.url,
                    headers=headers,
                    request_timeout=timeout,
                )
        except (TransferError, TimeoutError) as exc:
            logger.log(
                level,
                "task %d: could not remove the upload %s (try %d of %d): %s",
                pending.task_id,
                shown,
                pending.tries,
                MAX_TRIES,
                exc,
            )
            return None
        if 200 <= status < 300 or status in (404, 410):
            logger.debug("task %d: removed the upload %s (HTTP %d)", pending.task_id, shown, status)
        else:
            logger.log(
                level,
                "task %d: the server answered HTTP %d to removing the upload %s",
                pending.task_id,
                status,
                shown,
            )
        return status
