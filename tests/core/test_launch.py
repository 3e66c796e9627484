"""The launch policy: when the daemon runs a session's ``launch_command``.

Pure: no clock, no process. Each scenario is a table of steps at given times
(a fake clock) and the due time of the next launch after each step.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from bgtransfer import Configuration
from bgtransfer._core.launch import HISTORY_LIMIT, LOST, LaunchOrder, LaunchPolicy, LaunchRecord

ARGV = ("/usr/bin/app", "--collect")
CONFIG = Configuration(launch_command=ARGV, launch_delay=10, launch_delay_max=60)
NONE = None  # (no launch due)


def policy(config: Configuration = CONFIG) -> LaunchPolicy:
    return LaunchPolicy.from_config(config)


NEEDS = {
    "need": ("credentials", False),  # a task waits for the app's credentials
    "answered": (None, True),  # the app answered it
    "withdrawn": (None, False),  # the task stopped waiting (cancelled, suspended)
}


def step(p: LaunchPolicy, now: float, action: str, arg: Any = None) -> LaunchPolicy:
    if action in NEEDS:
        reason, answered = NEEDS[action]
        return p.app_needed(reason, now, answered=answered)
    match action:
        case "event":
            return p.event_published(arg, now)
        case "urgent":
            return p.event_published(arg, now, urgent=True)
        case "busy":
            return p.activity(True, now)
        case "idle":
            return p.activity(False, now)
        case "attach":
            return p.client_attached(now)
        case "detach":
            return p.client_detached(now)
        case "ack":
            return p.acknowledge(arg, now)
        case "launch":
            p, order = p.begin(now)
            assert order == LaunchOrder(argv=ARGV, cursor=p.acknowledged)
            return p.spawned(1000 + p.launches)
        case "exit":
            return p.ended(now, status=arg)
        case "fail":
            return p.ended(now, error=arg)
    raise AssertionError(action)


# (time, action, argument, due after the step)
SCENARIOS: dict[str, list[tuple[float, str, Any, float | None]]] = {
    "nothing waits: nothing due": [(0, "attach", None, NONE), (1, "detach", None, NONE)],
    "one event: due after the initial delay": [(100, "event", 1, 110)],
    "events within the window join the launch": [
        (100, "event", 1, 110),
        (103, "event", 2, 110),
        (109, "event", 5, 110),
    ],
    "events while the process runs join it": [
        (100, "event", 1, 110),
        (110, "launch", None, NONE),
        (111, "event", 2, NONE),
        (112, "event", 3, NONE),
        (115, "exit", 0, 135),  # not acknowledged: again after twice the delay, from the end
    ],
    "backoff doubles up to the cap while nobody acknowledges": [
        (0, "event", 1, 10),
        (10, "launch", None, NONE),
        (11, "exit", 0, 31),
        (31, "launch", None, NONE),
        (31, "exit", 1, 71),
        (71, "launch", None, NONE),
        (72, "exit", 0, 132),  # 80 capped to 60
        (132, "launch", None, NONE),
        (132, "exit", 0, 192),
    ],
    "attach and acknowledge resets the delay": [
        (0, "event", 1, 10),
        (10, "launch", None, NONE),
        (11, "exit", 0, 31),
        (31, "launch", None, NONE),
        (32, "attach", None, NONE),
        (33, "ack", 1, NONE),
        (34, "detach", None, NONE),
        (35, "exit", 0, NONE),  # nothing waits
        (50, "event", 2, 60),  # the initial delay again
    ],
    "no launch while a client is attached": [
        (0, "attach", None, NONE),
        (1, "event", 1, NONE),
        (2, "event", 2, NONE),
        (3, "ack", 2, NONE),
        (4, "event", 3, NONE),
        (5, "detach", None, 15),  # it left event 3 behind: due a delay after it left
    ],
    "a client that leaves without acknowledging: no reset": [
        (0, "event", 1, 10),
        (10, "launch", None, NONE),
        (10, "exit", 0, 30),
        (12, "attach", None, NONE),
        (13, "detach", None, 33),  # the doubled delay, from when it left
    ],
    "a partial acknowledgement resets the delay, the rest still waits": [
        (0, "event", 1, 10),
        (0, "event", 2, 10),
        (10, "launch", None, NONE),
        (11, "attach", None, NONE),
        (12, "ack", 1, NONE),
        (13, "detach", None, NONE),  # its process still runs
        (14, "exit", 0, 24),  # the initial delay again, from the end
    ],
    "a command that cannot start counts as a launch": [
        (0, "event", 1, 10),
        (10, "launch", None, NONE),
        (10, "fail", "No such file or directory", 30),
        (30, "launch", None, NONE),
        (30, "fail", "No such file or directory", 70),
    ],
    "no launch while tasks run: the batch ends, the launch is due": [
        (0, "busy", None, NONE),
        (1, "event", 1, NONE),
        (5, "event", 2, NONE),
        (30, "idle", None, 11),  # (due since 11: at once)
        (30, "launch", None, NONE),
        (31, "busy", None, NONE),  # the app's launch queued more, and left
        (32, "exit", 0, NONE),
        (40, "idle", None, 52),
    ],
    "a batch that ends within the window": [
        (0, "busy", None, NONE),
        (0, "event", 1, NONE),
        (3, "idle", None, 10),
    ],
    "an urgent event does not wait for the batch": [
        (0, "busy", None, NONE),
        (0, "event", 1, NONE),
        (4, "urgent", 2, 10),  # joins the window the first event opened
        (10, "launch", None, NONE),
        (11, "attach", None, NONE),
        (12, "ack", 2, NONE),
        (13, "event", 3, NONE),
        (14, "detach", None, NONE),
        (15, "exit", 0, NONE),  # still busy: event 3 waits for the batch
        (20, "urgent", 4, 25),  # the delay (reset) from the end of the launch
    ],
    "a task needing the app does not wait for the batch": [
        (0, "busy", None, NONE),
        (2, "need", None, 12),
        (12, "launch", None, NONE),
        (13, "exit", 0, 33),  # still needed, nobody came: twice the delay
        (20, "attach", None, NONE),
        (21, "answered", None, NONE),  # the app answered: the delay is reset
        (22, "need", None, NONE),  # (attached: it is asked, not launched)
        (23, "detach", None, 33),
        (24, "withdrawn", None, NONE),
    ],
    "a need joins the window events opened, and leaves it to them": [
        (0, "event", 1, 10),
        (4, "need", None, 10),
        (5, "withdrawn", None, 10),
        (6, "ack", 1, NONE),
    ],
    "an old cursor changes nothing": [
        (0, "event", 5, 10),
        (3, "event", 2, 10),
        (4, "ack", 1, 10),  # acknowledged below what waits: the anchor stays
    ],
    "an acknowledgement past the latest cursor": [
        (0, "event", 1, 10),
        (1, "ack", 4, NONE),
        (2, "event", 3, NONE),  # already acknowledged
        (3, "event", 5, 13),
    ],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name: str) -> None:
    p = policy()
    for number, (now, action, arg, due) in enumerate(SCENARIOS[name]):
        p = step(p, now, action, arg)
        assert p.due == due, f"step {number}: {action} at {now}"
        # Every value round-trips as the daemon persists it (attached aside: no
        # client survives a restart).
        # Nor does a need: the task asks again when it meets the challenge again.
        again = LaunchPolicy.from_json(json.loads(json.dumps(p.to_json())), CONFIG)
        assert again == attrs.evolve(p, attached=False, busy=False, needed=None)


def test_no_command_never_launches() -> None:
    p = policy(Configuration())
    for now, cursor in enumerate(range(1, 50)):
        p = p.event_published(cursor, now)
    assert p.waiting
    assert p.due is None
    with pytest.raises(RuntimeError, match="no launch is due"):
        p.begin(1000)


def test_begin_before_due_is_a_bug() -> None:
    p = policy().event_published(1, 100)
    with pytest.raises(RuntimeError, match=r"no launch is due at 109 \(due: 110"):
        p.begin(109)
    assert p.begin(110)[0].running


def test_a_launch_records_time_argv_cursor_pid_and_status() -> None:
    p = policy().event_published(3, 0).acknowledge(1, 1).event_published(4, 2)
    p, order = p.begin(12)
    assert order == LaunchOrder(argv=ARGV, cursor=1)
    p = p.spawned(4242).ended(13, status=-15)
    assert p.history == (
        LaunchRecord(
            started_at=12, argv=ARGV, cursor=1, through=4, pid=4242, ended_at=13, status=-15
        ),
    )
    assert p.launches == 1
    assert p.delay == 20
    assert p.due == 33


def test_spawned_or_ended_without_a_running_launch_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="no launch is running"):
        policy().spawned(1)
    with pytest.raises(RuntimeError, match="no launch is running"):
        policy().ended(1, status=0)


def test_history_is_bounded() -> None:
    p = policy()
    now = 0.0
    for cursor in range(1, HISTORY_LIMIT + 6):
        p = p.event_published(cursor, now)
        now = p.due  # type: ignore[assignment]
        p = p.begin(now)[0].ended(now, status=cursor)
    assert len(p.history) == HISTORY_LIMIT
    assert p.launches == HISTORY_LIMIT + 5
    assert [r.status for r in p.history] == list(range(6, HISTORY_LIMIT + 6))  # the newest


@pytest.mark.parametrize("bad", [-1, True, 1.5, "3"])
def test_cursors_are_ints(bad: Any) -> None:
    error = ValueError if bad == -1 else TypeError
    with pytest.raises(error, match="cursor"):
        policy().event_published(bad, 0)
    with pytest.raises(error, match="cursor"):
        policy().acknowledge(bad, 0)


def test_restart_loses_the_running_launch_and_forgets_the_client() -> None:
    p = policy().event_published(2, 0)
    p = p.begin(10)[0].spawned(77).client_attached(11)
    stored = json.loads(json.dumps(p.to_json()))
    again = LaunchPolicy.from_json(stored, CONFIG).restarted(
        500, latest=3, acknowledged=0, busy=False
    )
    assert not again.attached
    assert not again.running
    assert again.history[-1].error == LOST
    assert again.history[-1].ended_at == 500
    assert again.latest == 3
    assert again.due == 520


def test_restart_with_nothing_waiting() -> None:
    stored = policy().to_json()
    p = LaunchPolicy.from_json(stored, CONFIG).restarted(5, latest=4, acknowledged=4, busy=False)
    assert p.due is None
    p = LaunchPolicy.from_json(stored, CONFIG).restarted(5, latest=6, acknowledged=4, busy=False)
    assert p.due == 15  # events wait that no launch was pending for yet
    p = LaunchPolicy.from_json(stored, CONFIG).restarted(5, latest=6, acknowledged=4, busy=True)
    assert p.due is None  # until the batch ends


def test_reconfigured_keeps_the_history_and_clamps_the_delay() -> None:
    p = policy().event_published(1, 0)
    for _ in range(3):
        p = p.begin(p.due)[0].ended(p.due, status=0)  # type: ignore[arg-type]
    assert p.delay == 60
    changed = p.reconfigured(CONFIG.replace(launch_delay=1, launch_delay_max=30))
    assert changed.delay == 30
    assert changed.history == p.history
    assert p.reconfigured(Configuration()).due is None  # no command any more


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": 2}, "unknown format 2"),
        ({"delay": 0}, "delay must be greater than 0"),
        ({"delay": "1"}, "delay must be a finite number"),
        ({"latest": -1}, "latest must be an int of at least 0"),
        ({"acknowledged": None}, "acknowledged must be an int"),
        ({"anchor": float("nan")}, "anchor must be a finite number"),
        ({"history": {}}, "history must be a list"),
        ({"history": [{}] * (HISTORY_LIMIT + 1)}, "at most 16"),
        ({"history": [[]]}, "a launch must be a JSON object"),
        ({"history": [{"argv": []}]}, "argv must be a non-empty list of str"),
        (
            {
                "history": [
                    {"argv": ["x"], "started_at": 1, "cursor": 0, "through": 0, "status": "0"}
                ]
            },
            "status must be an int or null",
        ),
        (
            {"history": [{"argv": ["x"], "started_at": 1, "cursor": 0, "through": 0, "error": 1}]},
            "error must be a str or null",
        ),
        (
            {"history": [{"argv": ["x"], "started_at": 1, "cursor": 0, "through": 0}] * 2},
            "only the last launch may be running",
        ),
        (
            {
                "launches": 0,
                "history": [{"argv": ["x"], "started_at": 1, "cursor": 0, "through": 0}],
            },
            "launches is less than",
        ),
    ],
)
def test_from_json_rejects_malformed_status(change: dict[str, Any], match: str) -> None:
    value = policy().to_json() | change
    with pytest.raises(ValueError, match=match):
        LaunchPolicy.from_json(value, CONFIG)


def test_from_json_rejects_what_is_not_an_object() -> None:
    with pytest.raises(ValueError, match="must be a JSON object, not list"):
        LaunchPolicy.from_json([], CONFIG)


def test_explain() -> None:
    p = policy()
    assert policy(Configuration()).explain(0) == "no launch_command"
    assert p.explain(0) == "no event waits for the app"
    p = p.event_published(1, 0)
    assert p.explain(0) == "next launch in 10 s (delay 10 s)"
    assert p.explain(7.5) == "next launch in 2.5 s (delay 10 s)"
    assert p.explain(10) == "launch due now"
    assert p.client_attached(1).explain(1) == "the app is attached"
    assert p.activity(True, 1).explain(1) == "waiting for the session's tasks to end"
    p = p.begin(10)[0]
    assert p.explain(10) == "launch running"
    assert p.spawned(42).explain(10) == "launch running (pid 42)"
    p = p.ended(11, status=0)
    for _ in range(3):
        p = p.begin(p.due)[0].ended(p.due, status=0)  # type: ignore[arg-type]
    assert p.explain(p.due - 600) == "next launch in 10 min (delay 60 s)"  # type: ignore[operator]
    slow = LaunchPolicy.from_config(CONFIG.replace(launch_delay_max=86400)).event_published(1, 0)
    assert slow.explain(-9000) == "next launch in 2.5 h (delay 10 s)"


def test_a_launch_for_credentials_says_so() -> None:
    p = policy().activity(True, 0).app_needed("credentials", 0)
    assert p.explain(5) == "next launch in 5.0 s (delay 10 s) (a task needs it: credentials)"
    p, _order = p.begin(10)
    assert p.history[-1].reason == "credentials"
    assert p.to_json()["needed"] == "credentials"
    stored = json.loads(json.dumps(p.to_json()))
    assert LaunchPolicy.from_json(stored, CONFIG).history[-1].reason == "credentials"
    del stored["history"][-1]["reason"]  # (a status written before reasons existed)
    assert LaunchPolicy.from_json(stored, CONFIG).history[-1].reason is None
    assert p.ended(11, status=0).app_needed(None, 12).due is None
