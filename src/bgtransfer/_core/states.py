"""The task state machine: every state, every input, every transition, in one table.

A task's public :class:`TaskState` follows ``NSURLSessionTaskState``. A task waiting
for a connection slot is ``RUNNING``: it has been started and will transfer as soon
as the supervisor lets it (the same as iOS). The table below is the only place that
decides which input is legal in which state; the docs' diagram is generated from it
(:func:`mermaid_diagram`) and a test keeps ``docs/design.md`` in step.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "TRANSITIONS",
    "Input",
    "InvalidTransition",
    "TaskState",
    "markdown_table",
    "mermaid_diagram",
    "transition",
]


class TaskState(enum.Enum):
    """Where a task is in its life (the ``NSURLSessionTaskState`` analog)."""

    RUNNING = "running"
    """Started: transferring, or queued for a connection slot."""
    SUSPENDED = "suspended"
    """Paused in place; holds no connection slot; ``resume()`` continues it."""
    CANCELING = "canceling"
    """``cancel()`` was called and the task is winding down."""
    COMPLETED = "completed"
    """Ended: finished, failed or cancelled. Its terminal event says which."""


class Input(enum.Enum):
    """What can happen to a task."""

    SUSPEND = "suspend"
    RESUME = "resume"
    CANCEL = "cancel"
    FINISH = "finish"  # the body arrived whole and the file is at its destination
    FAIL = "fail"  # a permanent error (or retries exhausted)
    CANCELLED = "cancelled"  # the cancellation took effect


_S, _I = TaskState, Input

TRANSITIONS: Final[Mapping[tuple[TaskState, Input], TaskState]] = MappingProxyType(
    {
        (_S.RUNNING, _I.SUSPEND): _S.SUSPENDED,
        (_S.RUNNING, _I.RESUME): _S.RUNNING,  # idempotent
        (_S.RUNNING, _I.CANCEL): _S.CANCELING,
        (_S.RUNNING, _I.FINISH): _S.COMPLETED,
        (_S.RUNNING, _I.FAIL): _S.COMPLETED,
        (_S.SUSPENDED, _I.SUSPEND): _S.SUSPENDED,  # idempotent
        (_S.SUSPENDED, _I.RESUME): _S.RUNNING,
        (_S.SUSPENDED, _I.CANCEL): _S.CANCELING,
        (_S.SUSPENDED, _I.FAIL): _S.COMPLETED,  # e.g. the partial file vanished
        (_S.SUSPENDED, _I.FINISH): _S.COMPLETED,  # suspend() lost a race with the finish
        (_S.CANCELING, _I.CANCEL): _S.CANCELING,  # idempotent
        (_S.CANCELING, _I.SUSPEND): _S.CANCELING,  # too late to pause: ignored
        (_S.CANCELING, _I.RESUME): _S.CANCELING,  # too late to resume: ignored
        (_S.CANCELING, _I.CANCELLED): _S.COMPLETED,
        # The transfer may complete in the instant between cancel() and the runner
        # noticing it; the file is whole and at its destination, so finishing wins.
        (_S.CANCELING, _I.FINISH): _S.COMPLETED,
        (_S.COMPLETED, _I.SUSPEND): _S.COMPLETED,  # ignored, like NSURLSessionTask
        (_S.COMPLETED, _I.RESUME): _S.COMPLETED,
        (_S.COMPLETED, _I.CANCEL): _S.COMPLETED,
    }
)
"""``(state, input) -> next state``. A pair that is absent is a bug in the caller."""


class InvalidTransition(RuntimeError):
    """The engine fed the state machine an input its state does not accept (an internal bug)."""


def transition(state: TaskState, event: Input) -> TaskState:
    """Return the state after ``event``; raise :class:`InvalidTransition` if it is illegal."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(
            f"{event.value!r} is not allowed in state {state.value!r}"
        ) from None


def mermaid_diagram() -> str:
    """The state diagram in Mermaid syntax, generated from :data:`TRANSITIONS`.

    Self-loops (the idempotent and ignored inputs) are left out to keep the picture
    readable; the table in ``docs/design.md`` lists them.
    """
    lines = ["stateDiagram-v2", "    [*] --> running: download()"]
    for (src, event), dst in TRANSITIONS.items():
        if src is not dst:
            lines.append(f"    {src.value} --> {dst.value}: {event.value}")
    lines.append("    completed --> [*]")
    return "\n".join(lines)


def markdown_table() -> str:
    """Every transition, self-loops included, as a Markdown table (for the docs)."""
    rows = ["| state | input | next state |", "|---|---|---|"]
    rows += [f"| {s.value} | {i.value} | {d.value} |" for (s, i), d in TRANSITIONS.items()]
    return "\n".join(rows)
