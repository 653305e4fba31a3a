"""Rows, gaps to the best known objective and medians over seeds."""

from __future__ import annotations

import math

from flexmoe.benchmarks.records import SolverRun, read_jsonl, write_jsonl
from flexmoe.benchmarks.solvers import assign_gaps
from flexmoe.benchmarks.summary import summarise, summary_table


def _row(backend: str, seed: int, status: str, objective: float, **kw) -> SolverRun:
    kw.setdefault("verified", True)
    return SolverRun(backend, f"u-10x4x2-s{seed}", "u", 10, 4, 2, seed, status,
                     objective=objective, **kw)  # fmt: skip


def test_gap_to_best_uses_verified_constrained_answers_only():
    rows = [
        _row("flow", 0, "optimal", 10.0),
        _row("greedy", 0, "feasible", 9.0),
        _row("greedy:topk", 0, "relaxed", 12.0),
        _row("liar", 0, "error", 50.0, verified=None),
        _row("slow", 0, "timeout", math.nan, verified=None),
    ]
    assign_gaps(rows)
    assert [r.best_objective for r in rows] == [10.0] * 5
    gaps = [r.gap_to_best for r in rows]
    assert gaps[:3] == [0.0, 0.1, -0.2]
    assert math.isnan(gaps[3]) and math.isnan(gaps[4])


def test_medians_over_seeds_and_status_counts():
    rows = [
        _row("flow", s, "optimal", 10.0, wall_time=t) for s, t in enumerate([3.0, 1.0, 2.0])
    ] + [_row("milp", 0, "optimal", 10.0, wall_time=4.0), _row("milp", 1, "timeout", math.nan)]
    for row in rows[3:]:
        row.verified = row.verified if row.status == "optimal" else None
    flow, milp = summarise(rows)
    assert (flow.backend, flow.runs, flow.wall_time, flow.statuses) == ("flow", 3, 2.0, "optimal 3")
    assert (milp.wall_time, milp.statuses, milp.verified) == (4.0, "optimal 1, timeout 1", "yes")
    table = summary_table([flow, milp])
    assert table.splitlines()[2].split()[:5] == ["flow", "u", "10x4x2", "3", "optimal"]


def test_jsonl_round_trip_keeps_nan(tmp_path):
    row = _row("flow", 0, "optimal", 1.5, options={"seed": 0}, under_load_min=0)
    path = write_jsonl(tmp_path / "r.jsonl", [row.to_dict()])
    (back,) = read_jsonl(path)
    assert back.objective == 1.5 and math.isnan(back.wall_time) and back.options == {"seed": 0}
