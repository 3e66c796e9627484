"""The journal's records without the database shell: rows, schema, and the reattach rule."""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest

from bgtransfer import (
    CancelledEvent,
    ErrorEvent,
    FinishedEvent,
    HTTPStatusError,
    LocalFileError,
    ResumeData,
    TaskState,
)
from bgtransfer._core.codec import encode_terminal
from bgtransfer._core.digests import Checksum, Integrity
from bgtransfer._core.events import TerminalEvent
from bgtransfer._core.journal import (
    COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    SECRET_HEADERS,
    CorruptEntry,
    FileIdentity,
    FinalWrite,
    Phase,
    TaskEntry,
    entry_from_row,
    entry_to_row,
    public_headers,
    scrubbed_fields,
)
from bgtransfer._core.reattach import Action, Reattach, ending, plan_reattach
from bgtransfer._core.secrets import SecretHeaders
from bgtransfer._core.states import PUBLIC, Stage, advance

URL = "https://example.com/d\u00e9j\u00e0/file.bin?x=1"
DESTINATION = "/home/u/T\u00e9l\u00e9chargements/file.bin"
PARTIAL = "/state/s/partials/7.part"
HEADERS = (("User-Agent", "demo/1.0"), ("X-Empty", ""), ("Accept", "*/*"))
SECRETS = (
    ("Authorization", "Bearer s3cret-token"),
    ("proxy-authorization", "Basic s3cret-proxy"),
    ("COOKIE", "id=s3cret-cookie"),
    ("CoOkIe", "other=s3cret-cookie2"),
)
RESUME = ResumeData(
    url=URL,
    partial=PARTIAL,
    offset=40,
    validator='"v1"',
    total=1000,
    destination=DESTINATION,
    headers=HEADERS,
)
OUTCOMES: list[TerminalEvent] = [
    FinishedEvent(task_id=7, location=Path(DESTINATION), total_bytes=1000),
    ErrorEvent(task_id=7, error=HTTPStatusError(404, "Not Found", url=URL, retry_after="5")),
    CancelledEvent(task_id=7),
    CancelledEvent(task_id=7, resume_data=RESUME),
    # Out of space after resumable bytes: the error carries resume data.
    ErrorEvent(
        task_id=7,
        error=LocalFileError("no space left on device", url=URL, errno=28, filename=PARTIAL),
        resume_data=RESUME,
    ),
]


def _entry(phase: Phase = Phase.RUNNING, **changes: Any) -> TaskEntry:
    fields: dict[str, Any] = {
        "id": 7,
        "url": URL,
        "destination": DESTINATION,
        "description": "the \U0001f4e6 file",
        "headers": HEADERS,
        "phase": phase,
        "keep_partial": False,
        "offset": 100,
        "total": 1000,
        "validator": '"v1"',
        "encoding": "gzip",
        "outcome": OUTCOMES[0] if phase is Phase.ENDED else None,
    }
    fields.update(changes)
    if fields["outcome"] is not None:  # an outcome always belongs to its entry's task
        fields["outcome"] = attrs.evolve(fields["outcome"], task_id=fields["id"])
    return TaskEntry(**fields)


def _comparable(entry: TaskEntry) -> tuple[TaskEntry, object]:
    """Errors compare by identity: compare outcomes through their encoded form."""
    outcome = entry.outcome
    return (
        attrs.evolve(entry, outcome=None),
        None if outcome is None else (outcome.task_id, encode_terminal(outcome)),
    )


def _row(**changes: Any) -> list[Any]:
    """The row of the RUNNING entry, with columns changed."""
    values = dict(zip(COLUMNS, entry_to_row(_entry()), strict=True))
    values.update(changes)
    return [values[name] for name in COLUMNS]


def _corrupt(row: list[Any]) -> str:
    with pytest.raises(CorruptEntry) as info:
        entry_from_row(row)
    return str(info.value)


# -- schema ----------------------------------------------------------------------------------------


def test_schema_version_is_the_number_of_migrations() -> None:
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 1
    assert all(isinstance(step, tuple) and step for step in MIGRATIONS)
    assert all(isinstance(statement, str) for step in MIGRATIONS for statement in step)


def _migrated() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    for step in MIGRATIONS:
        for statement in step:
            connection.execute(statement)
    return connection


def test_migrations_make_the_tasks_table_with_exactly_the_columns() -> None:
    connection = _migrated()
    try:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(tasks)")]
        assert tuple(columns) == COLUMNS
        assert connection.execute("SELECT key, value FROM meta").fetchall() == [
            ("next_id", "1"),
            ("log_earliest", "0"),
        ]
    finally:
        connection.close()


def test_rows_survive_the_real_schema() -> None:
    connection = _migrated()
    try:
        entries = [_entry(phase, id=n + 1) for n, phase in enumerate(Phase)]
        entries += [
            _entry(Phase.ENDED, id=10 + n, outcome=outcome) for n, outcome in enumerate(OUTCOMES)
        ]
        entries += [
            _entry(Phase.MOVING, id=20 + n, final_write=FinalWrite(size=1000, replaces=replaces))
            for n, replaces in enumerate([None, (2049, 2**40, 5, 2**62)])
        ]
        placeholders = ", ".join("?" for _ in COLUMNS)
        connection.executemany(
            f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({placeholders})",
            [entry_to_row(entry) for entry in entries],
        )
        rows = connection.execute(f"SELECT {', '.join(COLUMNS)} FROM tasks ORDER BY id").fetchall()
        assert [_comparable(entry_from_row(row)) for row in rows] == [
            _comparable(entry) for entry in entries
        ]
    finally:
        connection.close()


# -- rows ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", list(Phase), ids=lambda phase: phase.name)
def test_round_trip_every_phase(phase: Phase) -> None:
    entry = _entry(phase, keep_partial=phase is Phase.CANCELING)
    row = entry_to_row(entry)
    assert len(row) == len(COLUMNS)
    assert row[COLUMNS.index("phase")] == phase.value
    assert _comparable(entry_from_row(row)) == _comparable(entry)


@pytest.mark.parametrize(
    "outcome", OUTCOMES, ids=["finished", "error", "cancelled", "resumable", "full-disk"]
)
def test_round_trip_every_outcome(outcome: TerminalEvent) -> None:
    entry = _entry(Phase.ENDED, outcome=outcome)
    back = entry_from_row(entry_to_row(entry))
    assert _comparable(back) == _comparable(entry)
    if isinstance(outcome, ErrorEvent) and outcome.resume_data is not None:
        assert isinstance(back.outcome, ErrorEvent)
        assert type(back.outcome.error) is LocalFileError
        assert back.outcome.error.errno == 28
        assert back.outcome.resume_data == outcome.resume_data
    elif isinstance(outcome, ErrorEvent):
        assert isinstance(back.outcome, ErrorEvent)
        assert type(back.outcome.error) is HTTPStatusError
        assert back.outcome.error.status == 404
        assert back.outcome.error.retry_after == "5"


def test_round_trip_minimal_entry() -> None:
    entry = TaskEntry(
        id=1, url="http://h/f", destination="/f", description=None, headers=(), phase=Phase.RUNNING
    )
    back = entry_from_row(entry_to_row(entry))
    assert back == entry
    assert back.offset == 0
    assert back.total is None
    assert back.validator is None
    assert back.encoding == "identity"
    assert back.keep_partial is False


def test_round_trip_keep_partial_and_big_numbers() -> None:
    entry = _entry(Phase.CANCELING, keep_partial=True, offset=2**62, total=2**63 - 1)
    assert entry_from_row(entry_to_row(entry)) == entry


def test_row_types_are_sqlite_types() -> None:
    row = entry_to_row(_entry(Phase.ENDED, keep_partial=True))
    assert all(value is None or type(value) in (int, str) for value in row)
    values = dict(zip(COLUMNS, row, strict=True))
    assert values["keep_partial"] == 1
    assert json.loads(values["headers"]) == [list(pair) for pair in HEADERS]
    assert json.loads(values["outcome"]) == encode_terminal(OUTCOMES[0])


def test_secret_headers_never_reach_the_row() -> None:
    entry = _entry(headers=(SECRETS[0], *HEADERS[:2], *SECRETS[1:], HEADERS[2]))
    row = entry_to_row(entry)
    text = json.dumps(row)
    for name, value in SECRETS:
        assert value not in text
        assert name.lower() not in text.lower()
    back = entry_from_row(row)
    assert back.headers == HEADERS  # the others, in order


def test_public_headers_drops_the_secret_names_in_any_case() -> None:
    assert {"authorization", "proxy-authorization", "cookie"} == SECRET_HEADERS
    # Names that commonly carry credentials are secret too (the default rule).
    look_alike = (("X-Authorization", "s1"), ("Set-Cookie", "s2"), ("X-API-KEY", "s3"))
    headers = (*SECRETS, *look_alike, ("X-Trace", "kept"), *HEADERS)
    assert public_headers(headers) == (("X-Trace", "kept"), *HEADERS)
    assert public_headers(list(headers)) == public_headers(headers)


def test_a_row_of_an_earlier_version_is_read_without_its_secrets() -> None:
    clean = _row()
    assert scrubbed_fields(clean, entry_from_row(clean)) is None
    url = clean[COLUMNS.index("url")]
    old = _row(
        url=url.replace("://", "://user:pw-s3cret@"),
        headers=json.dumps([["X-Api-Key", "k"], ["X-Tenant", "t"], *map(list, HEADERS)]),
    )
    entry = entry_from_row(old)
    assert entry.url == url
    assert entry.headers == (("X-Tenant", "t"), *HEADERS)
    assert scrubbed_fields(old, entry) == (
        url,
        json.dumps([["X-Tenant", "t"], *map(list, HEADERS)]),
    )
    custom = entry_from_row(old, SecretHeaders(frozenset({"x-tenant"})))
    assert custom.headers == HEADERS
    assert scrubbed_fields(old, custom) == (url, json.dumps([list(pair) for pair in HEADERS]))


@pytest.mark.parametrize("count", [0, 1, len(COLUMNS) - 1, len(COLUMNS) + 1])
def test_wrong_column_count(count: int) -> None:
    row = (_row() * 2)[:count]
    message = _corrupt(row)
    assert f"{count} columns" in message
    assert str(len(COLUMNS)) in message


@pytest.mark.parametrize("task_id", [0, -1, None, True, "7", 7.0], ids=repr)
def test_bad_id(task_id: object) -> None:
    message = _corrupt(_row(id=task_id))
    assert "invalid id" in message
    assert repr(task_id) in message


@pytest.mark.parametrize("phase", ["bogus", "", "RUNNING", None, 1], ids=repr)
def test_unknown_phase(phase: object) -> None:
    message = _corrupt(_row(phase=phase))
    assert message.startswith("task 7: ")
    assert "phase" in message
    assert repr(phase) in message


@pytest.mark.parametrize("offset", [-1, None, True, "100", 1.5], ids=repr)
def test_bad_offset(offset: object) -> None:
    message = _corrupt(_row(offset=offset, total=None))
    assert message.startswith("task 7: ")
    assert "offset" in message


@pytest.mark.parametrize("total", [99, 0, -1, True, "1000", 1000.0], ids=repr)
def test_bad_total(total: object) -> None:
    message = _corrupt(_row(offset=100, total=total))
    assert message.startswith("task 7: ")
    assert "total" in message
    assert repr(total) in message


def test_total_equal_to_offset_is_fine() -> None:
    assert entry_from_row(_row(offset=100, total=100)).total == 100


@pytest.mark.parametrize("field", ["url", "destination", "encoding"])
@pytest.mark.parametrize("value", ["", None, 5, b"\xff"], ids=repr)  # (bytes: not UTF-8)
def test_empty_or_non_text_required_field(field: str, value: object) -> None:
    message = _corrupt(_row(**{field: value}))
    assert message.startswith("task 7: ")
    assert field in message


@pytest.mark.parametrize("url", ["not a url", "ftp://h/f", "http://", "/relative/f.bin"])
def test_url_that_cannot_be_downloaded(url: str) -> None:
    message = _corrupt(_row(url=url))
    assert message.startswith("task 7: ")
    assert "url" in message


@pytest.mark.parametrize("field", ["description", "validator"])
@pytest.mark.parametrize("value", [5, b"\xff", 1.5], ids=repr)  # (bytes: not UTF-8)
def test_non_text_optional_field(field: str, value: object) -> None:
    message = _corrupt(_row(**{field: value}))
    assert message.startswith("task 7: ")
    assert field in message


@pytest.mark.parametrize(
    "headers",
    [
        None,
        "",
        "garbage",
        "{}",
        '{"a": "b"}',
        '[["a"]]',
        '[["a", "b", "c"]]',
        '[["a", 1]]',
        '[[1, "b"]]',
        '["ab"]',
        "[[null, null]]",
        5,
    ],
    ids=repr,
)
def test_bad_headers(headers: object) -> None:
    message = _corrupt(_row(headers=headers))
    assert message.startswith("task 7: ")
    assert "headers" in message


def test_deeply_nested_headers_are_corrupt_not_a_crash() -> None:
    # Regression: json.loads raises RecursionError for "[[[[...", which escaped
    # (and so escaped Journal.open, which turns only CorruptEntry into JournalError).
    message = _corrupt(_row(headers="[" * 100_000))
    assert "headers" in message


@pytest.mark.parametrize(
    "outcome",
    [
        "garbage",
        "",
        "null",
        "[]",
        '{"kind": "finished"}',
        '{"kind": "exploded"}',
        '{"kind": "error", "error": {"type": "OSError", "message": "m", "url": "u"}}',
        '{"kind": "cancelled", "resume_data": "garbage"}',
        5,
        b"{}",
    ],
    ids=repr,
)
def test_bad_outcome(outcome: object) -> None:
    message = _corrupt(_row(phase="ended", outcome=outcome))
    assert message.startswith("task 7: ")
    assert "outcome" in message


def test_deeply_nested_outcome_is_corrupt_not_a_crash() -> None:
    # Regression: as for the headers, RecursionError from json.loads is caught.
    message = _corrupt(_row(phase="ended", outcome="[" * 100_000))
    assert "outcome" in message


def test_ended_without_outcome() -> None:
    message = _corrupt(_row(phase="ended", outcome=None))
    assert message.startswith("task 7: ")
    assert "'ended'" in message
    assert "outcome" in message


@pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.ENDED], ids=lambda p: p.name)
def test_live_phase_with_an_outcome(phase: Phase) -> None:
    outcome = json.dumps(encode_terminal(OUTCOMES[0]))
    message = _corrupt(_row(phase=phase.value, outcome=outcome))
    assert message.startswith("task 7: ")
    assert repr(phase.value) in message
    assert "outcome" in message


def test_corrupt_entry_is_a_value_error() -> None:
    assert issubclass(CorruptEntry, ValueError)


# -- plan_reattach: the whole table ----------------------------------------------------------------

OFFSET = 100
SIZES = {"missing": None, "empty": 0, "shorter": 40, "equal": OFFSET, "longer": 160}


def _error_naming_destination(task_id: int) -> ErrorEvent:
    return ErrorEvent(
        task_id=task_id,
        error=LocalFileError(
            f"the finished file was moved to {DESTINATION} but is no longer there "
            "(deleted before the session recorded the finish); not downloading it again",
            url=URL,
            filename=DESTINATION,
        ),
    )


def _expected(entry: TaskEntry, size: int | None, destination_exists: bool) -> Reattach:
    """The rule, case by case, as the module documents it."""
    has_partial = size is not None
    trusted = 0 if size is None else min(entry.offset, size)
    if entry.phase is Phase.ENDED:
        outcome = entry.outcome
        # A cancel with resume data, or an error for want of space with resume data.
        keep = isinstance(outcome, CancelledEvent | ErrorEvent) and outcome.resume_data is not None
        return Reattach(action=Action.END, outcome=outcome, remove_partial=has_partial and not keep)
    if entry.phase is Phase.CANCELING:
        if entry.keep_partial and entry.validator is not None and trusted > 0:
            data = ResumeData(
                url=entry.url,
                partial=PARTIAL,
                offset=trusted,
                validator=entry.validator,
                total=entry.total,
                encoding=entry.encoding,
                destination=entry.destination,
                description=entry.description,
                headers=HEADERS,
            )
            return Reattach(action=Action.END, outcome=CancelledEvent(task_id=7, resume_data=data))
        return Reattach(
            action=Action.END, outcome=CancelledEvent(task_id=7), remove_partial=has_partial
        )
    if entry.phase is Phase.MOVING and size == entry.offset:
        return Reattach(action=Action.MOVE, offset=entry.offset, validator=entry.validator)
    if entry.phase is Phase.MOVING and size is None:
        if destination_exists:
            finished = FinishedEvent(
                task_id=7, location=Path(DESTINATION), total_bytes=entry.offset
            )
            return Reattach(action=Action.END, outcome=finished)
        return Reattach(action=Action.END, outcome=_error_naming_destination(7))
    usable = entry.validator is not None and trusted > 0
    return Reattach(
        action=Action.CONTINUE,
        state=TaskState.SUSPENDED if entry.phase is Phase.SUSPENDED else TaskState.RUNNING,
        offset=trusted if usable else 0,
        validator=entry.validator if usable else None,
        restarted=entry.offset > 0 and not usable,
    )


def _entries() -> list[tuple[str, TaskEntry]]:
    secret_headers = (*HEADERS, *SECRETS)
    cases: list[tuple[str, TaskEntry]] = []
    for phase, validator in itertools.product(Phase, ['"v1"', None]):
        base = _entry(phase, validator=validator, headers=secret_headers, offset=OFFSET)
        tag = f"{phase.name}-{'validator' if validator else 'novalidator'}"
        if phase is Phase.ENDED:
            names = ["finished", "error", "cancelled", "resumable", "full-disk"]
            pairs = zip(names, OUTCOMES, strict=True)
            cases += [(f"{tag}-{n}", attrs.evolve(base, outcome=o)) for n, o in pairs]
        elif phase is Phase.CANCELING:
            cases += [(f"{tag}-keep", attrs.evolve(base, keep_partial=True))]
            cases += [(f"{tag}-nokeep", base)]
        else:
            cases += [(tag, base), (f"{tag}-nothingrecorded", attrs.evolve(base, offset=0))]
    return cases


TABLE = [
    pytest.param(entry, size, exists, id=f"{name}-{size_name}-{'dest' if exists else 'nodest'}")
    for (name, entry), (size_name, size), exists in itertools.product(
        _entries(), SIZES.items(), [True, False]
    )
]


def _normal(plan: Reattach) -> tuple[Reattach, object]:
    outcome = plan.outcome
    return (
        attrs.evolve(plan, outcome=None),
        None if outcome is None else (type(outcome), outcome.task_id, encode_terminal(outcome)),
    )


@pytest.mark.parametrize(("entry", "size", "destination_exists"), TABLE)
def test_plan_reattach_table(entry: TaskEntry, size: int | None, destination_exists: bool) -> None:
    plan = plan_reattach(
        entry, partial=PARTIAL, partial_size=size, destination_exists=destination_exists
    )
    assert _normal(plan) == _normal(_expected(entry, size, destination_exists))


_LANDS: dict[Action, set[Stage]] = {
    Action.CONTINUE: {Stage.RUNNING, Stage.SUSPENDED},
    Action.MOVE: {Stage.RUNNING},  # the move's result ends it: ending(outcome)
    Action.END: {Stage.COMPLETED},
}


@pytest.mark.parametrize(("entry", "size", "destination_exists"), TABLE)
def test_a_plan_puts_the_task_in_its_stage_through_the_table(
    entry: TaskEntry, size: int | None, destination_exists: bool
) -> None:
    """A restored task starts ``running`` and takes the plan's inputs, each one
    a legal row of ``STAGES`` (``advance`` refuses any other), as a live task
    would; it lands where the plan says: a suspended task suspended, an ended
    one completed, a cancelled one through canceling (keeping its partial when
    the outcome has resume data)."""
    plan = plan_reattach(
        entry, partial=PARTIAL, partial_size=size, destination_exists=destination_exists
    )
    stages = [Stage.RUNNING]
    for event in plan.inputs:
        stages.append(advance(stages[-1], event))
    assert stages[-1] in _LANDS[plan.action]
    if plan.action is Action.CONTINUE:
        assert PUBLIC[stages[-1]] is plan.state
    if isinstance(plan.outcome, CancelledEvent):
        keeping = plan.outcome.resume_data is not None
        assert stages[1] is (Stage.CANCELING_KEEPING if keeping else Stage.CANCELING)
    for outcome in OUTCOMES:  # what ends a moved task, whatever the move gave
        ended = Stage.RUNNING
        for event in ending(outcome):
            ended = advance(ended, event)
        assert ended is Stage.COMPLETED


def test_table_covers_every_phase_size_and_validator() -> None:
    seen = {
        (entry.phase, size, entry.validator is None, exists)
        for entry, size, exists in (param.values for param in TABLE)
    }
    assert len(seen) == len(Phase) * len(SIZES) * 2 * 2


# -- plan_reattach: the rules spelled out ----------------------------------------------------------


def _plan(entry: TaskEntry, size: int | None, *, destination_exists: bool = False) -> Reattach:
    return plan_reattach(
        entry, partial=PARTIAL, partial_size=size, destination_exists=destination_exists
    )


def test_ended_keeps_the_partial_only_for_resume_data() -> None:
    for outcome in OUTCOMES:
        entry = _entry(Phase.ENDED, outcome=outcome)
        plan = _plan(entry, 40)
        assert plan.action is Action.END
        assert plan.outcome is entry.outcome
        resumable = (
            isinstance(outcome, CancelledEvent | ErrorEvent) and outcome.resume_data is not None
        )
        assert plan.remove_partial is not resumable
        assert _plan(entry, None).remove_partial is False


def test_canceling_with_keep_partial_produces_resume_data_without_secrets() -> None:
    entry = _entry(Phase.CANCELING, keep_partial=True, headers=(*SECRETS, *HEADERS), offset=100)
    plan = _plan(entry, 60)
    assert plan.action is Action.END
    assert plan.remove_partial is False
    assert isinstance(plan.outcome, CancelledEvent)
    assert plan.outcome.task_id == 7
    data = plan.outcome.resume_data
    assert data == ResumeData(
        url=URL,
        partial=PARTIAL,
        offset=60,
        validator='"v1"',
        total=1000,
        encoding="gzip",
        destination=DESTINATION,
        description="the \U0001f4e6 file",
        headers=HEADERS,
    )
    assert "s3cret" not in data.to_bytes().decode()
    assert _plan(entry, 500).outcome == CancelledEvent(
        task_id=7, resume_data=attrs.evolve(data, offset=100)
    )


@pytest.mark.parametrize(
    ("changes", "size"),
    [
        ({"keep_partial": False}, 100),
        ({"keep_partial": True, "validator": None}, 100),
        ({"keep_partial": True}, 0),
        ({"keep_partial": True, "offset": 0}, 100),
    ],
    ids=["not-asked", "no-validator", "empty-partial", "nothing-recorded"],
)
def test_canceling_without_usable_bytes_removes_the_partial(
    changes: dict[str, Any], size: int
) -> None:
    plan = _plan(_entry(Phase.CANCELING, **changes), size)
    assert plan == Reattach(
        action=Action.END, outcome=CancelledEvent(task_id=7), remove_partial=True
    )


def test_moving_whole_partial_is_moved() -> None:
    entry = _entry(Phase.MOVING, offset=1000)
    for exists in (True, False):
        plan = _plan(entry, 1000, destination_exists=exists)
        assert plan == Reattach(action=Action.MOVE, offset=1000, validator='"v1"')


def test_moving_empty_body_is_moved() -> None:
    plan = _plan(_entry(Phase.MOVING, offset=0, total=0, validator=None), 0)
    assert plan == Reattach(action=Action.MOVE, offset=0, validator=None)


def test_moving_already_moved_is_finished() -> None:
    plan = _plan(_entry(Phase.MOVING, offset=1000), None, destination_exists=True)
    assert plan == Reattach(
        action=Action.END,
        outcome=FinishedEvent(task_id=7, location=Path(DESTINATION), total_bytes=1000),
    )


def test_moving_with_both_files_gone_is_a_local_file_error_naming_the_destination() -> None:
    plan = _plan(_entry(Phase.MOVING, offset=1000), None, destination_exists=False)
    assert plan.action is Action.END
    assert plan.remove_partial is False
    assert isinstance(plan.outcome, ErrorEvent)
    assert plan.outcome.task_id == 7
    error = plan.outcome.error
    assert type(error) is LocalFileError
    assert error.url == URL
    assert error.filename == DESTINATION
    assert DESTINATION in str(error)
    assert str(error).startswith(f"{URL}: ")


@pytest.mark.parametrize(("size", "expected"), [(400, 400), (0, 0), (1200, 1000)])
def test_moving_partial_of_another_size_continues_running(size: int, expected: int) -> None:
    for exists in (True, False):
        plan = _plan(_entry(Phase.MOVING, offset=1000), size, destination_exists=exists)
        assert plan == Reattach(
            action=Action.CONTINUE,
            state=TaskState.RUNNING,
            offset=expected,
            validator='"v1"' if expected else None,
            restarted=expected == 0,
        )


@pytest.mark.parametrize(
    ("phase", "state"), [(Phase.RUNNING, TaskState.RUNNING), (Phase.SUSPENDED, TaskState.SUSPENDED)]
)
def test_live_tasks_continue_from_the_trusted_bytes(phase: Phase, state: TaskState) -> None:
    entry = _entry(phase, offset=100)
    assert _plan(entry, 60) == Reattach(
        action=Action.CONTINUE, state=state, offset=60, validator='"v1"'
    )
    assert _plan(entry, 100) == _plan(entry, 5000)
    assert _plan(entry, 100).offset == 100
    restart = Reattach(action=Action.CONTINUE, state=state, restarted=True)
    assert _plan(entry, None) == restart
    assert _plan(entry, 0) == restart
    assert _plan(attrs.evolve(entry, validator=None), 100) == restart
    fresh = Reattach(action=Action.CONTINUE, state=state)
    assert _plan(attrs.evolve(entry, offset=0), 100) == fresh
    assert _plan(attrs.evolve(entry, offset=0), None) == fresh


# -- the one-step move (FinalWrite) ---------------------------------------------------------------

SIZE = 1000  # the finished file's length
BEFORE: FileIdentity = (2049, 1234567, 77, 1_700_000_000_123_456_789)  # what the destination was
AFTER: FileIdentity = (2049, 7654321, SIZE, 1_700_000_001_000_000_000)  # the renamed partial


@pytest.mark.parametrize("replaces", [None, BEFORE, (2**63 - 1, 2**64 - 1, 0, 0)], ids=repr)
def test_round_trip_final_write(replaces: FileIdentity | None) -> None:
    entry = _entry(Phase.MOVING, offset=0, final_write=FinalWrite(size=SIZE, replaces=replaces))
    row = entry_to_row(entry)
    assert json.loads(row[COLUMNS.index("one_step")]) == {
        "size": SIZE,
        "replaces": None if replaces is None else list(replaces),
    }
    assert entry_from_row(row) == entry


def test_entries_without_final_write_store_null() -> None:
    assert _row()[COLUMNS.index("one_step")] is None
    assert entry_from_row(_row()).final_write is None


def _final_write_row(text: object, phase: Phase = Phase.MOVING) -> list[Any]:
    values = dict(zip(COLUMNS, entry_to_row(_entry(phase)), strict=True))
    values["one_step"] = text
    return [values[name] for name in COLUMNS]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1000, null]",
        "null",
        "{}",
        '{"size": 1000}',
        '{"replaces": null}',
        '{"size": 1000, "replaces": null, "extra": 1}',
        '{"size": 99, "replaces": null}',  # shorter than the 100 bytes already written
        '{"size": -1, "replaces": null}',
        '{"size": true, "replaces": null}',
        '{"size": "1000", "replaces": null}',
        '{"size": 1000.0, "replaces": null}',
        '{"size": 1000, "replaces": []}',
        '{"size": 1000, "replaces": [1, 2, 3]}',
        '{"size": 1000, "replaces": [1, 2, 3, 4, 5]}',
        '{"size": 1000, "replaces": [1, 2, 3, -4]}',
        '{"size": 1000, "replaces": [1, 2, true, 4]}',
        '{"size": 1000, "replaces": [1, 2, "3", 4]}',
        '{"size": 1000, "replaces": {"ino": 2}}',
        "[" * 100_000,
        5,
        b'{"size": 1000, "replaces": null}',
    ],
    ids=repr,
)
def test_bad_final_write(text: object) -> None:
    assert _corrupt(_final_write_row(text)).startswith("task 7: invalid one_step")


@pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.MOVING], ids=lambda p: p.name)
def test_final_write_outside_moving_is_corrupt(phase: Phase) -> None:
    text = json.dumps({"size": SIZE, "replaces": None})
    message = _corrupt(_final_write_row(text, phase))
    assert message == f"task 7: a one-step move in phase {phase.value!r}"


def _final_write_expected(
    entry: TaskEntry, size: int | None, destination: FileIdentity | None
) -> Reattach:
    """The rule as the module documents it: a partial file of exactly the bytes
    vouched for, which are the whole body, is moved; no partial file and another
    file at the destination than the recorded one is a finish; anything else
    continues as running from the bytes vouched for (a partial's bytes past them
    may not be this body's)."""
    assert entry.final_write is not None
    if size == entry.offset == entry.final_write.size:
        return Reattach(action=Action.MOVE, offset=SIZE, validator=entry.validator)
    if size is None and destination is not None and destination != entry.final_write.replaces:
        finished = FinishedEvent(task_id=7, location=Path(DESTINATION), total_bytes=SIZE)
        return Reattach(action=Action.END, outcome=finished)
    return _expected(attrs.evolve(entry, phase=Phase.RUNNING, final_write=None), size, False)


ONE_STEP_SIZES = {**SIZES, "whole": SIZE, "beyond": SIZE + 1}
DESTINATIONS: dict[str, FileIdentity | None] = {
    "nodest": None,
    "before": BEFORE,
    "after": AFTER,
    "samesizeother": (BEFORE[0], BEFORE[1] + 1, BEFORE[2], BEFORE[3]),  # another inode
    "touched": (BEFORE[0], BEFORE[1], BEFORE[2], BEFORE[3] + 1),  # same inode, rewritten
}
ONE_STEP_TABLE = [
    pytest.param(
        _entry(
            Phase.MOVING,
            offset=offset,
            validator=validator,
            final_write=FinalWrite(size=SIZE, replaces=replaces),
        ),
        size,
        destination,
        id=f"off{offset}-{'v' if validator else 'nov'}-{'had' if replaces else 'none'}"
        f"-{size_name}-{dest_name}",
    )
    for offset, validator, replaces, (size_name, size), (dest_name, destination) in (
        itertools.product(
            [0, OFFSET, SIZE],
            ['"v1"', None],
            [None, BEFORE],
            ONE_STEP_SIZES.items(),
            DESTINATIONS.items(),
        )
    )
]


def _plan_final_write(
    entry: TaskEntry, size: int | None, destination: FileIdentity | None
) -> Reattach:
    """plan_reattach as the engine calls it: with what is at the destination."""
    return plan_reattach(
        entry,
        partial=PARTIAL,
        partial_size=size,
        destination_exists=destination is not None,
        destination_id=destination,
    )


@pytest.mark.parametrize(("entry", "size", "destination"), ONE_STEP_TABLE)
def test_plan_reattach_final_write_table(
    entry: TaskEntry, size: int | None, destination: FileIdentity | None
) -> None:
    plan = _plan_final_write(entry, size, destination)
    assert _normal(plan) == _normal(_final_write_expected(entry, size, destination))


def test_final_write_rename_done_is_finished_with_the_finished_size() -> None:
    """The kill came after the rename: the partial is gone, the destination is the
    renamed file (another identity than the one recorded), whatever was before."""
    for replaces in (None, BEFORE):
        entry = _entry(Phase.MOVING, offset=0, final_write=FinalWrite(size=SIZE, replaces=replaces))
        plan = _plan_final_write(entry, None, AFTER)
        assert plan == Reattach(
            action=Action.END,
            outcome=FinishedEvent(task_id=7, location=Path(DESTINATION), total_bytes=SIZE),
        )


def test_final_write_old_destination_untouched_is_fetched_again_not_finished() -> None:
    """The kill came before the step: no partial (a small body is opened by that
    step) and the old file still at the destination. The classic rule would call
    that finished and hand out the old file; the recorded identity says otherwise."""
    entry = _entry(Phase.MOVING, offset=0, final_write=FinalWrite(size=SIZE, replaces=BEFORE))
    plan = _plan_final_write(entry, None, BEFORE)
    assert plan == Reattach(action=Action.CONTINUE, state=TaskState.RUNNING)


def test_final_write_nothing_anywhere_is_fetched_again_not_an_error() -> None:
    """No partial and no destination: the step never began (or its file was deleted
    before the finish was recorded). Fetching it again loses nothing; the classic
    rule's error would lose the download."""
    entry = _entry(Phase.MOVING, offset=OFFSET, final_write=FinalWrite(size=SIZE, replaces=None))
    plan = _plan_final_write(entry, None, None)
    assert plan == Reattach(action=Action.CONTINUE, state=TaskState.RUNNING, restarted=True)


def test_final_write_with_every_byte_written_before_it_is_moved() -> None:
    """The body's bytes were all written (and vouched for) before the step: only the
    close and the rename were left, so a partial file of exactly that size is it."""
    entry = _entry(Phase.MOVING, offset=SIZE, final_write=FinalWrite(size=SIZE, replaces=BEFORE))
    for destination in (None, BEFORE):
        plan = _plan_final_write(entry, SIZE, destination)
        assert plan == Reattach(action=Action.MOVE, offset=SIZE, validator='"v1"')
    longer = _plan_final_write(entry, SIZE + 1, None)
    assert longer.action is Action.CONTINUE


def test_final_write_whole_partial_is_not_trusted_past_the_bytes_vouched_for() -> None:
    """Killed between the close and the rename, the partial file is whole, but a
    file of that size may also be an older representation's, left before the last
    write truncated it: only the vouched-for bytes are kept."""
    entry = _entry(Phase.MOVING, offset=OFFSET, final_write=FinalWrite(size=SIZE, replaces=None))
    plan = _plan_final_write(entry, SIZE, None)
    assert plan == Reattach(
        action=Action.CONTINUE, state=TaskState.RUNNING, offset=OFFSET, validator='"v1"'
    )


def test_round_trip_integrity() -> None:
    entry = attrs.evolve(
        _entry(Phase.RUNNING), integrity=Integrity(Checksum("blake2b", "f" * 128), 2**40)
    )
    row = entry_to_row(entry)
    assert json.loads(dict(zip(COLUMNS, row, strict=True))["integrity"]) == {
        "checksum": "blake2b:" + "f" * 128,
        "expected_size": 2**40,
    }
    assert entry_from_row(row) == entry


@pytest.mark.parametrize("text", ["{", '{"checksum": "sha256:00"}', "[]", 5])
def test_a_bad_integrity_column_is_a_corrupt_entry(text: object) -> None:
    values = dict(zip(COLUMNS, entry_to_row(_entry(Phase.RUNNING)), strict=True))
    values["integrity"] = text
    with pytest.raises(CorruptEntry, match="integrity"):
        entry_from_row(tuple(values.values()))
