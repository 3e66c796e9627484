"""The benchmark harness's daemon steps (benchmarks/, issue 20): a run that starts a
daemon stops it, whatever happened, and only its timed steps are timed."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _contenders import _daemon_steps  # noqa: E402
from _measure import Runner  # noqa: E402
from _model import Contender, Job, RunContext, RunResult, Step  # noqa: E402


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _report(**values: int) -> list[str]:
    return _python(f"import json; print(json.dumps({values!r}))")


def _runner(tmp_path: Path) -> Runner:
    work = tmp_path / "runs"
    work.mkdir()
    return Runner(
        work,
        python=sys.executable,
        tools={},
        env=dict(os.environ),
        timeout=60.0,
        gnu_time=None,
        log=lambda _: None,
    )


def _gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie waiting for its reaper counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def results() -> Iterator[list[RunResult]]:
    """The runs of a test; a daemon one of them left is SIGKILLed at the end."""
    runs: list[RunResult] = []
    try:
        yield runs
    finally:
        for run in runs:
            pid = run.metrics.get("daemon_pid")
            if pid is not None and not _gone(int(pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGKILL)


EMPTY = Job(urls=(), expected=(), per_host=1, hosts=1)


def test_untimed_and_cleanup_steps_are_reported_not_timed(tmp_path: Path) -> None:
    steps = [
        Step("before", _report(before=1), timed=False),
        Step("after", _report(after=3), cleanup=True),
        Step("run", _report(run=2)),
    ]
    contender = Contender("c", lambda ctx: steps, "flags")
    result = _runner(tmp_path).run_once(contender, EMPTY, 1)
    assert result.ok, result.error
    assert {"before", "run", "after"} <= set(result.metrics)
    assert result.metrics["wall_s"] == result.metrics["run_wall_s"]
    assert result.metrics["before_wall_s"] > 0
    assert result.metrics["after_wall_s"] > 0


def test_cleanup_runs_after_a_failed_step_and_the_first_error_is_kept(tmp_path: Path) -> None:
    steps = [
        Step("run", _python("import sys; print('first', file=sys.stderr); sys.exit('boom')")),
        Step("never", _report(never=1)),
        Step("after", _report(after=1), cleanup=True),
    ]
    contender = Contender("c", lambda ctx: steps, "flags")
    result = _runner(tmp_path).run_once(contender, EMPTY, 1)
    assert not result.ok
    assert result.error is not None
    assert result.error == "run: exit status 1: boom"  # one line: a table cell
    assert "never" not in result.metrics
    assert result.metrics["after"] == 1


def _daemon_contender(code: str) -> Contender:
    def steps(ctx: RunContext) -> list[Step]:
        state = ctx.scratch / "state"
        return _daemon_steps(ctx, [Step("run", _python(code.replace("STATE", str(state))))])

    return Contender("bgtransfer (daemon)", steps, "flags", python=True)


def test_a_started_daemon_is_stopped_after_a_failed_run(
    tmp_path: Path, results: list[RunResult]
) -> None:
    # The timed step checks that the daemon answers, then fails.
    check = (
        "import asyncio, sys; from pathlib import Path; "
        "from bgtransfer._daemon.control import daemon_status; "
        "status = asyncio.run(daemon_status(Path('STATE'))); "
        "sys.exit('answered' if status else 'no daemon')"
    )
    result = _runner(tmp_path).run_once(_daemon_contender(check), EMPTY, 1)
    results.append(result)
    assert result.error is not None
    assert result.error.startswith("run: exit status 1: answered")
    pid = int(result.metrics["daemon_pid"])
    assert _gone(pid)
    assert result.metrics["daemon_peak_rss_mib"] > 0
    assert result.metrics["daemon_stop_s"] > 0
    assert "daemon-stop: " not in " ".join(result.notes)  # stopped cleanly, not killed
