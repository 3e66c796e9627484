"""The engine's own states: ``STAGES`` refines the public table, ``MOVE_PHASES`` a download's move.

Every flag that drove the engine beside the table (a cancel that keeps resume
data, a move into place under way or done) is a state of one of these tables;
the public table (``TRANSITIONS``) stays what ``task.state`` follows.
"""

from __future__ import annotations

import itertools

import pytest

from bgtransfer._core.states import (
    FAILING,
    MOVE_PHASES,
    PUBLIC,
    RUNNER_PHASES,
    STAGES,
    TRANSITIONS,
    Input,
    InvalidTransition,
    MoveInput,
    MovePhase,
    RunnerInput,
    RunnerPhase,
    Signal,
    Stage,
    TaskState,
    advance,
    move_diagram,
    move_to,
    runner_diagram,
    runner_to,
    stage_diagram,
)

G, In, K = Stage, Input, Signal
EVENTS: list[Input | Signal] = [*Input, *Signal]


def _public(event: Input | Signal) -> Input | None:
    """The public input an engine input stands for (None: none, it keeps the state)."""
    if event is K.JOURNAL_FAILED:
        return None
    return In.CANCEL if event is K.CANCEL_KEEPING else event


def test_every_public_state_has_a_stage_and_back() -> None:
    assert set(PUBLIC.values()) == set(TaskState)
    for state in TaskState:
        assert PUBLIC[Stage[state.name]] is state
    assert [stage for stage in Stage if PUBLIC[stage] is TaskState.CANCELING] == [
        G.CANCELING,
        G.CANCELING_KEEPING,
    ]


@pytest.mark.parametrize(
    ("stage", "event"), list(itertools.product(Stage, EVENTS)), ids=lambda v: v.value
)
def test_stages_project_exactly_onto_the_public_table(stage: Stage, event: Input | Signal) -> None:
    """A stage accepts an input exactly when its public state does (a cancel
    keeping resume data as a cancel), and lands where the public table says."""
    if _public(event) is None:
        return  # test_a_journal_failure_keeps_what_a_task_shows
    public = (PUBLIC[stage], _public(event))
    assert ((stage, event) in STAGES) == (public in TRANSITIONS)
    if public in TRANSITIONS:
        assert PUBLIC[advance(stage, event)] is TRANSITIONS[public]
    else:
        with pytest.raises(InvalidTransition, match=repr(stage.value)):
            advance(stage, event)


@pytest.mark.parametrize("stage", list(Stage), ids=lambda v: v.value)
def test_a_journal_failure_keeps_what_a_task_shows(stage: Stage) -> None:
    """Every stage but ``completed`` takes it; a running or suspended task is
    failing from then on (a canceling one stays canceling: the cancel decided),
    and shows what it showed."""
    if stage is G.COMPLETED:
        with pytest.raises(InvalidTransition, match="'journal_failed' is not allowed"):
            advance(stage, K.JOURNAL_FAILED)
        return
    after = advance(stage, K.JOURNAL_FAILED)
    assert PUBLIC[after] is PUBLIC[stage]
    assert (after in FAILING) == (PUBLIC[stage] in (TaskState.RUNNING, TaskState.SUSPENDED))


def test_a_failing_task_ends_with_the_error_unless_cancelled() -> None:
    """Commands move a failing task as they move a running one, but it never
    gets back to ``running``: only a cancel (or a file already placed) ends it
    otherwise than with the journal's error."""
    for stage in FAILING:
        successors = {dst for (src, _), dst in STAGES.items() if src is stage}
        assert successors == {*FAILING, G.CANCELING, G.CANCELING_KEEPING, G.COMPLETED}
    assert advance(G.FAILING, In.SUSPEND) is G.FAILING_SUSPENDED
    assert advance(G.FAILING_SUSPENDED, In.RESUME) is G.FAILING


def test_a_cancel_keeps_resume_data_only_when_it_asked() -> None:
    for stage in (G.RUNNING, G.SUSPENDED):
        assert advance(stage, In.CANCEL) is G.CANCELING
        assert advance(stage, K.CANCEL_KEEPING) is G.CANCELING_KEEPING


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.value)
def test_the_first_cancel_decides(event: Input | Signal) -> None:
    for stage in (G.CANCELING, G.CANCELING_KEEPING):
        if (stage, event) in STAGES and event not in (In.CANCELLED, In.FINISH):
            assert advance(stage, event) is stage


def test_completed_is_absorbing_and_every_stage_reaches_it() -> None:
    assert all(dst is G.COMPLETED for (src, _), dst in STAGES.items() if src is G.COMPLETED)
    reachable = {G.COMPLETED}
    for _ in Stage:
        reachable |= {src for (src, _), dst in STAGES.items() if dst in reachable}
    assert reachable == set(Stage)


def test_move_phases() -> None:
    """A move goes forward once the body is whole, back only when an attempt
    starts again before it was placed, and a placed file is final."""
    assert dict(MOVE_PHASES) == {
        (MovePhase.TRANSFERRING, MoveInput.ATTEMPT): MovePhase.TRANSFERRING,
        (MovePhase.TRANSFERRING, MoveInput.WHOLE): MovePhase.MOVING,
        (MovePhase.MOVING, MoveInput.ATTEMPT): MovePhase.TRANSFERRING,
        (MovePhase.MOVING, MoveInput.WHOLE): MovePhase.MOVING,
        (MovePhase.MOVING, MoveInput.PLACED): MovePhase.MOVED,
    }
    for event in MoveInput:
        with pytest.raises(InvalidTransition, match="'moved'"):
            move_to(MovePhase.MOVED, event)
    with pytest.raises(InvalidTransition):
        move_to(MovePhase.TRANSFERRING, MoveInput.PLACED)  # never placed before whole


def test_runner_phases() -> None:
    """A runner is granted, enters its scope, may be told to stop, and stops;
    a runner told to stop before it entered reads the stage when it enters."""
    R, RI = RunnerPhase, RunnerInput
    assert dict(RUNNER_PHASES) == {
        (R.IDLE, RI.GRANT): R.GRANTED,
        (R.GRANTED, RI.INTERRUPT): R.GRANTED,
        (R.GRANTED, RI.ENTER): R.ACTIVE,
        (R.ACTIVE, RI.INTERRUPT): R.STOPPING,
        (R.ACTIVE, RI.STOP): R.IDLE,
        (R.STOPPING, RI.INTERRUPT): R.STOPPING,
        (R.STOPPING, RI.STOP): R.IDLE,
    }
    for phase, event in itertools.product(RunnerPhase, RunnerInput):
        if (phase, event) not in RUNNER_PHASES:
            with pytest.raises(InvalidTransition, match=f"runner phase {phase.value!r}"):
                runner_to(phase, event)


def test_diagrams_are_generated_from_the_tables() -> None:
    stages = stage_diagram().splitlines()
    assert "    running --> canceling_keeping: cancel_keeping" in stages
    assert len([line for line in stages if "-->" in line]) == 2 + sum(
        src is not dst for (src, _), dst in STAGES.items()
    )
    runners = runner_diagram().splitlines()
    assert "    stopping --> idle: stop" in runners
    assert len([line for line in runners if "-->" in line]) == 2 + sum(
        src is not dst for (src, _), dst in RUNNER_PHASES.items()
    )
    moves = move_diagram().splitlines()
    assert "    moving --> moved: placed" in moves
    assert len([line for line in moves if "-->" in line]) == 2 + sum(
        src is not dst for (src, _), dst in MOVE_PHASES.items()
    )
