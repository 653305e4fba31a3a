"""milp at 1,000 × 64 with storage, compute and weighted loads (targets: a certified gap
≤ 0.1 % in ≤ 5 s, optimal in ≤ 15 s) and the vectorised model build at 10,000 × 64
(target: ≤ 1 s and ≤ 20 % of the solve): `make bench`, or
`pytest benchmarks/bench_milp.py --benchmark-only --benchmark-columns=median,min,max,rounds`.
Old against new, side by side in one run: ``benchmarks/milp_compare.py`` (its docstring).

The instance combines the two generators that need the MILP: ``heterogeneous`` (tiers of
2/4/8 experts, expert sizes and per-client compute costs) and data volumes from the
``weighted`` recipe (log-normal, σ = 1) with the ±10 % band on weighted loads. Budgets are
25 % above a tier's average need (`headroom`); with the generator's own budgets (±15 %
around the need, `headroom=1`) HiGHS 1.16 finds no feasible point within 20 s on the
shared 2-core machine, which is noted in the report rather than hidden.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from flexmoe.assign import AssignmentProblem, Status
from flexmoe.assign.backends import milp
from flexmoe.assign.backends.milp import engines
from flexmoe.assign.instances import generate, load_band


def general(
    n_clients: int, n_experts: int, k: int = 8, *, seed: int = 0, headroom: float = 1.25
) -> AssignmentProblem:
    """Storage, compute and weighted loads, feasible by construction (round-robin
    witness inside every budget and band)."""
    p = generate("heterogeneous", n_clients, n_experts, k, seed=seed)
    rng = np.random.default_rng(seed + 1)
    volume = np.maximum(1.0, np.round(rng.lognormal(math.log(500), 1.0, n_clients)))
    counts = p.max_experts
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slots = (first[:, None] + np.arange(counts.max())) % n_experts
    witness = np.zeros(p.shape, dtype=bool)
    rows, cols = np.nonzero(np.arange(counts.max()) < counts[:, None])
    witness[rows, slots[rows, cols]] = True
    lo, hi = load_band(float(volume @ counts) / n_experts, 0.1, n_experts, volume @ witness)
    assert p.storage is not None and p.compute_budget is not None
    return p.replace(
        load_weight=np.broadcast_to(volume[:, None], p.shape),
        load_min=lo,
        load_max=hi,
        storage=p.storage * headroom,
        compute_budget=p.compute_budget * headroom,
        name=f"general-{n_clients}x{n_experts}x{k}-s{seed}",
    )


@pytest.fixture(scope="module")
def medium() -> AssignmentProblem:
    return general(1_000, 64)


@pytest.fixture(scope="module")
def large() -> AssignmentProblem:
    return general(10_000, 64)


def _root_info(result: object) -> dict:
    """What the root phase did (bounds, incumbents, pairs kept), for the report."""
    root = dict(result.info.get("root", {}))  # type: ignore[attr-defined]
    root["incumbents"] = [(source, value) for source, value, _ in root.get("incumbents", [])]
    return root


def test_milp_1000x64_general_gap_0_1pct(benchmark, medium):
    """A certified gap ≤ 0.1 % within 5 s. ``mip_gap=1e-3`` makes that "optimal"; a run
    that ends at the 5 s limit with a certified gap under 0.1 % is FEASIBLE and meets the
    target too."""
    result = benchmark.pedantic(
        milp.solve,
        args=(medium,),
        kwargs={"time_limit": 5.0, "mip_gap": 1e-3},
        rounds=5,
        iterations=1,
    )
    benchmark.extra_info.update(status=str(result.status), gap=result.gap, root=_root_info(result))
    assert result.status in (Status.OPTIMAL, Status.FEASIBLE) and result.gap <= 1e-3, result


def test_milp_1000x64_general_optimal(benchmark, medium):
    """Time to the default 1e-6 gap (target ≤ 15 s; a 60 s limit, reported)."""
    result = benchmark.pedantic(
        milp.solve, args=(medium,), kwargs={"time_limit": 60.0}, rounds=3, iterations=1
    )
    benchmark.extra_info.update(status=str(result.status), gap=result.gap, root=_root_info(result))
    assert result.status is Status.OPTIMAL, result


def _build(problem: AssignmentProblem) -> object:
    """What the ``highs`` engine does before solving: arrays, then HiGHS's own model."""
    model = milp.formulate(problem)
    return engines.HighsEngine(model, engines.Settings(milp.DEFAULT_MIP_GAP))


def test_build_10000x64_general(benchmark, large):
    benchmark.pedantic(_build, args=(large,), rounds=5, iterations=1, warmup_rounds=1)


def test_build_share_10000x64_general(benchmark, large):
    """One solve with a 60 s limit: the build's share of the whole call."""
    result = benchmark.pedantic(
        milp.solve, args=(large,), kwargs={"time_limit": 60.0}, rounds=1, iterations=1
    )
    total = result.build_time + result.solve_time + result.info["warm_start_time"]
    benchmark.extra_info.update(
        status=str(result.status),
        gap=result.gap,
        build_time=result.build_time,
        build_share=result.build_time / total,
    )
    assert result.build_time <= 0.2 * total
