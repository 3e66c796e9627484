"""The PNG: one panel per scenario, bars of medians with min-max whiskers.

Panels with a reference show each contender's time as a ratio to it (1.0 =
the reference, shorter is faster), as measured side by side; the absolute median
is written on every bar. Contenders that could not run are listed with why.
"""

from __future__ import annotations

import math
from pathlib import Path

from _report import ContenderSummary, ScenarioSummary

__all__ = ["plot"]

_COLORS = {"bgtransfer": "#1f77b4", "aiohttp": "#7f7f7f", "other": "#ff7f0e"}


def _color(name: str) -> str:
    if name.startswith("bgtransfer"):
        return _COLORS["bgtransfer"]
    if name.startswith("aiohttp"):
        return _COLORS["aiohttp"]
    return _COLORS["other"]


def _bars(
    table: ScenarioSummary,
) -> tuple[list[str], list[float], list[tuple[float, float]], list[str], list[str]]:
    """Labels, values, (low, high) whisker lengths, bar texts, colours."""
    scenario = table.scenario
    base_summary = table.find(scenario.plot_versus) if scenario.plot_versus else None
    labels: list[str] = []
    values: list[float] = []
    whiskers: list[tuple[float, float]] = []
    texts: list[str] = []
    colors: list[str] = []
    names = {column.metric: column.label for column in scenario.columns}
    for summary in table.contenders:
        for metric in scenario.plot_metrics:
            label = (
                summary.name
                if len(scenario.plot_metrics) == 1
                else f"{summary.name}: {names.get(metric, metric)}"
            )
            stat = summary.stats.get(metric)
            base = base_summary.median(metric) if base_summary else None
            labels.append(label)
            colors.append(_color(summary.name))
            if stat is None or (scenario.plot_versus and not base):
                values.append(0.0)
                whiskers.append((0.0, 0.0))
                texts.append(_why(summary))
                continue
            scale = base if base else 1.0
            values.append(stat.median / scale)
            whiskers.append(((stat.median - stat.min) / scale, (stat.max - stat.median) / scale))
            texts.append(f"{stat.median:.2f} s" if metric.endswith("_s") else f"{stat.median:.3g}")
    return labels, values, whiskers, texts, colors


def _why(summary: ContenderSummary) -> str:
    notes = sorted({note for run in summary.runs for note in run.notes})
    return "; ".join(notes) if notes else summary.status


def plot(tables: list[ScenarioSummary], path: Path, title: str) -> Path | None:
    """Write the PNG; None (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: PLC0415  (a bench-only dependency, optional)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    columns = 2 if len(tables) > 1 else 1
    rows = math.ceil(len(tables) / columns)
    heights = [max(len(t.contenders) * len(t.scenario.plot_metrics), 2) for t in tables]
    figure, axes = plt.subplots(
        rows, columns, figsize=(8 * columns, 0.45 * max(heights) * rows + 1.6 * rows), squeeze=False
    )
    for index, table in enumerate(tables):
        _panel(axes[index // columns][index % columns], table)
    for index in range(len(tables), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _panel(axis: object, table: ScenarioSummary) -> None:
    from matplotlib.axes import Axes  # noqa: PLC0415

    assert isinstance(axis, Axes)
    scenario = table.scenario
    labels, values, whiskers, texts, colors = _bars(table)
    positions = list(range(len(labels)))
    errors = [[low for low, _ in whiskers], [high for _, high in whiskers]]
    axis.barh(positions, values, xerr=errors, color=colors, capsize=3)
    axis.set_yticks(positions, labels, fontsize=8)
    axis.invert_yaxis()
    top = max([v + w[1] for v, w in zip(values, whiskers, strict=True)] + [1.0])
    axis.set_xlim(0, top * 1.45)
    for position, value, whisker, text in zip(positions, values, whiskers, texts, strict=True):
        axis.text(value + whisker[1] + top * 0.02, position, text, va="center", fontsize=7)
    if scenario.plot_versus:
        axis.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
        axis.set_xlabel(f"{scenario.primary} / {scenario.plot_versus} (median; lower is faster)")
    else:
        axis.set_xlabel("seconds (median, min-max); red: the targets")
        for target in scenario.targets:
            if target.metric in scenario.plot_metrics and target.metric.endswith("_s"):
                axis.axvline(target.limit, color="red", linewidth=0.8, linestyle=":")
    axis.set_title(f"{scenario.number}. {scenario.title}", fontsize=9)
    axis.tick_params(axis="x", labelsize=8)
