"""The task state machine: every (state, input) pair, the diagram, absorbing COMPLETED."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bgtransfer._core.states import (
    TRANSITIONS,
    Input,
    InvalidTransition,
    TaskState,
    mermaid_diagram,
    transition,
)

S, In = TaskState, Input

# The documented table, written out independently of the implementation.
EXPECTED: dict[tuple[TaskState, Input], TaskState] = {
    (S.RUNNING, In.SUSPEND): S.SUSPENDED,
    (S.RUNNING, In.RESUME): S.RUNNING,
    (S.RUNNING, In.CANCEL): S.CANCELING,
    (S.RUNNING, In.FINISH): S.COMPLETED,
    (S.RUNNING, In.FAIL): S.COMPLETED,
    (S.SUSPENDED, In.SUSPEND): S.SUSPENDED,
    (S.SUSPENDED, In.RESUME): S.RUNNING,
    (S.SUSPENDED, In.CANCEL): S.CANCELING,
    (S.SUSPENDED, In.FAIL): S.COMPLETED,
    (S.SUSPENDED, In.FINISH): S.COMPLETED,
    (S.CANCELING, In.CANCEL): S.CANCELING,
    (S.CANCELING, In.SUSPEND): S.CANCELING,
    (S.CANCELING, In.RESUME): S.CANCELING,
    (S.CANCELING, In.CANCELLED): S.COMPLETED,
    (S.CANCELING, In.FINISH): S.COMPLETED,
    (S.COMPLETED, In.SUSPEND): S.COMPLETED,
    (S.COMPLETED, In.RESUME): S.COMPLETED,
    (S.COMPLETED, In.CANCEL): S.COMPLETED,
}

ALL_PAIRS = list(itertools.product(TaskState, Input))
LEGAL = [pair for pair in ALL_PAIRS if pair in EXPECTED]
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in EXPECTED]


def _id(pair: tuple[TaskState, Input]) -> str:
    return f"{pair[0].value}-{pair[1].value}"


def test_enum_members_are_the_documented_ones() -> None:
    assert [s.value for s in TaskState] == ["running", "suspended", "canceling", "completed"]
    assert [i.value for i in Input] == [
        "suspend",
        "resume",
        "cancel",
        "finish",
        "fail",
        "cancelled",
    ]


def test_table_is_exactly_the_documented_one() -> None:
    assert dict(TRANSITIONS) == EXPECTED


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[(S.RUNNING, In.CANCELLED)] = S.COMPLETED  # type: ignore[index]


def test_product_is_fully_classified() -> None:
    assert len(ALL_PAIRS) == 24
    assert len(LEGAL) + len(ILLEGAL) == 24
    assert len(LEGAL) == 18


@pytest.mark.parametrize("pair", LEGAL, ids=_id)
def test_legal_pair_gives_documented_state(pair: tuple[TaskState, Input]) -> None:
    state, event = pair
    assert transition(state, event) is EXPECTED[pair]


@pytest.mark.parametrize("pair", ILLEGAL, ids=_id)
def test_illegal_pair_raises_invalid_transition(pair: tuple[TaskState, Input]) -> None:
    state, event = pair
    with pytest.raises(InvalidTransition) as info:
        transition(state, event)
    message = str(info.value)
    assert repr(event.value) in message
    assert repr(state.value) in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


def test_invalid_transition_is_a_runtime_error() -> None:
    assert issubclass(InvalidTransition, RuntimeError)


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.RUNNING, In.RESUME),
        (S.SUSPENDED, In.SUSPEND),
        (S.CANCELING, In.CANCEL),
        (S.CANCELING, In.SUSPEND),
        (S.CANCELING, In.RESUME),
        (S.COMPLETED, In.SUSPEND),
        (S.COMPLETED, In.RESUME),
        (S.COMPLETED, In.CANCEL),
    ],
)
def test_idempotent_or_ignored_inputs_leave_state_unchanged(state: TaskState, event: Input) -> None:
    assert transition(state, event) is state
    # applying it again is still a no-op
    assert transition(transition(state, event), event) is state


@pytest.mark.parametrize("event", list(Input), ids=lambda e: e.value)
def test_completed_is_absorbing(event: Input) -> None:
    try:
        after = transition(S.COMPLETED, event)
    except InvalidTransition:
        assert event in (In.FINISH, In.FAIL, In.CANCELLED)
    else:
        assert after is S.COMPLETED


def test_no_transition_leaves_completed() -> None:
    assert all(dst is S.COMPLETED for (src, _), dst in TRANSITIONS.items() if src is S.COMPLETED)


def test_terminal_inputs_never_accepted_twice() -> None:
    # After a terminal input the state is COMPLETED, which accepts no terminal input.
    for state, event in LEGAL:
        if event in (In.FINISH, In.FAIL, In.CANCELLED):
            done = transition(state, event)
            for again in (In.FINISH, In.FAIL, In.CANCELLED):
                with pytest.raises(InvalidTransition):
                    transition(done, again)


def test_cancel_is_accepted_in_every_state() -> None:
    for state in TaskState:
        assert transition(state, In.CANCEL) in (S.CANCELING, S.COMPLETED)


def test_every_state_reaches_completed() -> None:
    reachable = {S.COMPLETED}
    changed = True
    while changed:
        changed = False
        for (src, _), dst in TRANSITIONS.items():
            if dst in reachable and src not in reachable:
                reachable.add(src)
                changed = True
    assert reachable == set(TaskState)


# -- the Mermaid diagram --------------------------------------------------------------------------


def _edge(src: TaskState, event: Input, dst: TaskState) -> str:
    return f"    {src.value} --> {dst.value}: {event.value}"


def test_diagram_header_and_entry_and_exit() -> None:
    lines = mermaid_diagram().splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> running: download()" in lines
    assert lines[-1] == "    completed --> [*]"


@pytest.mark.parametrize("pair", [p for p in LEGAL if EXPECTED[p] is not p[0]], ids=_id)
def test_diagram_contains_every_non_self_loop_edge(pair: tuple[TaskState, Input]) -> None:
    state, event = pair
    assert _edge(state, event, EXPECTED[pair]) in mermaid_diagram().splitlines()


def test_diagram_contains_no_self_loop() -> None:
    for line in mermaid_diagram().splitlines():
        if "-->" not in line:
            continue
        src, rest = line.strip().split(" --> ", 1)
        dst = rest.split(":", 1)[0]
        assert src != dst, line


def test_diagram_edge_count() -> None:
    edges = [line for line in mermaid_diagram().splitlines() if "-->" in line]
    non_self = [p for p in LEGAL if EXPECTED[p] is not p[0]]
    assert len(edges) == len(non_self) + 2  # + entry and exit
    assert len(set(edges)) == len(edges)


# -- docs/design.md stays in step with the table --------------------------------------------------

_DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"
_BEGIN, _END = "<!-- BEGIN GENERATED STATE DIAGRAM -->", "<!-- END GENERATED STATE DIAGRAM -->"


def _generated_block() -> str:
    text = _DESIGN.read_text(encoding="utf-8")
    assert _BEGIN in text
    assert _END in text
    return text.split(_BEGIN, 1)[1].split(_END, 1)[0]


def test_design_doc_diagram_matches_mermaid_diagram() -> None:
    block = _generated_block()
    fenced = block.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    assert fenced == mermaid_diagram()


def test_design_doc_table_matches_transitions() -> None:
    rows = [
        line
        for line in _generated_block().splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    assert rows[0] == "| state | input | next state |"
    table = {}
    for row in rows[1:]:
        state, event, dst = (cell.strip() for cell in row.strip("|").split("|"))
        table[(TaskState(state), Input(event))] = TaskState(dst)
    assert table == dict(TRANSITIONS)
    assert len(rows) - 1 == len(TRANSITIONS)
