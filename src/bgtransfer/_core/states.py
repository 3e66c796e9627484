"""The task state machine: every state, every input, every transition, in one table.

A task's public :class:`TaskState` follows ``NSURLSessionTaskState``. A task waiting
for a connection slot is ``RUNNING``: it has been started and will transfer as soon
as the supervisor lets it (the same as iOS). The table below is the only place that
decides which input is legal in which state; the docs' diagram is generated from it
(:func:`mermaid_diagram`) and a test keeps ``docs/design.md`` in step.

The engine keeps finer states than the public four where it must remember more
to act right, and nowhere else: :class:`Stage` (a task's state as the engine
keeps it; :data:`PUBLIC` is what a task shows) under :data:`STAGES`, which
projects exactly onto :data:`TRANSITIONS`; :class:`MovePhase`, how far a
download's move into place has got, under :data:`MOVE_PHASES` (orthogonal to
the task's state: a move under way completes whatever the task is told); and
:class:`RunnerPhase`, whether a runner coroutine holds the task and whether a
command has told it to stop, under :data:`RUNNER_PHASES`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "FAILING",
    "MOVE_PHASES",
    "PUBLIC",
    "RUNNER_PHASES",
    "STAGES",
    "TRANSITIONS",
    "Input",
    "InvalidTransition",
    "MoveInput",
    "MovePhase",
    "RunnerInput",
    "RunnerPhase",
    "Signal",
    "Stage",
    "TaskState",
    "advance",
    "markdown_table",
    "mermaid_diagram",
    "move_diagram",
    "move_to",
    "runner_diagram",
    "runner_to",
    "stage_diagram",
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
    result: TaskState = _step(TRANSITIONS, state, event, "state")
    return result


def _step(table: Mapping[tuple[Any, Any], Any], now: Any, event: Any, what: str) -> Any:
    """``table[(now, event)]``, or :class:`InvalidTransition` naming ``what`` is at ``now``."""
    try:
        return table[(now, event)]
    except KeyError:
        raise InvalidTransition(f"{event.value!r} is not allowed in {what} {now.value!r}") from None


def mermaid_diagram() -> str:
    """The state diagram in Mermaid syntax, generated from :data:`TRANSITIONS`.

    Self-loops (the idempotent and ignored inputs) are left out to keep the picture
    readable; the table in ``docs/design.md`` lists them.
    """
    return _diagram(TRANSITIONS, start="running: download()", end="completed")


def _diagram(table: Mapping[tuple[Any, Any], Any], *, start: str, end: str) -> str:
    """``table`` in Mermaid syntax, self-loops left out."""
    lines = ["stateDiagram-v2", f"    [*] --> {start}"]
    for (src, event), dst in table.items():
        if src is not dst:
            lines.append(f"    {src.value} --> {dst.value}: {event.value}")
    lines.append(f"    {end} --> [*]")
    return "\n".join(lines)


def markdown_table() -> str:
    """Every transition, self-loops included, as a Markdown table (for the docs)."""
    rows = ["| state | input | next state |", "|---|---|---|"]
    rows += [f"| {s.value} | {i.value} | {d.value} |" for (s, i), d in TRANSITIONS.items()]
    return "\n".join(rows)


# -- the engine's states ---------------------------------------------------------------


class Stage(enum.Enum):
    """A task's state as the engine keeps it: the public states, with
    ``CANCELING`` told apart by what the cancel asked for."""

    RUNNING = "running"
    SUSPENDED = "suspended"
    CANCELING = "canceling"
    """``cancel()``: the task's work (a partial file) goes with it."""
    CANCELING_KEEPING = "canceling_keeping"
    """``cancel_with_resume_data()``: the work is kept for the resume data."""
    FAILING = "failing"
    """The journal cannot record the task: it ends with that error (its
    runner ends it, or the engine soon if it has none). Shows ``running``."""
    FAILING_SUSPENDED = "failing_suspended"
    """:attr:`FAILING`, suspended meanwhile (or before): shows ``suspended``."""
    COMPLETED = "completed"


class Signal(enum.Enum):
    """Inputs only the engine's stages tell apart from the public ones."""

    CANCEL_KEEPING = "cancel_keeping"  # cancel_with_resume_data()
    JOURNAL_FAILED = "journal_failed"  # the journal cannot record the task


PUBLIC: Final[Mapping[Stage, TaskState]] = MappingProxyType(
    {
        Stage.RUNNING: TaskState.RUNNING,
        Stage.SUSPENDED: TaskState.SUSPENDED,
        Stage.CANCELING: TaskState.CANCELING,
        Stage.CANCELING_KEEPING: TaskState.CANCELING,
        Stage.FAILING: TaskState.RUNNING,
        Stage.FAILING_SUSPENDED: TaskState.SUSPENDED,
        Stage.COMPLETED: TaskState.COMPLETED,
    }
)
"""What a task in each stage shows (``task.state``)."""

FAILING: Final = frozenset({Stage.FAILING, Stage.FAILING_SUSPENDED})
"""The stages of a task that ends with the journal's error (unless cancelled first)."""

_G, _K = Stage, Signal

STAGES: Final[Mapping[tuple[Stage, Input | Signal], Stage]] = MappingProxyType(
    {
        (_G.RUNNING, _I.SUSPEND): _G.SUSPENDED,
        (_G.RUNNING, _I.RESUME): _G.RUNNING,
        (_G.RUNNING, _I.CANCEL): _G.CANCELING,
        (_G.RUNNING, _K.CANCEL_KEEPING): _G.CANCELING_KEEPING,
        (_G.RUNNING, _I.FINISH): _G.COMPLETED,
        (_G.RUNNING, _I.FAIL): _G.COMPLETED,
        (_G.RUNNING, _K.JOURNAL_FAILED): _G.FAILING,
        (_G.SUSPENDED, _I.SUSPEND): _G.SUSPENDED,
        (_G.SUSPENDED, _I.RESUME): _G.RUNNING,
        (_G.SUSPENDED, _I.CANCEL): _G.CANCELING,
        (_G.SUSPENDED, _K.CANCEL_KEEPING): _G.CANCELING_KEEPING,
        (_G.SUSPENDED, _I.FAIL): _G.COMPLETED,
        (_G.SUSPENDED, _I.FINISH): _G.COMPLETED,
        (_G.SUSPENDED, _K.JOURNAL_FAILED): _G.FAILING_SUSPENDED,
        (_G.CANCELING, _I.CANCEL): _G.CANCELING,
        (_G.CANCELING, _K.CANCEL_KEEPING): _G.CANCELING,  # the first cancel decided
        (_G.CANCELING, _I.SUSPEND): _G.CANCELING,
        (_G.CANCELING, _I.RESUME): _G.CANCELING,
        (_G.CANCELING, _I.CANCELLED): _G.COMPLETED,
        (_G.CANCELING, _I.FINISH): _G.COMPLETED,
        (_G.CANCELING, _K.JOURNAL_FAILED): _G.CANCELING,  # the cancel decided
        (_G.CANCELING_KEEPING, _I.CANCEL): _G.CANCELING_KEEPING,  # the first cancel decided
        (_G.CANCELING_KEEPING, _K.CANCEL_KEEPING): _G.CANCELING_KEEPING,
        (_G.CANCELING_KEEPING, _I.SUSPEND): _G.CANCELING_KEEPING,
        (_G.CANCELING_KEEPING, _I.RESUME): _G.CANCELING_KEEPING,
        (_G.CANCELING_KEEPING, _I.CANCELLED): _G.COMPLETED,
        (_G.CANCELING_KEEPING, _I.FINISH): _G.COMPLETED,
        (_G.CANCELING_KEEPING, _K.JOURNAL_FAILED): _G.CANCELING_KEEPING,
        # Failing: commands move it as they move a running (suspended) task, a
        # cancel still wins; whatever else it ends with the journal's error (or
        # finishes, if its file was already placed).
        (_G.FAILING, _I.SUSPEND): _G.FAILING_SUSPENDED,
        (_G.FAILING, _I.RESUME): _G.FAILING,
        (_G.FAILING, _I.CANCEL): _G.CANCELING,
        (_G.FAILING, _K.CANCEL_KEEPING): _G.CANCELING_KEEPING,
        (_G.FAILING, _I.FINISH): _G.COMPLETED,
        (_G.FAILING, _I.FAIL): _G.COMPLETED,
        (_G.FAILING, _K.JOURNAL_FAILED): _G.FAILING,
        (_G.FAILING_SUSPENDED, _I.SUSPEND): _G.FAILING_SUSPENDED,
        (_G.FAILING_SUSPENDED, _I.RESUME): _G.FAILING,
        (_G.FAILING_SUSPENDED, _I.CANCEL): _G.CANCELING,
        (_G.FAILING_SUSPENDED, _K.CANCEL_KEEPING): _G.CANCELING_KEEPING,
        (_G.FAILING_SUSPENDED, _I.FINISH): _G.COMPLETED,
        (_G.FAILING_SUSPENDED, _I.FAIL): _G.COMPLETED,
        (_G.FAILING_SUSPENDED, _K.JOURNAL_FAILED): _G.FAILING_SUSPENDED,
        (_G.COMPLETED, _I.SUSPEND): _G.COMPLETED,
        (_G.COMPLETED, _I.RESUME): _G.COMPLETED,
        (_G.COMPLETED, _I.CANCEL): _G.COMPLETED,
        (_G.COMPLETED, _K.CANCEL_KEEPING): _G.COMPLETED,
    }
)
"""``(stage, input) -> next stage``: :data:`TRANSITIONS` refined (``PUBLIC``
maps each row onto one of its rows, ``CANCEL_KEEPING`` read as ``CANCEL``;
``JOURNAL_FAILED``, which no public input stands for, is taken by every stage
but ``COMPLETED`` and never changes what a task shows)."""


def advance(stage: Stage, event: Input | Signal) -> Stage:
    """The stage after ``event``; raise :class:`InvalidTransition` if it is illegal."""
    result: Stage = _step(STAGES, stage, event, "stage")
    return result


class MovePhase(enum.Enum):
    """How far a download's move into place has got (whatever the task's state:
    a move under way is shielded, and completes)."""

    TRANSFERRING = "transferring"  # the body is not whole yet
    MOVING = "moving"  # whole (or its last write under way): the move is committed to
    MOVED = "moved"  # at its destination: the task has finished, whatever comes next


class MoveInput(enum.Enum):
    """What moves a download's :class:`MovePhase`."""

    ATTEMPT = "attempt"  # an attempt starts: whatever was said before, it transfers
    WHOLE = "whole"  # the move into place starts (the journal learns it first)
    PLACED = "placed"  # the file is at its destination


_M, _MI = MovePhase, MoveInput

MOVE_PHASES: Final[Mapping[tuple[MovePhase, MoveInput], MovePhase]] = MappingProxyType(
    {
        (_M.TRANSFERRING, _MI.ATTEMPT): _M.TRANSFERRING,
        (_M.TRANSFERRING, _MI.WHOLE): _M.MOVING,
        (_M.MOVING, _MI.ATTEMPT): _M.TRANSFERRING,  # the last write failed: retried
        (_M.MOVING, _MI.WHOLE): _M.MOVING,
        (_M.MOVING, _MI.PLACED): _M.MOVED,
    }
)
"""``(phase, input) -> next phase``; ``MOVED`` accepts nothing (the task has finished)."""


def move_to(phase: MovePhase, event: MoveInput) -> MovePhase:
    """The phase after ``event``; raise :class:`InvalidTransition` if it is illegal."""
    result: MovePhase = _step(MOVE_PHASES, phase, event, "move phase")
    return result


class RunnerPhase(enum.Enum):
    """Whether a runner coroutine holds a task (orthogonal to its stage: a
    suspended or cancelled task keeps its runner until the runner has wound down)."""

    IDLE = "idle"  # no runner: queued, suspended, or ended
    GRANTED = "granted"  # a slot was granted: a runner was spawned or handed the task
    ACTIVE = "active"  # the runner runs the job in its cancel scope
    STOPPING = "stopping"  # a command (or the engine going down) told it to stop


class RunnerInput(enum.Enum):
    """What moves a task's :class:`RunnerPhase`."""

    GRANT = "grant"  # the supervisor granted the task a slot
    ENTER = "enter"  # the runner entered its cancel scope
    INTERRUPT = "interrupt"  # stop the run (suspend, cancel, a journal failure, closing)
    STOP = "stop"  # the runner has wound down (its slot released)


_R, _RI = RunnerPhase, RunnerInput

RUNNER_PHASES: Final[Mapping[tuple[RunnerPhase, RunnerInput], RunnerPhase]] = MappingProxyType(
    {
        (_R.IDLE, _RI.GRANT): _R.GRANTED,
        # Spawned but not in its scope yet: it reads the stage when it enters.
        (_R.GRANTED, _RI.INTERRUPT): _R.GRANTED,
        (_R.GRANTED, _RI.ENTER): _R.ACTIVE,
        (_R.ACTIVE, _RI.INTERRUPT): _R.STOPPING,
        (_R.ACTIVE, _RI.STOP): _R.IDLE,
        (_R.STOPPING, _RI.INTERRUPT): _R.STOPPING,
        (_R.STOPPING, _RI.STOP): _R.IDLE,
    }
)
"""``(phase, input) -> next phase``. A runner that stops in ``STOPPING`` with its
task's stage back at ``RUNNING`` was suspended and resumed while winding down:
the task queues again. One that stops ``ACTIVE`` with no outcome was stopped
from outside (the session's host cancelled): the engine is going down."""


def runner_to(phase: RunnerPhase, event: RunnerInput) -> RunnerPhase:
    """The runner phase after ``event``; raise :class:`InvalidTransition` if it is illegal."""
    result: RunnerPhase = _step(RUNNER_PHASES, phase, event, "runner phase")
    return result


def runner_diagram() -> str:
    """A task's runner phases in Mermaid syntax, from :data:`RUNNER_PHASES`."""
    return _diagram(RUNNER_PHASES, start="idle", end="idle")


def stage_diagram() -> str:
    """The engine's stages in Mermaid syntax (self-loops left out), from :data:`STAGES`."""
    return _diagram(STAGES, start="running: download()", end="completed")


def move_diagram() -> str:
    """A download's move phases in Mermaid syntax, from :data:`MOVE_PHASES`."""
    return _diagram(MOVE_PHASES, start="transferring", end="moved")
