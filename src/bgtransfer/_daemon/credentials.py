"""Credentials from the application: the daemon's side of the hand-over.

A session whose ``Configuration.auth`` is a provider keeps that provider in the
application's process; the daemon learns only that the application answers
challenges (``{"kind": "app"}``, :data:`~bgtransfer._core.auth.APP_ANSWERS`).
Its engine gets an :class:`AppCredentials` in its place: on a 401 a task asks
it, exactly where an in-process task asks its provider
(:class:`~bgtransfer._engine.auth.Authenticator`), having given its connection
slot back. The question waits here, visible (``bgtransfer status``: "waiting for
the app: credentials"), until the application answers it:

* a client attached with a provider gets each question on its attach stream
  (those already waiting at once when it attaches), calls its provider, and
  answers with a command (``POST .../challenges/{id}``);
* with no client attached, the session's launch controller is told that the
  application is needed (a launch, by the usual policy: coalesced, doubling
  delay), and the question waits for the application to come back.

An answer's credentials are handed to the engine (memory only) and never
logged; a task that stops waiting (cancelled, suspended, the session closing)
withdraws its question, and an answer to it is refused (``KeyError``: 404).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from .._core.auth import Credentials, ProviderFailed, TaskInfo
from .._core.challenge import Challenge
from .._core.wire_auth import Answer, encode_question
from .._engine.auth import AppProvider

__all__ = ["CREDENTIALS", "AppCredentials", "QuestionLines"]

log = logging.getLogger("bgtransfer.daemon")

CREDENTIALS = "credentials"  # what a task waiting here needs the application for


class _Question:
    __slots__ = ("future", "id", "line", "task_id")

    def __init__(self, question_id: int, line: dict[str, Any], task_id: int) -> None:
        self.id = question_id
        self.line = line
        self.task_id = task_id
        self.future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()


class AppCredentials(AppProvider):
    """One daemon session's questions to its application; see the module docstring.

    ``on_change(needed, answered)`` is told whether a task waits (and whether the
    application just answered one): the launch controller's input."""

    def __init__(self, identifier: str) -> None:
        self._identifier = identifier
        self._questions: dict[int, _Question] = {}
        self._waiting: collections.Counter[int] = collections.Counter()  # by task id
        self._next_id = 1
        self._listeners: set[QuestionLines] = set()
        self.on_change: Callable[[bool, bool], None] | None = None

    # -- what the engine asks ------------------------------------------------------

    async def ask(
        self, task: TaskInfo, challenges: tuple[Challenge, ...]
    ) -> Credentials | ProviderFailed | None:
        question = _Question(
            self._next_id, encode_question(self._next_id, task, challenges), task.id
        )
        self._next_id += 1
        self._questions[question.id] = question
        self._waiting[task.id] += 1
        log.info(
            "session %r: task %d waits for the app: credentials (%s)",
            self._identifier,
            task.id,
            ", ".join(c.scheme for c in challenges) or "no challenge",
        )
        for listener in self._listeners:
            listener.put(question)
        self._changed(answered=False)
        answered = False
        try:
            answer = await question.future
            answered = True
            return answer
        finally:
            del self._questions[question.id]
            self._waiting[task.id] -= 1
            if not self._waiting[task.id]:
                del self._waiting[task.id]
            self._changed(answered=answered)

    # -- what the daemon tells it --------------------------------------------------

    def answer(self, question_id: int, answer: Answer) -> None:
        """The application's answer to question ``question_id`` (``KeyError``:
        none such waits: answered already, or withdrawn)."""
        question = self._questions.get(question_id)
        if question is None or question.future.done():
            raise KeyError(
                f"session {self._identifier!r}: no question {question_id} waits for an "
                "answer (answered already, or its task stopped waiting)"
            )
        question.future.set_result(answer)

    def subscribe(self) -> QuestionLines:
        """The questions for an attached client: those waiting now, then each new one."""
        lines = QuestionLines(self._listeners, self._questions)
        for question in self._questions.values():
            lines.put(question)
        self._listeners.add(lines)
        return lines

    # -- what it shows -----------------------------------------------------------------

    def waiting_for(self, task_id: int) -> str | None:
        """What task ``task_id`` waits for the application for (None: nothing)."""
        return CREDENTIALS if task_id in self._waiting else None

    @property
    def waiting(self) -> int:
        """Tasks waiting for the application's credentials."""
        return len(self._waiting)

    def _changed(self, *, answered: bool) -> None:
        if self.on_change is not None:
            self.on_change(bool(self._questions), answered)


class QuestionLines:
    """An attach stream's question lines: an async iterator, ended by
    :meth:`aclose`. A question no longer waiting when its turn comes is
    skipped, and those are pruned as new ones come, so what it holds is
    bounded by the questions waiting (one per waiting task)."""

    def __init__(self, listeners: set[QuestionLines], waiting: dict[int, _Question]) -> None:
        self._listeners = listeners
        self._waiting = waiting
        self._queue: collections.deque[_Question] = collections.deque()
        self._wakeup = asyncio.Event()

    def put(self, question: _Question) -> None:
        if len(self._queue) > 2 * len(self._waiting) + 16:
            self._queue = collections.deque(q for q in self._queue if q.id in self._waiting)
        self._queue.append(question)
        self._wakeup.set()

    def __aiter__(self) -> QuestionLines:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            question = self._queue.popleft()
            if question.id in self._waiting and not question.future.done():
                return question.line

    async def aclose(self) -> None:
        self._listeners.discard(self)
        self._queue.clear()
