"""The convex backend: its bound brackets the optimum from above, its assignment from
below; the compiled relaxation is reused across rounds; infeasibility comes with a proof."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexmoe.assign import Assignment, AssignmentProblem, Status, solve, verify
from flexmoe.assign.backends import convex
from flexmoe.assign.instances import generate

TOL = 1e-6


@st.composite
def problems(draw) -> AssignmentProblem:
    """Small general problems: sizes, compute, weighted loads, balance terms, churn."""
    n, e = draw(st.integers(1, 8)), draw(st.integers(1, 5))

    def ints(lo: int, hi: int, size: int) -> np.ndarray:
        return np.array(draw(st.lists(st.integers(lo, hi), min_size=size, max_size=size)))

    hi = ints(1, e, n)
    kw: dict = {"max_experts": hi, "min_experts": np.array([draw(st.integers(0, h)) for h in hi])}
    if draw(st.booleans()):
        kw["expert_size"], kw["storage"] = ints(1, 3, e), ints(1, 6, n)
    if draw(st.booleans()):
        kw["compute_cost"], kw["compute_budget"] = ints(0, 3, n * e).reshape(n, e), ints(1, 6, n)
    if draw(st.booleans()):
        kw["load_weight"] = ints(1, 4, n * e).reshape(n, e) / 2
    kw["load_max"] = ints(1, 2 * n, e)
    kw["balance_penalty"] = draw(st.sampled_from([0.0, 0.1, 1.0]))
    kw["balance_metric"] = draw(st.sampled_from(["variance", "range"]))
    if draw(st.booleans()):
        kw["previous"] = ints(0, 1, n * e).reshape(n, e).astype(bool)
        kw["switch_cost"] = 0.5
    return AssignmentProblem(ints(-8, 12, n * e).reshape(n, e) / 4, **kw)


@settings(max_examples=40)
@given(problems())
def test_bound_above_optimum_above_objective(problem):
    exact = solve(problem, backend="milp")
    result = solve(problem, backend="convex")
    where = f"{result.status} {result.message!r} {result.info} / milp {exact}"
    assert result.status is not Status.ERROR, where
    if exact.status is Status.INFEASIBLE:
        assert not result.has_solution, where
        return
    assert exact.status is Status.OPTIMAL, where
    assert result.status is Status.FEASIBLE, where
    scale = max(1.0, abs(exact.objective))
    assert result.bound >= exact.objective - TOL * scale, where
    assert result.objective <= exact.objective + TOL * scale, where
    assert result.gap >= 0 and verify(problem, result.x).ok, where


def test_the_relaxation_is_the_quadratic_program():
    """Two clients, two experts: the relaxation splits each client evenly when the
    variance penalty outweighs the utility difference; its value is closed-form."""
    p = AssignmentProblem([[1.0, 0.8], [1.0, 0.8]], max_experts=1, balance_penalty=0.2)
    relaxation = convex.ConvexSolver(p).relax(p)
    # z[n, 0] = a for both clients: value 2·(0.8 + 0.2a) − 0.2·2·(2a − 1)², max at a = 5/8
    a = 5 / 8
    assert relaxation.status == "optimal"
    assert relaxation.value == pytest.approx(2 * (0.8 + 0.2 * a) - 0.4 * (2 * a - 1) ** 2, 1e-7)
    np.testing.assert_allclose(relaxation.z[:, 0], a, atol=1e-6)


def test_re_solves_reuse_the_compiled_relaxation():
    convex.clear_cache()
    p = generate("clustered", 60, 8, 2, seed=0).replace(balance_penalty=0.01)
    rng = np.random.default_rng(0)
    first = solve(p, backend="convex")
    assert first.info["compiled"] is True
    for _ in range(3):
        q = p.replace(utility=rng.random(p.shape), load_max=p.load_max + rng.integers(0, 2))
        again = solve(q, backend="convex")
        fresh = convex.solve(q, cache=False)
        assert again.info["compiled"] is False and fresh.info["compiled"] is True
        assert again.info["relaxation_value"] == pytest.approx(
            fresh.info["relaxation_value"], rel=1e-7
        )


def test_a_new_structure_compiles_again():
    convex.clear_cache()
    p = generate("uniform", 20, 6, 2, seed=0)
    assert solve(p, backend="convex").info["compiled"]
    masked = p.replace(allowed=np.arange(120).reshape(20, 6) % 5 != 0)
    assert solve(masked, backend="convex").info["compiled"]
    assert convex.structure_key(p) != convex.structure_key(masked)
    with pytest.raises(ValueError, match="another structure"):
        convex.ConvexSolver(p).set_data(masked)


def test_cache_keeps_a_few_structures():
    convex.clear_cache()
    for n in range(2, 3 + convex.CACHE_SIZE):
        solve(generate("uniform", n, 3, 1, seed=0), backend="convex")
    assert len(convex._CACHE) == convex.CACHE_SIZE


def test_infeasible_relaxation_is_a_proof():
    p = AssignmentProblem(np.ones((2, 2)), max_experts=1, allowed=[[1, 0], [1, 0]], load_max=1)
    result = solve(p, backend="convex")
    assert result.status is Status.INFEASIBLE
    assert "relaxation" in result.info["proof"] and "no assignment exists" in result.message


def test_integral_relaxation_gives_zero_gap():
    p = generate("uniform", 40, 8, 2, seed=1)  # a TU structure: the LP is integral
    result = solve(p, backend="convex")
    assert result.status is Status.FEASIBLE and result.gap <= 2 * convex.BOUND_SLACK
    assert result.info["fractional_pairs"] == 0
    assert result.info["rounding"].startswith("support")


def test_rounding_widens_then_falls_back_to_the_full_problem():
    """A generalized assignment whose relaxation support has no integral point."""
    p = AssignmentProblem(
        [[6, 1], [5, 4], [1, 6]], max_experts=1, load_weight=[[3, 2], [2, 2], [2, 3]], load_max=4
    )
    result = solve(p, backend="convex")
    assert result.status is Status.FEASIBLE and result.objective == 7.0
    assert result.info["rounding"].split(":")[0] in ("support", "widened support")


@pytest.mark.parametrize("solver", ["CLARABEL", "HIGHS"])
def test_solver_option(solver):
    p = generate("heterogeneous", 30, 6, 2, seed=2)
    result = solve(p, backend="convex", solver=solver)
    assert result.info["solver"] == solver and result.status is Status.FEASIBLE
    assert result.bound >= result.objective


def test_time_limit_reaches_the_rounding():
    p = generate("heterogeneous", 200, 16, 4, seed=0)
    result = solve(p, backend="convex", time_limit=60)
    assert result.status is Status.FEASIBLE and result.wall_time < 60


def test_no_output(capfd):
    solve(generate("uniform", 10, 4, 2, seed=0), backend="convex", solver="HIGHS")
    solve(generate("uniform", 10, 4, 2, seed=0).replace(balance_penalty=0.1), backend="convex")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def _next_round(problem: AssignmentProblem, z: np.ndarray, rng) -> AssignmentProblem:
    """The fitness update of a federated round on the held pairs: Q ← 0.7·Q + 0.3·s."""
    held = z > 0.5
    utility = problem.utility.copy()
    utility[held] = 0.7 * utility[held] + 0.3 * rng.random(int(held.sum()))
    return problem.replace(utility=utility)


#: Rounds of a federated run at a size where candidates and working sets are a part of
#: the pairs: count loads with the variance term (a QP) and budgets with the range (an LP).
ROUND_PROBLEMS = pytest.mark.parametrize(
    "problem",
    [
        generate("clustered", 200, 32, 3, seed=0).replace(balance_penalty=0.02),
        generate("heterogeneous", 150, 32, 4, seed=1).replace(
            balance_penalty=0.1, balance_metric="range"
        ),
    ],
    ids=["clustered-variance", "heterogeneous-range"],
)


@ROUND_PROBLEMS
def test_candidate_pairs_are_certified_by_pricing(problem):
    """On candidate pairs the relaxation reaches the full relaxation's value, and later
    rounds with changed utilities stay certified (value + pricing gain ≥ full value)."""
    rng = np.random.default_rng(0)
    restricted = convex.ConvexSolver(problem, candidates=True)
    assert restricted.mask.sum() < problem.allowed_mask().sum()
    for _ in range(3):
        full = convex.ConvexSolver(problem).relax(problem)
        part = restricted.relax(problem)
        assert part.status == full.status == "optimal"
        assert part.value == pytest.approx(full.value, rel=1e-6)
        assert part.bound >= full.value - 1e-6 * abs(full.value)
        problem = _next_round(problem, part.z, rng)
    result = solve(problem, backend="convex", candidates=True)
    assert result.status is Status.FEASIBLE and result.bound >= result.objective


def test_infeasible_candidates_fall_back_to_every_pair(monkeypatch):
    """Candidates that cannot meet the load band prove nothing: the relaxation goes on
    over every pair instead of declaring the problem infeasible."""
    problem = generate("uniform", 40, 16, 2, seed=0)
    few = np.zeros(problem.shape, dtype=bool)
    few[:, :2] = True  # two experts for everyone: the other 14 miss their load_min
    monkeypatch.setattr(convex, "_candidates", lambda p: few)
    relaxation = convex.ConvexSolver(problem, candidates=True).relax(problem)
    full = convex.ConvexSolver(problem).relax(problem)
    assert relaxation.status == "optimal" and relaxation.pairs == problem.allowed_mask().sum()
    assert relaxation.value == pytest.approx(full.value, rel=1e-6)
    result = solve(problem, backend="convex", candidates=True, cache=False)
    assert result.status is Status.FEASIBLE and verify(problem, result.x).ok


@ROUND_PROBLEMS
def test_warm_re_solves_start_from_a_working_set_and_reach_the_full_value(problem):
    """After an optimal solve, the next round's relaxation starts on a working set (the
    last support plus the pairs the last duals price near or above zero) and is
    certified on every pair: its value is the full relaxation's, its bound above it."""
    rng = np.random.default_rng(0)
    warm = convex.ConvexSolver(problem)
    first = warm.relax(problem)
    assert first.pairs == problem.allowed_mask().sum() and not first.working_set
    for _ in range(3):
        problem = _next_round(problem, first.z, rng)
        cold = convex.ConvexSolver(problem).relax(problem)
        again = warm.relax(problem)
        assert again.status == cold.status == "optimal"
        assert again.working_set and again.pairs < problem.allowed_mask().sum()
        assert again.value == pytest.approx(cold.value, rel=1e-6)
        assert again.bound >= cold.value - 1e-6 * abs(cold.value)
        first = again


def test_a_working_set_from_an_unrelated_problem_is_still_certified(monkeypatch):
    """Same structure, utilities drawn afresh, and a working set of the last support
    alone: a poor start, which pricing must grow until it certifies the full value."""
    monkeypatch.setattr(convex, "WARM_TOP", 0)
    monkeypatch.setattr(convex, "WARM_MARGIN", -np.inf)  # no pair priced in
    p = generate("clustered", 200, 32, 3, seed=0).replace(balance_penalty=0.02)
    solver = convex.ConvexSolver(p)
    solver.relax(p)
    q = p.replace(utility=np.random.default_rng(5).random(p.shape)[:, ::-1].copy())
    again = solver.relax(q)
    cold = convex.ConvexSolver(q).relax(q)
    assert again.working_set and again.status == "optimal" and again.solves > 1
    assert again.value == pytest.approx(cold.value, rel=1e-6)
    assert again.bound >= cold.value - 1e-6 * abs(cold.value)


def test_warm_false_re_solves_through_parameters_only():
    p = generate("clustered", 200, 32, 3, seed=0).replace(balance_penalty=0.02)
    solver = convex.ConvexSolver(p, warm=False)
    q = _next_round(p, solver.relax(p).z, np.random.default_rng(0))
    again = solver.relax(q)
    assert not again.compiled and not again.working_set
    assert again.pairs == p.allowed_mask().sum()


@pytest.mark.parametrize("rounding", ["worse", "none"])
def test_greedy_replaces_a_worse_rounding(monkeypatch, rounding):
    """A rounding whose restricted MILP stopped at its cap with a poor incumbent (or none)
    gives way to `greedy balanced` on every pair; the relaxation's bound stays."""
    p = generate("heterogeneous", 40, 8, 2, seed=3)
    greedy = solve(p, backend="greedy")
    assert greedy.has_solution
    worst = solve(p.replace(utility=-p.utility), backend="milp")
    poor = None
    if rounding == "worse":
        poor = Assignment.from_x(p, worst.x, status=Status.FEASIBLE, bound=math.nan, backend="milp")
    assert poor is None or poor.objective < greedy.objective
    how = "support: time limit before a feasible assignment" if poor is None else "support: milp"
    monkeypatch.setattr(convex, "_round", lambda *args: (poor, how))
    result = solve(p, backend="convex", cache=False)
    assert result.status is Status.FEASIBLE and result.objective == pytest.approx(greedy.objective)
    assert result.info["rounding"].startswith("greedy balanced on every pair")
    assert result.bound == pytest.approx(result.info["relaxation_value"], rel=1e-5)


def test_a_result_with_nan_in_its_info_is_strict_json(tmp_path):
    """Issue 13, item 7: an infeasible relaxation leaves a non-finite value in `info`;
    the result still writes and reads as strict JSON."""
    import json

    p = AssignmentProblem(np.ones((2, 2)), max_experts=1, allowed=[[1, 0], [1, 0]], load_max=1)
    result = solve(p, backend="convex")
    assert not math.isfinite(result.info["relaxation_value"])
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert '"relaxation_value": "-inf"' in text
    result.save(tmp_path / "r.json")
    back = Assignment.load(tmp_path / "r.json")
    assert back.status is Status.INFEASIBLE and back.info["proof"] == result.info["proof"]
