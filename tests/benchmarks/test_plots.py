"""What the figures show (issue 16): read back from the matplotlib figures themselves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.patches import Rectangle

from flexmoe.benchmarks import plots
from flexmoe.benchmarks.fl import FlRun, fl_table, summarise_fl
from flexmoe.benchmarks.summary import SolverSummary


@pytest.fixture(name="figures")
def figures_fixture(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Figures by file name, kept open for the test instead of written."""
    kept: dict[str, Any] = {}

    def keep(fig: Any, path: Path) -> Path:
        kept[path.name] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    import matplotlib.pyplot as plt

    for fig in kept.values():
        plt.close(fig)


def _summary(backend: str, n: int, status: str, **kw: Any) -> SolverSummary:
    nan = math.nan
    values: dict[str, Any] = dict(
        backend=backend, group=f"clustered {n}x16x4", n_clients=n, n_experts=16, k=4, runs=3,
        statuses=status, wall_time=nan, solve_time=nan, build_time=nan, peak_mib=nan,
        objective=nan, gap=nan, gap_to_best=nan, load_cv=nan, load_max_over_mean=nan,
        under_load_min=nan, verified="-", floor_time=1e-5 * n, time_limit=30.0,
    )  # fmt: skip
    values.update(kw)
    return SolverSummary(**values)


SUMMARIES = [
    s
    for n in (100, 1000)
    for s in (
        _summary("flow", n, "optimal 3", wall_time=0.01 * n, gap=0.0, gap_to_best=0.0,
                 load_cv=0.1),
        _summary("greedy", n, "feasible 3", wall_time=0.001 * n, gap=math.inf,
                 gap_to_best=0.005, load_cv=0.1),
        _summary("greedy:topk", n, "relaxed 3", wall_time=0.0005 * n, gap_to_best=-0.9,
                 load_cv=1.5, relaxed=3),
        _summary("milp", n, "timeout 3", timeouts=3),
        _summary("picky", n, "unsupported 3"),
    )
]  # fmt: skip


def _legend(ax: Any) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def test_solve_time_draws_the_limit_the_time_outs_and_the_floor(figures):
    plots.solver_figures(SUMMARIES, Path("."), time_limit=30.0)
    (ax,) = figures["solve_time.png"].axes
    assert ax.get_yscale() == "log"
    labels = _legend(ax)
    assert labels == ["flow", "greedy", "greedy:topk", "floor: top-k pass", "time limit 30 s",
                      "milp: time-out"]  # fmt: skip
    timeouts = next(line for line in ax.lines if line.get_label() == "milp: time-out")
    assert list(timeouts.get_ydata()) == [30.0, 30.0]
    assert "(median over 3 seeds)" in ax.get_title()


def test_the_gap_plot_is_linear_percent_with_markers_for_what_has_no_gap(figures):
    plots.solver_figures(SUMMARIES, Path("."), time_limit=30.0)
    (ax,) = figures["objective_gap.png"].axes
    assert ax.get_yscale() == "linear"
    assert _legend(ax) == ["flow", "greedy", "greedy:topk", "milp",
                           "relaxed: breaks constraints (not comparable)",
                           "time-out: no answer"]  # fmt: skip
    heights = sorted(round(p.get_height(), 9) for p in ax.patches if isinstance(p, Rectangle))
    assert heights == [0.0, 0.0, 0.5, 0.5]  # flow and greedy only, in percent
    low, high = ax.get_ylim()
    assert low > -0.5 and high < 1.0  # the relaxed -90 % does not set the scale


def test_bars_get_no_legend_entry_without_a_bar(figures):
    plots.solver_figures(SUMMARIES, Path("."), time_limit=30.0)
    (ax,) = figures["load_cv.png"].axes
    assert _legend(ax) == ["flow", "greedy", "greedy:topk"]


def _history(acc: list[float], cv: list[float], loads: list[list[int]]) -> dict[str, Any]:
    rounds = [{"personalized_acc": a, "holders": {"cv": c}, "load_holders": load}
              for a, c, load in zip(acc, cv, loads, strict=True)]  # fmt: skip
    return {"rounds": rounds}


def _histories(seeds: int) -> dict[str, list[dict[str, Any]]]:
    loads = [[2, 2, 2, 2]] * 3
    flat = [_history([0.5, 0.6, 0.7], [0.0] * 3, loads) for _ in range(seeds)]
    skew = [_history([0.4, 0.5, 0.6], [0.5] * 3, [[4, 2, 1, 1]] * 3) for _ in range(seeds)]
    return {f"{m}@{p}": runs for p in ("iid", "shards:2")
            for m, runs in (("flex", flat), ("full", flat), ("greedy", skew))}  # fmt: skip


def test_coinciding_methods_stay_distinguishable(figures):
    plots.fl_figures(_histories(1), Path("."))
    left, right = figures["load_cv_vs_round.png"].axes
    lines = {line.get_label(): line for line in left.lines}
    flex, full = lines["flex"], lines["full"]
    assert list(flex.get_ydata()) == list(full.get_ydata())  # the same values
    assert flex.get_marker() != full.get_marker()
    assert flex.get_linestyle() != full.get_linestyle()
    assert flex.get_linewidth() > full.get_linewidth()  # the one below shows around it
    assert _legend(right) == ["flex", "full", "greedy"] and _legend(left) == []


def test_one_seed_draws_no_band_and_says_so(figures):
    plots.fl_figures(_histories(1), Path("."))
    fig = figures["accuracy_vs_round.png"]
    assert fig._suptitle.get_text() == "Personalised test accuracy (1 seed)"
    assert not any(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


def test_two_seeds_draw_bands_and_say_how_many(figures):
    plots.fl_figures(_histories(2), Path("."))
    fig = figures["accuracy_vs_round.png"]
    assert fig._suptitle.get_text() == "Personalised test accuracy (mean ± std over 2 seeds)"
    assert all(any(isinstance(c, PolyCollection) for c in ax.collections) for ax in fig.axes)


def test_expert_load_is_drawn_per_partition(figures):
    plots.fl_figures(_histories(2), Path("."))
    axes = figures["expert_load.png"].axes
    assert [ax.get_title() for ax in axes] == ["iid", "shards:2"]
    greedy = next(line for line in axes[0].lines if line.get_label() == "greedy")
    assert list(greedy.get_ydata()) == [4.0, 2.0, 1.0, 1.0]


def test_tables_show_no_plus_minus_with_one_seed():
    one = FlRun("flex", "iid", 0, 3, 0.9, 0.8, 0.0, 0.0, 2, 10, 0.01, 1.0, "runs/x.json")
    table = fl_table(summarise_fl([one]))
    assert "±" not in table and "0.900" in table
    two = FlRun("flex", "iid", 1, 3, 0.8, 0.7, 0.0, 0.0, 2, 10, 0.01, 1.0, "runs/y.json")
    assert "0.850 ± 0.071" in fl_table(summarise_fl([one, two]))
