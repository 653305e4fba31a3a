"""Figures of solver sweeps and federated runs, as a paper would print them.

Every figure is written as PNG (200 dpi, for the report) and PDF (vector, for a paper)
side by side, then closed, never shown. Each method keeps one colour, marker and line
style in every panel (:func:`styles`): where lines coincide — ``flex`` and ``full``
both at CV 0 — the thicker, earlier one stays visible around the later one. Titles say
how many seeds a point summarises; a band of ± one standard deviation is drawn only
when there are two seeds or more. matplotlib is imported inside the functions (Agg
backend) so that importing the benchmarks stays fast; without it they raise
:class:`~flexmoe.extras.MissingExtraError` naming the ``bench`` extra.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flexmoe.benchmarks.summary import SolverSummary
from flexmoe.extras import require_extra

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["fl_figures", "grouped_bars", "line_plot", "solver_figures", "styles"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_DPI = 200

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_LINESTYLES = ("-", "--", "-.", ":")
#: Markers of the answers a gap cannot describe (see :func:`_gap_plot`).
_NO_GAP = {
    "relaxed": ("v", "relaxed: breaks constraints (not comparable)"),
    "infeasible": ("s", "answered infeasible"),
    "timeout": ("X", "time-out: no answer"),
    "failed": ("x", "no answer (crash, memory, rejected)"),
}


def styles(labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Line and marker keyword arguments for each label, fixed by its position.

    Examples
    --------
    >>> s = styles(["flex", "full"])
    >>> s["flex"]["marker"], s["full"]["linestyle"], s["flex"]["linewidth"] > s["full"]["linewidth"]
    ('o', '--', True)
    """
    return {
        label: {
            "color": f"C{i % 10}",
            "marker": _MARKERS[i % len(_MARKERS)],
            "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
            "linewidth": max(1.0, 3.0 - 0.5 * i),
            "markersize": max(3.5, 8.0 - 1.0 * i),
            "markerfacecolor": "none",
            "markeredgewidth": 1.2,
            "zorder": 2 + i,
        }
        for i, label in enumerate(dict.fromkeys(labels))
    }


def _figure(
    width: float = 8.0, height: float = 4.2, ncols: int = 1, *, nrows: int = 1,
    sharey: bool | Literal["none", "all", "row", "col"] = True,
) -> tuple[Figure, list[Axes]]:  # fmt: skip
    require_extra("bench", modules=("matplotlib",), part="the plots of flexmoe-bench")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width, height), layout="constrained", squeeze=False,
        sharey=sharey,
    )  # fmt: skip
    return fig, list(axes.flat)


def _save(fig: Figure, path: Path) -> Path:
    """Write `path` (PNG) and the same figure as PDF beside it; return the PNG's path."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=PNG_DPI)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path


def _seeds(counts: Sequence[int], what: str = "seed") -> str:
    """``"3 seeds"``, ``"1 seed"``, ``"1–3 seeds"``."""
    ns = sorted(set(counts)) or [0]
    text = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"{text} {what}{'' if ns == [1] else 's'}"


# -- solver sweeps ---------------------------------------------------------------------


def solver_figures(
    summaries: list[SolverSummary], out: Path, *, time_limit: float | None = None
) -> list[Path]:
    """Solve time vs size (log–log, the limit and the floor drawn), gap to the best
    objective (linear percent), load CV; PNG paths (a PDF lies beside each)."""
    runs = [s.runs for s in summaries]
    per = f"median over {_seeds(runs)}" if any(n > 1 for n in runs) else "one run each"
    return [
        _time_vs_size(summaries, out / "solve_time.png", time_limit, per),
        _gap_plot(summaries, out / "objective_gap.png", per),
        grouped_bars(
            {b: {g: v for g, (v, _) in groups.items()}
             for b, groups in _by_group(summaries, "load_cv").items()},
            out / "load_cv.png",
            title=f"Expert load spread ({per})",
            ylabel="coefficient of variation of expert loads",
        ),
    ]  # fmt: skip


def _by_group(
    summaries: list[SolverSummary], attr: str, scale: float = 1.0
) -> dict[str, dict[str, tuple[float, SolverSummary]]]:
    """``{backend: {group: (value, summary)}}`` in summary order."""
    table: dict[str, dict[str, tuple[float, SolverSummary]]] = {}
    for s in summaries:
        table.setdefault(s.backend, {})[s.group] = (scale * float(getattr(s, attr)), s)
    return table


def _time_vs_size(
    summaries: list[SolverSummary], path: Path, time_limit: float | None, per: str
) -> Path:
    """Median time of the finished runs per backend; time-outs as crosses on the
    time-limit line; the top-k floor as a dotted black line."""
    lines: dict[str, list[tuple[float, float]]] = {}
    timeouts: dict[str, list[float]] = {}
    floor: dict[float, float] = {}
    ticks = {float(s.pairs): f"{s.n_clients}×{s.n_experts}" for s in summaries}
    for s in summaries:
        if math.isfinite(s.wall_time) and s.wall_time > 0:
            lines.setdefault(s.backend, []).append((float(s.pairs), s.wall_time))
        if s.timeouts:
            timeouts.setdefault(s.backend, []).append(float(s.pairs))
        if math.isfinite(s.floor_time) and s.floor_time > 0:
            floor[float(s.pairs)] = s.floor_time
    style = styles([s.backend for s in summaries])
    fig, (ax,) = _figure()
    for label, points in lines.items():
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, label=label, **style[label])
    if floor:
        xs, ys = zip(*sorted(floor.items()), strict=True)
        ax.plot(xs, ys, color="black", linestyle=":", linewidth=1.2, marker=".",
                label="floor: top-k pass")  # fmt: skip
    if time_limit is not None and (lines or timeouts):
        ax.axhline(time_limit, color="firebrick", linestyle="--", linewidth=1.0,
                   label=f"time limit {time_limit:g} s")  # fmt: skip
        for label, xs_out in timeouts.items():
            ax.plot(xs_out, [time_limit] * len(xs_out), linestyle="none", marker="X",
                    markersize=10, color=style[label]["color"], zorder=10,
                    label=f"{label}: time-out")  # fmt: skip
    if lines or floor:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xticks(list(ticks), list(ticks.values()))
    ax.minorticks_off()
    _decorate(ax, f"Time in solve() vs instance size ({per})",
              "clients × experts (decision variables)", "seconds (build + solve + verify)",
              legend=True)  # fmt: skip
    return _save(fig, path)


def _gap_plot(summaries: list[SolverSummary], path: Path, per: str) -> Path:
    """Gap to the best verified objective, linear percent, one bar per backend and
    group; an answer that a gap cannot describe is a marker on the zero line instead
    (relaxed, infeasible, time-out, no answer), so that none dominates the axis."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    table = _by_group(summaries, "gap_to_best", scale=100.0)
    groups = list(dict.fromkeys(s.group for s in summaries))
    style = styles(list(table))
    fig, (ax,) = _figure()
    width = 0.8 / max(1, len(table))
    used: set[str] = set()
    drawn: list[str] = []
    for i, (label, values) in enumerate(table.items()):
        for j, group in enumerate(groups):
            if group not in values:
                continue
            value, summary = values[group]
            kind = _no_gap_kind(summary, value)
            if kind == "":
                continue
            drawn.append(label)
            x = j + (i - (len(table) - 1) / 2) * width
            if kind is None:
                _gap_bar(ax, x, width, value, summary, style[label]["color"])
            else:
                used.add(kind)
                _gap_marker(ax, x, value, kind, style[label]["color"])
    handles: list[Any] = [Patch(color=style[label]["color"], label=label)
                          for label in dict.fromkeys(drawn)]  # fmt: skip
    handles += [Line2D([], [], linestyle="none", marker=_NO_GAP[kind][0], markerfacecolor="none",
                       color="grey", label=_NO_GAP[kind][1])
                for kind in _NO_GAP if kind in used]  # fmt: skip
    ax.set_xticks(range(len(groups)), [_tick(g) for g in groups])
    ax.axhline(0.0, color="black", linewidth=0.6)
    bars = [v for values in table.values() for v, s in values.values()
            if _no_gap_kind(s, v) is None]  # fmt: skip
    top = max([0.0, *bars])
    ax.set_ylim(min([0.0, *bars]) - 0.15 * max(top, 0.1), 1.25 * max(top, 0.1))
    _decorate(ax, f"Objective gap to the best verified objective ({per})", "",
              "gap to best [%]  (0: the best known)", legend=False)  # fmt: skip
    if handles:
        _legend(ax, handles)
    return _save(fig, path)


def _gap_bar(ax: Any, x: float, width: float, value: float, s: SolverSummary, colour: str) -> None:
    """A bar with a dot on top, so that a zero gap still shows."""
    ax.bar(x, value, width=width * 0.9, color=colour, zorder=2)
    ax.plot(x, value, marker="o", markersize=6, color=colour, markeredgecolor="black",
            markeredgewidth=0.6, zorder=3)  # fmt: skip
    if s.timeouts:  # some seeds answered, others timed out
        ax.annotate(f"{s.timeouts}/{s.runs}\ntime-out", (x, value), ha="center",
                    textcoords="offset points", xytext=(0, 6), fontsize=7)  # fmt: skip


def _gap_marker(ax: Any, x: float, value: float, kind: str, colour: str) -> None:
    """The marker of an answer without a comparable gap, on the zero line."""
    ax.plot(x, 0.0, linestyle="none", marker=_NO_GAP[kind][0], markersize=9,
            markerfacecolor="none", markeredgewidth=1.6, color=colour, zorder=4)  # fmt: skip
    if kind == "relaxed" and math.isfinite(value):
        ax.annotate(f"{value:+.2g} %", (x, 0.0), textcoords="offset points", xytext=(0, -14),
                    ha="center", fontsize=7)  # fmt: skip


def _no_gap_kind(s: SolverSummary, value: float) -> str | None:
    """Which marker of :data:`_NO_GAP` replaces the bar of `s`: None when `value` is a
    comparable gap (a bar), ``""`` when there is nothing to draw (the backend declined
    the instances or is not installed)."""
    if s.relaxed and s.relaxed + s.timeouts + s.failed >= s.runs:
        return "relaxed"
    if math.isfinite(value):
        return None
    for kind, count in (("timeout", s.timeouts), ("infeasible", s.infeasible),
                        ("failed", s.failed)):  # fmt: skip
        if count:
            return kind
    return ""


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
    """One line per key, each with its own colour, marker and line style; `bands` (same
    keys) draws ± a spread around each line; `xticks` replaces the x tick labels."""
    fig, (ax,) = _figure()
    _draw_lines(ax, lines, styles(list(lines)), bands)
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


def _draw_lines(
    ax: Any,
    lines: Mapping[str, Sequence[tuple[float, float]]],
    style: dict[str, dict[str, Any]],
    bands: Mapping[str, Sequence[float]] | None = None,
) -> None:
    for label, points in lines.items():
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        # Many points: each line marks every n-th, starting at its own offset, so that
        # markers of coinciding lines never sit on each other.
        n, i = max(2, len(style)), list(style).index(label)
        every = (i % n, n) if len(xs) > 12 else None
        ax.plot(xs, ys, label=label, markevery=every, **style[label])
        if bands and label in bands:
            lo = [y - d for y, d in zip(ys, bands[label], strict=True)]
            hi = [y + d for y, d in zip(ys, bands[label], strict=True)]
            ax.fill_between(xs, lo, hi, color=style[label]["color"], alpha=0.12, linewidth=0)


def grouped_bars(
    table: dict[str, dict[str, float]],
    path: Path,
    *,
    title: str,
    ylabel: str,
) -> Path:
    """Bars grouped by the inner keys (x axis), one colour per outer key; NaN skipped,
    and a key with no bar at all gets no legend entry."""
    fig, (ax,) = _figure()
    groups = list(dict.fromkeys(g for values in table.values() for g in values))
    style = styles(list(table))
    table = {k: v for k, v in table.items() if any(math.isfinite(y) for y in v.values())}
    width = 0.8 / max(1, len(table))
    for i, (label, values) in enumerate(table.items()):
        xs = [j + (i - (len(table) - 1) / 2) * width for j, g in enumerate(groups)]
        ys = [values.get(g, math.nan) for g in groups]
        keep = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
        if keep:
            ax.bar([x for x, _ in keep], [y for _, y in keep], width=width * 0.9, label=label,
                   color=style[label]["color"])  # fmt: skip
    ax.set_xticks(range(len(groups)), [_tick(g) for g in groups])
    ax.axhline(0.0, color="black", linewidth=0.6)
    _decorate(ax, title, "", ylabel, legend=bool(table))
    return _save(fig, path)


def _tick(group: str) -> str:
    """A group's tick label on two lines (``clustered`` over ``1000x64x8``): side by side,
    long labels would run into each other."""
    return group.replace(" ", "\n", 1)


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _decorate(ax: Any, title: str, xlabel: str, ylabel: str, *, legend: bool) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        _legend(ax)


def _legend(ax: Any, handles: list[Any] | None = None) -> None:
    """The legend right of the axes, where it hides no data."""
    kwargs: dict[str, Any] = {"handles": handles} if handles else {}
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              frameon=False, **kwargs)  # fmt: skip


# -- federated runs --------------------------------------------------------------------


def fl_figures(histories: dict[str, list[dict[str, Any]]], out: Path) -> list[Path]:
    """Figures of federated runs; `histories` maps ``method@partition`` to the
    ``History.to_dict()`` of each seed; none when every run failed."""
    if not histories:
        return []
    seeds = _seeds([len(runs) for runs in histories.values()])
    spread = f"mean ± std over {seeds}" if seeds != "1 seed" else "1 seed"
    figures = [
        _per_partition(histories, "personalized_acc", out / "accuracy_vs_round.png",
                       f"Personalised test accuracy ({spread})", "accuracy"),
        _per_partition(histories, "holders.cv", out / "load_cv_vs_round.png",
                       f"Spread of expert holders per round ({spread})",
                       "CV of holders per expert"),
        _load_profile(histories, out / "expert_load.png", seeds),
    ]  # fmt: skip
    first = next(iter(histories.values()))[0]["rounds"]
    if first and "personalized_val_acc" in first[0]:  # the full records of a run
        figures += [
            _panels(histories, ACCURACY_PANELS, out / "accuracy_rounds.png",
                    f"Accuracy per round ({spread})", "accuracy"),
            _panels(histories, CV_PANELS, out / "cv_rounds.png",
                    f"Load spread per round: holders and routed samples ({spread})",
                    "coefficient of variation"),
            *_holdings(histories, out),
        ]  # fmt: skip
    return figures


#: (per-round path, y label) of each panel of ``accuracy_rounds.png`` and ``cv_rounds.png``.
ACCURACY_PANELS = (
    ("personalized_val_acc", "personalised, validation"),
    ("personalized_acc", "personalised, test"),
    ("global_acc", "global, test"),
)
CV_PANELS = (("holders.cv", "holders per expert"),
             ("routed.cv", "samples routed per expert"))  # fmt: skip


def _panels(
    histories: dict[str, list[dict[str, Any]]], panels: Sequence[tuple[str, str]], path: Path,
    title: str, ylabel: str,
) -> Path:  # fmt: skip
    """A row per partition, a panel per quantity, a line per arm (± std band)."""
    partitions, methods = _partitions(histories)
    style = styles(methods)
    fig, axes = _figure(3.6 * len(panels) + 2, 3.2 * len(partitions), len(panels),
                        nrows=len(partitions), sharey="col")  # fmt: skip
    for i, part in enumerate(partitions):
        for j, (key, label) in enumerate(panels):
            ax = axes[i * len(panels) + j]
            lines, bands = _lines(histories, methods, part, key)
            _draw_lines(ax, lines, style, bands)
            _integer_ticks(ax)
            last = i == 0 and j == len(panels) - 1
            _decorate(ax, f"{part}: {label}", "round", ylabel if j == 0 else "", legend=last)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _lines(
    histories: dict[str, list[dict[str, Any]]], methods: list[str], part: str, key: str
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, Sequence[float]]]:
    """Per method, the mean over seeds of one per-round quantity, and its std."""
    lines: dict[str, list[tuple[float, float]]] = {}
    bands: dict[str, Sequence[float]] = {}
    for method in methods:
        runs = histories.get(f"{method}@{part}", [])
        if not runs or not runs[0]["rounds"]:
            continue
        mean, std = _mean_std([_series(h, key) for h in runs])
        lines[method] = [(float(i), m) for i, m in enumerate(mean, start=1)]
        if std is not None:
            bands[method] = std
    return lines, bands


def _holdings(histories: dict[str, list[dict[str, Any]]], out: Path) -> list[Path]:
    """Per partition, a client × expert map of each arm's holdings in its first seed:
    the last round, and the share of rounds each pair was held."""
    partitions, methods = _partitions(histories)
    paths = []
    for part in partitions:
        arms = [m for m in methods if histories.get(f"{m}@{part}")]
        name = "holdings.png" if len(partitions) == 1 else f"holdings-{_slug(part)}.png"
        paths.append(_holding_maps(arms, [histories[f"{m}@{part}"][0] for m in arms],
                                   out / name, part))  # fmt: skip
    return paths


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "" for c in text)


def _held(history: dict[str, Any]) -> tuple[Any, Any]:
    """(held in the last round, share of rounds held): arrays (clients, experts)."""
    import numpy as np

    setup = history.get("setup", {})
    n_clients = len(setup.get("capacity", [])) or 1 + max(
        c for r in history["rounds"] for c in r["participants"])  # fmt: skip
    n_experts = len(history["rounds"][0]["load_holders"])
    counts = np.zeros((n_clients, n_experts))
    last = np.zeros((n_clients, n_experts))
    for record in history["rounds"]:
        last[:] = 0.0
        for client, experts in zip(record["participants"], record["assignment"]["experts"],
                                   strict=True):  # fmt: skip
            counts[client, experts] += 1
            last[client, experts] = 1.0
    return last, counts / len(history["rounds"])


def _holding_maps(arms: list[str], runs: list[dict[str, Any]], path: Path, part: str) -> Path:
    fig, axes = _figure(8.0, 1.0 + 2.1 * len(arms), 2, nrows=len(arms), sharey=False)
    image = None
    for i, (arm, history) in enumerate(zip(arms, runs, strict=True)):
        last, share = _held(history)
        for j, (values, what) in enumerate(((last, "last round"), (share, "share of rounds"))):
            ax = axes[2 * i + j]
            image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                              interpolation="nearest")  # fmt: skip
            ax.set_title(f"{arm}: {what}", fontsize=9)
            ax.set_ylabel("client" if j == 0 else "")
            ax.set_xlabel("expert" if i == len(arms) - 1 else "")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="held (share of rounds)")
    seed = runs[0]["config"].get("seed", "?") if runs and "config" in runs[0] else "?"
    fig.suptitle(f"Holdings, client × expert ({part}, seed {seed})", fontsize=10)
    return _save(fig, path)


def _series(history: dict[str, Any], path: str) -> list[float]:
    values = []
    for record in history["rounds"]:
        value: Any = record
        for part in path.split("."):
            value = value[part]
        values.append(math.nan if value is None else float(value))
    return values


def _mean_std(runs: list[list[float]]) -> tuple[list[float], list[float] | None]:
    """Mean over runs per round, and the std (None with one run: no spread to draw)."""
    import numpy as np

    length = min(len(r) for r in runs)
    table = np.array([r[:length] for r in runs], dtype=float)
    std = table.std(axis=0).tolist() if len(runs) > 1 else None
    return table.mean(axis=0).tolist(), std


def _partitions(histories: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[str]]:
    """(partitions, methods) in the order first seen."""
    keys = [key.partition("@") for key in histories]
    return list(dict.fromkeys(p for _, _, p in keys)), list(dict.fromkeys(m for m, _, _ in keys))


def _per_partition(
    histories: dict[str, list[dict[str, Any]]], path_in_round: str, path: Path, title: str,
    ylabel: str,
) -> Path:  # fmt: skip
    """One panel per partition, one line per method (± std band with two seeds or more)."""
    partitions, methods = _partitions(histories)
    style = styles(methods)
    fig, axes_list = _figure(4.2 * len(partitions) + 2, 3.8, ncols=len(partitions))
    for ax, part in zip(axes_list, partitions, strict=True):
        lines, bands = _lines(histories, methods, part, path_in_round)
        _draw_lines(ax, lines, style, bands)
        _integer_ticks(ax)
        _decorate(ax, part, "round", ylabel if ax is axes_list[0] else "",
                  legend=ax is axes_list[-1])  # fmt: skip
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _load_profile(histories: dict[str, list[dict[str, Any]]], path: Path, seeds: str) -> Path:
    """Per partition: holders per expert, each round sorted from most to least held,
    then averaged over rounds and seeds; one line per method (flat = balanced)."""
    import numpy as np

    partitions, methods = _partitions(histories)
    style = styles(methods)
    fig, axes_list = _figure(4.2 * len(partitions) + 2, 3.8, ncols=len(partitions))
    for ax, part in zip(axes_list, partitions, strict=True):
        lines: dict[str, list[tuple[float, float]]] = {}
        for method in methods:
            rows = [-np.sort(-np.array([r["load_holders"] for r in h["rounds"]], float), axis=1)
                    for h in histories.get(f"{method}@{part}", []) if h["rounds"]]  # fmt: skip
            if rows:
                mean = np.concatenate(rows).mean(axis=0)
                lines[method] = [(float(i), float(y)) for i, y in enumerate(mean, start=1)]
        _draw_lines(ax, lines, style)
        _integer_ticks(ax)
        ylabel = "clients holding the expert" if ax is axes_list[0] else ""
        _decorate(ax, part, "expert rank in the round (most held first)", ylabel,
                  legend=ax is axes_list[-1])  # fmt: skip
    fig.suptitle(f"Expert load per round, experts sorted (mean over rounds and {seeds})",
                 fontsize=10)  # fmt: skip
    return _save(fig, path)
