"""The client's side of the credential hand-over: the daemon asks, the app's provider answers.

A daemon session opened with ``Configuration(auth=<provider>)`` keeps the
provider here, in the application's process (it cannot cross; the daemon only
learns that the application answers challenges). When a daemon task meets a
401, the attach stream brings a question (``{"type": "challenge", ...}``,
``_core/wire_auth.py``); :class:`Answerer` calls the provider with the task
and the parsed challenges, exactly as an in-process engine does (same
signature, async or not), and sends its answer back (``POST
.../challenges/{id}``). What the provider returns is judged by the daemon's
engine, as in-process: new credentials are tried once, None lets the 401
stand, a failure ends the task naming its type (never its message, which may
hold a secret, and which therefore does not cross).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any

from .._core.auth import AuthProvider, BasicAuth, BearerToken
from .._core.wire_auth import decode_question, encode_answer, failed_answer

if TYPE_CHECKING:
    from .attachment import Attachment

__all__ = ["Answerer"]

logger = logging.getLogger("bgtransfer")


class Answerer:
    """Answers the daemon's questions with ``provider``, one task per question."""

    def __init__(self, provider: AuthProvider) -> None:
        self._provider = provider
        self._link: Attachment | None = None
        self._working: set[asyncio.Task[None]] = set()

    def bind(self, link: Attachment) -> None:
        self._link = link

    def question(self, line: dict[str, Any]) -> None:
        """A question line of the attach stream (called by its reader)."""
        if self._link is None or self._link.closed:
            return
        task = asyncio.get_running_loop().create_task(self._answer(line))
        self._working.add(task)
        task.add_done_callback(self._working.discard)

    async def _answer(self, line: dict[str, Any]) -> None:
        assert self._link is not None
        try:
            question_id, info, challenges = decode_question(line)
        except (TypeError, ValueError) as exc:  # a daemon's bug: nothing to answer
            logger.warning("a question of the daemon was not understood: %s", exc)
            return
        try:
            result: object = self._provider(info, challenges)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            body = failed_answer("failed", type(exc).__name__)
        else:
            if result is None or isinstance(result, BasicAuth | BearerToken):
                body = encode_answer(result)
            else:
                body = failed_answer("returned", type(result).__name__)
        try:
            await self._link.send(f"/challenges/{question_id}", body)
        except KeyError:
            pass  # the task stopped waiting meanwhile (cancelled, suspended)
        except Exception as exc:  # the session is closing, or its daemon gone
            logger.debug("task %d: the answer to its challenge was not taken: %s", info.id, exc)

    async def close(self) -> None:
        """Stop answering (the session closes): providers still running are cancelled."""
        working = list(self._working)
        for task in working:
            task.cancel()
        if working:
            await asyncio.wait(working)
