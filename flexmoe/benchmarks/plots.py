"""PNG figures of solver sweeps and federated runs (matplotlib, Agg backend).

matplotlib is imported inside each function so that importing the benchmarks stays
fast; every figure is written and closed, never shown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexmoe.benchmarks.summary import SolverSummary

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["fl_figures", "grouped_bars", "line_plot", "solver_figures"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figure(width: float = 7.0, height: float = 4.2, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, ncols, figsize=(width, height), layout="constrained", squeeze=False, sharey=True
    )
    return fig, list(axes.flat)


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def solver_figures(summaries: list[SolverSummary], out: Path) -> list[Path]:
    """Solve time vs size (log–log), gap to the best objective, load CV."""
    return [
        _time_vs_size(summaries, out / "solve_time.png"),
        grouped_bars(
            _by_group(summaries, "gap_to_best", scale=100.0),
            out / "objective_gap.png",
            title="Objective gap to the best verified objective (median over seeds)",
            ylabel="gap to best [%]  (negative: ignores constraints)",
            symlog=True,
        ),
        grouped_bars(
            _by_group(summaries, "load_cv"),
            out / "load_cv.png",
            title="Expert load spread (median over seeds)",
            ylabel="coefficient of variation of expert loads",
        ),
    ]


def _by_group(
    summaries: list[SolverSummary], attr: str, scale: float = 1.0
) -> dict[str, dict[str, float]]:
    """``{backend: {group: value}}`` in summary order."""
    table: dict[str, dict[str, float]] = {}
    for s in summaries:
        table.setdefault(s.backend, {})[s.group] = scale * float(getattr(s, attr))
    return table


def _time_vs_size(summaries: list[SolverSummary], path: Path) -> Path:
    lines: dict[str, list[tuple[float, float]]] = {}
    ticks = {float(s.pairs): f"{s.n_clients}×{s.n_experts}" for s in summaries}
    for s in summaries:
        if math.isfinite(s.wall_time) and s.wall_time > 0:
            lines.setdefault(s.backend, []).append((float(s.pairs), s.wall_time))
    return line_plot(
        {backend: sorted(points) for backend, points in lines.items()},
        path,
        title="Time in solve() vs instance size (median over seeds)",
        xlabel="clients × experts (decision variables)",
        ylabel="seconds (build + solve + verify)",
        log=True,
        xticks=ticks,
    )


def line_plot(
    lines: dict[str, Sequence[tuple[float, float]]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    log: bool = False,
    bands: dict[str, Sequence[float]] | None = None,
    xticks: dict[float, str] | None = None,
    integer_x: bool = False,
) -> Path:
    """One line per key; `bands` (same keys) draws ± a spread around each line;
    `xticks` replaces the x tick labels."""
    fig, (ax,) = _figure()
    for label, points in lines.items():
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        (line,) = ax.plot(xs, ys, marker="o", markersize=4, label=label)
        if bands and label in bands:
            lo = [y - d for y, d in zip(ys, bands[label], strict=True)]
            hi = [y + d for y, d in zip(ys, bands[label], strict=True)]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    if log and any(lines.values()):
        ax.set_xscale("log")
        ax.set_yscale("log")
    if xticks:
        ax.set_xticks(list(xticks), list(xticks.values()))
        ax.minorticks_off()
    if integer_x:
        _integer_ticks(ax)
    _decorate(ax, title, xlabel, ylabel, legend=any(lines.values()))
    return _save(fig, path)


def grouped_bars(
    table: dict[str, dict[str, float]],
    path: Path,
    *,
    title: str,
    ylabel: str,
    symlog: bool = False,
) -> Path:
    """Bars grouped by the inner keys (x axis), one colour per outer key; NaN skipped."""
    fig, (ax,) = _figure()
    groups = list(dict.fromkeys(g for values in table.values() for g in values))
    width = 0.8 / max(1, len(table))
    for i, (label, values) in enumerate(table.items()):
        xs = [j + (i - (len(table) - 1) / 2) * width for j, g in enumerate(groups)]
        ys = [values.get(g, math.nan) for g in groups]
        keep = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
        if keep:
            ax.bar([x for x, _ in keep], [y for _, y in keep], width=width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=15 if len(groups) > 3 else 0)
    if symlog:
        ax.set_yscale("symlog", linthresh=0.01)
    ax.axhline(0.0, color="black", linewidth=0.6)
    _decorate(ax, title, "", ylabel, legend=bool(table))
    return _save(fig, path)


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _decorate(ax: Any, title: str, xlabel: str, ylabel: str, *, legend: bool) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def fl_figures(histories: dict[str, list[dict[str, Any]]], out: Path) -> list[Path]:
    """Figures of federated runs; `histories` maps ``method@partition`` to the
    ``History.to_dict()`` of each seed; none when every run failed."""
    if not histories:
        return []
    return [
        _per_partition(histories, "personalized_acc", out / "accuracy_vs_round.png",
                       "Personalised test accuracy (mean ± std over seeds)", "accuracy"),
        _per_partition(histories, "holders.cv", out / "load_cv_vs_round.png",
                       "Spread of expert holders per round (mean over seeds)",
                       "CV of holders per expert"),
        _load_profile(histories, out / "expert_load.png"),
    ]  # fmt: skip


def _series(history: dict[str, Any], path: str) -> list[float]:
    values = []
    for record in history["rounds"]:
        value: Any = record
        for part in path.split("."):
            value = value[part]
        values.append(math.nan if value is None else float(value))
    return values


def _mean_std(runs: list[list[float]]) -> tuple[list[float], list[float]]:
    import numpy as np

    length = min(len(r) for r in runs)
    table = np.array([r[:length] for r in runs], dtype=float)
    return table.mean(axis=0).tolist(), table.std(axis=0).tolist()


def _per_partition(
    histories: dict[str, list[dict[str, Any]]], path_in_round: str, path: Path, title: str,
    ylabel: str,
) -> Path:  # fmt: skip
    """One panel per partition, one line per method (± std band over seeds)."""
    partitions = list(dict.fromkeys(key.partition("@")[2] for key in histories))
    fig, axes_list = _figure(4.2 * len(partitions) + 1, 3.8, ncols=len(partitions))
    for ax, part in zip(axes_list, partitions, strict=True):
        for key, runs in histories.items():
            method, _, partition = key.partition("@")
            if partition != part or not runs or not runs[0]["rounds"]:
                continue
            mean, std = _mean_std([_series(h, path_in_round) for h in runs])
            xs = list(range(1, len(mean) + 1))
            (line,) = ax.plot(xs, mean, marker="o", markersize=3, label=method)
            lo = [m - s for m, s in zip(mean, std, strict=True)]
            hi = [m + s for m, s in zip(mean, std, strict=True)]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        _integer_ticks(ax)
        _decorate(ax, part, "round", ylabel if ax is axes_list[0] else "", legend=True)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _load_profile(histories: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Holders per expert, each round sorted from most to least held, then averaged over
    rounds and runs: one line per method (flat = balanced every round)."""
    import numpy as np

    profiles: dict[str, list[np.ndarray]] = {}
    for key, runs in histories.items():
        method = key.partition("@")[0]
        for history in runs:
            loads = np.array([r["load_holders"] for r in history["rounds"]], dtype=float)
            if loads.size:
                profiles.setdefault(method, []).extend(-np.sort(-loads, axis=1))
    lines: dict[str, Sequence[tuple[float, float]]] = {
        method: [(float(i), y) for i, y in enumerate(np.mean(rows, axis=0).tolist(), start=1)]
        for method, rows in profiles.items()
    }
    return line_plot(
        lines,
        path,
        title="Expert load per round, experts sorted (mean over rounds and runs)",
        xlabel="expert rank in the round (most held first)",
        ylabel="clients holding the expert",
        integer_x=True,
    )
