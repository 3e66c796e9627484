"""From runs to a report: medians, min/max, ratios to the references, targets met or not."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from _model import Contender, Job, RunResult
from _scenarios import Scenario, Target

__all__ = ["ContenderSummary", "ScenarioSummary", "TargetResult", "markdown", "summarize"]


@dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float


@dataclass
class ContenderSummary:
    name: str
    flags: str
    status: str  # "ok", "not available: ...", "segments not implemented yet", "failed: ..."
    runs: list[RunResult] = field(default_factory=list)
    stats: dict[str, Stat] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)  # reference name -> ratio

    @property
    def ok_runs(self) -> int:
        return sum(run.ok for run in self.runs)

    def median(self, metric: str) -> float | None:
        stat = self.stats.get(metric)
        return None if stat is None else stat.median


@dataclass(frozen=True)
class TargetResult:
    scenario: int
    issue: int  # the issue that set the target
    target: str
    measured: str
    verdict: str  # "pass", "FAIL", "n/a"


@dataclass
class ScenarioSummary:
    scenario: Scenario
    job: Job
    rounds: int
    contenders: list[ContenderSummary]
    targets: list[TargetResult]

    def find(self, name: str) -> ContenderSummary | None:
        return next((c for c in self.contenders if c.name == name), None)

    def job_text(self) -> str:
        job = self.job
        if job.queue_count:
            kind = "uploads" if job.upload_file else "tasks"
            return f"{job.queue_count:,} {kind} queued behind 1 connection per host"
        if job.upload_size:
            return f"one file of {job.upload_size / 2**20:,.0f} MiB uploaded (PUT) to 1 host"
        if job.idle_s:
            kib = job.expected[0].size // 1024 if job.expected else 0
            return f"{job.idle_s:g} s idle, before and after one client's {kib} KiB download"
        files = len(job.expected)
        size = job.total_bytes / 2**20
        per_file = job.expected[0].size / 2**10 if files else 0
        return (
            f"{files:,} file(s) of {per_file:,.0f} KiB ({size:,.0f} MiB in all) from "
            f"{job.hosts} host(s), {job.per_host} connection(s) per host"
        )


def _stats(runs: list[RunResult]) -> dict[str, Stat]:
    good = [run for run in runs if run.ok]
    names = sorted({name for run in good for name in run.metrics})
    table: dict[str, Stat] = {}
    for name in names:
        values = [run.metrics[name] for run in good if name in run.metrics]
        if values:
            table[name] = Stat(statistics.median(values), min(values), max(values))
    return table


def _status(contender: Contender, runs: list[RunResult]) -> str:
    if contender.missing is not None:
        return f"not available: {contender.missing}"
    unsupported = next((run.unsupported for run in runs if run.unsupported), None)
    if unsupported:
        return unsupported
    failed = [run for run in runs if not run.ok]
    if not runs:
        return "not run"
    if failed:
        return f"{len(failed)} of {len(runs)} runs failed: {failed[0].error}"
    return "ok"


def _judge(scenario: Scenario, target: Target, table: ScenarioSummary) -> TargetResult:
    subject = table.find(target.contender)
    value = subject.median(target.metric) if subject else None
    description = target.describe()
    if subject is None or value is None:
        why = subject.status if subject else "not run"
        notes = sorted({note for run in subject.runs for note in run.notes}) if subject else []
        return TargetResult(
            scenario.number, target.issue, description, "; ".join(notes) or why, "n/a"
        )
    if target.versus is None:
        verdict = "pass" if value <= target.limit else "FAIL"
        return TargetResult(scenario.number, target.issue, description, f"{value:.3g}", verdict)
    reference = table.find(target.versus)
    base = reference.median(target.metric) if reference else None
    if base is None or base <= 0:
        why = reference.status if reference else "not run"
        return TargetResult(
            scenario.number, target.issue, description, f"{target.versus}: {why}", "n/a"
        )
    ratio = value / base
    verdict = "pass" if ratio <= target.limit else "FAIL"
    return TargetResult(
        scenario.number,
        target.issue,
        description,
        f"{ratio:.2f}x ({value:.3g} vs {base:.3g})",
        verdict,
    )


def summarize(
    scenario: Scenario,
    job: Job,
    rounds: int,
    contenders: list[Contender],
    results: Mapping[str, list[RunResult]],
) -> ScenarioSummary:
    summaries = []
    for contender in contenders:
        runs = list(results.get(contender.name, []))
        summaries.append(
            ContenderSummary(
                name=contender.name,
                flags=contender.flags,
                status=_status(contender, runs),
                runs=runs,
                stats=_stats(runs),
            )
        )
    table = ScenarioSummary(scenario, job, rounds, summaries, [])
    for reference in scenario.references:
        base = table.find(reference)
        base_value = base.median(scenario.primary) if base else None
        if not base_value:
            continue
        for summary in summaries:
            value = summary.median(scenario.primary)
            if value is not None:
                summary.ratios[reference] = value / base_value
    table.targets = [_judge(scenario, target, table) for target in scenario.targets]
    return table


# -- markdown ----------------------------------------------------------------------------


def _cell(summary: ContenderSummary, metric: str, digits: int, *, spread: bool) -> str:
    stat = summary.stats.get(metric)
    if stat is None:
        return "-"
    text = f"{stat.median:,.{digits}f}"
    if spread:
        text += f" ({stat.min:,.{digits}f}-{stat.max:,.{digits}f})"
    return text


def _scenario_markdown(table: ScenarioSummary) -> list[str]:
    scenario = table.scenario
    lines = [
        f"### Scenario {scenario.number}: {scenario.title}",
        "",
        f"{table.job_text()}; {table.rounds} round(s). Medians, (min-max) for the "
        f"ratio metric `{scenario.primary}`; ratios are of medians.",
        "",
    ]
    references = [r for r in scenario.references if table.find(r) is not None]
    header = ["contender", "runs ok", *(c.label for c in scenario.columns)]
    header += [f"vs {r}" for r in references]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in table.contenders:
        if summary.ok_runs == 0:
            blank = len(header) - 2
            cells = [summary.name, f"0/{len(summary.runs)}", summary.status, *["-"] * (blank - 1)]
        else:
            cells = [summary.name, f"{summary.ok_runs}/{len(summary.runs)}"]
            cells += [
                _cell(summary, c.metric, c.digits, spread=c.metric == scenario.primary)
                for c in scenario.columns
            ]
            cells += [
                f"{summary.ratios[r]:.2f}x" if r in summary.ratios else "-" for r in references
            ]
        lines.append("| " + " | ".join(cells) + " |")
    problems = [
        f"* {s.name}: {s.status}" for s in table.contenders if s.status != "ok" and s.ok_runs > 0
    ]
    notes = sorted({f"* {s.name}: {n}" for s in table.contenders for r in s.runs for n in r.notes})
    notes += [f"* {note}" for note in scenario.notes]
    if problems or notes:
        lines += ["", *problems, *notes]
    return [*lines, ""]


def markdown(
    tables: list[ScenarioSummary],
    machine: Mapping[str, str],
    header: Mapping[str, str],
    *,
    image: str | None = None,
) -> str:
    """The whole report: machine, the plot, one table per scenario, the targets."""
    lines = ["## Machine", ""]
    lines += [f"* **{key}**: {value}" for key, value in {**header, **machine}.items()]
    lines += ["", "## Results", ""]
    if image is not None:
        lines += [f"![Benchmark results: ratios to the references]({image})", ""]
    for table in tables:
        lines += _scenario_markdown(table)
    targets = [t for table in tables for t in table.targets]
    if targets:
        lines += ["## Targets", "", "| scenario | issue | target | measured | verdict |"]
        lines.append("|---|---|---|---|---|")
        for result in targets:
            verdict = f"**{result.verdict}**" if result.verdict == "FAIL" else result.verdict
            lines.append(
                f"| {result.scenario} | #{result.issue} | {result.target} | {result.measured} "
                f"| {verdict} |"
            )
        lines.append("")
    lines += ["## Command lines", ""]
    seen: set[str] = set()
    for table in tables:
        for summary in table.contenders:
            if summary.name not in seen:
                seen.add(summary.name)
                lines.append(f"* **{summary.name}**: {summary.flags}")
    return "\n".join([*lines, ""])


def as_json(
    tables: list[ScenarioSummary], machine: Mapping[str, str], header: Mapping[str, str]
) -> dict[str, object]:
    """Everything, including every run, for later comparison."""
    return {
        **header,
        "machine": dict(machine),
        "scenarios": [
            {
                "number": table.scenario.number,
                "title": table.scenario.title,
                "job": table.job_text(),
                "rounds": table.rounds,
                "primary_metric": table.scenario.primary,
                "contenders": [
                    {
                        "name": s.name,
                        "flags": s.flags,
                        "status": s.status,
                        "stats": {name: asdict(stat) for name, stat in s.stats.items()},
                        "ratios": s.ratios,
                        "runs": [asdict(run) for run in s.runs],
                    }
                    for s in table.contenders
                ],
                "targets": [asdict(t) for t in table.targets],
            }
            for table in tables
        ],
    }
