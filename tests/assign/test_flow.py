"""The exact `flow` backend against an independent MILP (HiGHS, every gap at 0).

The reference model below shares nothing with the backend: binary x[n, e] per allowed pair,
the switch cost written out from `previous`, and under a variance penalty a one-hot
indicator z[e, v] of each expert's load v, so λ·Σ_e v² is linear. Its optimum is
recomputed from the rounded x with a formula of its own. Every answer of the default
strategy (prices, one small flow, a certificate) is compared with it, with brute force on
the smallest problems, with networkx's network simplex and with one OR-Tools flow on every
pair (``strategy="dense"``, the network the old prune-and-certify loop fell back to).
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import sparse

from flexmoe.assign import (
    AssignmentProblem,
    BackendUnavailableError,
    Solver,
    Status,
    UnknownBackendError,
    UnsupportedProblemError,
    solve,
    verify,
)
from flexmoe.assign.backends import _prices, flow
from flexmoe.assign.instances import generate, load_band

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
    """Optimum by HiGHS (None: infeasible). The costs are scaled by a power of two (exact)
    into [0.5, 1) first: HiGHS takes |c| >= 1e20 for infinite."""
    n, e = p.shape
    utility = p.utility.copy()
    if p.previous is not None:
        utility = utility - p.switch_cost * (~p.previous)
    allowed = np.ones((n, e), bool) if p.allowed is None else p.allowed
    utility = np.where(allowed, utility, 0.0)  # a pair not allowed is fixed at 0 anyway:
    # its |u| must not set the scale (a huge one pushed the allowed costs below HiGHS's
    # tolerances, and the reference took 1e-4 of utility for nothing)
    largest = max(float(np.abs(utility).max(initial=0)), p.balance_penalty)
    shift = -math.frexp(largest)[1] if largest else 0
    utility = np.ldexp(utility, shift)
    penalty = math.ldexp(p.balance_penalty, shift)
    levels = n + 1 if penalty else 0  # loads 0..n, one-hot per expert
    nx_, nz = n * e, e * levels
    cost = np.concatenate([-utility.ravel(), np.tile(np.arange(levels) ** 2.0, e) * penalty])
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
    solution = highs_milp(cost, np.array(rows), np.array(lb, float), np.array(ub, float), upper)
    if solution is None:
        return None
    x = np.round(solution[:nx_]).reshape(n, e).astype(bool)
    return reference_value(p, x)


def highs_milp(cost, rows, lb, ub, upper) -> np.ndarray | None:
    """min cost·z over binary-bounded integers z with lb <= rows·z <= ub, by HiGHS with
    every gap and tolerance at its tightest (SciPy's `milp` cannot set the absolute gap,
    whose default 1e-6 would accept suboptimal answers on small costs); None if infeasible."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    for option, value in (
        ("mip_rel_gap", 0.0),
        ("mip_abs_gap", 0.0),
        ("presolve", "off"),
        ("mip_feasibility_tolerance", 1e-9),
        ("primal_feasibility_tolerance", 1e-9),
        ("dual_feasibility_tolerance", 1e-10),
    ):
        h.setOptionValue(option, value)
    count = cost.size
    empty = np.zeros(0)
    h.addCols(count, cost, np.zeros(count), upper, 0, np.zeros(count, np.int32), empty, empty)
    matrix = sparse.csr_array(rows)
    h.addRows(
        rows.shape[0], lb, ub, matrix.nnz, matrix.indptr[:-1].astype(np.int32),
        matrix.indices.astype(np.int32), matrix.data,
    )  # fmt: skip
    h.changeColsIntegrality(
        count, np.arange(count, dtype=np.int32),
        np.full(count, highspy.HighsVarType.kInteger),
    )  # fmt: skip
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        return None
    assert status == highspy.HighsModelStatus.kOptimal, h.modelStatusToString(status)
    return np.array(h.getSolution().col_value)


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


#: Utilities: any real in a range, whole numbers (ties everywhere), or |u| from 1e-300 to
#: 1e300 on one random scale per problem (every scale the data can have).
KINDS = ("real", "ties", "scale")


@st.composite
def flow_problems(draw, *, kind: str = "real", max_clients: int = 5) -> AssignmentProblem:
    """Count loads, min/max experts, a load band, allowed mask, switch cost, and a variance
    penalty when every client's total is fixed. `kind` picks the utilities (:data:`KINDS`);
    ``"wild"``: |utility| from 1e-6 to 1e6 within one problem."""
    n, e = draw(st.integers(1, max_clients)), draw(st.integers(1, 5))
    if kind == "wild":
        mag = st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(-6, 6))
        utility = _matrix(draw, n, e, mag.map(lambda t: t[0] * 10 ** t[1]))
    elif kind == "ties":
        utility = _matrix(draw, n, e, st.integers(-2, 2)).astype(float)
    elif kind == "scale":
        scale = 10.0 ** draw(st.integers(-300, 300))
        utility = _matrix(draw, n, e, st.floats(-10, 10, allow_subnormal=False)) * scale
    else:
        utility = _matrix(draw, n, e, st.floats(-10, 10, allow_subnormal=False))
    size = float(np.abs(utility).max(initial=0)) or 1.0  # the switch cost and λ follow it
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
        kw["switch_cost"] = draw(st.sampled_from([0.0, 0.3, 2.5])) * size
    if fixed:
        kw["balance_penalty"] = draw(st.sampled_from([0.0, 0.05, 0.7, 3.0])) * size
    return AssignmentProblem(utility, **kw)


#: (spec, options) of every exact path: the default prices strategy on both engines, and one
#: flow on every pair on both engines.
PATHS = (
    ("flow", {}),
    ("flow:networkx", {}),
    ("flow", {"strategy": "dense"}),
    ("flow:networkx", {"strategy": "dense"}),
)


def objective_scale(p: AssignmentProblem, x: np.ndarray | None) -> float:
    """What `flow.RTOL` is relative to: |objective|, the held |ũ| and the largest |ũ|."""
    u = np.abs(p.effective_utility())
    if p.allowed is not None:
        u = np.where(p.allowed, u, 0.0)
    held = float(u[x].sum()) if x is not None else 0.0
    return max(held, float(u.max(initial=0.0)))


def check_exact(p: AssignmentProblem, optimum: float | None) -> None:
    for spec, options in PATHS:
        r = solve(p, spec, **options)
        where = f"{spec} {options}: {r.status} {r.message!r}, reference {optimum}"
        if optimum is None:
            assert r.status is Status.INFEASIBLE and r.message, where
            continue
        assert r.status in (Status.OPTIMAL, Status.FEASIBLE), where
        scale = max(abs(optimum), objective_scale(p, r.x))
        slack = RTOL * max(scale, 1e-300)
        assert r.objective <= optimum + slack and r.bound >= optimum - slack, (where, r.bound)
        if r.status is Status.FEASIBLE:  # only when the rounding cannot certify the tolerance
            assert r.bound - r.objective > flow.RTOL * max(abs(r.objective), scale), where
        else:
            assert abs(r.objective - optimum) <= slack, where
            assert r.bound - r.objective <= flow.RTOL * max(abs(r.objective), scale), where
        assert verify(p, r.x, objective=r.objective, bound=r.bound).ok, where


@given(flow_problems())
def test_flow_matches_the_reference_milp(problem):
    assert unsupported_reason(problem) is None
    check_exact(problem, reference(problem))


@given(flow_problems(kind="ties"))
def test_ties_everywhere_match_the_reference(problem):
    check_exact(problem, reference(problem))


@given(flow_problems(kind="scale"))
def test_every_scale_of_the_data_is_exact(problem):
    check_exact(problem, reference(problem))


#: The reference once scaled by a pair not allowed (−1e5) and missed the 1e-4 of the pair
#: allowed (flow was right).
_HUGE_FORBIDDEN = np.full((5, 4), -1.0)
_HUGE_FORBIDDEN[0, 3], _HUGE_FORBIDDEN[4, 3] = 1e-4, -1e5
_ALLOWED = np.zeros((5, 4), bool)
_ALLOWED[0, 3] = _ALLOWED[1, 0] = True


@given(flow_problems(kind="wild"))
@example(AssignmentProblem(_HUGE_FORBIDDEN, max_experts=[1, 0, 0, 0, 0], load_min=0,
                           load_max=[0, np.inf, np.inf, np.inf], allowed=_ALLOWED))  # fmt: skip
def test_wild_magnitudes_stay_exact(problem):
    optimum = reference(problem)
    if problem.n_clients * problem.n_experts <= 12:
        exact = brute_force(problem)
        assert (optimum is None) == (exact is None)
        optimum = exact
    check_exact(problem, optimum)


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


def test_a_penalty_that_drowns_the_utilities_is_feasible_with_its_true_bound():
    # λ = 1e6 makes the unit costs ~1e8: at the int64 resolution that leaves, the rounding
    # certifies the optimum only to ~1e-7 relative, above RTOL. The answer is still the
    # optimum (the reference agrees) and its bound holds, but the status says FEASIBLE.
    rng = np.random.default_rng(1)
    rng.random((30, 6))
    heavy = AssignmentProblem(rng.random((30, 6)), max_experts=2, balance_penalty=1e6)
    r = solve(heavy, "flow")
    # any imbalance costs >= 2e6: the optimum is the best perfectly balanced assignment
    balanced = heavy.replace(balance_penalty=0.0, load_min=10, load_max=10)
    optimum = solve(balanced, "flow", strategy="dense").objective
    assert r.status is Status.FEASIBLE and "above 1e-09" in r.message
    assert close(r.objective, optimum) and r.bound >= optimum
    assert r.info["certified_gap"] == pytest.approx(r.bound - r.objective)


# -- issue 13: OPTIMAL only within the documented relative tolerance ------------------------


def test_tiny_utilities_are_solved_at_full_resolution():
    # Regression (issue 13, item 1): the power-of-two scale was capped at 2**1000, so at
    # |u| ~ 1e-298 the costs were rounded to ~3 digits and flow claimed OPTIMAL up to 4 %
    # off. The scale is now any power of two (ldexp never forms it).
    rng = np.random.default_rng(13)
    base = AssignmentProblem(rng.random((40, 6)), max_experts=2, load_min=10, load_max=16)
    tiny = base.replace(utility=base.utility * 1e-298)
    big = solve(base, "flow")
    r = solve(tiny, "flow")
    assert r.status is Status.OPTIMAL
    assert abs(r.objective - big.objective * 1e-298) <= 1e-12 * abs(r.objective)
    assert r.bound - r.objective <= flow.RTOL * abs(r.objective)
    assert r.info["scale_exponent"] > 1000 and r.info["scale"] is None
    json.dumps(r.to_dict(), allow_nan=False)
    # two experts 0.04 % apart: at the capped scale both rounded to the same cost and the
    # worse one came back OPTIMAL
    near = AssignmentProblem(np.tile([1.0, 1.0004], (10, 1)) * 1e-298, max_experts=1)
    r = solve(near, "flow")
    assert r.status is Status.OPTIMAL and r.x[:, 1].all()
    assert r.objective == pytest.approx(10 * 1.0004e-298, rel=1e-12)


def test_a_coarse_scale_reports_feasible_with_the_true_bound(monkeypatch):
    # With the scale forced to 2**10 the rounding error bound exceeds RTOL: the answer must
    # then be FEASIBLE, its bound still an upper bound on the true optimum.
    p = AssignmentProblem(np.random.default_rng(3).random((20, 5)), max_experts=2, load_max=9)
    monkeypatch.setattr(flow, "_exponent", lambda magnitude, limit: 10)
    r = solve(p, "flow")
    optimum = reference(p)
    assert r.status is Status.FEASIBLE and r.bound >= optimum >= r.objective
    assert r.bound - r.objective > flow.RTOL * abs(r.objective)


def test_exponent_is_exact_at_every_magnitude():
    limit = flow._ortools_limit(100_000, 128)
    for magnitude in (5e-324, 1e-310, 1e-300, 3e-7, 1.0, 12345.678, 1e200, 1.7e308):
        e = flow._exponent(magnitude, limit)
        assert math.ldexp(magnitude, e) <= limit < math.ldexp(magnitude, e + 1), magnitude
    assert flow._exponent(0.0, limit) == 0


# -- the prices strategy: candidates, neighbourhoods and the certificate ---------------------


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
def test_narrow_candidates_give_the_dense_optimum(seed, n, e, band, candidates, penalty):
    k = min(3, e)
    p = banded(seed, n, e, k, band, balance_penalty=penalty)
    dense = solve(p, "flow", strategy="dense")
    narrow = solve(p, "flow", candidates=candidates)
    assert narrow.status == dense.status
    if dense.status is Status.OPTIMAL:
        assert close(narrow.objective, dense.objective), (narrow.info, dense.objective)
        assert narrow.gap <= RTOL


@settings(max_examples=15)
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["uniform", "clustered"]),
    size=st.sampled_from([(300, 16, 3), (800, 24, 4), (2000, 32, 6)]),
    slack=st.sampled_from([0.0, 0.05, 0.2]),
    penalty=st.sampled_from([0.0, 0.003, 0.05]),
    masked=st.booleans(),
)
def test_prices_match_every_pair_on_generated_instances(seed, kind, size, slack, penalty, masked):
    p = generate(kind, *size, seed=seed, load_slack=slack).replace(balance_penalty=penalty)
    if masked:
        p = p.replace(allowed=np.random.default_rng(seed).random(p.shape) < 0.9)
    dense = solve(p, "flow", strategy="dense")
    r = solve(p, "flow")
    assert r.status == dense.status, (r.message, dense.message)
    if dense.status is Status.OPTIMAL:
        assert close(r.objective, dense.objective), (r.info, dense.objective)


def test_chunked_passes_agree_with_one_chunk(monkeypatch):
    p = generate("clustered", 500, 16, 4, seed=2)
    whole = solve(p, "flow")
    monkeypatch.setattr(_prices, "CHUNK", 48)  # 3 rows a chunk: every pass splits
    chunked = solve(p, "flow")
    assert chunked.objective == whole.objective and (chunked.x == whole.x).all()


def test_a_large_problem_is_decided_by_a_small_flow():
    p = generate("clustered", 4000, 32, 4, seed=5)
    r = solve(p, "flow")
    assert r.status is Status.OPTIMAL and not r.info["fallback"]
    assert r.info["contested"] < p.n_clients // 2 and r.info["arcs"] < p.n_clients
    assert close(r.objective, solve(p, "flow", strategy="dense").objective)


def test_hidden_infeasibility_is_decided_by_every_pair():
    p = banded(3, 20, 8, 2, 0.0).replace(
        allowed=np.eye(20, 8, dtype=bool) | np.eye(20, 8, 1, dtype=bool)
    )
    r = flow.solve(p, candidates=1)  # no precheck: the flow itself must prove it
    assert r.status is Status.INFEASIBLE and r.info["fallback"] and r.message


def _solved(p: AssignmentProblem) -> tuple[_prices.Market, np.ndarray, np.ndarray]:
    """The market of `p`, an optimal x and prices that certify it."""
    r = solve(p, "flow")
    market = flow._scaled(p).market
    prices = np.rint(np.ldexp(np.array(r.info["prices"]), market.exponent)).astype(np.int64)
    return market, np.array(r.x), prices


def test_certificate_proves_an_optimal_assignment():
    market, x, prices = _solved(banded(7, 30, 5, 2, 0.2))
    assert _prices.certify(market, x, prices).ok


def test_certificate_refuses_a_worse_assignment():
    p = banded(7, 30, 5, 2, 0.2)
    market, _, prices = _solved(p)
    worst = solve(p.replace(utility=-p.utility), "flow").x  # the most expensive feasible x
    verdict = _prices.certify(market, np.array(worst), prices)
    assert not verdict.ok and verdict.clients.size > 0
    everyone = np.ones(p.n_clients, dtype=bool)
    found, _ = _prices.potentials(market, np.array(worst), prices, everyone, np.zeros(30, np.int64))
    assert found is None  # a negative cycle: no prices can prove it


def test_certificate_names_the_client_that_misses_a_better_pair():
    p = AssignmentProblem(np.array([[5.0, 4.0, 0.0], [5.0, 0.0, 4.5]]), max_experts=1, load_max=1)
    market, x, prices = _solved(p)
    assert x[1, 2] and x[0, 0]
    moved = x.copy()
    moved[1] = [False, True, False]  # client 1 takes expert 1 instead of its better 2
    moved[0] = [True, False, False]
    verdict = _prices.certify(market, moved, prices)
    assert 1 in verdict.clients.tolist()


def settled_one_each(utility: list[list[float]], load_max: list[int]):
    """Prices settled from zero on a problem where each client holds one expert: the
    problem, its market, the settled prices and each client's margin under them."""
    p = AssignmentProblem(np.array(utility), max_experts=1, load_max=load_max)
    market = flow._scaled(p).market
    start = np.zeros(p.n_experts, dtype=np.int64)
    settled = _prices.settle(market, _prices.rank(market, start, p.n_experts), start)
    x = _prices.held_matrix(market, settled.choice)
    return p, market, settled, _prices.margins(market, settled.cand, settled.choice, x)


def test_settled_prices_fall_between_the_clients_at_the_cut():
    # Two clients want expert 1, which takes one; they value it over expert 0 by 2 and by
    # 1: its price settles halfway between (1.5), so neither is tied and none is left open.
    p, market, settled, margin = settled_one_each([[1.0, 3.0], [1.0, 2.0], [5.0, 0.0]], [2, 1])
    assert settled.converged and settled.prices[1] == np.ldexp(1.5, market.exponent)
    assert margin.min() > 0 and not _prices.contested(market, settled, margin).any()
    r = solve(p, "flow")
    assert r.status is Status.OPTIMAL and r.objective == 9.0


def test_settled_prices_leave_no_tie_that_breaks_a_band():
    # Expert 0 takes one of the two clients that want it most. A price at the tie (1.0)
    # left client 1 indifferent, and ties go to the lower expert: both stayed on expert 0,
    # over its band, and the flow had to take a neighbourhood wide enough to repair it.
    p, market, settled, margin = settled_one_each([[3.0, 1.0], [2.0, 1.0], [0.0, 5.0]], [1, 2])
    loads = settled.choice.loads
    assert settled.converged and ((loads >= market.lo) & (loads <= market.hi)).all()
    assert margin.min() > 0 and solve(p, "flow").objective == 9.0


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


#: A problem whose prices leave a tie, so that the default strategy calls the engine.
TIED = AssignmentProblem(np.ones((2, 2)), max_experts=1, load_max=1)


@pytest.mark.parametrize("native", sorted(set(flow._NATIVE) - {"OPTIMAL", "INFEASIBLE"}))
@pytest.mark.parametrize("strategy", flow.STRATEGIES)
def test_every_native_failure_maps_to_error(monkeypatch, native, strategy):
    monkeypatch.setitem(flow._RUNNERS, "ortools", lambda arcs, supplies: flow._Outcome(native))
    r = solve(TIED, "flow", strategy=strategy)
    assert r.status is Status.ERROR and r.x is None and r.message == flow._NATIVE[native][1]
    assert r.info["native_status"] == native


def test_unknown_native_status_is_an_error(monkeypatch):
    monkeypatch.setitem(flow._RUNNERS, "ortools", lambda arcs, supplies: flow._Outcome("ODD"))
    r = solve(TIED, "flow")
    assert r.status is Status.ERROR and "ODD" in r.message


def test_a_flow_the_certificate_refuses_is_an_error(monkeypatch):
    # An engine that answers OPTIMAL with a flow that is not optimal (here: the dense
    # network's flow for the negated costs) never comes back OPTIMAL.
    real = flow._run_ortools

    def wrong(arcs, supplies):
        return real(flow._Arcs(arcs.tails, arcs.heads, arcs.caps, -arcs.costs), supplies)

    monkeypatch.setitem(flow._RUNNERS, "ortools", wrong)
    p = banded(7, 30, 5, 2, 0.2)
    r = solve(p, "flow", strategy="dense")
    assert r.status is Status.ERROR and r.info["native_status"] == "NEGATIVE_CYCLE"


def test_result_carries_timings_and_json_info():
    p = banded(2, 200, 16, 3, 0.2)
    r = solve(p, "flow", time_limit=5, seed=1)
    assert r.status is Status.OPTIMAL and r.build_time > 0 and r.solve_time > 0
    assert set(r.info) >= {"engine", "strategy", "scale", "arcs", "solves", "contested", "prices"}
    assert math.log2(r.info["scale"]).is_integer()
    assert r.info["scale"] == 2.0 ** r.info["scale_exponent"]
    json.dumps(r.to_dict(), allow_nan=False)


def test_bad_strategy_is_named():
    with pytest.raises(ValueError, match="`strategy` must be one of prices, dense; got 'fast'"):
        solve(TIED, "flow", strategy="fast")


# -- the session: warm re-solves ---------------------------------------------------------------


def federated(problem: AssignmentProblem, rounds: int, seed: int = 0, noise: float = 0.05):
    """Problems of a federated run: after each answer the held pairs' utility moves by an
    EMA towards a noisy signal (β = 0.3), as `flexmoe.fedloop.fitness` does."""
    rng = np.random.default_rng(seed)
    truth = problem.utility
    utility = problem.utility.copy()
    for _ in range(rounds):
        x = yield problem.replace(utility=utility)
        signal = np.clip(truth + noise * rng.standard_normal(truth.shape), 0, None)
        utility = np.where(x, 0.7 * utility + 0.3 * signal, utility)


def tiered(kind: str, optional: bool) -> AssignmentProblem:
    """A 600 × 24 problem whose clients hold 2, 4 or 6 experts (at most, with `optional`),
    in a ±10 % count band: the path where clients do not all hold the same number."""
    tiers = np.tile([2, 4, 6], 200)
    lo, hi = load_band(tiers.sum() / 24, 0.1, 24)
    return generate(kind, 600, 24, 4, seed=4).replace(
        max_experts=tiers, min_experts=0 if optional else tiers, load_min=lo, load_max=hi
    )


@pytest.mark.parametrize(
    "base",
    [
        generate("clustered", 600, 24, 4, seed=4),
        generate("clustered", 600, 24, 4, seed=4).replace(balance_penalty=0.01),
        generate("uniform", 600, 24, 4, seed=4),
        tiered("clustered", optional=False),
        tiered("uniform", optional=True),
    ],
    ids=["clustered", "clustered-penalty", "uniform", "tiers", "tiers-optional"],
)
def test_warm_rounds_match_cold_solves(base):
    session = flow.FlowSolver()
    rounds = federated(base, 8)
    problem = next(rounds)
    try:
        while True:
            warm = session.solve(problem)
            cold = solve(problem, "flow", strategy="dense")
            assert warm.status is Status.OPTIMAL and cold.status is Status.OPTIMAL
            assert close(warm.objective, cold.objective)
            assert verify(problem, warm.x, objective=warm.objective, bound=warm.bound).ok
            problem = rounds.send(warm.x)
    except StopIteration:
        pass
    assert session.prices is not None and session.prices.shape == (24,)


def test_a_warm_start_settles_rises_and_falls_in_the_same_rounds(monkeypatch):
    # After one federated round the last prices are close: the experts that must rise and
    # those that must fall move together, and settling takes fewer rounds than one
    # direction at a time (CLOSE too large for any excess), to prices as good.
    rounds = federated(generate("clustered", 2000, 32, 4, seed=1), 2)
    session = flow.FlowSolver()
    problem = rounds.send(session.solve(next(rounds)).x)
    scaled = flow._scaled(problem)
    market, start = scaled.market, flow._start_prices(scaled, session.prices)

    def settle() -> _prices.Settled:
        return _prices.settle(market, _prices.rank(market, start, 8), start)

    together = settle()
    monkeypatch.setattr(_prices, "CLOSE", 2**40)
    apart = settle()
    assert together.converged and apart.converged
    assert together.rounds < apart.rounds, (together.rounds, apart.rounds)
    for settled in (together, apart):
        loads = settled.choice.loads
        assert ((loads >= market.lo) & (loads <= market.hi)).all()


def test_a_session_writes_each_problems_costs_over_the_last_ones():
    session = flow.FlowSolver()
    p = generate("clustered", 300, 16, 4, seed=0)
    session.solve(p)
    costs = session._costs
    q = p.replace(utility=p.utility[::-1].copy())
    r = session.solve(q)
    assert session._costs is costs  # the same shape: the same array, holding q's costs
    assert np.array_equal(costs, flow._scaled(q).market.value)
    assert close(r.objective, solve(q, "flow", strategy="dense").objective)
    other = generate("clustered", 200, 16, 4, seed=1)
    assert close(session.solve(other).objective, solve(other, "flow").objective)
    assert session._costs is not costs and session._costs.shape == (200, 16)


def test_a_running_solve_holds_the_sessions_costs_alone(monkeypatch):
    # A solve left running past a time limit must not share its costs with the next one:
    # while a solve runs, the session has no buffer to lend.
    session = flow.FlowSolver()
    p = generate("clustered", 300, 16, 4, seed=0)
    session.solve(p)
    lent, search = [], flow._search

    def spy(*args, **kwargs):
        lent.append((args[-1] is not None, session._costs))
        return search(*args, **kwargs)

    monkeypatch.setattr(flow, "_search", spy)
    session.solve(p)
    assert lent == [(True, None)] and session._costs is not None


def test_session_starts_cold_on_another_shape_and_keeps_its_checks():
    session = Solver("flow")  # the registry's session: FlowSolver inside, checks around it
    first = session.solve(generate("clustered", 200, 12, 3, seed=1))
    other = generate("uniform", 150, 8, 2, seed=2)
    second = session.solve(other)
    assert first.status is second.status is Status.OPTIMAL
    assert close(second.objective, solve(other, "flow").objective)
    (inner,) = session._sessions.values()
    assert isinstance(inner, flow.FlowSolver)
    assert inner.prices is not None and inner.prices.shape == (8,)
    infeasible = AssignmentProblem(np.ones((2, 3)), max_experts=1, load_min=1)
    r = session.solve(infeasible)
    assert r.status is Status.INFEASIBLE and r.info["precheck"]
    with pytest.raises(UnsupportedProblemError, match="`load_weight`"):
        session.solve(other.replace(load_weight=np.ones(other.shape)))


def test_session_options_are_checked():
    with pytest.raises(ValueError, match="`candidates` must be a positive integer"):
        flow.FlowSolver(candidates=0)
    with pytest.raises(ValueError, match="`engine` must be one of ortools, networkx"):
        flow.FlowSolver(engine="simplex")
    with pytest.raises(UnknownBackendError, match="valid backends"):
        Solver("flow:simplex")


# -- against the algorithm this backend replaced ------------------------------------------------

#: The last revision with the prune-and-certify flow (before issue 14).
OLD_REVISION = "7737a11"


def old_flow():
    """The flow module at :data:`OLD_REVISION`, or a skip when git cannot show it."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    shown = subprocess.run(
        ["git", "show", f"{OLD_REVISION}:flexmoe/assign/backends/flow.py"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if shown.returncode != 0:
        pytest.skip(f"git cannot show {OLD_REVISION} here: {shown.stderr.strip()}")
    path = tmp_dir() / "flexmoe_old_flow.py"
    path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location("flexmoe_old_flow", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tmp_dir():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="flexmoe-old-flow-"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uniform", "clustered"])
@pytest.mark.parametrize("penalty", [0.0, 0.01])
def test_matches_the_old_algorithm(kind, penalty):
    old = old_flow()
    for seed, size in enumerate([(500, 16, 3), (3000, 32, 4), (10_000, 64, 8)]):
        p = generate(kind, *size, seed=seed).replace(balance_penalty=penalty)
        new, was = solve(p, "flow"), old.solve(p)
        assert new.status is was.status is Status.OPTIMAL
        assert close(new.objective, was.objective), (size, new.objective, was.objective)


def test_a_session_saves_and_restores_its_prices():
    """A resumed federated run reopens its flow session with the saved prices."""
    base = generate("clustered", 300, 16, 4, seed=5)
    rounds = federated(base, 3)
    first = next(rounds)
    session = Solver("flow")
    x = session.solve(first).x
    second = rounds.send(x)
    saved = json.loads(json.dumps(session.state_dict()))
    resumed = Solver("flow")
    resumed.load_state_dict(saved)
    (inner,) = resumed._sessions.values()
    assert isinstance(inner, flow.FlowSolver) and inner.prices is not None
    a, b = session.solve(second), resumed.solve(second)
    assert a.status is b.status is Status.OPTIMAL
    np.testing.assert_array_equal(a.x, b.x)
