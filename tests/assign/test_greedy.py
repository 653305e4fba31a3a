"""The greedy backend: topk is each client's best experts; balanced is feasible and never
better than the exact optimum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexmoe.assign import AssignmentProblem, Status, solve
from flexmoe.assign.backends.greedy import topk_assignment
from flexmoe.assign.instances import generate


@given(st.integers(1, 30), st.integers(1, 12), st.data())
def test_topk_is_each_clients_best(n, e, data):
    k = data.draw(st.integers(1, e))
    utility = np.random.default_rng(data.draw(st.integers(0, 99))).normal(size=(n, e))
    x = topk_assignment(AssignmentProblem(utility, max_experts=k))
    assert (x.sum(axis=1) == k).all()
    kth_best = -np.sort(-utility, axis=1)[:, k - 1]
    assert (utility[x].reshape(n, k).min(axis=1) >= kth_best).all()


def test_topk_skips_forbidden_and_oversized_experts():
    p = AssignmentProblem(
        [[5.0, 4.0, 3.0, 2.0]],
        max_experts=2,
        min_experts=0,
        allowed=[[0, 1, 1, 1]],
        expert_size=[1, 3, 1, 1],
        storage=[2],
    )
    assert topk_assignment(p).tolist() == [[False, False, True, True]]


def test_topk_breaking_the_band_is_relaxed_not_an_error():
    p = generate("clustered", 200, 16, 2, seed=0)
    result = solve(p, "greedy:topk")
    assert result.status is Status.RELAXED and result.x is not None
    assert result.message.startswith("violates load_")


@pytest.mark.parametrize("kind", ["uniform", "clustered", "weighted"])
@pytest.mark.parametrize("seed", [0, 1])
def test_balanced_is_feasible_and_close_on_generated_families(kind, seed):
    p = generate(kind, 300, 16, 4, seed=seed)
    greedy = solve(p, "greedy")
    assert greedy.status is Status.FEASIBLE, greedy.message
    exact = solve(p, "auto")
    assert exact.status is Status.OPTIMAL
    assert greedy.objective <= exact.objective + 1e-9 * abs(exact.objective)
    assert greedy.objective >= 0.97 * exact.objective, "balanced stays within 3% here"


def test_balanced_failure_is_a_limit_not_infeasible():
    # Every client wants expert 0, capped at 1 holder, and may hold nothing else: the
    # heuristic cannot tell this from a hard problem, so it claims nothing.
    p = AssignmentProblem(np.ones((2, 2)), max_experts=1, allowed=[[1, 0], [1, 0]], load_max=[1, 2])
    result = solve(p, "greedy")
    assert result.status is Status.LIMIT_NO_SOLUTION and result.x is None
    assert "greedy balanced found no feasible assignment" in result.message


def test_unknown_method():
    with pytest.raises(ValueError, match="`method` must be one of balanced, topk; got 'best'"):
        solve(AssignmentProblem(np.eye(2), max_experts=1), "greedy", method="best")
