"""The exact `flow` backend against an independent MILP (scipy.optimize.milp, HiGHS).

The reference model below shares nothing with the backend: binary x[n, e] per allowed pair,
the switch cost written out from `previous`, and under a variance penalty a one-hot
indicator z[e, v] of each expert's load v, so λ·Σ_e v² is linear. Its optimum is
recomputed from the rounded x with a formula of its own.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, milp

from flexmoe.assign import (
    AssignmentProblem,
    BackendUnavailableError,
    Status,
    UnknownBackendError,
    UnsupportedProblemError,
    solve,
)
from flexmoe.assign.backends import flow

RTOL = 1e-9


# -- the independent reference -------------------------------------------------------------


def reference_value(p: AssignmentProblem, x: np.ndarray) -> float:
    """Objective of `x` written out from the raw fields."""
    utility = float(p.utility[x].sum())
    if p.previous is not None:
        utility -= p.switch_cost * float((x & ~p.previous).sum())
    loads = x.sum(axis=0).astype(float)
    return utility - p.balance_penalty * float(((loads - loads.mean()) ** 2).sum())


def reference(p: AssignmentProblem) -> float | None:
    """Optimum by HiGHS (None: infeasible)."""
    n, e = p.shape
    utility = p.utility.copy()
    if p.previous is not None:
        utility = utility - p.switch_cost * (~p.previous)
    allowed = np.ones((n, e), bool) if p.allowed is None else p.allowed
    levels = n + 1 if p.balance_penalty else 0  # loads 0..n, one-hot per expert
    nx_, nz = n * e, e * levels
    cost = np.concatenate(
        [-utility.ravel(), np.tile(np.arange(levels) ** 2.0, e) * p.balance_penalty]
    )
    rows, lb, ub = [], [], []
    for i in range(n):  # min_experts <= Σ_e x[i, e] <= max_experts
        row = np.zeros(nx_ + nz)
        row[i * e : (i + 1) * e] = 1
        rows.append(row), lb.append(p.min_experts[i]), ub.append(p.max_experts[i])
    for j in range(e):  # load_min <= Σ_n x[n, j] <= load_max
        row = np.zeros(nx_ + nz)
        row[j:nx_:e] = 1
        rows.append(row), lb.append(p.load_min[j]), ub.append(p.load_max[j])
        if levels:  # Σ_v z[j, v] = 1 and Σ_n x[n, j] = Σ_v v·z[j, v]
            one = np.zeros(nx_ + nz)
            one[nx_ + j * levels : nx_ + (j + 1) * levels] = 1
            link = row.copy()
            link[nx_ + j * levels : nx_ + (j + 1) * levels] = -np.arange(levels)
            rows += [one, link]
            lb += [1, 0]
            ub += [1, 0]
    upper = np.concatenate([allowed.ravel().astype(float), np.ones(nz)])
    # in units of the largest cost, without presolve: HiGHS's absolute tolerances (and
    # its presolve) took −6e-8 for the optimum where 0 was feasible (issue 13, item 1)
    top = float(np.abs(cost).max(initial=0.0))
    res = milp(
        cost / (2.0 ** np.floor(np.log2(top)) if top > 0 else 1.0),
        constraints=LinearConstraint(np.array(rows), lb, ub),
        integrality=np.ones(nx_ + nz),
        bounds=Bounds(0, upper),
        options={"mip_rel_gap": 0, "presolve": False},
    )
    if res.status == 2:
        return None
    assert res.status == 0, res.message
    x = np.round(res.x[:nx_]).reshape(n, e).astype(bool)
    return reference_value(p, x)


def brute_force(p: AssignmentProblem) -> float | None:
    """Optimum by enumerating every x (N·E <= 12), a second exact oracle."""
    n, e = p.shape
    x = ((np.arange(2 ** (n * e))[:, None] >> np.arange(n * e)) & 1).astype(bool)
    x = x.reshape(-1, n, e)
    held, loads = x.sum(axis=2), x.sum(axis=1)
    ok = ((held >= p.min_experts) & (held <= p.max_experts)).all(axis=1)
    ok &= ((loads >= p.load_min - 1e-9) & (loads <= p.load_max + 1e-9)).all(axis=1)
    if p.allowed is not None:
        ok &= ~(x & ~p.allowed).any(axis=(1, 2))
    if not ok.any():
        return None
    return max(reference_value(p, xi) for xi in x[ok])


def close(a: float, b: float) -> bool:
    return abs(a - b) <= RTOL * max(1.0, abs(a), abs(b))


# -- problems inside the flow structure ----------------------------------------------------


def _matrix(draw, n: int, e: int, elements) -> np.ndarray:
    return np.array(draw(st.lists(elements, min_size=n * e, max_size=n * e))).reshape(n, e)


@st.composite
def flow_problems(draw, *, wild: bool = False, max_clients: int = 5) -> AssignmentProblem:
    """Count loads, min/max experts, a load band, allowed mask, switch cost, and a variance
    penalty when every client's total is fixed. `wild`: |utility| from 1e-6 to 1e6."""
    n, e = draw(st.integers(1, max_clients)), draw(st.integers(1, 5))
    if wild:
        mag = st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(-6, 6))
        utility = _matrix(draw, n, e, mag.map(lambda t: t[0] * 10 ** t[1]))
    else:
        utility = _matrix(draw, n, e, st.floats(-10, 10, allow_subnormal=False))
    hi = np.array(draw(st.lists(st.integers(0, e), min_size=n, max_size=n)))
    fixed = draw(st.booleans())
    lo = hi if fixed else np.array([draw(st.integers(0, int(h))) for h in hi])
    kw: dict = {"max_experts": hi, "min_experts": lo}
    kw["load_min"] = np.array(draw(st.lists(st.integers(0, 2), min_size=e, max_size=e)))
    spread = st.one_of(st.integers(0, n).map(float), st.just(math.inf))
    kw["load_max"] = kw["load_min"] + np.array(draw(st.lists(spread, min_size=e, max_size=e)))
    if draw(st.booleans()):
        kw["allowed"] = _matrix(draw, n, e, st.booleans())
    if draw(st.booleans()):
        kw["previous"] = _matrix(draw, n, e, st.booleans())
        kw["switch_cost"] = draw(st.sampled_from([0.0, 0.3, 2.5]))
    if fixed:
        kw["balance_penalty"] = draw(st.sampled_from([0.0, 0.05, 0.7, 3.0]))
    return AssignmentProblem(utility, **kw)


def check_exact(p: AssignmentProblem, optimum: float | None) -> None:
    for spec in ("flow", "flow:networkx"):
        r = solve(p, spec)
        where = f"{spec}: {r.status} {r.message!r}, reference {optimum}"
        if optimum is None:
            assert r.status is Status.INFEASIBLE and r.message, where
            continue
        assert r.status is Status.OPTIMAL, where
        assert close(r.objective, optimum), where
        # the certified rounding error is relative to the largest cost, not to the optimum
        largest = max(1.0, abs(optimum), float(np.abs(p.effective_utility()).max()))
        assert 0 <= r.bound - r.objective <= RTOL * largest, (where, r.bound)


def exact_reference(problem: AssignmentProblem) -> float | None:
    """The reference milp's optimum, or the brute force's where it is cheap: an LP-based
    reference resolves utilities only to its tolerances relative to the largest (a
    utility of 6e-8 beside 1 was lost)."""
    optimum = reference(problem)
    if problem.n_clients * problem.n_experts <= 12:
        exact = brute_force(problem)
        assert (optimum is None) == (exact is None)
        optimum = exact
    return optimum


@given(flow_problems())
def test_flow_matches_the_reference_milp(problem):
    assert unsupported_reason(problem) is None
    check_exact(problem, exact_reference(problem))


@given(flow_problems(wild=True))
def test_wild_magnitudes_stay_exact(problem):
    check_exact(problem, exact_reference(problem))


def unsupported_reason(problem: AssignmentProblem) -> str | None:
    return flow.unsupported(problem)


def test_negative_utilities_and_forced_holders():
    utility = -np.arange(12, dtype=float).reshape(4, 3) - 0.1
    p = AssignmentProblem(utility, max_experts=2, min_experts=1, load_min=1)
    check_exact(p, reference(p))


def test_dyadic_utilities_have_no_rounding_error():
    p = AssignmentProblem(np.array([[1.25, -3.5], [0.75, 2.0]]), max_experts=1)
    r = solve(p, "flow")
    assert r.info["max_rounding_error"] == 0.0 and r.bound == r.objective == 3.25


def test_huge_and_tiny_magnitudes_do_not_overflow():
    rng = np.random.default_rng(1)
    for magnitude in (1e-290, 1e-6, 1e6, 1e300):
        p = AssignmentProblem(rng.random((30, 6)) * magnitude, max_experts=2, load_max=12)
        for spec in ("flow", "flow:networkx"):
            r = solve(p, spec)
            assert r.status is Status.OPTIMAL, (magnitude, r.message)
            assert r.gap <= RTOL
    heavy = AssignmentProblem(rng.random((30, 6)), max_experts=2, balance_penalty=1e6)
    assert solve(heavy, "flow").status is Status.OPTIMAL


# -- pruned candidate pairs and the optimality certificate ---------------------------------


def banded(seed: int, n: int, e: int, k: int, band: float, **kw) -> AssignmentProblem:
    rng = np.random.default_rng(seed)
    mean = n * k / e
    skew = rng.random((n, e)) + np.linspace(0, 1, e)  # everyone prefers the last experts
    lo, hi = np.floor(mean * (1 - band)), np.ceil(mean * (1 + band))
    return AssignmentProblem(skew, max_experts=k, load_min=lo, load_max=hi, **kw)


@settings(max_examples=25)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(5, 60),
    e=st.integers(3, 12),
    band=st.sampled_from([0.0, 0.1, 0.3, 1.0]),
    candidates=st.integers(1, 4),
    penalty=st.sampled_from([0.0, 0.2]),
)
def test_pruned_pairs_give_the_dense_optimum(seed, n, e, band, candidates, penalty):
    k = min(3, e)
    p = banded(seed, n, e, k, band, balance_penalty=penalty)
    dense = solve(p, "flow", candidates=e)
    pruned = solve(p, "flow", candidates=candidates)
    assert pruned.status == dense.status
    assert not dense.info.get("pruned", False)
    if dense.status is Status.OPTIMAL:
        assert close(pruned.objective, dense.objective), (pruned.info, dense.objective)
        assert pruned.gap <= RTOL


def test_pruned_pairs_out_of_row_order_cover_every_pair():
    # Found by hypothesis: the certificate adds the 5 pruned pairs after the 15 candidates.
    p = banded(0, 5, 4, 3, 0.3)
    r = solve(p, "flow", candidates=3)
    assert r.info["arcs"] == 20 and r.info["solves"] == 2
    assert close(r.objective, reference(p))


def test_certificate_adds_improving_pairs():
    # Everyone prefers the last experts, whose load_max pushes some clients to a pair
    # outside their best three.
    p = banded(2, 40, 6, 2, 1.0)
    r = solve(p, "flow", candidates=3)
    assert r.status is Status.OPTIMAL and r.info["solves"] > 1 and not r.info["fallback"]
    assert close(r.objective, solve(p, "flow", candidates=6).objective)


def test_infeasible_pruned_network_is_widened():
    # The best two experts of every client cannot give each expert its 5 holders.
    p = banded(3, 20, 8, 2, 0.0)
    r = solve(p, "flow", candidates=2)
    assert r.status is Status.OPTIMAL and r.info["widened"] and r.info["pruned"]
    assert close(r.objective, reference(p))


def test_only_every_pair_decides_infeasibility():
    p = banded(3, 20, 8, 2, 0.0).replace(
        allowed=np.eye(20, 8, dtype=bool) | np.eye(20, 8, 1, dtype=bool)
    )
    r = flow.solve(p, candidates=1)  # no precheck: the flow itself must prove it
    assert r.status is Status.INFEASIBLE and r.info["widened"] and r.info["fallback"]
    assert not r.info["pruned"]


def test_auto_prunes_large_problems():
    p = banded(5, 1000, 64, 4, 0.2)
    r = solve(p, "flow")
    assert r.info["pruned"] and r.info["arcs"] < p.n_clients * p.n_experts
    assert close(r.objective, solve(p, "flow", candidates=64).objective)


def _network_and_flows(p: AssignmentProblem, sign: int):
    network = flow._build_network(p)
    pairs = flow._every_pair(p)
    arcs = flow._network_arcs(network, pairs)
    m = pairs.clients.size
    skewed = flow._Arcs(arcs.tails, arcs.heads, arcs.caps, arcs.costs.copy())
    skewed.costs[:m] *= sign
    outcome = flow._run_ortools(skewed, network.supplies)
    assert outcome.status == "OPTIMAL" and outcome.flows is not None
    return network, arcs, outcome.flows


def test_potentials_prove_an_optimal_flow():
    p = banded(7, 30, 5, 2, 0.2)
    network, arcs, flows = _network_and_flows(p, +1)
    dist = flow._potentials(arcs, flows, network.n_nodes, 2 * 5 + 6)
    assert dist is not None
    reduced = arcs.costs + dist[arcs.tails] - dist[arcs.heads]
    assert (reduced[flows < arcs.caps] >= 0).all() and (reduced[flows > 0] <= 0).all()


def test_potentials_refuse_a_flow_that_is_not_optimal():
    p = banded(7, 30, 5, 2, 0.2)
    network, arcs, worst = _network_and_flows(p, -1)  # the most expensive feasible flow
    assert flow._potentials(arcs, worst, network.n_nodes, 2 * 5 + 6) is None


def test_pruned_flow_that_misses_a_better_pair_is_caught():
    p = AssignmentProblem(np.array([[5.0, 4.0, 0.0], [5.0, 0.0, 4.5]]), max_experts=1, load_max=1)
    network = flow._build_network(p)
    pairs = flow._Pairs(np.array([0, 1]), np.array([0, 0]), True)  # only the favourites
    pairs = pairs.plus(np.array([0]), np.array([1]))  # client 0 may fall back to expert 1
    arcs = flow._network_arcs(network, pairs)
    outcome = flow._run_ortools(arcs, network.supplies)
    assert outcome.flows is not None
    dist = flow._potentials(arcs, outcome.flows, network.n_nodes, 12)
    assert dist is not None
    clients, experts = flow._improving_pairs(network, pairs, dist)
    assert (1, 2) in set(zip(clients.tolist(), experts.tolist(), strict=True))


# -- infeasible, unsupported, options, statuses ----------------------------------------------


def test_hidden_infeasibility_is_a_status_with_a_reason():
    p = AssignmentProblem(np.ones((3, 3)), max_experts=1, allowed=[[1, 0, 0]] * 3, load_max=2)
    for spec in ("flow", "flow:networkx"):
        r = solve(p, spec)
        assert r.status is Status.INFEASIBLE and "no assignment meets" in r.message
        assert r.info["precheck"] if "precheck" in r.info else r.info["native_status"]


def test_infeasible_without_the_precheck():
    p = AssignmentProblem(np.ones((2, 4)), max_experts=1, load_min=1)  # 4 holders needed, 2 give
    for engine in ("ortools", "networkx"):
        r = flow.solve(p, engine=engine)
        assert r.status is Status.INFEASIBLE and r.x is None and r.message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"expert_size": [1, 2], "storage": [2, 2]},
            "`storage` (with `expert_size`) needs the `milp` backend",
        ),
        (
            {"compute_cost": [[1, 2], [1, 1]], "compute_budget": [2, 2]},
            "`compute_budget` (with `compute_cost`) needs the `milp` backend",
        ),
        (
            {"load_weight": np.ones((2, 2))},
            "`load_weight` (weighted loads) needs the `milp` backend",
        ),
        (
            {"balance_penalty": 1.0, "balance_metric": "range"},
            "balance_metric='range' with balance_penalty > 0 needs the `milp` backend",
        ),
        (
            {"balance_penalty": 1.0, "min_experts": 0},
            "`balance_penalty` > 0 with a variable total (min_experts != max_experts) needs the `milp` backend",
        ),
    ],
)
def test_unsupported_names_the_field_and_the_backend(changes, message):
    p = AssignmentProblem(np.ones((2, 2)), max_experts=1, **changes)
    with pytest.raises(UnsupportedProblemError) as err:
        solve(p, "flow")
    assert str(err.value) == f"backend 'flow' cannot solve this problem: {message}"


def test_variance_with_totals_fixed_by_capping_is_supported():
    # max_experts 3 > 2 allowed experts: capped, min == max, so the total is fixed.
    p = AssignmentProblem(
        np.ones((2, 3)),
        max_experts=3,
        min_experts=2,
        allowed=[[1, 1, 0], [0, 1, 1]],
        balance_penalty=0.5,
    )
    assert flow.unsupported(p) is None
    check_exact(p, reference(p))


def test_unknown_engine_and_bad_candidates():
    p = AssignmentProblem(np.eye(2), max_experts=1)
    with pytest.raises(
        UnknownBackendError,
        match="backend 'flow' has no variant 'simplex'; got 'flow:simplex'; valid backends: "
        "auto, flow, flow:networkx, milp",
    ):
        solve(p, "flow:simplex")
    with pytest.raises(ValueError, match="`candidates` must be a positive integer or None; got 0"):
        solve(p, "flow", candidates=0)


def test_missing_networkx_makes_only_that_engine_unavailable(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "networkx" else real(name)
    )
    p = AssignmentProblem(np.eye(2), max_experts=1)
    with pytest.raises(
        BackendUnavailableError,
        match="backend 'flow:networkx' needs networkx, which is not installed; "
        "`pip install flexmoe` installs it",
    ):
        solve(p, "flow:networkx")
    assert solve(p, "flow").status is Status.OPTIMAL


@pytest.mark.parametrize("native", sorted(set(flow._NATIVE) - {"OPTIMAL", "INFEASIBLE"}))
def test_every_native_failure_maps_to_error(monkeypatch, native):
    monkeypatch.setitem(flow._RUNNERS, "ortools", lambda arcs, supplies: flow._Outcome(native))
    r = solve(AssignmentProblem(np.eye(2), max_experts=1), "flow")
    assert r.status is Status.ERROR and r.x is None and r.message == flow._NATIVE[native][1]
    assert r.info["native_status"] == native


def test_unknown_native_status_is_an_error(monkeypatch):
    monkeypatch.setitem(flow._RUNNERS, "ortools", lambda arcs, supplies: flow._Outcome("ODD"))
    r = solve(AssignmentProblem(np.eye(2), max_experts=1), "flow")
    assert r.status is Status.ERROR and "ODD" in r.message


def test_result_carries_timings_and_json_info():
    p = banded(2, 200, 16, 3, 0.2)
    r = solve(p, "flow", time_limit=5, seed=1)
    assert r.status is Status.OPTIMAL and r.build_time > 0 and r.solve_time > 0
    assert set(r.info) >= {"engine", "scale", "arcs", "solves", "pruned"}
    assert math.log2(r.info["scale"]).is_integer()
    json.dumps(r.to_dict())


def test_scale_keeps_the_largest_cost_within_the_safe_budget():
    for magnitude in (1e-300, 3e-7, 1.0, 12345.678, 1e200):
        scale = flow._scale(magnitude, 100_130, 262)
        assert math.log2(scale).is_integer()
        assert magnitude * scale <= flow._COST_BUDGET // (4 * 263 * 100_131)
        assert (
            magnitude * scale * 2 > flow._COST_BUDGET // (4 * 263 * 100_131) or scale == 2.0**1000
        )
