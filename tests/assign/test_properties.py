"""Property tests across every backend against a brute-force oracle.

Tiny problems (N·E ≤ 12) are solved by enumerating all 2^(N·E) assignments with numpy,
independently of every backend and of the verifier. Exact backends must match the oracle
(status and optimum), heuristics never beat it, infeasibility is never missed or invented.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexmoe.assign import (
    AssignmentProblem,
    BudgetRow,
    Status,
    UnsupportedProblemError,
    available_backends,
    registered_backends,
    solve,
)

SPECS = [spec for name in available_backends() for spec in registered_backends()[name].specs()]
TOL = 1e-6


def brute_force(p: AssignmentProblem) -> float | None:
    """The optimum of `p` by enumeration (None if infeasible)."""
    n, e = p.shape
    codes = np.arange(2 ** (n * e))[:, None] >> np.arange(n * e)
    x = (codes & 1).astype(bool).reshape(-1, n, e)
    held = x.sum(axis=2)
    ok = ((held >= p.min_experts) & (held <= p.max_experts)).all(axis=1)
    if p.allowed is not None:
        ok &= ~(x & ~p.allowed).any(axis=(1, 2))
    for row in p.budgets:  # storage, compute and any user row
        ok &= ((x * row.cost).sum(axis=2) <= row.limit + 1e-9).all(axis=1)
    w = np.ones((n, e)) if p.load_weight is None else p.load_weight
    loads = (x * w).sum(axis=1)
    ok &= ((loads >= p.load_min - 1e-9) & (loads <= p.load_max + 1e-9)).all(axis=1)
    if not ok.any():
        return None
    value = (x * p.utility).sum(axis=(1, 2))
    if p.balance_metric == "variance":
        spread = ((loads - loads.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    else:
        spread = loads.max(axis=1) - loads.min(axis=1)
    value = value - p.balance_penalty * spread
    if p.previous is not None:
        value = value - p.switch_cost * (x & ~p.previous).sum(axis=(1, 2))
    return float(value[ok].max())


@st.composite
def problems(draw, general: bool) -> AssignmentProblem:
    n = draw(st.integers(1, 4))
    e = draw(st.integers(1, min(6, 12 // n)))  # at most 2^12 assignments to enumerate
    quarter = st.integers(-20, 20).map(lambda v: v / 4)
    utility = np.array(draw(st.lists(quarter, min_size=n * e, max_size=n * e))).reshape(n, e)
    hi = np.array(draw(st.lists(st.integers(0, e), min_size=n, max_size=n)))
    lo = np.array([draw(st.integers(0, int(h))) for h in hi])
    kw: dict = {"min_experts": lo, "max_experts": hi}
    if draw(st.booleans()):
        kw["min_experts"] = hi  # fixed totals: the flow's variance term is exact
    kw["load_min"] = np.array(draw(st.lists(st.integers(0, 2), min_size=e, max_size=e)))
    kw["load_max"] = kw["load_min"] + np.array(
        draw(st.lists(st.integers(0, n), min_size=e, max_size=e))
    )
    if draw(st.booleans()):
        kw["allowed"] = np.array(draw(st.lists(st.booleans(), min_size=n * e, max_size=n * e)))
        kw["allowed"] = kw["allowed"].reshape(n, e)
    if draw(st.booleans()):
        kw["previous"] = np.array(draw(st.lists(st.booleans(), min_size=n * e, max_size=n * e)))
        kw["previous"] = kw["previous"].reshape(n, e)
        kw["switch_cost"] = draw(st.sampled_from([0.0, 0.5, 2.0]))
    kw["balance_penalty"] = draw(st.sampled_from([0.0, 0.0, 0.25, 1.0]))
    kw["balance_metric"] = draw(st.sampled_from(["variance", "range"]))
    if draw(st.booleans()):
        kw["budgets"] = (_count_row(draw, n, e, kw.get("allowed")),)
    if general:
        _draw_general(draw, n, e, kw)
    return AssignmentProblem(utility, **kw)


def _count_row(draw, n: int, e: int, allowed: np.ndarray | None) -> BudgetRow:
    """A count-equivalent row: each client pays the same for every expert it may hold
    (anything on the forbidden ones), so the flow takes it."""
    per_client = np.array(draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=n, max_size=n)))
    cost = np.repeat(per_client[:, None], e, axis=1)
    if allowed is not None:
        cost = np.where(allowed, cost, 3.0)
    limit = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))) / 2
    return BudgetRow("download", cost, limit)


def _draw_general(draw, n: int, e: int, kw: dict) -> None:
    """Storage, compute and weighted loads: the parts only the MILP models exactly."""
    if draw(st.booleans()):
        kw["expert_size"] = np.array(draw(st.lists(st.integers(1, 3), min_size=e, max_size=e)))
        kw["storage"] = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)))
    if draw(st.booleans()):
        cost = draw(st.lists(st.integers(0, 3), min_size=n * e, max_size=n * e))
        kw["compute_cost"] = np.array(cost).reshape(n, e)
        kw["compute_budget"] = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)))
    if draw(st.booleans()):
        w = draw(st.lists(st.integers(1, 4), min_size=n * e, max_size=n * e))
        kw["load_weight"] = np.array(w).reshape(n, e) / 2
        kw["load_min"] = kw["load_min"] * 1.5
        kw["load_max"] = kw["load_max"] * 2.0
        if kw["balance_metric"] == "variance":
            kw["balance_penalty"] = 0.0  # weighted variance is approximated by design
    if draw(st.booleans()):  # a user row the flow cannot take: costs differ across experts
        shape = draw(st.sampled_from([(e,), (n, e)]))
        cost = np.array(
            draw(
                st.lists(
                    st.integers(0, 3), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
                )
            )
        ).reshape(shape)
        limit = np.array(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))
        kw["budgets"] = (*kw.get("budgets", ()), BudgetRow("energy", cost, limit))


def check_against_oracle(problem: AssignmentProblem) -> None:
    optimum = brute_force(problem)
    for spec in SPECS:
        exact = registered_backends()[spec.partition(":")[0]].exact
        try:
            result = solve(problem, backend=spec, seed=0)
        except UnsupportedProblemError:
            continue
        where = f"{spec}: {result.status} {result.message!r} (oracle {optimum})"
        assert result.status is not Status.ERROR, where
        if optimum is None:
            assert not result.has_solution, where
            if exact:
                assert result.status is Status.INFEASIBLE, where
            continue
        scale = max(1.0, abs(optimum))
        if exact:
            assert result.status is Status.OPTIMAL, where
            assert abs(result.objective - optimum) <= TOL * scale, where
        else:
            assert result.status is not Status.OPTIMAL, where
            assert result.status is not Status.INFEASIBLE, where
        if result.has_solution:
            assert result.objective <= optimum + TOL * scale, where
            assert np.isnan(result.bound) or result.bound >= optimum - TOL * scale, where


@given(problems(general=False))
def test_flow_structured_problems_match_the_oracle(problem):
    check_against_oracle(problem)


@given(problems(general=True))
def test_general_problems_match_the_oracle(problem):
    check_against_oracle(problem)


def test_oracle_on_a_known_instance():
    from flexmoe.assign.testing import REFERENCE

    for ref in REFERENCE:
        got = brute_force(ref.problem)
        if ref.optimum is None:
            assert got is None, ref.name
        else:
            assert got == pytest.approx(ref.optimum, rel=1e-12), ref.name
