"""The benchmark harness's daemon steps (benchmarks/, issue 20): a run that starts a
daemon stops it, whatever happened, and only its timed steps are timed."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
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


def _runner(tmp_path: Path, tools: dict[str, str] | None = None) -> Runner:
    work = tmp_path / "runs"
    work.mkdir()
    return Runner(
        work,
        python=sys.executable,
        tools=tools or {},
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


def test_client_cpu_counts_the_timed_steps_only(tmp_path: Path) -> None:
    """client_cpu_s: user + system time of the timed steps' processes (a busy
    loop of about 0.2 s of CPU), not of an untimed step or of the runner."""
    spin = "import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end: pass"
    steps = [
        Step("before", _python(spin), timed=False),
        Step("run", _python(spin + "\nprint('{}')")),
    ]
    contender = Contender("c", lambda ctx: steps, "flags")
    result = _runner(tmp_path).run_once(contender, EMPTY, 1)
    assert result.ok, result.error
    assert 0.2 <= result.metrics["client_cpu_s"] < 0.4  # (both steps: over 0.4)


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


# -- issue 21: scenario 9 (one upload vs curl -T) and scenario 10 (queued uploads) --------

from _contenders import bgtransfer_upload, curl_upload  # noqa: E402
from _data import SourceStore  # noqa: E402
from _report import markdown, summarize  # noqa: E402
from _scenarios import SCENARIOS, Setup, Sizes  # noqa: E402
from _servers import UploadReceiver  # noqa: E402


@pytest.fixture
def receiver() -> Iterator[UploadReceiver]:
    started = UploadReceiver(sys.executable)
    try:
        yield started
    finally:
        started.close()


def _upload_job(tmp_path: Path, receiver: UploadReceiver, size: int) -> Setup:
    sizes = dataclasses.replace(Sizes.quick(), big=size)
    return Setup(sizes, SourceStore(tmp_path / "www"), None, "", receiver)  # type: ignore[arg-type]


def test_an_upload_run_is_checked_by_the_receivers_count(
    tmp_path: Path, receiver: UploadReceiver
) -> None:
    scenario = SCENARIOS[9]
    job = scenario.build(_upload_job(tmp_path, receiver, 3 * 2**20 + 7))
    assert Path(job.upload_file).stat().st_size == job.upload_size == 3 * 2**20 + 7
    contender = bgtransfer_upload("ephemeral")
    result = _runner(tmp_path).run_once(contender, job, 1, scenario.check)
    assert result.ok, result.error
    assert result.metrics["received"] == job.upload_size
    assert result.metrics["status"] == 201
    assert result.metrics["mib_per_s"] == pytest.approx(
        job.upload_size / 2**20 / result.metrics["wall_s"]
    )


def test_an_upload_the_receiver_did_not_count_whole_fails(tmp_path: Path) -> None:
    job = Job(urls=("http://x/u.bin",), expected=(), per_host=1, hosts=1, upload_size=10)
    short = Contender("c", lambda ctx: [Step("run", _report(received=9))], "flags")
    result = _runner(tmp_path).run_once(short, job, 1, SCENARIOS[9].check)
    assert not result.ok
    assert result.error == "the receiver counted 9.0 bytes, expected 10"
    assert "mib_per_s" not in result.metrics


def test_curl_upload_reports_the_receivers_answer(tmp_path: Path, receiver: UploadReceiver) -> None:
    scenario = SCENARIOS[9]
    job = scenario.build(_upload_job(tmp_path, receiver, 2**20))
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed (the benchmark's upload reference)"
    result = _runner(tmp_path, {"curl": curl}).run_once(curl_upload(), job, 1, scenario.check)
    assert result.ok, result.error
    assert result.metrics["received"] == 2**20


def test_the_upload_scenarios_report_ratios_to_curl_and_their_targets() -> None:
    scenario = SCENARIOS[9]
    job = Job(urls=("u",), expected=(), per_host=1, hosts=1, upload_file="f", upload_size=2**30)
    contenders = scenario.contenders()
    walls = {"bgtransfer (ephemeral)": 6.0, "bgtransfer (background)": 5.0, "curl -T": 5.0}
    results = {
        c.name: [RunResult(c.name, 1, True, {"wall_s": walls[c.name], "mib_per_s": 200.0})]
        for c in contenders
    }
    table = summarize(scenario, job, 1, contenders, results)
    assert table.find("bgtransfer (ephemeral)").ratios["curl -T"] == pytest.approx(1.2)  # type: ignore[union-attr]
    verdicts = {t.target: (t.issue, t.verdict) for t in table.targets}
    assert verdicts == {
        "bgtransfer (ephemeral) <= 1.2x curl -T": (21, "pass"),
        "bgtransfer (background) <= 1.2x curl -T": (21, "pass"),
    }
    text = markdown([table], {}, {})
    assert "one file of 1,024 MiB uploaded (PUT) to 1 host" in text
    assert "| bgtransfer (ephemeral) | 1/1 | 6.00 (6.00-6.00) | 200 |" in text
    queued = Job(urls=("b",), expected=(), per_host=1, hosts=1, queue_count=10, upload_file="f")
    summary = summarize(SCENARIOS[10], queued, 1, SCENARIOS[10].contenders(), {})
    assert "10 uploads queued behind 1 connection per host" in markdown([summary], {}, {})
    assert all(t.issue == 21 for t in summary.targets)
