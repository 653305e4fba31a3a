"""The milp backend: differential tests against independent models, classic instances
with provable optima, status mapping, time limits and silence.

Independent references, none sharing code with the backend: brute force over every
assignment (tiny problems), a plain ``scipy.optimize.milp`` model written here (linear
objectives and the range metric), an exact one-hot model of the variance for fixed totals,
``scipy.optimize.linear_sum_assignment`` (Hungarian), and the flow backend.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linear_sum_assignment, milp

from flexmoe.assign import AssignmentProblem, Status, solve
from flexmoe.assign.backends import milp as milp_backend
from flexmoe.assign.backends.milp import cuts as milp_cuts
from flexmoe.assign.instances import generate

ENGINES = ["milp", "milp:pulp", "milp:scipy"]
RTOL = 1e-6


# -- independent references -----------------------------------------------------------


def brute_force(p: AssignmentProblem) -> float | None:
    """The optimum by enumerating every 0/1 matrix (N·E ≤ 14) with numpy, or None."""
    n, e = p.shape
    x = ((np.arange(2 ** (n * e))[:, None] >> np.arange(n * e)) & 1).reshape(-1, n, e)
    held = x.sum(axis=2)
    ok = ((held >= p.min_experts) & (held <= p.max_experts)).all(axis=1)
    ok &= ~(x.astype(bool) & ~p.allowed_mask()).any(axis=(1, 2))
    if p.storage is not None:
        ok &= ((x * p.expert_size).sum(axis=2) <= p.storage + 1e-9).all(axis=1)
    if p.compute_cost is not None:
        ok &= ((x * p.compute_cost).sum(axis=2) <= p.compute_budget + 1e-9).all(axis=1)
    loads = (x * p.weights()).sum(axis=1)
    ok &= ((loads >= p.load_min - 1e-9) & (loads <= p.load_max + 1e-9)).all(axis=1)
    if not ok.any():
        return None
    value = (x * p.effective_utility()).sum(axis=(1, 2))
    if p.balance_metric == "variance":
        spread = ((loads - loads.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    else:
        spread = loads.max(axis=1) - loads.min(axis=1)
    return float((value - p.balance_penalty * spread)[ok].max())


def scipy_reference(p: AssignmentProblem) -> float | None:
    """The same problem as a textbook MILP in ``scipy.optimize.milp``: one binary per
    pair (forbidden ones fixed to 0), dense rows, range metric with two extra columns.
    Linear objectives and the range metric only."""
    n, e = p.shape
    w = p.weights()
    cost = -p.effective_utility().ravel()
    upper = p.allowed_mask().ravel().astype(float)
    rows, lo, hi = [], [], []

    def row(coefs: np.ndarray, low: float, high: float) -> None:
        rows.append(np.append(coefs, [0.0, 0.0]))
        lo.append(low)
        hi.append(high)

    for i in range(n):
        pick = np.zeros((n, e))
        pick[i] = 1
        row(pick.ravel(), p.min_experts[i], p.max_experts[i])
        if p.storage is not None:
            row((pick * p.expert_size).ravel(), -np.inf, p.storage[i])
        if p.compute_cost is not None:
            row((pick * p.compute_cost).ravel(), -np.inf, p.compute_budget[i])
    for j in range(e):
        load = np.zeros((n, e))
        load[:, j] = w[:, j]
        row(load.ravel(), p.load_min[j], p.load_max[j])
        if p.balance_penalty > 0:  # top ≥ L_j ≥ bottom
            rows.append(np.append(-load.ravel(), [1.0, 0.0]))
            rows.append(np.append(load.ravel(), [0.0, -1.0]))
            lo += [0.0, 0.0]
            hi += [np.inf, np.inf]
    lam = p.balance_penalty
    c = np.append(cost, [lam, -lam])
    res = milp(
        c,
        integrality=np.append(np.ones(n * e), [0, 0]),
        bounds=Bounds(np.zeros(n * e + 2), np.append(upper, [np.inf, np.inf])),
        constraints=LinearConstraint(np.array(rows), lo, hi),
        options={"mip_rel_gap": 0.0},
    )
    return None if res.status == 2 else -float(res.fun)


def one_hot_variance_reference(p: AssignmentProblem) -> float:
    """Count loads with fixed totals: the mean c is a constant, so the variance is
    Σ_e Σ_k (k − c)²·y[e, k] with one-hot y[e, ·] choosing each expert's holder count."""
    n, e = p.shape
    c = p.min_experts.sum() / e
    levels = np.arange(n + 1)
    n_x, n_y = n * e, e * (n + 1)
    cost = np.concatenate(
        [-p.effective_utility().ravel(), p.balance_penalty * np.tile((levels - c) ** 2, e)]
    )
    a = sparse.lil_array((n + 2 * e, n_x + n_y))
    for i in range(n):
        a[i, i * e : (i + 1) * e] = 1  # experts per client
    for j in range(e):
        a[n + j, j:n_x:e] = 1  # Σ_n x[n, j] − Σ_k k·y[j, k] = 0
        a[n + j, n_x + j * (n + 1) : n_x + (j + 1) * (n + 1)] = -levels
        a[n + e + j, n_x + j * (n + 1) : n_x + (j + 1) * (n + 1)] = 1  # one level
    lo = np.concatenate([p.min_experts, np.zeros(e), np.ones(e)])
    hi = np.concatenate([p.max_experts, np.zeros(e), np.ones(e)])
    y_ok = (levels >= p.load_min[:, None]) & (levels <= p.load_max[:, None])
    upper = np.concatenate([p.allowed_mask().ravel(), y_ok.ravel()]).astype(float)
    res = milp(
        cost,
        integrality=np.ones(n_x + n_y),
        bounds=Bounds(0, upper),
        constraints=LinearConstraint(a.tocsr(), lo, hi),
        options={"mip_rel_gap": 0.0},
    )
    assert res.status == 0, res.message
    return -float(res.fun)


def close(a: float, b: float, rtol: float = RTOL) -> bool:
    return abs(a - b) <= rtol * max(1.0, abs(a), abs(b))


# -- generated problems ---------------------------------------------------------------


@st.composite
def general_problems(draw, max_clients: int = 7, max_experts: int = 5) -> AssignmentProblem:
    """Storage, compute, weighted loads, allowed mask, churn, range or no balance."""
    n = draw(st.integers(1, max_clients))
    e = draw(st.integers(1, max_experts))

    def ints(lo: int, hi: int, size: int) -> np.ndarray:
        return np.array(draw(st.lists(st.integers(lo, hi), min_size=size, max_size=size)))

    utility = ints(-12, 12, n * e).reshape(n, e) / 4
    hi = ints(0, e, n)
    kw: dict = {"max_experts": hi, "min_experts": np.array([draw(st.integers(0, h)) for h in hi])}
    if draw(st.booleans()):
        kw["expert_size"], kw["storage"] = ints(1, 3, e), ints(0, 6, n)
    if draw(st.booleans()):
        kw["compute_cost"], kw["compute_budget"] = ints(0, 3, n * e).reshape(n, e), ints(0, 6, n)
    w = ints(1, 4, n * e).reshape(n, e) / 2 if draw(st.booleans()) else np.ones((n, e))
    if not (w == 1).all():
        kw["load_weight"] = w
    kw["load_min"] = ints(0, 2, e) * 1.0
    kw["load_max"] = kw["load_min"] + ints(0, 2 * n, e)
    if draw(st.booleans()):
        kw["allowed"] = np.array(draw(st.lists(st.booleans(), min_size=n * e, max_size=n * e)))
        kw["allowed"] = kw["allowed"].reshape(n, e)
    if draw(st.booleans()):
        kw["previous"] = ints(0, 1, n * e).reshape(n, e).astype(bool)
        kw["switch_cost"] = draw(st.sampled_from([0.5, 2.0]))
    if draw(st.booleans()):
        kw["balance_penalty"] = draw(st.sampled_from([0.25, 1.0]))
        kw["balance_metric"] = "range"
    return AssignmentProblem(utility, **kw)


@settings(max_examples=60)
@given(general_problems())
def test_agrees_with_an_independent_scipy_model(problem):
    expected = scipy_reference(problem)
    for spec in ENGINES:
        result = solve(problem, backend=spec, seed=0)
        where = f"{spec}: {result.status} {result.message!r} (reference {expected})"
        if expected is None:
            assert result.status is Status.INFEASIBLE and result.message, where
            continue
        assert result.status is Status.OPTIMAL, where
        assert close(result.objective, expected), where
        assert result.bound >= expected - RTOL * max(1, abs(expected)), where


@settings(max_examples=40)
@given(general_problems(max_clients=4, max_experts=3), st.sampled_from(["variance", "range"]))
def test_balance_terms_match_brute_force(problem, metric):
    """Variance with free totals and weighted loads (the outer-approximation loop)."""
    problem = problem.replace(balance_penalty=0.75, balance_metric=metric)
    expected = brute_force(problem)
    result = solve(problem, backend="milp")
    where = f"{result.status} {result.message!r} {result.info} (brute force {expected})"
    if expected is None:
        assert result.status is Status.INFEASIBLE, where
    else:
        assert result.status is Status.OPTIMAL and close(result.objective, expected), where


@pytest.mark.parametrize("seed", range(4))
def test_variance_with_fixed_totals_matches_a_one_hot_model(seed):
    rng = np.random.default_rng(seed)
    p = AssignmentProblem(
        rng.random((12, 5)), max_experts=2, load_min=1, load_max=8, balance_penalty=0.3
    )
    result = solve(p, backend="milp")
    assert result.status is Status.OPTIMAL
    assert close(result.objective, one_hot_variance_reference(p), 1e-9)
    assert "exact at integer loads" in result.info["balance_model"]


@settings(max_examples=25)
@given(
    st.integers(0, 10_000),
    st.sampled_from([(20, 6, 2), (40, 8, 3), (30, 5, 1)]),
    st.sampled_from([0.0, 0.05, 0.5]),
)
def test_equals_flow_inside_the_flow_structure(seed, size, lam):
    n, e, k = size
    p = generate("clustered", n, e, k, seed=seed).replace(balance_penalty=lam)
    flow, exact = solve(p, backend="flow"), solve(p, backend="milp")
    assert flow.status is exact.status is Status.OPTIMAL
    assert close(flow.objective, exact.objective, 1e-9), (flow, exact)


# -- classic instances with provable optima -----------------------------------------


def test_linear_assignment_matches_the_hungarian_method():
    """LAP: one expert each, every load exactly 1; costs as negative utilities."""
    cost = np.random.default_rng(7).integers(1, 100, (9, 9)).astype(float)
    rows, cols = linear_sum_assignment(cost)
    p = AssignmentProblem(-cost, max_experts=1, load_min=1, load_max=1)
    for spec in ENGINES:
        result = solve(p, backend=spec)
        assert result.status is Status.OPTIMAL, spec
        assert result.objective == -cost[rows, cols].sum(), spec


def test_generalized_assignment_matches_enumeration():
    """GAP: each client exactly one expert, client-dependent weights per pair, a weighted
    capacity per expert (load_max) and load_min = 0; costs as negative utilities. The
    optimum is checked against all 3^6 maps of clients to experts."""
    cost = np.array([[9, 2, 7], [6, 4, 3], [5, 8, 1], [7, 6, 9], [4, 3, 8], [2, 7, 6]], float)
    weight = np.array([[5, 3, 4], [2, 6, 3], [4, 4, 2], [3, 5, 6], [6, 2, 3], [2, 3, 5]], float)
    capacity = np.array([8.0, 7.0, 9.0])
    best = math.inf
    for choice in itertools.product(range(3), repeat=6):
        used = np.zeros(3)
        for n, e in enumerate(choice):
            used[e] += weight[n, e]
        if (used <= capacity).all():
            best = min(best, sum(cost[n, e] for n, e in enumerate(choice)))
    p = AssignmentProblem(-cost, max_experts=1, load_weight=weight, load_max=capacity)
    for spec in ENGINES:
        result = solve(p, backend=spec)
        assert result.status is Status.OPTIMAL, spec
        assert result.objective == -best, spec
        assert (result.loads <= capacity).all()


def test_generalized_assignment_without_room_is_infeasible_with_a_reason():
    weight = np.array([[5.0, 6.0], [5.0, 6.0], [5.0, 6.0]])
    p = AssignmentProblem(np.ones((3, 2)), max_experts=1, load_weight=weight, load_max=[9, 11])
    result = solve(p, backend="milp")
    assert result.status is Status.INFEASIBLE
    assert "no assignment satisfies" in result.message and "HiGHS" in result.message


# -- status mapping, limits, options ----------------------------------------------------


def hard_problem() -> AssignmentProblem:
    return generate("heterogeneous", 300, 32, 8, seed=1)


@pytest.mark.parametrize("warm_start", [True, False])
def test_time_limit_is_never_optimal(warm_start):
    result = solve(hard_problem(), backend="milp", time_limit=0.05, warm_start=warm_start)
    assert result.status in (Status.FEASIBLE, Status.LIMIT_NO_SOLUTION), result
    assert "limit" in result.message
    if result.status is Status.FEASIBLE:
        assert result.gap > 0 and result.bound >= result.objective
    assert result.wall_time < 30


def test_a_finished_solve_states_its_gap():
    result = solve(generate("clustered", 60, 8, 2, seed=3), backend="milp", mip_gap=1e-4)
    assert result.status is Status.OPTIMAL and 0 <= result.gap <= 1e-4
    assert result.info["engine"] == "highs" and result.info["rounds"] == 1


def test_warm_start_comes_from_greedy_balanced():
    result = solve(generate("uniform", 50, 8, 2, seed=0), backend="milp")
    assert result.info["warm_start"] == "greedy:balanced"
    cold = solve(generate("uniform", 50, 8, 2, seed=0), backend="milp", warm_start=False)
    assert cold.info["warm_start"] == "off" and close(cold.objective, result.objective, 1e-9)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"engine": "gurobi"},
            "backend 'milp' has no variant 'gurobi'; got engine='gurobi'; valid backends: auto, "
            "flow, flow:networkx, milp, milp:pulp, milp:scipy",
        ),
        ({"mip_gap": -1}, r"`mip_gap` must be a number in \[0, 1\); got -1"),
        ({"threads": 0}, "`threads` must be a positive integer; got 0"),
        ({"highs_options": {"no_such_option": 1}}, "HiGHS rejects option 'no_such_option'"),
        ({"solver": "NO_SUCH_SOLVER"}, "unknown PuLP solver 'NO_SUCH_SOLVER'"),
    ],
)
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        solve(generate("uniform", 6, 3, 1, seed=0), backend="milp", **options)


@pytest.mark.parametrize(
    ("spec", "options", "match"),
    [
        ("milp", {"engine": "highs", "solver": "HiGHS"}, "only 'milp:pulp' does"),
        ("milp:highs", {"solver": "HiGHS"}, "backend 'milp' does not take option `solver`"),
        ("milp:scipy", {"highs_options": {"presolve": "on"}}, "only 'milp' does"),
    ],
)
def test_options_of_another_variant_are_named(spec, options, match):
    with pytest.raises(TypeError, match=match):
        solve(generate("uniform", 6, 3, 1, seed=0), backend=spec, **options)


def test_pulp_solvers_by_name_and_instance():
    import pulp

    p = generate("heterogeneous", 20, 6, 2, seed=4)
    reference = solve(p, backend="milp")
    with pytest.warns(DeprecationWarning, match="PULP_CBC_CMD is deprecated"):
        cbc = solve(p, backend="milp", solver="PULP_CBC_CMD")
    via_highs = solve(p, backend="milp", solver=pulp.HiGHS(msg=False))
    for result in (cbc, via_highs):
        assert result.status is Status.OPTIMAL
        assert close(result.objective, reference.objective, 1e-6)


def test_pulp_writes_nothing_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with pytest.warns(DeprecationWarning):
        result = solve(
            generate("weighted", 15, 4, 2, seed=0), backend="milp", solver="PULP_CBC_CMD"
        )
    assert result.status is Status.OPTIMAL
    assert list(tmp_path.iterdir()) == []


def test_no_banner_on_stdout_in_a_fresh_process():
    """HiGHS prints its banner from C++ when a process makes its first Highs object."""
    code = (
        "import numpy as np\n"
        "from flexmoe.assign import AssignmentProblem, solve\n"
        "p = AssignmentProblem(np.eye(3), max_experts=1, expert_size=[1, 1, 1], storage=1)\n"
        "for spec in ('milp', 'milp:pulp', 'milp:scipy', 'convex'):\n"
        "    assert solve(p, backend=spec).has_solution\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_no_output_in_process(capfd):
    p = generate("heterogeneous", 12, 4, 2, seed=0)
    for spec in ENGINES:
        solve(p, backend=spec)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# -- the model itself ---------------------------------------------------------------------


def test_model_rows_read_like_the_math():
    p = generate("heterogeneous", 10, 4, 2, seed=0).replace(
        allowed=np.arange(40).reshape(10, 4) % 7 != 0, balance_penalty=1.0, balance_metric="range"
    )
    model = milp_backend.formulate(p)
    pairs = int(p.allowed.sum())
    assert model.columns["x"] == slice(0, pairs)
    assert model.shape == (3 * 10 + 4 + 2 * 4, pairs + 4 + 2)
    # one count, storage and compute entry per pair, two load entries, range rows
    assert model.matrix.nnz == 3 * pairs + (pairs + 4) + 4 * 4
    np.testing.assert_array_equal(model.integer, np.arange(model.shape[1]) < pairs)


def test_vectorised_build_is_linear_in_the_pairs():
    p = generate("heterogeneous", 2_000, 64, 8, seed=0)
    model = milp_backend.formulate(p)
    assert model.matrix.nnz == 4 * 2_000 * 64 + 64


# -- the root phase: budget covers, the dual bound, reduced-cost fixing -----------------


def all_subsets(e: int) -> np.ndarray:
    """Every 0/1 vector of length `e`, one per row."""
    return ((np.arange(2**e)[:, None] >> np.arange(e)) & 1).astype(bool)


@settings(max_examples=60)
@given(
    st.integers(1, 6),
    st.integers(0, 6),
    st.integers(0, 6),
    st.lists(st.integers(0, 6), min_size=6, max_size=6),
    st.integers(0, 14),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_cover_capacity_is_the_most_a_feasible_client_holds(e, low, high, costs, limit, allowed):
    """For one client and one budget row, ``k_C`` of every set ``C`` equals the largest
    ``|x ∩ C|`` over the client's feasible ``x`` (enumerated): valid (never below) and as
    tight as a right-hand side can be (attained)."""
    low, high = min(low, high), max(low, high)
    cost, allowed = np.array(costs[:e], float) / 2, np.array(allowed[:e])
    xs = all_subsets(e)
    held = xs.sum(axis=1)
    feasible = (held >= low) & (held <= high) & ~(xs & ~allowed).any(axis=1)
    feasible &= (xs * cost).sum(axis=1) <= limit / 2 + 1e-9
    members = all_subsets(e) & allowed
    k = milp_cuts.capacity(
        np.tile(cost, (members.shape[0], 1)),
        np.full(members.shape[0], limit / 2 * (1 + 2e-6)),
        np.full(members.shape[0], low),
        np.full(members.shape[0], high),
        members,
        np.tile(allowed, (members.shape[0], 1)),
    )
    most = (xs[feasible][:, None, :] & members[None, :, :]).sum(axis=2).max(axis=0, initial=-1)
    np.testing.assert_array_equal(k, most if feasible.any() else np.full(k.shape, -1))


def lp_point(p: AssignmentProblem) -> tuple:
    """The formulation of `p` and its LP optimum (column values, row prices, value)."""
    from flexmoe.assign.backends.milp.engines import HighsEngine, Settings

    model = milp_backend.formulate(p)
    engine = HighsEngine(model, Settings(1e-7))
    engine.relax()
    run = engine.run(None)
    assert run.outcome == "optimal"
    return model, run.values, engine.duals(), float(model.cost @ run.values)


def feasible_assignments(p: AssignmentProblem) -> np.ndarray:
    """Every assignment of a tiny problem within the checker's tolerance (1e-6 relative)
    of its budgets and bands, enumerated with numpy."""
    n, e = p.shape
    xs = ((np.arange(2 ** (n * e))[:, None] >> np.arange(n * e)) & 1).astype(bool)
    xs = xs.reshape(-1, n, e)
    held = xs.sum(axis=2)
    ok = ((held >= p.min_experts) & (held <= p.max_experts)).all(axis=1)
    ok &= ~(xs & ~p.allowed_mask()).any(axis=(1, 2))
    for row in p.budgets:
        used = (xs * np.broadcast_to(row.cost, p.shape)).sum(axis=2)
        ok &= (used <= row.limit + 1e-6 * np.maximum(1, row.limit)).all(axis=1)
    loads = (xs * p.weights()).sum(axis=1)
    ok &= (loads >= p.load_min - 1e-6 * np.maximum(1, p.load_min)).all(axis=1)
    ok &= (loads <= p.load_max + 1e-6 * np.maximum(1, p.load_max)).all(axis=1)
    return xs[ok]


def cover_cases(count: int):
    """Tiny problems with storage and compute whose LP point violates some cover: the
    problem, its model, the LP point and the separated rows."""
    for seed in range(200):
        rng = np.random.default_rng(seed)
        n, e = 3, 4
        p = AssignmentProblem(
            rng.random((n, e)), max_experts=3, min_experts=2,
            expert_size=rng.uniform(0.5, 1.5, e), storage=rng.uniform(1.8, 2.8, n),
            compute_cost=rng.uniform(0.5, 2, (n, e)), compute_budget=rng.uniform(2.5, 4, n),
            load_max=2,
        )  # fmt: skip
        if not feasible_assignments(p).size:
            continue
        model, values, _, _ = lp_point(p)
        rows = milp_cuts.separate(p, model, values)
        if rows is not None:
            yield p, model, values, rows
            count -= 1
            if count == 0:
                return


def test_separated_covers_cut_the_lp_point_and_no_feasible_assignment():
    cases = list(cover_cases(6))
    assert len(cases) == 6
    for p, model, values, (matrix, _, rhs) in cases:
        x = values[model.columns["x"]]
        assert (matrix[:, : x.size] @ x > rhs + milp_cuts.MIN_VIOLATION).all()
        every = feasible_assignments(p)[:, model.clients, model.experts].astype(float)
        assert every.size and (matrix[:, : x.size] @ every.T <= rhs[:, None]).all()


def test_covers_raise_the_bound_on_the_general_model():
    p = generate("heterogeneous", 200, 16, 8, seed=2)
    result = solve(p, backend="milp")
    root = result.info["root"]
    assert result.status is Status.OPTIMAL and root["covers"] > 0
    assert root["root_bound"] < root["lp_bound"]
    assert root["root_bound"] >= result.objective


@pytest.mark.parametrize("seed", range(3))
def test_dual_bound_holds_for_any_prices(seed):
    """Weak duality: the bound from any row prices is above the LP optimum (and so above
    every assignment); at the LP's own prices it is the LP optimum."""
    p = generate("heterogeneous", 30, 6, 2, seed=seed).replace(
        balance_penalty=0.3, balance_metric="range"
    )
    model, _, duals, lp_value = lp_point(p)
    bound, _ = model.dual_bound(duals)
    assert lp_value <= bound <= lp_value + 1e-7 * max(1, abs(lp_value))
    rng = np.random.default_rng(seed)
    for _ in range(20):
        noisy = duals + rng.normal(0, 0.3, duals.size)
        assert model.dual_bound(noisy)[0] >= lp_value - 1e-9


def fixing_problem(n: int, e: int, k: int, seed: int) -> AssignmentProblem:
    """The storage + compute + weighted-loads model of ``benchmarks/bench_milp.py``."""
    import sys as _sys
    from pathlib import Path

    _sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_milp import general

    return general(n, e, k, seed=seed)


@pytest.mark.parametrize("seed", range(2))
def test_reduced_cost_fixing_loses_no_better_assignment(seed):
    """Dropped pairs, forced in one at a time, give at most the `floor` the root reports;
    the root's bound holds; the restricted solve agrees with the solve without a root
    phase."""
    from flexmoe.assign.backends.milp import root as root_phase
    from flexmoe.assign.backends.milp.engines import HighsEngine, Settings

    p = fixing_problem(80, 10, 4, seed)
    plain = solve(p, backend="milp", tighten=False)
    model = milp_backend.formulate(p)
    root = root_phase.tighten(p, model, None, Settings(5e-7), None, 1e-6)
    assert plain.status is Status.OPTIMAL and root.bound >= plain.objective
    assert close(solve(p, backend="milp").objective, plain.objective, 1e-6)
    kept = set(zip(root.model.clients.tolist(), root.model.experts.tolist(), strict=True))
    pairs = zip(model.clients.tolist(), model.experts.tolist(), strict=True)
    dropped = np.array([j for j, pair in enumerate(pairs) if pair not in kept])
    assert dropped.size and root.floor < plain.objective
    for j in np.random.default_rng(seed).choice(dropped, size=2, replace=False):
        lo = model.col_lo.copy()
        lo[j] = 1.0
        forced = HighsEngine(
            milp_backend.MilpModel(**{**vars(model), "col_lo": lo}), Settings(1e-7)
        )
        run = forced.run(None)
        worth = run.bound * model.unit  # the engines work in units of `unit`, the root not
        assert run.outcome == "infeasible" or worth <= root.floor + 1e-6 * abs(root.floor), j


@settings(max_examples=40)
@given(general_problems(max_clients=4, max_experts=3), st.booleans())
def test_root_phase_matches_brute_force(problem, tighten):
    expected = brute_force(problem)
    result = solve(problem, backend="milp", tighten=tighten)
    where = f"{result.status} {result.message!r} {result.info} (brute force {expected})"
    if expected is None:
        assert result.status is Status.INFEASIBLE, where
    else:
        assert result.status is Status.OPTIMAL and close(result.objective, expected), where
        assert result.bound >= expected - RTOL * max(1, abs(expected)), where


@pytest.mark.parametrize("seed", range(4))
def test_root_phase_agrees_with_the_plain_solve_on_medium_problems(seed):
    """Problems too large to enumerate, where the covers, sub-MIPs and fixing all act."""
    p = fixing_problem(120, 12, 4, seed + 10)
    plain, tightened = (solve(p, backend="milp", tighten=t) for t in (False, True))
    assert plain.status is tightened.status is Status.OPTIMAL
    assert close(plain.objective, tightened.objective, 1e-6), (plain, tightened)
    assert tightened.bound >= plain.objective - 1e-6 * abs(plain.objective)


@pytest.mark.parametrize("seed", range(3))
def test_a_loose_gap_is_certified_at_the_root(seed):
    """With ``mip_gap=1e-3`` the covers' bound and an LP incumbent suffice: no branching,
    and the bound still holds against the exact optimum."""
    p = fixing_problem(200, 16, 8, seed)
    loose, exact = solve(p, backend="milp", mip_gap=1e-3), solve(p, backend="milp")
    assert loose.status is exact.status is Status.OPTIMAL
    assert loose.info["native_status"] == "root phase" and loose.gap <= 1e-3
    assert loose.objective <= exact.objective + 1e-9 <= loose.bound + 2e-9


# -- the root phase with the certificates of issue 13 ----------------------------------


@pytest.mark.parametrize("scale", [1e-300, 1e-20, 1e20, 1e300])
def test_the_root_phase_does_the_same_at_every_scale(scale, monkeypatch):
    """Utilities scaled from 1e-300 to 1e300: the root phase sees the same rescaled
    model, so it covers, fixes and certifies alike, and the answer is the same (its bound
    compared relatively, in the problem's units). The sub-MIPs' time budget is lifted so
    that their node limit alone ends them: on a loaded machine a sub-MIP cut short by the
    clock finds another incumbent, and the fixing then keeps other pairs (1438 vs 1440)."""
    from flexmoe.assign.backends.milp import root

    monkeypatch.setattr(root, "SUB_MIP_FLOOR", 600.0)
    unit = fixing_problem(120, 12, 4, 3)
    scaled = unit.replace(utility=unit.utility * scale)
    ones, other = solve(unit, backend="milp"), solve(scaled, backend="milp")
    assert ones.status is other.status is Status.OPTIMAL, other
    assert close(other.objective, ones.objective * scale, 1e-6), (other, ones)
    assert other.bound >= other.objective and other.gap <= RTOL
    same = ("covers", "pairs_dropped", "pairs_held", "pairs_kept")
    assert {k: other.info["root"][k] for k in same} == {k: ones.info["root"][k] for k in same}
    assert close(other.info["root"]["root_bound"], ones.info["root"]["root_bound"] * scale, 1e-9)


@pytest.mark.parametrize("gap", [1e-3, 1e-6])
def test_the_root_phase_is_optimal_only_within_the_gap_it_was_given(gap):
    """A root phase that ends the solve has certified `mip_gap` relatively; the status
    survives the registry's own check (``info['rtol']``)."""
    p = fixing_problem(200, 16, 8, 1)
    result = solve(p, backend="milp", mip_gap=gap)
    assert result.status is Status.OPTIMAL and result.info["rtol"] == gap
    assert 0 <= result.gap <= gap and result.bound >= result.objective
    if result.info["native_status"] == "root phase":
        root = result.info["root"]
        assert result.bound == root["root_bound"], root


def test_an_abandoned_solve_answers_with_what_the_root_phase_found(monkeypatch):
    """The branch and bound hangs past the limit (as HiGHS did, issue 13 item 4): the
    answer, by the limit + 1 s, carries the root phase's bound (reported to the solve's
    Progress as it was found), not the trivial one, and is not OPTIMAL."""
    import threading
    import time

    from flexmoe.assign.backends.milp import loop
    from flexmoe.assign.deadline import PROMISE

    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(600)
        raise RuntimeError("released")

    monkeypatch.setattr(loop, "_optimise", hang)
    p = fixing_problem(200, 16, 8, 2)
    limit = 3.0
    try:
        start = time.perf_counter()
        result = solve(p, backend="milp", time_limit=limit)
        wall = time.perf_counter() - start
    finally:
        release.set()
    assert wall <= limit + PROMISE, wall
    assert result.status is Status.FEASIBLE and result.info["abandoned"] is True, result
    assert result.bound < loop._trivial_bound(p) and 0 <= result.gap <= 1e-2, result
