"""convex at 1,000 × 64: the first solve (CVXPY compiles the relaxation) against a
re-solve with the next round's utilities (target: re-solve ≥ 3× faster): `make bench`, or
`pytest benchmarks/bench_convex.py --benchmark-only --benchmark-columns=median,min,max,rounds`.

Three instances: ``clustered`` count loads with the variance penalty (a QP, Clarabel),
and the storage/compute/weighted-load instance of ``bench_milp`` with the variance
penalty (a QP, Clarabel) and with the range penalty (an LP, HiGHS). A round updates
utilities as the federated loop does: an EMA step (β = 0.3) towards a fresh score on the
pairs the last relaxation assigned. Re-solves run two ways: ``warm`` (the default: the
last solve's working set, certified by pricing) and ``parameters`` (``warm=False``: every
pair, new parameter values, nothing compiled). The first solve also runs on candidate
pairs (``candidates=True``), the other way to solve fewer pairs.
"""

from __future__ import annotations

import numpy as np
import pytest

from flexmoe.assign import AssignmentProblem
from flexmoe.assign.backends import convex
from flexmoe.assign.instances import generate


def _general() -> AssignmentProblem:
    from bench_milp import general

    return general(1_000, 64).replace(balance_penalty=1e-3, balance_metric="range")


def _general_variance() -> AssignmentProblem:
    return _general().replace(balance_metric="variance")


INSTANCES = {
    "clustered-variance": lambda: generate("clustered", 1_000, 64, 8, seed=0).replace(
        balance_penalty=0.01
    ),
    "general-variance": _general_variance,
    "general-range": _general,
}


def next_round(
    problem: AssignmentProblem, z: np.ndarray, rng: np.random.Generator
) -> AssignmentProblem:
    """The fitness update on the assigned pairs: Q ← 0.7·Q + 0.3·s."""
    held = z > 0.5
    utility = problem.utility.copy()
    utility[held] = 0.7 * utility[held] + 0.3 * rng.random(int(held.sum()))
    return problem.replace(utility=utility)


@pytest.fixture(scope="module", params=list(INSTANCES))
def instance(request) -> AssignmentProblem:
    return INSTANCES[request.param]()


@pytest.mark.parametrize("candidates", [False, True], ids=["all-pairs", "candidates"])
def test_relaxation_first_solve(benchmark, instance, candidates):
    def first() -> convex.Relaxation:
        return convex.ConvexSolver(instance, candidates=candidates).relax(instance)

    relaxation = benchmark.pedantic(first, rounds=3, iterations=1)
    assert relaxation.status == "optimal" and relaxation.compiled


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "parameters"])
def test_relaxation_re_solve(benchmark, instance, warm):
    """Seven rounds after a first solve; each re-solve's value is checked against a cold
    solve of every pair (outside the timing)."""
    solver = convex.ConvexSolver(instance, warm=warm)
    state = {"problem": instance, "z": solver.relax(instance).z}
    rng = np.random.default_rng(1)
    seen: list[convex.Relaxation] = []

    def setup() -> tuple[tuple, dict]:
        state["problem"] = next_round(state["problem"], state["z"], rng)
        return (state["problem"],), {}

    def re_solve(problem: AssignmentProblem) -> convex.Relaxation:
        relaxation = solver.relax(problem)
        state["z"] = relaxation.z
        seen.append(relaxation)
        return relaxation

    relaxation = benchmark.pedantic(re_solve, setup=setup, rounds=7, iterations=1)
    cold = convex.ConvexSolver(state["problem"], warm=False).relax(state["problem"])
    benchmark.extra_info.update(
        pairs=[r.pairs for r in seen], compiled_rounds=sum(r.compiled for r in seen)
    )
    assert all(r.status == "optimal" for r in seen)
    assert relaxation.value == pytest.approx(cold.value, rel=1e-6)
    assert relaxation.bound >= cold.value - 1e-6 * abs(cold.value)
    assert warm or not any(r.compiled for r in seen)


def test_backend_rounds(benchmark, instance):
    """The whole backend (relaxation + rounding) over four rounds from a cold cache;
    extra_info keeps the first round's time and the median of the later ones."""
    rng = np.random.default_rng(2)

    def rounds() -> list[float]:
        convex.clear_cache()
        problem, times = instance, []
        for _ in range(4):
            result = convex.solve(problem)
            times.append(result.build_time + result.solve_time)
            assert result.x is not None
            problem = next_round(problem, result.x.astype(float), rng)
        return times

    times = benchmark.pedantic(rounds, rounds=1, iterations=1)
    later = float(np.median(times[1:]))
    benchmark.extra_info.update(first=times[0], later_median=later, ratio=times[0] / later)
